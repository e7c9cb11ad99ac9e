/**
 * The cell client: the FsClient (node/client/api.ts) over a CellApi. Metadata changes are
 * commands through the primary; file data moves between this client and storage servers as
 * immutable chunk objects (node/client/layout.ts), each stored on `replicas` backends of
 * different servers (most free space first), then committed to the metadata in one command.
 *
 * Open files hold an open token (renewed in the background, released on close). Writes are
 * buffered per handle in whole chunks and made visible by flush()/fsync()/close() (close-to-open
 * coherence) or when the buffer exceeds `writeBufferBytesMax`.
 *
 * Concurrent writers: a commit names the inode version it was based on; if another client
 * committed meanwhile, this client re-reads the inode and puts its chunks over the newer list
 * (chunk-granular last-writer-wins, no lost chunk of either writer outside the overlap) and
 * retries. Appenders write at the size they see at each write.
 */
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import {
  ClosedError,
  type ErrorCode,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  ZhsmError,
} from '../common/errors.ts';
import { CACHE_TAG, type FileFacts, resolve } from '../hsm/chains.ts';
import { backendFacts } from '../hsm/mover.ts';
import { powerWakeApiOf } from '../hsm/power-api.ts';
import {
  chooseWakeTarget,
  isAwake,
  WAKE_ASK_AGAIN_MS,
  WAKE_MARGIN_MS,
  WAKE_POLL_MS,
  WAKE_WAIT_MS_DEFAULT,
} from '../hsm/power-policy.ts';
import {
  type Chunk,
  type Command,
  type Inode,
  type Attributes as InodeAttributes,
  NO_OPERATION_MESSAGE,
  type NodeType,
  type Result,
  type StoredChains,
} from '../metadata/records.ts';
import { NAME_BYTES_MAX } from '../metadata/state-machine.ts';
import { checkReadTarget } from '../storage/client.ts';
import { contentHashAlgorithmOf, contentHashOf } from '../store/content-hash.ts';
import {
  type Attributes,
  type Caller,
  type FileHandle,
  type FileType,
  type FsClient,
  type FsStatistics,
  fileTypeBits,
  type OpenOptions,
} from './api.ts';
import { ChunkBufferPool } from './buffer-pool.ts';
import type { CellApi } from './cell-api.ts';
import {
  applyChunkWrites,
  CHUNK_BYTES_DEFAULT,
  mergeChunk,
  planRead,
  planWrite,
  type ReadPiece,
} from './layout.ts';

export interface CellClientOptions {
  /** Copies of every chunk, on backends of different servers where possible (default 2). */
  readonly replicas?: number;
  readonly chunkBytes?: number;
  /** Buffered bytes per open file before an automatic flush (default 64 MiB). */
  readonly writeBufferBytesMax?: number;
  /** Lifetime of an open token; renewed at a third of it (default 60 s). */
  readonly tokenLifetimeMs?: number;
  /**
   * How long a directory's path -> inode id is remembered for creating, removing and renaming in
   * it (default 0: resolved every time). A mount sets its entry timeout: the kernel's own dentry
   * cache already lets a path name a directory renamed elsewhere that long. Renames and rmdirs
   * through this client forget every remembered path at once.
   */
  readonly directoryCacheMs?: number;
  /**
   * How long a closed file's token release may wait to go to the primary with the next create
   * (one log write for both; default 0: at once). close() still resolves only once the token is
   * released. A mount sets a few ms: the kernel's release of one file and the create of the next
   * then cost one round trip and one log write.
   */
  readonly releaseDelayMs?: number;
}

/** The extended attribute holding file capabilities (setcap). */
const CAPABILITY_XATTR = 'security.capability';
/** A handle's inode, as the primary just answered it, serves attributes this long (ms). */
const HANDLE_FRESH_MS = 100;
/** Directory paths remembered per client (directoryCacheMs). */
const directoryCacheEntriesMax = 4096;
/** Chunk locations remembered per client. */
const locationCacheEntriesMax = 100_000;
/** Chunks of one file stored at once (each on every replica backend in parallel). */
const CHUNK_WRITES_IN_FLIGHT = 6;
/** Attempts to commit a write over concurrent writers before giving up with STALE. */
const COMMIT_ATTEMPTS_MAX = 8;
/** After the cell turned WriteChunks down, it is tried again this much later (an upgrade may have ended). */
const CHUNK_MERGES_RETRY_MS = 60_000;
/** Attempts to store a commit's chunks, each on a new placement avoiding backends that failed. */
const UPLOAD_ATTEMPTS_MAX = 3;
/** A backend that failed a write is left out of new placements for this long. */
const BACKEND_AVOID_MS = 30_000;
const fromHexId = (text: string) => new Uint8Array(Buffer.from(text, 'hex'));
/** Reads look at the servers' power states at most this often. */
const POWER_VIEW_MS = 1_000;
/** Placement reads the chains at most this often. */
const CHAINS_CACHE_MS = 5_000;
/** Write failures that say the backend (or its server) is unusable, not the request. */
const BACKEND_FAILURES = new Set<ErrorCode>(['IO_ERROR', 'UNAVAILABLE', 'CLOSED', 'TIMEOUT', 'BACKEND_FULL']);

/** A copy that answered with damaged or missing bytes (not an unreachable server). */
function isBadCopy(error: unknown): boolean {
  return (
    error instanceof ZhsmError &&
    (error.code === 'CORRUPT_OBJECT' || error.code === 'HASH_MISMATCH' || error.code === 'NOT_FOUND')
  );
}

function isBackendFailure(error: unknown): boolean {
  return error instanceof ZhsmError && BACKEND_FAILURES.has(error.code);
}

const fileTypeOf: Record<NodeType, FileType> = {
  NODE_TYPE_UNSPECIFIED: 'file',
  FILE: 'file',
  DIRECTORY: 'directory',
  SYMLINK: 'symlink',
  CHAR_DEVICE: 'charDevice',
  BLOCK_DEVICE: 'blockDevice',
  FIFO: 'fifo',
  SOCKET: 'socket',
};

function nodeTypeOfMode(mode: number): NodeType {
  switch (mode & 0o170000) {
    case 0o020000:
      return 'CHAR_DEVICE';
    case 0o060000:
      return 'BLOCK_DEVICE';
    case 0o010000:
      return 'FIFO';
    case 0o140000:
      return 'SOCKET';
    case 0o040000:
      return 'DIRECTORY';
    default:
      return 'FILE';
  }
}

/** Turn a failed Result into the typed error the FUSE boundary maps to errno. */
export function resultError(result: Result, context: Record<string, unknown> = {}): ZhsmError {
  // Result codes other than OK are ErrorCodes of the same name.
  const code: ErrorCode = result.code === 'OK' ? 'IO_ERROR' : (result.code as ErrorCode);
  return new ZhsmError(code, result.message || result.code, context);
}

function check(result: Result, context: Record<string, unknown> = {}): Result {
  if (result.code !== 'OK') throw resultError(result, context);
  return result;
}

const newId = (): Uint8Array => new Uint8Array(randomBytes(16));
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

function splitPath(path: string): string[] {
  if (!path.startsWith('/')) throw new InvalidArgumentError(`not an absolute path: ${path}`);
  const parts = path.split('/').filter((part) => part.length > 0 && part !== '.');
  for (const part of parts) {
    if (part === '..') throw new InvalidArgumentError('.. in a path');
    if (Buffer.byteLength(part) > NAME_BYTES_MAX)
      throw new ZhsmError('NAME_TOO_LONG', `name longer than ${NAME_BYTES_MAX} bytes`);
  }
  return parts;
}

/** An option in ms: absent is 0; negative or not finite is refused. */
function nonNegativeMs(name: string, value: number | undefined): number {
  const ms = value ?? 0;
  if (!Number.isFinite(ms) || ms < 0) throw new InvalidArgumentError(`${name} must be >= 0, not ${ms}`);
  return ms;
}

/** The key of a path (its names from splitPath) in the remembered-directory caches. */
const pathKey = (names: readonly string[]) => `/${names.join('/')}`;

/** A token release waiting to go with the next create (releaseDelayMs). */
interface PendingRelease {
  readonly id: Uint8Array;
  readonly done: (result: Result | undefined) => void;
}

