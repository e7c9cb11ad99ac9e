/**
 * The FUSE benchmark (`npm run bench -- fuse`): the zhsm mount against a minimal fuse-native
 * passthrough of a local directory (the FUSE baseline, in a child process, with the mount options
 * from the stack notes) and the local disk itself, plus the raw libp2p stream between a client
 * and a storage server (the network limit for remote data).
 *
 *   npm run bench -- fuse [--size-mib 1024] [--files 10000] [--servers 1]
 *                         [--columns disk,passthrough,zhsm] [--no-direct] [--profile DIR]
 *
 * The zhsm column is a real cell of `zhsm-node` child processes on loopback: a controller, one
 * storage server (or `--servers N`, each chunk then stored twice) and a client node started with
 * `zhsm-node start --mount MNT`, which serves the mount. This process only touches the mount. The
 * raw stream baseline (`/zhsm/probe`, one upload and one download before and one of each after the
 * mount's data measurements; the median counts) runs between a client node joined in this process
 * and the first storage server: the mounting child is the same kind of node on the same loopback.
 * That node runs only between the mount's measurements, never while this process blocks in
 * synchronous file calls. It also measures the cell client without FUSE, called the way the mount
 * calls it, to tell the mount's own cost from the client's (`--no-direct` skips that).
 * `--profile DIR` writes CPU profiles of the controller, the first storage server and the mounting
 * child there.
 *
 * Every measurement is a function of a directory (`measureDirectory`). Per target: sequential 1 MiB
 * writes of one file (timed until the last write returns, and until the fsync after it returns), a
 * cold sequential read (the file's pages dropped with fadvise through `dd iflag=nocache`, on the
 * mount and underneath: the passthrough's backing file, the storage servers' object files), a
 * re-read from the page cache (the faster of two), random 4 KiB reads (cached), then creating N
 * empty files and stat of them: a first pass in windows of 250 ms, each window statted again right
 * after it, three times, the fastest counting (cached stat: within the mounts' 1 s attribute and
 * entry timeouts), then a second pass over all N (cached only where the first pass took < 1 s).
 */
// Its child processes run as a daemon would (see node/common/v8-tuning.ts).
import '../node/common/v8-tuning.ts';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { statArray } from '../fuse/attributes.ts';
import { type NativeHandlers, nativeMount, TimeKind } from '../fuse/binding.ts';
import { MountErrno, MountError } from '../fuse/errno.ts';
import { mountOptionString } from '../fuse/mount.ts';
import type { Attributes, FileType } from '../node/client/api.ts';
import { CellClient } from '../node/client/cell-client.ts';
import { daemonStartArgs } from '../node/common/daemon-flags.ts';
import { errnoOf } from '../node/common/errors.ts';
import { ZhsmNode } from '../node/daemon/node.ts';
import { probeDownload, probeUpload } from '../node/net/probe.ts';
import { median, printTable, round } from './_table.ts';

const mebibyte = 1024 * 1024;
const randomReadBytes = 4096;
const randomReadsPerRound = 5000;
const rounds = 3;
/** Longest window of first stats before they are statted again (attribute timeout: 1 s). */
const statWindowMs = 250;
const statRepeats = 3;

export interface DirectoryFigures {
  writeMiBps: number;
  writeSyncedMiBps: number;
  readMiBps: number;
  rereadMiBps: number;
  randomReadsPerSecond: number;
  createsPerSecond: number;
  /** stat of every file once (in windows, see below). */
  statsPerSecond: number;
  /** stat again of each window just statted: within the 1 s attribute/entry timeout (cached). */
  cachedStatsPerSecond: number;
  /** stat of every file again after the whole first pass (cached only if that pass took < 1 s). */
  secondPassStatsPerSecond: number;
}

/** Drops one file's clean pages from the page cache (posix_fadvise DONTNEED via GNU dd). */
function dropCache(path: string): void {
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Bytes of `path` in the page cache (util-linux fincore), undefined without fincore. */
function residentBytes(path: string): number | undefined {
  try {
    return Number(
      execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]).toString().trim(),
    );
  } catch {
    return undefined;
  }
}

/** MiB/s until the last write returned, and until fsync returned. */
function sequentialWrite(path: string, sizeBytes: number): { written: number; synced: number } {
  const block = Buffer.alloc(mebibyte);
  for (let i = 0; i < block.length; i++) block[i] = (i * 31 + 7) & 0xff;
  const start = performance.now();
  const fd = fs.openSync(path, 'w');
  for (let offset = 0; offset < sizeBytes; offset += mebibyte) fs.writeSync(fd, block, 0, mebibyte, offset);
  const written = performance.now();
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const synced = performance.now();
  const mib = sizeBytes / mebibyte;
  return { written: mib / ((written - start) / 1000), synced: mib / ((synced - start) / 1000) };
}

