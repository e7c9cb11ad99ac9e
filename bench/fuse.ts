/**
 * FUSE baseline: a minimal fuse-native passthrough of a local directory (in a child process, with
 * the mount options from the stack notes) against the local disk itself.
 *
 *   npm run bench -- fuse [--size-mib 1024] [--files 10000]
 *
 * Every measurement is a function of a directory (`measureDirectory`), so the zhsm mount becomes a
 * third column by passing its mountpoint. Per target: sequential 1 MiB writes of one file (timed
 * until the last write returns, and until the fsync after it returns), a cold sequential read (the file's pages dropped with fadvise through
 * `dd iflag=nocache`, on the mount and on the backing file), a re-read from the page cache, random
 * 4 KiB reads (cached), then creating N empty files, stat of all of them (first pass) and again
 * (second pass, attribute cache warm).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
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
import { errnoOf } from '../node/common/errors.ts';
import { median, printTable, round } from './_table.ts';

const mebibyte = 1024 * 1024;
const randomReadBytes = 4096;
const randomReadsPerRound = 5000;
const rounds = 3;

export interface DirectoryFigures {
  writeMiBps: number;
  writeSyncedMiBps: number;
  readMiBps: number;
  rereadMiBps: number;
  randomReadsPerSecond: number;
  createsPerSecond: number;
  statsPerSecond: number;
  cachedStatsPerSecond: number;
}

/** Drops one file's clean pages from the page cache (posix_fadvise DONTNEED via GNU dd). */
function dropCache(path: string): void {
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
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

/**
 * Runs every measurement in `directory` (a local directory or any mountpoint). `backingDirectory`
 * is where the same files live underneath a passthrough, so their cache can be dropped too.
 */
export async function measureDirectory(
  directory: string,
  options: { sizeBytes: number; files: number; backingDirectory?: string },
): Promise<DirectoryFigures> {
  // Start each target with no dirty pages left over from the one before.
  execFileSync('sync');
  const file = join(directory, 'sequential.bin');
  const { written: writeMiBps, synced: writeSyncedMiBps } = sequentialWrite(file, options.sizeBytes);
  dropCache(file);
  if (options.backingDirectory !== undefined) dropCache(join(options.backingDirectory, 'sequential.bin'));
  const readMiBps = sequentialRead(file);
  const rereadMiBps = sequentialRead(file);
  const randomReadsPerSecond = randomReads(file, options.sizeBytes);
  fs.unlinkSync(file);

  const manyDirectory = join(directory, 'many');
  fs.mkdirSync(manyDirectory);
  const names = Array.from({ length: options.files }, (_, i) => join(manyDirectory, `f${i}`));
  let start = performance.now();
  for (const name of names) fs.closeSync(fs.openSync(name, 'w'));
  const createsPerSecond = options.files / ((performance.now() - start) / 1000);
  start = performance.now();
  for (const name of names) fs.statSync(name);
  const statsPerSecond = options.files / ((performance.now() - start) / 1000);
  start = performance.now();
  for (const name of names) fs.statSync(name);
  const cachedStatsPerSecond = options.files / ((performance.now() - start) / 1000);
  await fsp.rm(manyDirectory, { recursive: true });
  return {
    writeMiBps,
    writeSyncedMiBps,
    readMiBps,
    rereadMiBps,
    randomReadsPerSecond,
    createsPerSecond,
    statsPerSecond,
    cachedStatsPerSecond,
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

async function startPassthrough(source: string, mountpoint: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), '--passthrough', source, mountpoint],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`passthrough exited (${code}) before it was ready`)));
  });
  return child;
}

async function stopPassthrough(child: ChildProcess, mountpoint: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  const mounted = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === mountpoint);
  if (mounted) execFileSync('umount', ['-l', mountpoint]);
}

function argument(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(args[index + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} needs a positive integer`);
  return value;
}

export async function run(args: string[] = []): Promise<{
  figures: Record<string, number>;
  ratios: Record<string, number>;
}> {
  const sizeMiB = argument(args, '--size-mib', 1024);
  const files = argument(args, '--files', 10_000);
  const options = { sizeBytes: sizeMiB * mebibyte, files };
  const scratch = fs.mkdtempSync(join(tmpdir(), 'zhsm-bench-fuse-'));
  const disk = join(scratch, 'disk');
  const backing = join(scratch, 'backing');
  const mountpoint = join(scratch, 'mnt');
  for (const directory of [disk, backing, mountpoint]) fs.mkdirSync(directory);
  let child: ChildProcess | undefined;
  const columns: Record<string, DirectoryFigures> = {};
  try {
    console.log(`fuse bench: ${sizeMiB} MiB file, ${files} files, in ${scratch}`);
    columns.disk = await measureDirectory(disk, options);
    child = await startPassthrough(backing, mountpoint);
    columns.passthrough = await measureDirectory(mountpoint, { ...options, backingDirectory: backing });
  } finally {
    if (child !== undefined) await stopPassthrough(child, mountpoint);
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
    ['cachedStatsPerSecond', 'stat, second pass (/s)'],
  ];
  const figures: Record<string, number> = {};
  const ratios: Record<string, number> = {};
  const rows = metrics.map(([key, label]) => {
    const row: Record<string, string | number> = { measure: label };
    for (const [column, values] of Object.entries(columns)) {
      row[column] = values[key];
      figures[`${column}.${key}`] = round(values[key], 1);
    }
    const ratio = columns.passthrough![key] / columns.disk![key];
    row['passthrough/disk'] = ratio;
    ratios[`passthroughToDisk.${key}`] = round(ratio, 3);
    return row;
  });
  printTable('FUSE baseline: fuse-native passthrough vs local disk', rows);
  return { figures, ratios };
}

if (import.meta.main && process.argv[2] === '--passthrough') {
  const [source, mountpoint] = process.argv.slice(3);
  if (source === undefined || mountpoint === undefined) throw new Error('--passthrough SOURCE MOUNTPOINT');
  await servePassthrough(source, mountpoint);
}