export class CellClient implements FsClient {
  readonly #cell: CellApi;
  readonly #replicas: number;
  readonly #chunkBytes: number;
  readonly #writeBufferBytesMax: number;
  readonly #chunkBuffers: ChunkBufferPool;
  readonly #tokenLifetimeMs: number;
  readonly #handles = new Set<CellFileHandle>();
  /** Chunk id -> backends with a current copy (chunks are immutable; refetched after a failure). */
  readonly #locationCache = new LRUCache<string, Uint8Array[]>({ max: locationCacheEntriesMax });
  /** Backend (hex) -> until when new placements avoid it (a write to it failed). */
  readonly #avoided = new Map<string, number>();
  #chainsCache: { chains: StoredChains | undefined; atMs: number } | undefined;
  #powerView: { states: Map<string, 'online' | 'offline' | 'asleep'>; atMs: number } | undefined;
  /** Bad copies reported lately (object:backend). */
  readonly #reported = new LRUCache<string, true>({ max: 10_000 });
  #rootId: Uint8Array | undefined;
  readonly #releaseDelayMs: number;
  /** Token releases waiting for the next create or the release timer (releaseDelayMs). */
  #releases: PendingRelease[] = [];
  #releaseTimer: ReturnType<typeof setTimeout> | undefined;
  /** Sets and removals of security.capability through this client (see getxattr). */
  #capabilityChanges = 0;
  /** closeAll() was called: no more deferred releases. */
  #releaseAtOnce = false;
  /** Path walks go to the primary in one request (until a controller turns that down). */
  #walkInOneTrip = true;
  /** Directory path -> inode id (directoryCacheMs). */
  readonly #directories: LRUCache<string, Uint8Array> | undefined;
  /**
   * Directory path -> the directory as this client's last change in it left it (the primary's
   * answer to a create, link or unlink; directoryCacheMs): the kernel asks a directory's
   * attributes again after every change in it.
   */
  readonly #changedDirectories: LRUCache<string, Inode> | undefined;

  constructor(cell: CellApi, options: CellClientOptions = {}) {
    const directoryCacheMs = nonNegativeMs('directoryCacheMs', options.directoryCacheMs);
    if (directoryCacheMs > 0) {
      this.#directories = new LRUCache({ max: directoryCacheEntriesMax, ttl: directoryCacheMs });
      this.#changedDirectories = new LRUCache({ max: directoryCacheEntriesMax, ttl: directoryCacheMs });
    }
    this.#cell = cell;
    this.#replicas = options.replicas ?? 2;
    this.#chunkBytes = options.chunkBytes ?? CHUNK_BYTES_DEFAULT;
    this.#writeBufferBytesMax = options.writeBufferBytesMax ?? 64 * 1024 * 1024;
    // Enough for a full write buffer's chunks, committed at once, to come back.
    this.#chunkBuffers = new ChunkBufferPool(
      this.#chunkBytes,
      Math.ceil(this.#writeBufferBytesMax / this.#chunkBytes) + CHUNK_WRITES_IN_FLIGHT,
    );
    this.#tokenLifetimeMs = options.tokenLifetimeMs ?? 60_000;
    this.#releaseDelayMs = nonNegativeMs('releaseDelayMs', options.releaseDelayMs);
  }

  get cell(): CellApi {
    return this.#cell;
  }

  get chunkBytes(): number {
    return this.#chunkBytes;
  }

  /**
   * Commits send a write's new chunks only (WriteChunks). When the cell turns the command down as
   * unknown (a controller of an older version, or a cell whose metadata level is not raised yet:
   * records.ts METADATA_LEVEL), whole rebased lists (CommitWrite) for the next minute.
   */
  get chunkMerges(): boolean {
    return this.#chunkMergesRetryAtMs === 0 || this.cell.nowMs() >= this.#chunkMergesRetryAtMs;
  }

  /** The cell turned WriteChunks down: whole lists until this time (0: not turned down). */
  #chunkMergesRetryAtMs = 0;

  chunkMergesRefused(): void {
    this.#chunkMergesRetryAtMs = this.cell.nowMs() + CHUNK_MERGES_RETRY_MS;
  }

  /**
   * Delete the objects a command released (the metadata no longer references them). Best effort:
   * what fails stays as garbage for fsck.
   */
  async deleteReleased(objects: readonly Uint8Array[]): Promise<void> {
    if (objects.length > 0) await this.#cell.deleteObjects(objects).catch(() => {});
  }

  /** Write buffers of whole chunks, reused from one commit to the next (ChunkBufferPool). */
  get chunkBuffers(): ChunkBufferPool {
    return this.#chunkBuffers;
  }

  /** How many times security.capability was set or removed through this client. */
  get capabilityChanges(): number {
    return this.#capabilityChanges;
  }

  get tokenLifetimeMs(): number {
    return this.#tokenLifetimeMs;
  }

  get writeBufferBytesMax(): number {
    return this.#writeBufferBytesMax;
  }