function sequentialRead(path: string): number {
  const block = Buffer.alloc(mebibyte);
  const start = performance.now();
  const fd = fs.openSync(path, 'r');
  let total = 0;
  for (;;) {
    const read = fs.readSync(fd, block, 0, mebibyte, total);
    if (read === 0) break;
    total += read;
  }
  fs.closeSync(fd);
  return total / mebibyte / ((performance.now() - start) / 1000);
}

function randomReads(path: string, sizeBytes: number): number {
  const block = Buffer.alloc(randomReadBytes);
  const slots = Math.floor(sizeBytes / randomReadBytes);
  const fd = fs.openSync(path, 'r');
  const rates: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const start = performance.now();
    for (let i = 0; i < randomReadsPerRound; i++) {
      fs.readSync(fd, block, 0, randomReadBytes, randomInt(slots) * randomReadBytes);
    }
    rates.push(randomReadsPerRound / ((performance.now() - start) / 1000));
  }
  fs.closeSync(fd);
  return median(rates);
}

/** Drops the clean pages of every file under `directory` (e.g. a backend's objects). */
function dropCachesUnder(directory: string): void {
  for (const entry of fs.readdirSync(directory, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) dropCache(join(entry.parentPath, entry.name));
  }
}

export interface MeasureOptions {
  readonly sizeBytes: number;
  readonly files: number;
  /** Drops the caches of whatever lies underneath the target (after its own file's pages). */
  readonly dropUnderneath?: () => void;
  /** Runs after the data measurements, before the files are created. */
  readonly afterData?: () => Promise<void>;
  /** Remove the N files at the end (default true; a throwaway cell need not). */
  readonly removeFiles?: boolean;
  /** Progress lines (each step with its time) go here. */
  readonly log?: (line: string) => void;
}

/** Runs every measurement in `directory` (a local directory or any mountpoint). */
export async function measureDirectory(
  directory: string,
  options: MeasureOptions,
): Promise<DirectoryFigures> {
  const log = options.log ?? (() => {});
  // Start each target with no dirty pages left over from the one before.
  execFileSync('sync');
  const file = join(directory, 'sequential.bin');
  const { written: writeMiBps, synced: writeSyncedMiBps } = sequentialWrite(file, options.sizeBytes);
  log(`  write ${writeMiBps.toFixed(0)} MiB/s, until fsync ${writeSyncedMiBps.toFixed(0)} MiB/s`);
  dropCache(file);
  options.dropUnderneath?.();
  const readMiBps = sequentialRead(file);
  // How much of the file the page cache still holds: the kernel may page out clean pages read a
  // while ago (e.g. DAMON's proactive pageout), and each missing page costs the re-read a FUSE read.
  const resident = residentBytes(file);
  // The faster of two re-reads: on a shared machine someone may drop every cache meanwhile (e.g.
  // bench/store.ts writes /proc/sys/vm/drop_caches); the second re-read finds the pages again.
  const rereads = [sequentialRead(file), sequentialRead(file)];
  const rereadMiBps = Math.max(...rereads);
  const randomReadsPerSecond = randomReads(file, options.sizeBytes);
  log(
    `  read ${readMiBps.toFixed(0)} MiB/s, re-read ${rereads.map((v) => v.toFixed(0)).join(' and ')} MiB/s ` +
      `(${resident === undefined ? '?' : ((100 * resident) / options.sizeBytes).toFixed(2)} % cached before), ` +
      `random ${randomReadsPerSecond.toFixed(0)}/s`,
  );
  fs.unlinkSync(file);

  await options.afterData?.();
  const manyDirectory = join(directory, 'many');
  fs.mkdirSync(manyDirectory);
  const names = Array.from({ length: options.files }, (_, i) => join(manyDirectory, `f${i}`));
  let start = performance.now();
  for (const name of names) fs.closeSync(fs.openSync(name, 'w'));
  const createsPerSecond = options.files / ((performance.now() - start) / 1000);
  // First pass in windows of at most statWindowMs; each window is statted again at once, so every
  // second stat comes well within the 1 s attribute and entry timeouts of the FUSE mounts. A
  // slow first pass makes small windows (a fraction of a millisecond to stat again), where one
  // preemption on a busy machine would count as much as the window: the fastest of three.
  let firstPassMs = 0;
  let cachedMs = 0;
  for (let from = 0; from < names.length; ) {
    const windowStart = performance.now();
    let to = from;
    while (to < names.length && performance.now() - windowStart < statWindowMs) fs.statSync(names[to++]!);
    firstPassMs += performance.now() - windowStart;
    let fastest = Number.POSITIVE_INFINITY;
    for (let repeat = 0; repeat < statRepeats; repeat++) {
      const again = performance.now();
      for (let i = from; i < to; i++) fs.statSync(names[i]!);
      fastest = Math.min(fastest, performance.now() - again);
    }
    cachedMs += fastest;
    from = to;
  }
  const statsPerSecond = options.files / (firstPassMs / 1000);
  const cachedStatsPerSecond = options.files / (cachedMs / 1000);
  start = performance.now();
  for (const name of names) fs.statSync(name);
  const secondPassStatsPerSecond = options.files / ((performance.now() - start) / 1000);
  log(
    `  creates ${createsPerSecond.toFixed(0)}/s, stat ${statsPerSecond.toFixed(0)}/s, ` +
      `cached ${cachedStatsPerSecond.toFixed(0)}/s, second pass ${secondPassStatsPerSecond.toFixed(0)}/s`,
  );
  if (options.removeFiles !== false) await fsp.rm(manyDirectory, { recursive: true });
  return {
    writeMiBps,
    writeSyncedMiBps,
    readMiBps,
    rereadMiBps,
    randomReadsPerSecond,
    createsPerSecond,
    statsPerSecond,
    cachedStatsPerSecond,
    secondPassStatsPerSecond,
  };
}

// ---- the passthrough (runs in a child process: `node bench/fuse.ts --passthrough SOURCE MOUNTPOINT`)

function typeOf(stat: fs.Stats): FileType {
  if (stat.isDirectory()) return 'directory';
  if (stat.isSymbolicLink()) return 'symlink';
  if (stat.isCharacterDevice()) return 'charDevice';
  if (stat.isBlockDevice()) return 'blockDevice';
  if (stat.isFIFO()) return 'fifo';
  if (stat.isSocket()) return 'socket';
  return 'file';
}

function attributesOf(stat: fs.Stats): Attributes {
  return {
    ino: stat.ino,
    type: typeOf(stat),
    mode: stat.mode,
    uid: stat.uid,
    gid: stat.gid,
    size: stat.size,
    blocks: stat.blocks,
    nlink: stat.nlink,
    rdev: stat.rdev,
    atimeMs: stat.atimeMs,
    mtimeMs: stat.mtimeMs,
    ctimeMs: stat.ctimeMs,
  };
}

/**
 * A passthrough of `source`: every call goes straight to the local filesystem. Synchronous calls on
 * purpose: this process does nothing else, and a local disk answers in microseconds, far below the
 * cost of a thread-pool hop per request.
 */
function passthroughHandlers(source: string): Partial<NativeHandlers> {
  const real = (path: string) => join(source, path);
  const open = new Set<number>();
  const descriptor = (fd: number) => {
    if (!open.has(fd)) throw new MountError(MountErrno.EBADF, `fd ${fd}`);
    return fd;
  };
  const notSupported = async (): Promise<never> => {
    throw new MountError(MountErrno.ENOTSUP, 'not in the passthrough');
  };
  return {
    getattr: async (path) => statArray(attributesOf(fs.lstatSync(real(path)))),
    fgetattr: async (_path, fd) => statArray(attributesOf(fs.fstatSync(descriptor(fd)))),
    access: async (path, mode) => fs.accessSync(real(path), mode),
    statfs: async () => {
      const stat = fs.statfsSync(source);
      const ints = new Uint32Array(11);
      ints.set([
        stat.bsize,
        stat.bsize,
        stat.blocks,
        stat.bfree,
        stat.bavail,
        stat.files,
        stat.ffree,
        stat.ffree,
        0,
        0,
        255,
      ]);
      return ints;
    },
    readdir: async (path) => ['.', '..', ...fs.readdirSync(real(path))],
    open: async (path, flags) => {
      const fd = fs.openSync(real(path), flags);
      open.add(fd);
      return fd;
    },
    create: async (path, mode, flags) => {
      const fd = fs.openSync(real(path), flags | fs.constants.O_CREAT, mode);
      open.add(fd);
      return fd;
    },
    read: async (_path, fd, buffer, length, offset) => fs.readSync(descriptor(fd), buffer, 0, length, offset),
    write: async (_path, fd, buffer, length, offset) =>
      fs.writeSync(descriptor(fd), buffer, 0, length, offset),
    // No flush: nothing is buffered here, and without a handler the kernel stops sending FLUSH.
    fsync: async (_path, datasync, fd) =>
      datasync ? fs.fdatasyncSync(descriptor(fd)) : fs.fsyncSync(descriptor(fd)),
    fsyncdir: async () => {},
    release: async (_path, fd) => {
      open.delete(descriptor(fd));
      fs.closeSync(fd);
    },
    truncate: async (path, size) => fs.truncateSync(real(path), size),
    ftruncate: async (_path, fd, size) => fs.ftruncateSync(descriptor(fd), size),
    utimens: async (path, atimeMs, mtimeMs, atimeKind, mtimeKind) => {
      const current = fs.lstatSync(real(path));
      const pick = (kind: number, ms: number, old: number) =>
        (kind === TimeKind.omit ? old : kind === TimeKind.now ? Date.now() : ms) / 1000;
      fs.utimesSync(
        real(path),
        pick(atimeKind, atimeMs, current.atimeMs),
        pick(mtimeKind, mtimeMs, current.mtimeMs),
      );
    },
    chmod: async (path, mode) => fs.chmodSync(real(path), mode),
    chown: async (path, uid, gid) => fs.lchownSync(real(path), uid | 0, gid | 0),
    mkdir: async (path, mode) => {
      fs.mkdirSync(real(path), mode);
    },
    rmdir: async (path) => fs.rmdirSync(real(path)),
    mknod: notSupported,
    unlink: async (path) => fs.unlinkSync(real(path)),
    rename: async (from, to) => fs.renameSync(real(from), real(to)),
    link: async (existing, path) => fs.linkSync(real(existing), real(path)),
    symlink: async (target, path) => fs.symlinkSync(target, real(path)),
    readlink: async (path) => fs.readlinkSync(real(path)),
    setxattr: notSupported,
    getxattr: async () => {
      throw new MountError(MountErrno.ENODATA, 'no xattrs in the passthrough');
    },
    listxattr: async () => [],
    removexattr: notSupported,
  };
}