  async #root(): Promise<Uint8Array> {
    this.#rootId ??= await this.#cell.metadata.root();
    return this.#rootId;
  }

  /** Resolve a path to its inode (symlinks are not followed: the kernel does that). */
  async resolve(path: string): Promise<Inode> {
    const parts = splitPath(path);
    const metadata = this.#cell.metadata;
    if (metadata.resolve !== undefined && this.#walkInOneTrip) {
      try {
        const { inode, depth } = await metadata.resolve(await this.#root(), parts);
        if (inode === undefined) throw new NotFoundError('the cell has no root');
        if (depth === parts.length) return inode;
        if (inode.type !== 'DIRECTORY')
          throw new ZhsmError('NOT_A_DIRECTORY', `${path}: not a directory`, { path });
        throw new NotFoundError(`${path}: no such file or directory`, { path });
      } catch (error) {
        // A controller of an earlier version does not know the path walk: one lookup per name.
        if (!(error instanceof ZhsmError) || error.code !== 'INVALID_ARGUMENT') throw error;
        this.#walkInOneTrip = false;
      }
    }
    let inode = await metadata.inode(await this.#root());
    if (inode === undefined) throw new NotFoundError('the cell has no root');
    for (const part of parts) {
      if (inode.type !== 'DIRECTORY')
        throw new ZhsmError('NOT_A_DIRECTORY', `${path}: not a directory`, { path });
      const child: Inode | undefined = await this.#cell.metadata.lookup(inode.id, part);
      if (child === undefined) throw new NotFoundError(`${path}: no such file or directory`, { path });
      inode = child;
    }
    return inode;
  }

  /** The parent directory's inode and the last name of a path. */
  async #parentOf(path: string): Promise<{ parent: { id: Uint8Array }; name: string; remembered: boolean }> {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw new ZhsmError('NOT_PERMITTED', 'the root has no parent');
    const parentPath = pathKey(parts);
    const known = this.#directories?.get(parentPath);
    if (known !== undefined) return { parent: { id: known }, name, remembered: true };
    const parent = await this.resolve(parentPath);
    if (parent.type !== 'DIRECTORY')
      throw new ZhsmError('NOT_A_DIRECTORY', `${path}: not a directory`, { path });
    this.#directories?.set(parentPath, parent.id);
    return { parent, name, remembered: false };
  }

  /**
   * Run a change in the parent directory of `path`. When a remembered directory id found nothing
   * (another client removed the directory, maybe made a new one at its path meanwhile), the paths
   * are forgotten and the change runs once more on a fresh walk.
   */
  async #inParent<T>(
    path: string,
    change: (parent: Uint8Array, name: string) => Promise<T>,
    notFound: (answer: T) => boolean,
  ): Promise<T> {
    const first = await this.#parentOf(path);
    const answer = await change(first.parent.id, first.name);
    if (!first.remembered || !notFound(answer)) return answer;
    this.#forgetDirectories();
    const again = await this.#parentOf(path);
    return change(again.parent.id, again.name);
  }

  async attributesOf(inode: Inode): Promise<Attributes> {
    const root = await this.#root();
    const type = fileTypeOf[inode.type];
    const storedBytes = inode.chunks.reduce((sum, chunk) => sum + chunk.size, 0) + inode.inlineData.length;
    return {
      ino:
        Buffer.compare(inode.id, root) === 0
          ? 1
          : Number(Buffer.from(inode.id).readBigUInt64BE(0) & 0xffffffffffffn) + 2,
      type,
      mode: fileTypeBits[type] | (inode.mode & 0o7777),
      uid: inode.uid,
      gid: inode.gid,
      size: inode.size,
      blocks: Math.ceil(storedBytes / 512),
      nlink: inode.nlink,
      rdev: inode.rdev,
      atimeMs: inode.atimeMs,
      mtimeMs: inode.mtimeMs,
      ctimeMs: inode.ctimeMs,
    };
  }

  async getattr(path: string): Promise<Attributes> {
    const changed = this.#changedDirectories?.get(pathKey(splitPath(path)));
    return this.attributesOf(changed ?? (await this.resolve(path)));
  }

  /** A create, link or unlink in the directory of `path` answered with the directory. */
  #noteDirectory(path: string, result: Result): void {
    if (result.parent == null || this.#directories === undefined) return;
    const parentPath = pathKey(splitPath(path).slice(0, -1));
    this.#directories.set(parentPath, result.parent.id);
    // Answers to concurrent changes may arrive out of order: keep the later change.
    const known = this.#changedDirectories?.get(parentPath);
    if (
      known === undefined ||
      Buffer.compare(known.id, result.parent.id) !== 0 ||
      known.ctimeMs <= result.parent.ctimeMs
    )
      this.#changedDirectories?.set(parentPath, result.parent);
  }

  /** Every remembered directory path (a rename or rmdir may have changed what they name). */
  #forgetDirectories(): void {
    this.#directories?.clear();
    this.#changedDirectories?.clear();
  }

  async readdir(path: string): Promise<string[]> {
    const directory = await this.resolve(path);
    if (directory.type !== 'DIRECTORY')
      throw new ZhsmError('NOT_A_DIRECTORY', `${path}: not a directory`, { path });
    const names: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.#cell.metadata.readdir(directory.id, { after });
      if (page.length === 0) return names;
      for (const entry of page) names.push(entry.name);
      after = page.at(-1)!.name;
    }
  }

  async #createNode(
    path: string,
    type: NodeType,
    mode: number,
    caller: Caller,
    extra: { rdev?: number; symlinkTarget?: Uint8Array } = {},
  ): Promise<Inode> {
    const answer = await this.#inParent(
      path,
      (parent, name) =>
        this.#cell.propose({
          create: { parent, name, id: newId(), type, mode, uid: caller.uid, gid: caller.gid, ...extra },
        }),
      (result) => result.code === 'NOT_FOUND',
    );
    const result = check(answer, { path });
    this.#noteDirectory(path, result);
    return result.inode!;
  }

  async mkdir(path: string, mode: number, caller: Caller): Promise<Attributes> {
    return this.attributesOf(await this.#createNode(path, 'DIRECTORY', mode, caller));
  }

  async mknod(path: string, mode: number, rdev: number, caller: Caller): Promise<Attributes> {
    return this.attributesOf(await this.#createNode(path, nodeTypeOfMode(mode), mode, caller, { rdev }));
  }

  async create(
    path: string,
    mode: number,
    caller: Caller,
    options: OpenOptions & { exclusive?: boolean },
  ): Promise<FileHandle> {
    try {
      if (this.#cell.proposeBatch === undefined) {
        const inode = await this.#createNode(path, 'FILE', mode, caller);
        return await this.#openInode(path, inode, { ...options, truncate: false });
      }
      // The create and the open token in one round trip (and one log write): the token names the
      // new inode's id, chosen here. A failed create fails the open too (no such inode).
      const proposeBatch = this.#cell.proposeBatch.bind(this.#cell);
      const { answers, tokenId } = await this.#inParent(
        path,
        async (parent, name) => {
          const id = newId();
          const tokenId = newId();
          const releases = this.#takeReleases();
          let answers: Result[];
          try {
            answers = await proposeBatch([
              ...releases.map(({ id }) => ({ release: { id } })),
              { create: { parent, name, id, type: 'FILE', mode, uid: caller.uid, gid: caller.gid } },
              this.#openCommand(id, tokenId, options.mode, false),
            ]);
          } catch (error) {
            // The releases go on their own then (the primary may have applied them: a release
            // of a released token is a harmless NOT_FOUND).
            void this.#proposeReleases(releases);
            throw error;
          }
          for (const [i, { done }] of releases.entries()) done(answers[i]);
          return { answers: answers.slice(releases.length), tokenId };
        },
        ({ answers: [created] }) => created?.code === 'NOT_FOUND',
      );
      const [created, opened] = answers;
      if (created === undefined || opened === undefined)
        throw new ZhsmError('DECODE_ERROR', 'the primary answered a create without its results');
      check(created, { path });
      this.#noteDirectory(path, created);
      return this.#handleOf(path, check(opened, { path }), created.inode!, tokenId, options.mode);
    } catch (error) {
      if (error instanceof ZhsmError && error.code === 'ALREADY_EXISTS' && !options.exclusive)
        return this.open(path, options);
      throw error;
    }
  }

  async open(path: string, options: OpenOptions): Promise<FileHandle> {
    const inode = await this.resolve(path);
    if (inode.type === 'DIRECTORY' && options.mode !== 'read')
      throw new ZhsmError('IS_A_DIRECTORY', `${path} is a directory`);
    return this.#openInode(path, inode, options);
  }

  async #openInode(path: string, inode: Inode, options: OpenOptions): Promise<FileHandle> {
    const tokenId = newId();
    const truncate = options.truncate === true && options.mode !== 'read';
    const result = check(
      await this.#cell.propose(this.#openCommand(inode.id, tokenId, options.mode, truncate)),
      {
        path,
      },
    );
    return this.#handleOf(path, result, inode, tokenId, options.mode);
  }

  #openCommand(
    object: Uint8Array,
    tokenId: Uint8Array,
    mode: OpenOptions['mode'],
    truncate: boolean,
  ): Omit<Command, 'timeMs'> {
    const modes = { read: 'READ', write: 'WRITE', readWrite: 'READ_WRITE', append: 'APPEND' } as const;
    return {
      open: {
        token: {
          id: tokenId,
          object,
          mode: modes[mode],
          holder: this.#cell.clientId,
          expiresMs: this.#cell.nowMs() + this.#tokenLifetimeMs,
          openedMs: 0,
        },
        truncate,
      },
    };
  }

  #handleOf(
    path: string,
    opened: Result,
    inode: Inode,
    tokenId: Uint8Array,
    mode: OpenOptions['mode'],
  ): FileHandle {
    void this.deleteReleased(opened.releasedObjects);
    const handle = new CellFileHandle(this, path, opened.inode ?? inode, tokenId, mode);
    this.#handles.add(handle);
    return handle;
  }

  forget(handle: CellFileHandle): void {
    this.#handles.delete(handle);
  }

  async #remove(path: string, directory: boolean): Promise<void> {
    let answer: Result;
    try {
      answer = await this.#inParent(
        path,
        (parent, name) => {
          if (directory) this.#forgetDirectories();
          return this.#cell.propose({ unlink: { parent, name, directory } });
        },
        (result) => result.code === 'NOT_FOUND',
      );
    } finally {
      if (directory) this.#forgetDirectories();
    }
    const result = check(answer, { path });
    if (!directory) this.#noteDirectory(path, result);
    await this.deleteReleased(result.releasedObjects);
  }

  unlink(path: string): Promise<void> {
    return this.#remove(path, false);
  }

  rmdir(path: string): Promise<void> {
    return this.#remove(path, true);
  }

  async rename(from: string, to: string, options: { noReplace?: boolean } = {}): Promise<void> {
    let answer: Result | undefined;
    try {
      // Twice at most: again on fresh walks when a remembered directory id found nothing.
      for (let attempt = 1; answer === undefined; attempt++) {
        const source = await this.#parentOf(from);
        const target = await this.#parentOf(to);
        this.#forgetDirectories();
        const result = await this.#cell.propose({
          rename: {
            parent: source.parent.id,
            name: source.name,
            newParent: target.parent.id,
            newName: target.name,
            noReplace: options.noReplace === true,
          },
        });
        const remembered = source.remembered || target.remembered;
        if (result.code !== 'NOT_FOUND' || !remembered || attempt > 1) answer = result;
      }
    } finally {
      // Again once done: a walk that raced the rename may have remembered an old path.
      this.#forgetDirectories();
    }
    const result = check(answer, { path: from });
    await this.deleteReleased(result.releasedObjects);
  }

  async symlink(target: string, path: string, caller: Caller): Promise<Attributes> {
    if (target.length === 0) throw new InvalidArgumentError('empty symlink target');
    return this.attributesOf(
      await this.#createNode(path, 'SYMLINK', 0o777, caller, { symlinkTarget: Buffer.from(target) }),
    );
  }

  async readlink(path: string): Promise<string> {
    const inode = await this.resolve(path);
    if (inode.type !== 'SYMLINK') throw new InvalidArgumentError(`${path} is not a symlink`);
    return Buffer.from(inode.symlinkTarget).toString();
  }

  async link(existing: string, path: string): Promise<Attributes> {
    const inode = await this.resolve(existing);
    const answer = await this.#inParent(
      path,
      (parent, name) => this.#cell.propose({ link: { id: inode.id, parent, name } }),
      (result) => result.code === 'NOT_FOUND',
    );
    const result = check(answer, { path });
    this.#noteDirectory(path, result);
    return this.attributesOf(result.inode!);
  }

  async setAttributes(
    id: Uint8Array,
    attributes: InodeAttributes,
    path = '',
    from?: CellFileHandle,
  ): Promise<Inode> {
    // Writes buffered in this client's open handles of the file come first: an explicit mtime
    // (tar and cp -p set it through the open fd before closing) must not be overwritten by a
    // commit that happens later.
    await Promise.all(
      [...this.#handles]
        .filter((handle) => handle !== from && handle.isOf(id))
        .map((handle) => handle.flush()),
    );
    const result = check(await this.#cell.propose({ setAttributes: { id, attributes } }), { path });
    if (this.#changedDirectories !== undefined && result.inode?.type === 'DIRECTORY')
      for (const [key, inode] of this.#changedDirectories.entries())
        if (Buffer.compare(inode.id, id) === 0) this.#changedDirectories.delete(key);
    await this.deleteReleased(result.releasedObjects);
    return result.inode!;
  }

  async chmod(path: string, mode: number): Promise<void> {
    await this.setAttributes((await this.resolve(path)).id, { mode: mode & 0o7777 }, path);
  }

  async chown(path: string, uid: number, gid: number): Promise<void> {
    const attributes: InodeAttributes = {};
    if (uid !== -1 && uid !== 0xffffffff) attributes.uid = uid;
    if (gid !== -1 && gid !== 0xffffffff) attributes.gid = gid;
    await this.setAttributes((await this.resolve(path)).id, attributes, path);
  }

  async utimens(path: string, atimeMs: number | undefined, mtimeMs: number | undefined): Promise<void> {
    const attributes: InodeAttributes = {};
    if (atimeMs !== undefined) attributes.atimeMs = Math.round(atimeMs);
    if (mtimeMs !== undefined) attributes.mtimeMs = Math.round(mtimeMs);
    await this.setAttributes((await this.resolve(path)).id, attributes, path);
  }

  async truncate(path: string, size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new InvalidArgumentError(`invalid size ${size}`);
    const inode = await this.resolve(path);
    if (inode.type === 'DIRECTORY') throw new ZhsmError('IS_A_DIRECTORY', `${path} is a directory`);
    await this.setAttributes(inode.id, { size }, path);
  }

  async statfs(): Promise<FsStatistics> {
    const backends = await this.#cell.metadata.backends();
    const total = backends.reduce((sum, backend) => sum + backend.capacityBytes, 0);
    const free = backends.reduce((sum, backend) => sum + backend.freeBytes, 0);
    // Every byte is stored `replicas` times: report what users can store.
    const replicas = Math.max(1, Math.min(this.#replicas, backends.length));
    return {
      totalBytes: Math.floor(total / replicas),
      freeBytes: Math.floor(free / replicas),
      availableBytes: Math.floor(free / replicas),
      files: 1 << 30,
      filesFree: 1 << 30,
      nameBytesMax: NAME_BYTES_MAX,
      blockBytes: 4096,
    };
  }

  async getxattr(path: string, name: string): Promise<Uint8Array> {
    // The kernel asks for security.capability before every write(2) (to drop file capabilities
    // on a write). For a file open here whose inode had none, and with no capability changed
    // through this client since, the answer is known: no round trip per write.
    if (name === CAPABILITY_XATTR) {
      for (const handle of this.#handles)
        if (handle.path === path && handle.lacksXattr(name, this.#capabilityChanges))
          throw new ZhsmError('NO_DATA', `no attribute ${name}`, { path });
    }
    const inode = await this.resolve(path);
    const xattr = inode.xattrs.find((x) => x.name === name);
    if (xattr === undefined) throw new ZhsmError('NO_DATA', `no attribute ${name}`, { path });
    return xattr.value;
  }

  async setxattr(
    path: string,
    name: string,
    value: Uint8Array,
    flags: { create?: boolean; replace?: boolean },
  ): Promise<void> {
    if (name === CAPABILITY_XATTR) this.#capabilityChanges++;
    const inode = await this.resolve(path);
    check(
      await this.#cell.propose({
        setXattr: {
          id: inode.id,
          name,
          value,
          createOnly: flags.create === true,
          replaceOnly: flags.replace === true,
        },
      }),
      { path },
    );
  }

  async listxattr(path: string): Promise<string[]> {
    return (await this.resolve(path)).xattrs.map((x) => x.name);
  }

  async removexattr(path: string, name: string): Promise<void> {
    if (name === CAPABILITY_XATTR) this.#capabilityChanges++;
    const inode = await this.resolve(path);
    check(await this.#cell.propose({ removeXattr: { id: inode.id, name } }), { path });
  }

  /** Close every open file (flushing it); for an orderly shutdown. */
  async closeAll(): Promise<void> {
    // From now on releases go at once; those already waiting go now.
    this.#releaseAtOnce = true;
    const waiting = this.#proposeReleases(this.#takeReleases());
    await Promise.allSettled([...this.#handles].map((handle) => handle.close()));
    await waiting;
  }

  /**
   * Release an open token: at once, or with the next create or after releaseDelayMs (one log
   * write for several). Resolves with the release's result (undefined: it failed; the token then
   * expires on its own).
   */
  release(tokenId: Uint8Array): Promise<Result | undefined> {
    const cell = this.#cell;
    if (this.#releaseDelayMs === 0 || this.#releaseAtOnce || cell.proposeBatch === undefined)
      return cell.propose({ release: { id: tokenId } }).catch(() => undefined);
    return new Promise((done) => {
      this.#releases.push({ id: tokenId, done });
      this.#releaseTimer ??= setTimeout(() => {
        this.#releaseTimer = undefined;
        void this.#proposeReleases(this.#takeReleases());
      }, this.#releaseDelayMs);
    });
  }

  #takeReleases(): PendingRelease[] {
    const releases = this.#releases;
    this.#releases = [];
    clearTimeout(this.#releaseTimer);
    this.#releaseTimer = undefined;
    return releases;
  }

  async #proposeReleases(releases: readonly PendingRelease[]): Promise<void> {
    if (releases.length === 0) return;
    const commands = releases.map(({ id }) => ({ release: { id } }));
    const answers = await (
      this.#cell.proposeBatch?.(commands) ??
      Promise.all(commands.map((command) => this.#cell.propose(command)))
    ).catch(() => []);
    for (const [i, { done }] of releases.entries()) done(answers[i]);
  }

  /** Leave `backend` out of new placements for a while (a write to it failed). */
  avoidBackend(backend: Uint8Array): void {
    this.#avoided.set(hex(backend), this.#cell.nowMs() + BACKEND_AVOID_MS);
  }

  /**
   * Pick backends for new chunks: different servers first, most free space first; only backends
   * of servers that are online, and of those the ones that did not fail lately unless all did
   * (fewer than `replicas` copies when fewer such backends exist).
   */
  async placement(file?: FileFacts): Promise<Uint8Array[]> {
    const [all, records, chains] = await Promise.all([
      this.#cell.metadata.backends(),
      this.#cell.metadata.servers(),
      this.#chains(),
    ]);
    const online = new Set(records.filter((server) => server.online).map((server) => hex(server.uuid)));
    const now = this.#cell.nowMs();
    for (const [backend, until] of this.#avoided) if (until <= now) this.#avoided.delete(backend);
    if (chains !== undefined && file !== undefined) {
      // The chains decide; a write goes only to awake servers (strict rows excepted) and to
      // backends that did not fail lately. The mover brings the copies where the chains want
      // them once the file is committed (with its final size).
      const facts = backendFacts(all, records);
      const exclude = new Set(this.#avoided.keys());
      // Backends that failed lately are left out, unless nothing else fits (a strict row).
      let placed = resolve(chains, file, facts, now, { awakeOnly: true, exclude });
      if (placed.targets.length === 0 && exclude.size > 0)
        placed = resolve(chains, file, facts, now, { awakeOnly: true });
      if (placed.targets.length > 0) {
        // A strict row waits for its sleeping server: wake it before the upload goes there.
        const asleep = new Set(facts.filter((fact) => !fact.awake).map((fact) => fact.uuid));
        for (const target of placed.targets)
          if (asleep.has(target.backend))
            await this.#wakeAndWait(
              target.server,
              `is a strict destination of ${file.path}`,
              `woken for a strict write of ${file.path}`,
            );
        return placed.targets.map((target) => fromHexId(target.backend));
      }
      // No destination of the chains is awake and usable: any awake backend now, moved later.
    }
    const usable = all.filter(
      (backend) =>
        backend.freeBytes > 0 && online.has(hex(backend.serverUuid)) && !backend.tags.includes(CACHE_TAG),
    );
    const healthy = usable.filter((backend) => !this.#avoided.has(hex(backend.uuid)));
    const backends = healthy.length > 0 ? healthy : usable;
    if (backends.length === 0) throw new UnavailableError('no storage backend is available');
    backends.sort((a, b) => b.freeBytes - a.freeBytes);
    const chosen: Uint8Array[] = [];
    const servers = new Set<string>();
    for (const backend of backends) {
      if (chosen.length >= this.#replicas) break;
      if (servers.has(hex(backend.serverUuid))) continue;
      servers.add(hex(backend.serverUuid));
      chosen.push(backend.uuid);
    }
    for (const backend of backends) {
      if (chosen.length >= this.#replicas) break;
      if (!chosen.some((uuid) => Buffer.compare(uuid, backend.uuid) === 0)) chosen.push(backend.uuid);
    }
    return chosen;
  }

  /**
   * Copies in the order to try them: on servers that are online first (a controller's cache
   * among them), then those the metadata calls offline; copies on servers that sleep or are
   * going down are left out (a dial to a switched-off machine costs a timeout): when only those
   * remain, the read wakes one (`#wakeForChunk`).
   */
  async #byPower(copies: Uint8Array[], refresh = false): Promise<Uint8Array[]> {
    const now = this.#cell.nowMs();
    if (refresh || this.#powerView === undefined || now - this.#powerView.atMs > POWER_VIEW_MS) {
      try {
        const [backends, servers] = await Promise.all([
          this.#cell.metadata.backends(),
          this.#cell.metadata.servers(),
        ]);
        const byServer = new Map(servers.map((server) => [hex(server.uuid), server]));
        const states = new Map<string, 'online' | 'offline' | 'asleep'>();
        for (const backend of backends) {
          const server = byServer.get(hex(backend.serverUuid));
          const power = server?.power;
          states.set(
            hex(backend.uuid),
            power === 'SLEEPING' || power === 'GOING_DOWN' ? 'asleep' : server?.online ? 'online' : 'offline',
          );
        }
        this.#powerView = { states, atMs: now };
      } catch {
        return copies; // no view: try them all, as they come
      }
    }
    const states = this.#powerView.states;
    const state = (backend: Uint8Array) => states.get(hex(backend)) ?? 'offline';
    return [
      ...copies.filter((backend) => state(backend) === 'online'),
      ...copies.filter((backend) => state(backend) === 'offline'),
    ];
  }

  /**
   * A copy answered that it is damaged or missing: tell the primary (once per copy), which marks
   * it outdated when another current copy exists, counts a skip on the file and queues it for
   * the mover to copy a good copy over it.
   */
  #reportBadCopy(inode: Uint8Array, object: Uint8Array, backend: Uint8Array, error: unknown): void {
    const key = `${hex(object)}:${hex(backend)}`;
    if (this.#reported.has(key)) return;
    this.#reported.set(key, true);
    void this.#cell
      .propose({
        reportBadCopy: {
          inode,
          object,
          backend,
          reason: `${(error as ZhsmError).code}: ${(error as Error).message}`.slice(0, 300),
        },
      })
      .catch(() => this.#reported.delete(key));
  }

  /** The cell's chains, cached for CHAINS_CACHE_MS (placement runs once per file written). */
  async #chains(): Promise<StoredChains | undefined> {
    const now = this.#cell.nowMs();
    if (this.#chainsCache !== undefined && now - this.#chainsCache.atMs < CHAINS_CACHE_MS)
      return this.#chainsCache.chains;
    const chains = (await this.#cell.metadata.chains?.()) ?? undefined;
    this.#chainsCache = { chains, atMs: now };
    return chains;
  }

  /** Backends holding a current copy of a chunk (cached: chunks are immutable). */
  async #chunkCopies(chunk: Chunk, fresh: boolean): Promise<Uint8Array[]> {
    const key = hex(chunk.id);
    const cached = fresh ? undefined : this.#locationCache.get(key);
    if (cached !== undefined) return cached;
    const copies = (await this.#cell.metadata.locations(chunk.id))
      .filter((l) => l.location.current && !l.location.outdated)
      .map((l) => l.backend);
    this.#locationCache.set(key, copies);
    return copies;
  }

  /**
   * Read a chunk's bytes [offset, offset+length) from any backend holding a current copy; backends
   * that failed lately are tried last (an unreachable server can cost a dial timeout per try).
   */
  async readChunk(
    chunk: Chunk,
    offset: number,
    length: number,
    inode?: Uint8Array,
    into?: Uint8Array,
  ): Promise<Uint8Array> {
    let lastError: unknown = new UnavailableError(`no copy of chunk ${hex(chunk.id)} is available`);
    const whole = offset === 0 && length >= chunk.size && contentHashAlgorithmOf(chunk.hash) !== undefined;
    const tried = new Set<string>();
    const readFrom = (backend: Uint8Array) =>
      this.#cell.readChunk(backend, chunk.id, offset, length, whole ? chunk.hash : undefined, into);
    for (const fresh of [false, true]) {
      // The second round looks again at the locations and the servers' power states.
      const copies = await this.#byPower(await this.#chunkCopies(chunk, fresh), fresh);
      const now = this.#cell.nowMs();
      const failed = (backend: Uint8Array) => (this.#avoided.get(hex(backend)) ?? 0) > now;
      for (const backend of [...copies.filter((b) => !failed(b)), ...copies.filter(failed)]) {
        tried.add(hex(backend));
        try {
          return await readFrom(backend);
        } catch (error) {
          if (isBackendFailure(error)) this.avoidBackend(backend);
          if (inode !== undefined && isBadCopy(error)) this.#reportBadCopy(inode, chunk.id, backend, error);
          lastError = error;
        }
      }
    }
    // Every copy tried failed. If the copies lie on servers that sleep, wake one and wait; then
    // read again: every copy after a wake, else only those left out above as asleep.
    const woke = await this.#wakeForChunk(chunk);
    for (const backend of await this.#chunkCopies(chunk, true)) {
      if (!woke && tried.has(hex(backend))) continue;
      try {
        return await readFrom(backend);
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  /**
   * Wake on demand: when no current copy of `chunk` is on an awake server, ask the primary to wake
   * the best one (most copies; ties to one already waking) and wait until it is up, polling its
   * record, for at most the cell's wake timeout (plus a margin). False when a copy is on an awake
   * server (the read failed for another reason) or the cell cannot wake servers; throws
   * UnavailableError when the server does not come up.
   */
  async #wakeForChunk(chunk: Chunk): Promise<boolean> {
    const wakeApi = powerWakeApiOf(this.#cell);
    if (wakeApi === undefined) return false;
    const copies = await this.#chunkCopies(chunk, true);
    if (copies.length === 0) return false;
    const view = async () => {
      const [servers, backends] = await Promise.all([
        this.#cell.metadata.servers(),
        this.#cell.metadata.backends(),
      ]);
      const serverOf = new Map(backends.map((b) => [hex(b.uuid), hex(b.serverUuid)]));
      return {
        servers: new Map(servers.map((s) => [hex(s.uuid), s])),
        copyServers: copies.map((b) => serverOf.get(hex(b))).filter((s): s is string => s !== undefined),
      };
    };
    const first = await view();
    if (
      first.copyServers.some((s) => {
        const record = first.servers.get(s);
        return record !== undefined && isAwake(record);
      })
    )
      return false;
    const target = chooseWakeTarget(first.copyServers, first.servers);
    if (target === undefined) return false;
    await this.#wakeAndWait(target, `holds chunk ${hex(chunk.id)}`);
    return true;
  }

  /**
   * Wake storage server `target` (uuid hex) through the primary and wait until it is awake,
   * bounded by the cell's wake timeout; UNAVAILABLE when it fails to start or does not come up.
   * `what` says why it is needed (for the error).
   */
  async #wakeAndWait(target: string, what: string, reason?: string): Promise<void> {
    const wakeApi = powerWakeApiOf(this.#cell);
    if (wakeApi === undefined)
      throw new UnavailableError(`storage server ${target} sleeps and this cell cannot wake it`);
    const view = async () => new Map((await this.#cell.metadata.servers()).map((s) => [hex(s.uuid), s]));
    const first = await view();
    const record = first.get(target);
    if (record === undefined) throw new UnavailableError(`storage server ${target} is gone from the cell`);
    if (isAwake(record)) return;
    const targetUuid = record.uuid;
    let answer = await wakeApi.wakeServer(targetUuid, reason);
    let askedAt = this.#cell.nowMs();
    const deadline = askedAt + (answer.waitMs > 0 ? answer.waitMs : WAKE_WAIT_MS_DEFAULT) + WAKE_MARGIN_MS;
    for (;;) {
      const servers = await view();
      const server = servers.get(target);
      if (server === undefined) throw new UnavailableError(`storage server ${target} is gone from the cell`);
      if (isAwake(server)) return;
      const changedSinceAnswer = (server.powerChangedMs ?? 0) > (answer.server.powerChangedMs ?? 0);
      if (
        server.power === 'FAILED_TO_START' &&
        (changedSinceAnswer || answer.server.power !== 'FAILED_TO_START')
      )
        throw new UnavailableError(
          `storage server ${server.name} ${what} and failed to start: ${server.powerReason ?? ''}`,
        );
      const now = this.#cell.nowMs();
      if (now > deadline)
        throw new UnavailableError(
          `storage server ${server.name} ${what} and did not wake up within ${Math.round((deadline - askedAt) / 1000)} s`,
        );
      // Put to sleep again meanwhile (or never woken): ask again, not too often.
      if ((server.power === 'SLEEPING' || server.power === 'ON') && now - askedAt >= WAKE_ASK_AGAIN_MS) {
        answer = await wakeApi.wakeServer(targetUuid, reason);
        askedAt = now;
      }
      await new Promise((resolve) => setTimeout(resolve, WAKE_POLL_MS));
    }
  }
}

/** A chunk written but not committed: `length` bytes in a buffer that grows by doubling. */
/** The id and hash of a chunk not stored yet (never sent anywhere: planning only). */
const noId = new Uint8Array(16);
const noHash = new Uint8Array(0);

class DirtyChunk {
  #buffer: Uint8Array;
  #length: number;
  readonly #pool: ChunkBufferPool;
  /** #buffer came from the pool (and goes back there on release). */
  #pooled: boolean;

  /**
   * A chunk of `length` bytes held in `buffer` (which it keeps: nobody else may hold it), e.g.
   * from mergeChunk; `pooled` when the buffer came from `pool`.
   */
  constructor(buffer: Uint8Array, length: number, pool: ChunkBufferPool, pooled: boolean) {
    this.#pool = pool;
    this.#buffer = buffer;
    this.#length = length;
    this.#pooled = pooled;
  }

  /** A chunk holding a copy of `initial`. */
  static copyOf(initial: Uint8Array, pool: ChunkBufferPool): DirtyChunk {
    const { buffer, pooled } = DirtyChunk.allocate(initial.length, pool);
    buffer.set(initial);
    return new DirtyChunk(buffer, initial.length, pool, pooled);
  }

  /**
   * A buffer for a chunk of `length` bytes. Small files stay small; a chunk past an eighth of its
   * size is likely being filled (a sequential writer): a whole chunk's buffer at once (from the
   * pool), not four more doublings and copies.
   */
  static allocate(length: number, pool: ChunkBufferPool): { buffer: Uint8Array; pooled: boolean } {
    const capacityMax = pool.bufferBytes;
    if (length > capacityMax / 8) return { buffer: pool.take(), pooled: true };
    let capacity = 64 * 1024;
    while (capacity < length) capacity *= 2;
    return { buffer: new Uint8Array(Math.min(capacity, capacityMax)), pooled: false };
  }

  get bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }

  /** A copy (a chunk being uploaded must not change under the upload). */
  clone(): DirtyChunk {
    return DirtyChunk.copyOf(this.bytes, this.#pool);
  }

  get length(): number {
    return this.#length;
  }

  /** Write `data` at `offset`; the chunk becomes `newLength` long (bytes never written read as zeros). */
  write(offset: number, data: Uint8Array, newLength: number): void {
    if (newLength > this.#pool.bufferBytes)
      throw new InvalidArgumentError('a write past the end of its chunk');
    if (newLength > this.#buffer.length) {
      const grown = DirtyChunk.allocate(newLength, this.#pool);
      grown.buffer.set(this.#buffer.subarray(0, this.#length));
      if (this.#pooled) this.#pool.give(this.#buffer);
      this.#buffer = grown.buffer;
      this.#pooled = grown.pooled;
    }
    // Bytes past the chunk's length may be a former user's (a pooled buffer): zero the gaps.
    if (offset > this.#length) this.#buffer.fill(0, this.#length, offset);
    const end = Math.max(this.#length, offset + data.length);
    if (newLength > end) this.#buffer.fill(0, end, newLength);
    this.#buffer.set(data, offset);
    this.#length = Math.max(this.#length, newLength);
  }

  /**
   * The chunk is committed and nothing reads its bytes any more: its buffer goes back to the pool
   * (reads copy dirty bytes out, never hand them over).
   */
  release(): void {
    if (this.#pooled) this.#pool.give(this.#buffer);
    this.#pooled = false;
    this.#buffer = new Uint8Array(0);
    this.#length = 0;
  }
}

export class CellFileHandle implements FileHandle {
  readonly path: string;
  readonly #client: CellClient;
  readonly #tokenId: Uint8Array;
  readonly #mode: OpenOptions['mode'];
  #inode: Inode;
  /** Chunks written but not yet committed, by chunk index. */
  readonly #dirty = new Map<number, DirtyChunk>();
  /** The chunks of #inode by index (#chunkAt), for the inode they were made from. */
  #indexed: { inode: Inode; byIndex: Map<number, Chunk> } | undefined;
  #dirtyBytes = 0;
  /**
   * Write-behind: full chunks start uploading as soon as they are written, while the caller goes
   * on writing; the commit (flush/close/full buffer) waits for them. An upload belongs to one
   * DirtyChunk object: a later write to that chunk copies it first, and the upload goes stale.
   */
  readonly #uploads = new Map<number, { dirty: DirtyChunk; promise: Promise<Chunk>; stored?: Chunk }>();
  readonly #inFlight = new Set<Promise<unknown>>();
  #stale: Array<Promise<Chunk>> = [];
  /** Backends of the chunks of the current commit (chosen at its first upload). */
  #placement: Uint8Array[] | undefined;
  /** End of the furthest uncommitted write (a commit never makes the file shorter than this). */
  #writtenEnd = 0;
  /** The file size including uncommitted writes. */
  #size: number;
  #closed = false;
  #renewTimer: ReturnType<typeof setInterval> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  /** Until when (performance.now()) #inode counts as current without asking the primary. */
  #freshUntilMs: number;
  readonly #capabilityChangesAtOpen: number;

  constructor(
    client: CellClient,
    path: string,
    inode: Inode,
    tokenId: Uint8Array,
    mode: OpenOptions['mode'],
  ) {
    this.#client = client;
    this.path = path;
    this.#inode = inode;
    this.#tokenId = tokenId;
    this.#mode = mode;
    this.#size = inode.size;
    this.#freshUntilMs = performance.now() + HANDLE_FRESH_MS;
    this.#capabilityChangesAtOpen = client.capabilityChanges;
    const lifetime = client.tokenLifetimeMs;
    this.#renewTimer = setInterval(
      () => {
        void client.cell
          .propose({ renew: { id: tokenId, expiresMs: client.cell.nowMs() + lifetime } })
          .catch(() => {});
      },
      Math.max(1000, Math.floor(lifetime / 3)),
    );
    this.#renewTimer.unref();
  }

  /**
   * The handle's inode had no attribute `name` and `changes` (the client's count of changes of
   * it) is what it was when the handle opened.
   */
  lacksXattr(name: string, changes: number): boolean {
    return changes === this.#capabilityChangesAtOpen && !this.#inode.xattrs.some((x) => x.name === name);
  }

  isOf(id: Uint8Array): boolean {
    return Buffer.compare(this.#inode.id, id) === 0;
  }

  /** Operations on one handle run one at a time, in order. */
  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }

  #checkOpen(): void {
    if (this.#closed) throw new ClosedError(`${this.path} is closed`);
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    try {
      checkReadTarget(into, length);
    } catch (error) {
      return Promise.reject(error);
    }
    // A read-only handle changes nothing but its view of the inode: its reads run side by side
    // (the mount's read-ahead asks for several pieces at once); others keep their order with
    // the handle's writes.
    if (this.#mode === 'read') return this.#read(offset, length, into);
    return this.#serial(() => this.#read(offset, length, into));
  }

  async #read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.#checkOpen();
    if (this.#mode === 'write')
      throw new ZhsmError('PERMISSION_DENIED', `${this.path} is open for writing only`);
    // Close-to-open: the inode read at open serves reads; look again only past the known end
    // (a file another client appends to, e.g. tail -f).
    if (this.#dirty.size === 0 && offset + length > this.#size) await this.#refresh();
    const chunkBytes = this.#client.chunkBytes;
    const pieces = planRead(this.#chunkAt, this.#size, offset, length, chunkBytes);
    // Several pieces (a read across chunks) are read straight into one buffer; a single chunk
    // piece comes back as the read made it. Dirty bytes are always copied: their buffers are
    // reused once committed (ChunkBufferPool).
    const single = pieces.length === 1 ? pieces[0]! : undefined;
    if (single?.kind === 'chunk' && this.#dirty.get(single.chunk.offset / chunkBytes) === undefined)
      return this.#readPiece(single, into?.subarray(0, single.length));
    const total = pieces.reduce((sum, piece) => sum + piece.length, 0);
    const output = into?.subarray(0, total) ?? Buffer.allocUnsafe(total);
    await Promise.all(
      pieces.map(async (piece) => {
        const at = piece.fileOffset - offset;
        const into = output.subarray(at, at + piece.length);
        if (piece.kind === 'zeros') {
          into.fill(0);
          return;
        }
        const dirty = this.#dirty.get(piece.chunk.offset / chunkBytes);
        if (dirty !== undefined) {
          into.set(dirty.bytes.subarray(piece.chunkOffset, piece.chunkOffset + piece.length));
          return;
        }
        const bytes = await this.#readPiece(piece, into);
        // A chunk object shorter than its chunk (it should not be): the rest reads as zeros, at
        // the right offsets.
        into.fill(0, bytes.byteLength);
      }),
    );
    return output;
  }

  /** A chunk piece of a read (the inline data of a small file, or a chunk's bytes). */
  #readPiece(piece: Extract<ReadPiece, { kind: 'chunk' }>, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#inode.inlineData.length > 0) {
      const bytes = this.#inode.inlineData.subarray(piece.fileOffset, piece.fileOffset + piece.length);
      into?.set(bytes);
      return Promise.resolve(into?.subarray(0, bytes.byteLength) ?? bytes);
    }
    // Into one buffer in any case: the bytes are copied once, and hashed in one call.
    const target = into ?? Buffer.allocUnsafe(piece.length);
    return this.#client.readChunk(piece.chunk, piece.chunkOffset, piece.length, this.#inode.id, target);
  }

  /**
   * The chunk at an index as this handle sees it: a dirty chunk (its id and hash are not known
   * yet) over the inode's. The inode's chunks are indexed once per inode, not per call.
   */
  #chunkAt = (index: number): Chunk | undefined => {
    const chunkBytes = this.#client.chunkBytes;
    if (this.#inode.inlineData.length > 0 && this.#dirty.size === 0) {
      if (index !== 0) return undefined;
      return { id: noId, offset: 0, size: this.#inode.inlineData.length, hash: noHash };
    }
    const dirty = this.#dirty.get(index);
    if (dirty !== undefined)
      return { id: noId, offset: index * chunkBytes, size: dirty.length, hash: noHash };
    if (this.#indexed?.inode !== this.#inode) {
      this.#indexed = {
        inode: this.#inode,
        byIndex: new Map(this.#inode.chunks.map((chunk) => [chunk.offset / chunkBytes, chunk])),
      };
    }
    return this.#indexed.byIndex.get(index);
  };

  async #refresh(): Promise<void> {
    const latest = await this.#client.cell.metadata.inode(this.#inode.id);
    if (latest === undefined) return;
    // Refreshes of concurrent reads may answer out of order: never go back to an older inode.
    const current = this.#inode;
    if (
      latest.version > current.version ||
      (latest.version === current.version && latest.ctimeMs >= current.ctimeMs)
    ) {
      this.#inode = latest;
      this.#freshUntilMs = performance.now() + HANDLE_FRESH_MS;
      if (this.#dirty.size === 0) this.#size = latest.size;
    }
  }

  write(offset: number, data: Uint8Array): Promise<number> {
    // The caller's buffer is read only when the write's turn comes; one detached meanwhile (a
    // mount whose kernel request timed out) must fail the write, not write zeros or nothing.
    const length = data.length;
    return this.#serial(async () => {
      if (data.length !== length)
        throw new InvalidArgumentError('the data to write is no longer there (buffer detached)');
      this.#checkOpen();
      if (this.#mode === 'read')
        throw new ZhsmError('PERMISSION_DENIED', `${this.path} is open for reading only`);
      if (this.#mode === 'append') {
        if (this.#dirty.size === 0) await this.#refresh();
        offset = this.#size;
      }
      if (!Number.isSafeInteger(offset) || offset < 0)
        throw new InvalidArgumentError(`invalid offset ${offset}`);
      if (data.length === 0) return 0;
      await this.#inlineToChunks();
      const chunkBytes = this.#client.chunkBytes;
      const newSize = Math.max(this.#size, offset + data.length);
      const plan = planWrite(this.#chunkAt, offset, data.length, newSize, chunkBytes);
      for (const write of plan) {
        const part = data.subarray(
          write.spanStart + write.writeStart - offset,
          write.spanStart + write.writeEnd - offset,
        );
        let dirty = this.#dirty.get(write.index);
        const upload = this.#uploads.get(write.index);
        if (dirty !== undefined && upload !== undefined && upload.dirty === dirty) {
          // Being uploaded: write into a copy; the upload goes stale.
          this.#uploads.delete(write.index);
          this.#stale.push(upload.promise);
          dirty = dirty.clone();
          this.#dirty.set(write.index, dirty);
        }
        if (part.length !== write.writeEnd - write.writeStart)
          throw new InvalidArgumentError('the data to write is no longer there (buffer detached)');
        if (dirty !== undefined) {
          // In place: no copy of the whole chunk per write.
          const before = dirty.length;
          dirty.write(write.writeStart, part, write.newSize);
          this.#dirtyBytes += dirty.length - before;
          continue;
        }
        const previousBytes =
          write.previous === undefined
            ? undefined
            : await this.#client.readChunk(write.previous, 0, write.previous.size);
        const pool = this.#client.chunkBuffers;
        const { buffer, pooled } = DirtyChunk.allocate(write.newSize, pool);
        const merged = mergeChunk(write, previousBytes, part, buffer);
        const created = new DirtyChunk(buffer, merged.length, pool, pooled);
        this.#dirtyBytes += created.length;
        this.#dirty.set(write.index, created);
      }
      this.#size = newSize;
      this.#writtenEnd = Math.max(this.#writtenEnd, offset + data.length);
      for (const write of plan) {
        const dirty = this.#dirty.get(write.index);
        if (dirty !== undefined && dirty.length === chunkBytes && !this.#uploads.has(write.index))
          await this.#startUpload(write.index, dirty);
      }
      if (this.#dirtyBytes >= this.#client.writeBufferBytesMax) await this.#relieve();
      return data.length;
    });
  }

  /** Files committed with inline data are rewritten as chunks before a write. */
  async #inlineToChunks(): Promise<void> {
    if (this.#inode.inlineData.length === 0) return;
    this.#dirty.set(0, DirtyChunk.copyOf(this.#inode.inlineData, this.#client.chunkBuffers));
    this.#dirtyBytes += this.#inode.inlineData.length;
    this.#inode = { ...this.#inode, inlineData: new Uint8Array(0) };
  }

  truncate(size: number): Promise<void> {
    return this.#serial(async () => {
      this.#checkOpen();
      if (this.#mode === 'read')
        throw new ZhsmError('PERMISSION_DENIED', `${this.path} is open for reading only`);
      await this.#commit();
      this.#inode = await this.#client.setAttributes(this.#inode.id, { size }, this.path, this);
      this.#size = this.#inode.size;
    });
  }

  flush(): Promise<void> {
    return this.#serial(() => this.#commit());
  }

  fsync(): Promise<void> {
    // Chunks are durable on their backends before the commit, and the commit is durable on a
    // majority of controllers when it resolves: flush is already an fsync.
    return this.flush();
  }

  attributes(): Promise<Attributes> {
    return this.#serial(async () => {
      // The inode as the primary answered it moments ago is current enough (e.g. the kernel's
      // getattr right after a create); later, look again (another client may have written).
      if (this.#dirty.size === 0 && performance.now() >= this.#freshUntilMs) await this.#refresh();
      const attributes = await this.#client.attributesOf(this.#inode);
      return { ...attributes, size: this.#size };
    });
  }

  close(): Promise<void> {
    return this.#serial(async () => {
      if (this.#closed) return;
      try {
        await this.#commit();
      } finally {
        this.#closed = true;
        clearInterval(this.#renewTimer);
        this.#client.forget(this);
        const result = await this.#client.release(this.#tokenId);
        if (result !== undefined && result.code === 'OK')
          await this.#client.deleteReleased(result.releasedObjects);
      }
    });
  }

  /** Start storing a dirty chunk on the commit's backends (at most CHUNK_WRITES_IN_FLIGHT at once). */
  async #startUpload(index: number, dirty: DirtyChunk): Promise<void> {
    while (this.#inFlight.size >= CHUNK_WRITES_IN_FLIGHT) await Promise.race(this.#inFlight);
    this.#placement ??= await this.#client.placement({
      path: this.path,
      size: Math.max(this.#size, this.#dirtyBytes),
      mtimeMs: this.#client.cell.nowMs(),
      atimeMs: 0,
      opens: 0,
    });
    const backends = this.#placement;
    const cell = this.#client.cell;
    const chunkBytes = this.#client.chunkBytes;
    const promise = (async (): Promise<Chunk> => {
      const id = newId();
      const bytes = dirty.bytes;
      const hash = contentHashOf(bytes);
      try {
        await Promise.all(
          backends.map(async (backend) => {
            try {
              await cell.writeChunk(backend, id, bytes, hash);
            } catch (error) {
              if (isBackendFailure(error)) this.#client.avoidBackend(backend);
              throw error;
            }
          }),
        );
      } catch (error) {
        void cell.deleteObjects([id]).catch(() => {});
        throw error;
      }
      return { id, offset: index * chunkBytes, size: bytes.length, hash };
    })();
    const settled = promise.then(
      () => undefined,
      () => undefined,
    );
    this.#inFlight.add(settled);
    void settled.then(() => this.#inFlight.delete(settled));
    const upload: { dirty: DirtyChunk; promise: Promise<Chunk>; stored?: Chunk } = { dirty, promise };
    void promise.then(
      (chunk) => {
        upload.stored = chunk;
      },
      () => {},
    );
    this.#uploads.set(index, upload);
  }

  /** Delete the objects of uploads that were superseded (once they are stored). */
  #dropStale(): void {
    const stale = this.#stale;
    this.#stale = [];
    const cell = this.#client.cell;
    for (const upload of stale) {
      void upload.then(
        (chunk) => cell.deleteObjects([chunk.id]).catch(() => {}),
        () => {},
      );
    }
  }

  /** Store dirty chunks on backends, then commit the new chunk list (rebasing over concurrent writers). */
  async #commit(): Promise<void> {
    if (this.#dirty.size === 0) return;
    let written: Chunk[];
    let backends: Uint8Array[];
    for (let attempt = 1; ; attempt++) {
      try {
        const promises: Array<Promise<Chunk>> = [];
        for (const [index, dirty] of [...this.#dirty].sort(([a], [b]) => a - b)) {
          const upload = this.#uploads.get(index);
          if (upload === undefined || upload.dirty !== dirty) await this.#startUpload(index, dirty);
          promises.push(this.#uploads.get(index)!.promise);
        }
        backends = this.#placement ?? [];
        written = await Promise.all(promises);
        break;
      } catch (error) {
        // Start over (what was stored is garbage): at once on a new placement when a backend
        // failed (it is avoided now, e.g. a crashed server still listed online), else at the next
        // commit.
        for (const upload of this.#uploads.values()) this.#stale.push(upload.promise);
        this.#uploads.clear();
        this.#placement = undefined;
        this.#dropStale();
        if (attempt >= UPLOAD_ATTEMPTS_MAX || !isBackendFailure(error)) throw error;
      }
    }
    this.#dropStale();
    await this.#commitChunks(written, this.#writtenEnd, backends);
    this.#size = this.#inode.size;
    for (const dirty of this.#dirty.values()) dirty.release();
    this.#dirty.clear();
    this.#uploads.clear();
    this.#placement = undefined;
    this.#dirtyBytes = 0;
    this.#writtenEnd = 0;
  }

  /**
   * The write buffer is full: commit the chunks already stored, so that the uploads of the
   * others keep flowing (no pipeline drain every writeBufferBytesMax). When fewer than half the
   * buffer is stored, commit everything (the buffer must not grow).
   */
  async #relieve(): Promise<void> {
    const stored: Array<[number, Chunk]> = [];
    let storedBytes = 0;
    for (const [index, upload] of this.#uploads) {
      if (upload.stored === undefined || this.#dirty.get(index) !== upload.dirty) continue;
      stored.push([index, upload.stored]);
      storedBytes += upload.stored.size;
    }
    const backends = this.#placement;
    if (backends === undefined || storedBytes < this.#client.writeBufferBytesMax / 2) return this.#commit();
    const chunks = stored.map(([, chunk]) => chunk);
    // The file grows to the end of what is committed now; the final commit brings the rest.
    await this.#commitChunks(chunks, Math.max(...chunks.map((chunk) => chunk.offset + chunk.size)), backends);
    for (const [index, chunk] of stored) {
      this.#dirty.get(index)?.release();
      this.#dirty.delete(index);
      this.#uploads.delete(index);
      this.#dirtyBytes -= chunk.size;
    }
  }

  /** Commit stored chunks over the inode (rebasing over concurrent writers); size >= sizeFloor. */
  async #commitChunks(written: readonly Chunk[], sizeFloor: number, backends: Uint8Array[]): Promise<void> {
    const chunkBytes = this.#client.chunkBytes;
    const cell = this.#client.cell;
    if (this.#client.chunkMerges) {
      // The new chunks only: the primary merges them into the file's list as it has it (a large
      // file's commit does not carry, log and replicate every chunk of the file).
      const result = await cell.propose({
        writeChunks: {
          id: this.#inode.id,
          sizeFloor,
          chunks: [...written].sort((a, b) => a.offset - b.offset),
          mtimeMs: cell.nowMs(),
          storedOn: backends,
        },
      });
      if (result.code === 'OK') {
        // The answer leaves out the chunk list: ours with these chunks over it, when no other
        // change came in between (the version moved by one); else the file as the cell has it.
        const next = result.inode!;
        if (next.version === this.#inode.version + 1) {
          const chunks = applyChunkWrites(this.#inode.chunks, written, chunkBytes);
          this.#inode = { ...next, chunks: chunks.filter((chunk) => chunk.offset < next.size) };
        } else {
          const latest = await cell.metadata.inode(next.id);
          if (latest === undefined) throw new NotFoundError(`${this.path} was deleted`);
          this.#inode = latest;
        }
        await this.#client.deleteReleased(result.releasedObjects);
        return;
      }
      if (result.code === 'INVALID_ARGUMENT' && result.message === NO_OPERATION_MESSAGE) {
        // Not applied by this cell yet (see chunkMerges): whole lists for a while.
        this.#client.chunkMergesRefused();
      } else if (result.code !== 'STALE') {
        throw resultError(result, { path: this.path });
      }
      // STALE: the file holds inline data now (another writer); commit the whole list below.
    }
    let base = this.#inode;
    for (let attempt = 1; ; attempt++) {
      // Another writer may have grown (or truncated) the file meanwhile: keep its size unless
      // this handle wrote further.
      const size = Math.max(base.size, sizeFloor);
      const chunks = applyChunkWrites(base.chunks, written, chunkBytes).filter(
        (chunk) => chunk.offset < size,
      );
      const result = await cell.propose({
        commitWrite: {
          id: base.id,
          size,
          chunks,
          mtimeMs: cell.nowMs(),
          checkVersion: true,
          expectedVersion: base.version,
          storedOn: backends,
        },
      });
      if (result.code === 'OK') {
        this.#inode = result.inode!;
        await this.#client.deleteReleased(result.releasedObjects);
        return;
      }
      if (result.code !== 'STALE' || attempt >= COMMIT_ATTEMPTS_MAX)
        throw resultError(result, { path: this.path });
      const latest = await cell.metadata.inode(base.id);
      if (latest === undefined) throw new NotFoundError(`${this.path} was deleted`);
      base = latest;
    }
  }
}