async function servePassthrough(source: string, mountpoint: string): Promise<void> {
  process.umask(0);
  const mount = await nativeMount(
    mountpoint,
    passthroughHandlers(source),
    (_operation, error) => (error instanceof MountError ? error.errno : errnoOf(error)),
    {
      // The stack notes' options; kernel_cache is coherent here: this mount is the only writer.
      optionString: mountOptionString({ dataCache: 'kernel', fsName: 'passthrough', allowOther: false }),
      handlerTimeoutMs: 0,
    },
  );
  const stop = () => {
    mount.unmount().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write('ready\n');
}

// ---- children and mounts: always stopped and unmounted, even on an error or a signal

const children = new Set<ChildProcess>();
const mountpoints = new Set<string>();

function isAlive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function isMounted(mountpoint: string): boolean {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === mountpoint);
}

/** Lazy unmount (the mount's daemon is gone or going): `umount -l` as root, else `fusermount -u -z`. */
function forceUnmount(mountpoint: string): void {
  if (!isMounted(mountpoint)) return;
  const [command, args] =
    process.getuid?.() === 0 ? ['umount', ['-l', mountpoint]] : ['fusermount', ['-u', '-z', mountpoint]];
  try {
    execFileSync(command as string, args as string[], { stdio: 'ignore' });
  } catch (error) {
    console.error(
      `bench fuse: ${command} ${(args as string[]).join(' ')} failed: ${(error as Error).message}`,
    );
  }
}

/** For exits that cannot wait (an error thrown past run(), a signal): SIGKILL and lazy unmounts. */
function emergencyCleanup(): void {
  for (const child of children) if (isAlive(child)) child.kill('SIGKILL');
  for (const mountpoint of mountpoints) forceUnmount(mountpoint);
}

/** SIGTERM, wait (SIGKILL after `graceMs`), then unmount its mountpoint if it left it behind. */
async function stopChild(child: ChildProcess, mountpoint?: string, graceMs = 20_000): Promise<void> {
  if (isAlive(child)) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
  children.delete(child);
  if (mountpoint !== undefined) {
    forceUnmount(mountpoint);
    mountpoints.delete(mountpoint);
  }
}

/** Spawns a node child; resolves with the first stdout line that `ready` accepts. */
async function spawnChild<T>(
  name: string,
  args: string[],
  ready: (line: string) => T | undefined,
  options: { nodeOptions?: string[]; timeoutMs?: number } = {},
): Promise<{ child: ChildProcess; value: T }> {
  const child = spawn(process.execPath, [...(options.nodeOptions ?? []), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  const value = await new Promise<T>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(
      () => reject(new Error(`${name} was not ready within ${options.timeoutMs ?? 60_000} ms`)),
      options.timeoutMs ?? 60_000,
    );
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      buffered += text;
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const found = ready(line);
        if (found !== undefined) {
          clearTimeout(timer);
          resolve(found);
        }
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready`));
    });
  });
  return { child, value };
}

async function startPassthrough(source: string, mountpoint: string): Promise<ChildProcess> {
  mountpoints.add(mountpoint);
  const { child } = await spawnChild(
    'the passthrough',
    [fileURLToPath(import.meta.url), '--passthrough', source, mountpoint],
    (line) => (line.includes('ready') ? true : undefined),
  );
  return child;
}

// ---- the zhsm cell: zhsm-node children on loopback

const nodeCli = fileURLToPath(new URL('../node/cli/node.ts', import.meta.url));
const loopback = '/ip4/127.0.0.1/tcp/0';

interface NodeProcess {
  readonly name: string;
  readonly data: string;
  readonly child: ChildProcess;
  readonly peerId: string;
  readonly addresses: string[];
}

interface Cell {
  readonly controller: NodeProcess;
  readonly servers: NodeProcess[];
  readonly backends: string[];
  readonly mount: NodeProcess;
  readonly mountpoint: string;
  readonly token: string;
}

async function nodeCommand(args: string[]): Promise<Record<string, unknown>> {
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, [nodeCli, ...args, '--json'], { timeout: 120_000 }, (error, out) =>
      error ? reject(error) : resolve(out),
    ),
  );
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function startNode(
  name: string,
  data: string,
  extra: string[] = [],
  nodeOptions: string[] = [],
): Promise<NodeProcess> {
  const { child, value } = await spawnChild(
    name,
    daemonStartArgs({ cli: nodeCli, data, args: ['--log-level', 'error', ...extra] }),
    (line) => {
      if (!line.includes('"event":"started"')) return undefined;
      return JSON.parse(line) as { peerId: string; addresses: string[] };
    },
    { nodeOptions },
  );
  return { name, data, child, peerId: value.peerId, addresses: value.addresses };
}

async function startCell(base: string, servers: number, profileDirectory?: string): Promise<Cell> {
  const profile = profileDirectory === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDirectory}`];
  const controllerData = join(base, 'controller');
  const init = await nodeCommand([
    'init',
    '--data',
    controllerData,
    '--cell',
    'bench-fuse',
    '--listen',
    loopback,
  ]);
  const token = init.token as string;
  const controller = await startNode('the controller', controllerData, [], profile);
  const peer = controller.addresses[0]!;
  const serverProcesses: NodeProcess[] = [];
  const backends: string[] = [];
  for (let i = 1; i <= servers; i++) {
    const data = join(base, `server${i}`);
    const backend = join(base, `server${i}-backend`);
    backends.push(backend);
    await nodeCommand([
      'join',
      peer,
      '--token',
      token,
      '--data',
      data,
      '--backend',
      backend,
      '--listen',
      loopback,
    ]);
    serverProcesses.push(await startNode(`storage server ${i}`, data, [], i === 1 ? profile : []));
  }
  const mountData = join(base, 'client');
  const mountpoint = join(base, 'mnt');
  await nodeCommand(['join', peer, '--token', token, '--data', mountData, '--listen', loopback]);
  mountpoints.add(mountpoint);
  const mount = await startNode('the mounting client', mountData, ['--mount', mountpoint], profile);
  if (profileDirectory !== undefined) {
    const pids = [controller, ...serverProcesses, mount].map((proc) => `${proc.name} ${proc.child.pid}`);
    console.log(`  CPU profiles to ${profileDirectory}: ${pids.join(', ')}`);
  }
  return { controller, servers: serverProcesses, backends, mount, mountpoint, token };
}

async function stopCell(cell: Cell): Promise<void> {
  await stopChild(cell.mount.child, cell.mountpoint);
  for (const server of cell.servers) await stopChild(server.child);
  await stopChild(cell.controller.child);
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface RawStream {
  uploadMiBps: number;
  downloadMiBps: number;
  uploads: number[];
  downloads: number[];
  /** The cell client in this process, without FUSE (when measured). */
  direct?: Awaited<ReturnType<typeof directClient>>;
}

/** Bytes per probe transfer and per direct transfer (at most; less when the file is smaller). */
const probeBytesMax = 256 * mebibyte;
const directBytesMax = 128 * mebibyte;
const kernelRequestBytes = 128 * 1024;
const directFiles = 100;

/**
 * The cell client in this process, without FUSE, called the way the mount calls it: 128 KiB
 * writes one after another (what the kernel sends), fsync and close; then (caches underneath
 * dropped) whole 4 MiB pieces read one after another (what the mount's read-ahead asks); then
 * file creates as the kernel asks for them (a failing getattr, create, close), getattr of those
 * files, and one metadata read (the root inode) at a time.
 */
async function directClient(node: ZhsmNode, bytes: number, dropUnderneath: () => void) {
  const client = new CellClient(node.remote);
  const caller = { uid: 0, gid: 0 };
  const block = new Uint8Array(kernelRequestBytes);
  for (let i = 0; i < block.length; i++) block[i] = (i * 31 + 7) & 0xff;
  let start = performance.now();
  const writer = await client.create('/direct.bin', 0o644, caller, { mode: 'write' });
  for (let offset = 0; offset < bytes; offset += kernelRequestBytes) await writer.write(offset, block);
  await writer.fsync();
  await writer.close();
  const writeMiBps = bytes / mebibyte / ((performance.now() - start) / 1000);
  dropUnderneath();
  start = performance.now();
  const reader = await client.open('/direct.bin', { mode: 'read' });
  for (let offset = 0; offset < bytes; offset += 4 * mebibyte) await reader.read(offset, 4 * mebibyte);
  await reader.close();
  const readMiBps = bytes / mebibyte / ((performance.now() - start) / 1000);
  await client.unlink('/direct.bin');
  // Metadata: what a FUSE create (lookup, create, open token, close) and a stat cost the client.
  await client.mkdir('/direct', 0o755, caller);
  const names = Array.from({ length: directFiles }, (_, i) => `/direct/f${i}`);
  start = performance.now();
  for (const name of names) {
    await client.getattr(name).catch(() => {});
    await (await client.create(name, 0o644, caller, { mode: 'write' })).close();
  }
  const createsPerSecond = directFiles / ((performance.now() - start) / 1000);
  start = performance.now();
  for (const name of names) await client.getattr(name);
  const statsPerSecond = directFiles / ((performance.now() - start) / 1000);
  const root = await node.remote.metadata.root();
  start = performance.now();
  for (let i = 0; i < directFiles; i++) await node.remote.metadata.inode(root);
  const metadataReadMs = (performance.now() - start) / directFiles;
  return { writeMiBps, readMiBps, mib: bytes / mebibyte, createsPerSecond, statsPerSecond, metadataReadMs };
}

/** The raw libp2p stream (`/zhsm/probe`: tcp + noise + yamux, no framing): one upload and one download. */
async function probeOnce(node: ZhsmNode, cell: Cell, bytes: number, into: RawStream): Promise<void> {
  // By address: this node has not learned the server's addresses yet.
  const server = cell.servers[0]!.addresses[0]!;
  into.uploads.push(bytes / mebibyte / (await probeUpload(node.host, server, bytes)));
  into.downloads.push(bytes / mebibyte / (await probeDownload(node.host, server, bytes)));
  into.uploadMiBps = median(into.uploads);
  into.downloadMiBps = median(into.downloads);
}

/**
 * A client node in this process, for the raw libp2p stream to the first storage server and the
 * cell client without FUSE. It runs only between the mount's measurements, never while this
 * process blocks in synchronous file calls: `probe()` starts it, measures, and stops it again.
 */
async function probeClient(base: string, cell: Cell, bytes: number) {
  const data = join(base, 'probe-client');
  await ZhsmNode.join({ peer: cell.controller.addresses[0]!, token: cell.token, data, listen: [loopback] });
  const raw: RawStream = { uploadMiBps: 0, downloadMiBps: 0, uploads: [], downloads: [] };
  let warm = false;
  return {
    raw,
    /** One upload and one download (after a warm-up the first time), then `also` with the node. */
    async probe(also?: (node: ZhsmNode) => Promise<void>): Promise<void> {
      const node = await ZhsmNode.start(data);
      try {
        await waitFor('the storage servers registered', async () =>
          (await node.remote.metadata.backends()).length === cell.servers.length ? true : undefined,
        );
        if (!warm) {
          const server = cell.servers[0]!.addresses[0]!;
          await probeUpload(node.host, server, 64 * mebibyte);
          await probeDownload(node.host, server, 64 * mebibyte);
          warm = true;
        }
        await probeOnce(node, cell, bytes, raw);
        await also?.(node);
      } finally {
        await node.stop();
      }
    },
  };
}

// ---- the run

function argument(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(args[index + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} needs a positive integer`);
  return value;
}

function stringArgument(args: string[], name: string): string | undefined {
  const index = args.indexOf(name);
  if (index < 0) return undefined;
  const value = args[index + 1];
  if (value === undefined || value.startsWith('--')) throw new Error(`${name} needs a value`);
  return value;
}

const columnNames = ['disk', 'passthrough', 'zhsm'] as const;
type ColumnName = (typeof columnNames)[number];

/** The targets: [ratio name, what it divides, minimum]. */
const targets: Array<[string, string, number]> = [
  ['zhsmWriteOverRawUpload', 'zhsm sequential write (until fsync) / raw stream upload', 0.7],
  ['zhsmReadOverRawDownload', 'zhsm sequential read, cold / raw stream download', 0.7],
  ['zhsmRereadOverPassthrough', 'zhsm cached re-read / passthrough cached re-read', 0.5],
  ['zhsmCreatesOverPassthrough', 'zhsm file creates / passthrough file creates', 0.25],
  ['zhsmCachedStatOverPassthrough', 'zhsm cached stat / passthrough cached stat', 0.5],
];

export async function run(args: string[] = []): Promise<{
  figures: Record<string, number>;
  ratios: Record<string, number>;
}> {
  const sizeMiB = argument(args, '--size-mib', 1024);
  const files = argument(args, '--files', 10_000);
  const servers = argument(args, '--servers', 1);
  const profileDirectory = stringArgument(args, '--profile');
  const wanted = (stringArgument(args, '--columns') ?? columnNames.join(',')).split(',');
  for (const name of wanted)
    if (!columnNames.includes(name as ColumnName)) throw new Error(`--columns: unknown column ${name}`);
  const options = { sizeBytes: sizeMiB * mebibyte, files, log: (line: string) => console.log(line) };
  const scratch = fs.mkdtempSync(join(tmpdir(), 'zhsm-bench-fuse-'));
  const disk = join(scratch, 'disk');
  const backing = join(scratch, 'backing');
  const passthroughMount = join(scratch, 'passthrough');
  for (const directory of [disk, backing, passthroughMount]) fs.mkdirSync(directory);
  if (profileDirectory !== undefined) fs.mkdirSync(profileDirectory, { recursive: true });

  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`bench fuse: ${signal}: stopping children, unmounting`);
    emergencyCleanup();
    fs.rmSync(scratch, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('exit', emergencyCleanup);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const columns: Partial<Record<ColumnName, DirectoryFigures>> = {};
  let raw: RawStream | undefined;
  try {
    console.log(`fuse bench: ${sizeMiB} MiB file, ${files} files, in ${scratch}`);
    if (wanted.includes('disk')) {
      console.log('disk:');
      columns.disk = await measureDirectory(disk, options);
    }
    if (wanted.includes('passthrough')) {
      console.log('passthrough:');
      const passthrough = await startPassthrough(backing, passthroughMount);
      columns.passthrough = await measureDirectory(passthroughMount, {
        ...options,
        dropUnderneath: () => dropCache(join(backing, 'sequential.bin')),
      });
      await stopChild(passthrough, passthroughMount);
    }
    if (wanted.includes('zhsm')) {
      console.log(`zhsm: starting a cell (controller, ${servers} storage server(s), mounting client)`);
      const cell = await startCell(join(scratch, 'cell'), servers, profileDirectory);
      const backends = cell.backends;
      const dropBackends = () => {
        for (const backend of backends) dropCachesUnder(backend);
      };
      // The raw stream before and after the mount's data measurements (the machine's load drifts).
      const client = await probeClient(
        join(scratch, 'cell'),
        cell,
        Math.min(options.sizeBytes, probeBytesMax),
      );
      raw = client.raw;
      const directBytes = args.includes('--no-direct') ? 0 : Math.min(options.sizeBytes, directBytesMax);
      const logRaw = () =>
        console.log(
          `  raw libp2p stream, this process <-> storage server 1: upload ${raw!.uploads.at(-1)!.toFixed(0)} MiB/s, ` +
            `download ${raw!.downloads.at(-1)!.toFixed(0)} MiB/s`,
        );
      await client.probe(async (node) => {
        logRaw();
        if (directBytes === 0) return;
        raw!.direct = await directClient(node, directBytes, dropBackends);
        console.log(
          `  cell client in this process, no FUSE (${raw!.direct.mib} MiB): write ${raw!.direct.writeMiBps.toFixed(0)} MiB/s, ` +
            `read ${raw!.direct.readMiBps.toFixed(0)} MiB/s`,
        );
      });
      columns.zhsm = await measureDirectory(cell.mountpoint, {
        ...options,
        dropUnderneath: dropBackends,
        afterData: async () => {
          await client.probe();
          logRaw();
        },
        // 10,000 unlinks would take as long as the creates; the cell is thrown away.
        removeFiles: false,
      });
      await stopCell(cell);
    }
  } finally {
    // After an error: the mounting children first (they unmount on SIGTERM), then the others; then
    // whatever is left is killed and its mount lazily unmounted.
    for (const child of [...children].reverse()) await stopChild(child).catch(() => {});
    emergencyCleanup();
    process.off('exit', emergencyCleanup);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    fs.rmSync(scratch, { recursive: true, force: true });
  }

  const metrics: Array<[keyof DirectoryFigures, string]> = [
    ['writeMiBps', 'sequential write, 1 MiB (MiB/s)'],
    ['writeSyncedMiBps', '  the same, until fsync returned (MiB/s)'],
    ['readMiBps', 'sequential read, cold (MiB/s)'],
    ['rereadMiBps', 're-read, cached (MiB/s)'],
    ['randomReadsPerSecond', 'random 4 KiB reads (/s)'],
    ['createsPerSecond', `create ${files} empty files (/s)`],
    ['statsPerSecond', 'stat, first pass (/s)'],
    ['cachedStatsPerSecond', `stat again within ${statWindowMs} ms: cached (/s)`],
    ['secondPassStatsPerSecond', `stat, second pass over all ${files} (/s)`],
  ];
  const figures: Record<string, number> = {};
  const rows = metrics.map(([key, label]) => {
    const row: Record<string, string | number> = { measure: label };
    for (const [column, values] of Object.entries(columns)) {
      row[column] = values[key];
      figures[`${column}.${key}`] = round(values[key], 1);
    }
    if (columns.passthrough !== undefined && columns.disk !== undefined)
      row['passthrough/disk'] = columns.passthrough[key] / columns.disk[key];
    if (columns.zhsm !== undefined && columns.passthrough !== undefined)
      row['zhsm/passthrough'] = columns.zhsm[key] / columns.passthrough[key];
    return row;
  });
  printTable(
    `FUSE: zhsm mount vs fuse-native passthrough vs local disk (${sizeMiB} MiB, ${files} files)`,
    rows,
  );

  const ratios: Record<string, number> = {};
  if (raw !== undefined) {
    figures['raw.uploadMiBps'] = round(raw.uploadMiBps, 1);
    figures['raw.downloadMiBps'] = round(raw.downloadMiBps, 1);
    const rawRows: Array<Record<string, string | number>> = [
      {
        path: 'raw libp2p stream upload (MiB/s)',
        value: raw.uploadMiBps,
        runs: raw.uploads.map((v) => v.toFixed(0)).join(' '),
      },
      {
        path: 'raw libp2p stream download (MiB/s)',
        value: raw.downloadMiBps,
        runs: raw.downloads.map((v) => v.toFixed(0)).join(' '),
      },
    ];
    if (raw.direct !== undefined) {
      figures['direct.writeMiBps'] = round(raw.direct.writeMiBps, 1);
      figures['direct.readMiBps'] = round(raw.direct.readMiBps, 1);
      rawRows.push(
        {
          path: `cell client, no FUSE: write in 128 KiB, fsync (MiB/s, ${raw.direct.mib} MiB)`,
          value: raw.direct.writeMiBps,
          runs: '',
        },
        {
          path: 'cell client, no FUSE: cold read in 4 MiB pieces (MiB/s)',
          value: raw.direct.readMiBps,
          runs: '',
        },
        {
          path: `cell client, no FUSE: getattr + create + close (/s, ${directFiles})`,
          value: raw.direct.createsPerSecond,
          runs: '',
        },
        { path: 'cell client, no FUSE: getattr of those (/s)', value: raw.direct.statsPerSecond, runs: '' },
        { path: 'one metadata read, round trip (ms)', value: raw.direct.metadataReadMs, runs: '' },
      );
      figures['direct.createsPerSecond'] = round(raw.direct.createsPerSecond, 1);
      figures['direct.statsPerSecond'] = round(raw.direct.statsPerSecond, 1);
      figures['direct.metadataReadMs'] = round(raw.direct.metadataReadMs, 3);
    }
    printTable(
      `client node in the bench process <-> storage server 1 (${Math.min(options.sizeBytes, probeBytesMax) / mebibyte} MiB per probe; ` +
        "before and after the mount's data measurements; the mounting child is another such client on the same loopback)",
      rawRows,
    );
  }
  const { zhsm, passthrough: through } = columns;
  const values: Record<string, number | undefined> = {
    zhsmWriteOverRawUpload: zhsm && raw && zhsm.writeSyncedMiBps / raw.uploadMiBps,
    zhsmReadOverRawDownload: zhsm && raw && zhsm.readMiBps / raw.downloadMiBps,
    zhsmRereadOverPassthrough: zhsm && through && zhsm.rereadMiBps / through.rereadMiBps,
    zhsmCreatesOverPassthrough: zhsm && through && zhsm.createsPerSecond / through.createsPerSecond,
    zhsmCachedStatOverPassthrough:
      zhsm && through && zhsm.cachedStatsPerSecond / through.cachedStatsPerSecond,
  };
  const targetRows: Array<Record<string, string | number>> = [];
  for (const [name, what, minimum] of targets) {
    const value = values[name];
    if (value === undefined) continue;
    ratios[name] = round(value, 3);
    targetRows.push({
      ratio: name,
      what,
      value,
      target: `>= ${minimum}`,
      met: value >= minimum ? 'yes' : 'NO',
    });
  }
  if (targetRows.length > 0) printTable('targets (issue #5)', targetRows);
  return { figures, ratios };
}
if (import.meta.main && process.argv[2] === '--passthrough') {
  const [source, mountpoint] = process.argv.slice(3);
  if (source === undefined || mountpoint === undefined) throw new Error('--passthrough SOURCE MOUNTPOINT');
  await servePassthrough(source, mountpoint);
}
