/**
 * A backend: one directory of a storage server holding objects (see docs/ARCHITECTURE.md).
 *
 * ```
 * ${root}/zhsm-backend.id          identity (protobuf BackendIdentity: backend UUID, cell)
 * ${root}/tmp/                     ingest in progress; emptied when the backend is opened
 * ${root}/ab/cd/ef0123…            objects, by hex id (node/store/object-id.ts)
 * ```
 *
 * Ingest is atomic: stream into tmp/, verify size and hash, write trailer and header, fsync,
 * rename into place and set the mtime to the original's, fsync the directory. A crash at any moment
 * leaves the old object or the new one. Header updates (refcount, flags) alternate between two
 * header slots, so a torn update leaves the previous header.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { type Clock, systemClock } from '../common/clock.ts';
import {
  AlreadyExistsError,
  BackendFullError,
  CorruptObjectError,
  HashMismatchError,
  InvalidArgumentError,
  isSystemError,
  NotABackendError,
  NotFoundError,
  SizeMismatchError,
  StrayFileError,
  UnsupportedFormatError,
  WrongCellError,
  ZhsmError,
} from '../common/errors.ts';
import { type FileHandleLike, type FileSystem, type FsSpace, nodeFileSystem } from '../common/fs.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import { KeyedMutex } from '../common/mutex.ts';
import { BLOCK_CHECKSUM_CURRENT, blockChecksum } from './checksum.ts';
import {
  CONTENT_HASH_BYTES_MAX,
  CONTENT_HASH_CURRENT,
  type ContentHasher,
  checkContentHash,
  contentHashAlgorithmOf,
  createContentHasher,
} from './content-hash.ts';
import { DirectoryHandles, type DirectoryLease } from './directory-handles.ts';
import {
  type BackendIdentity,
  BLOCK_BYTES,
  checkFormatVersion,
  decodeTrailer,
  emptyHeader,
  encodeSlot,
  encodeTrailer,
  FORMAT_VERSION,
  HEADER_BLOCKS_MAX,
  headerCodec,
  identityCodec,
  isPlausibleSlotBytes,
  type ObjectHeader,
  parseSlotPrefix,
  SLOT_BYTES_MAX,
  SLOT_BYTES_MIN,
  SLOT_PREFIX_BYTES,
  slotBytesFor,
  slotChecksumMatches,
  TRAILER_PREFIX_BYTES,
  trailerBytesMax,
} from './format.ts';
import { InlineHasher, WorkerHasher } from './hasher.ts';
import {
  fanOutDirectories,
  type ObjectId,
  objectIdFromPathParts,
  objectIdsEqual,
  objectIdToHex,
  objectRelativePath,
} from './object-id.ts';
import { SparseBodyWriter } from './sparse-writer.ts';

/** Errors of a damaged object (as opposed to a missing one or a failing disk). */
const DAMAGE_CODES: ReadonlySet<string> = new Set([
  'CORRUPT_OBJECT',
  'HASH_MISMATCH',
  'SIZE_MISMATCH',
  'DECODE_ERROR',
]);

export const IDENTITY_FILE = 'zhsm-backend.id';
export const IDENTITY_MAGIC = 'zhsm-backend';
export const TEMP_DIRECTORY = 'tmp';
const BACKEND_FORMAT_VERSION = 1;
/** Bytes read per step of a streaming read (a multiple of the block size). */
const readSpanBytes = 32 * BLOCK_BYTES;
/** Spans read ahead while the current one is verified. */
const readAheadSpans = 1;
const hexByte = /^[0-9a-f]{2}$/;
/**
 * Bodies at least this large (when announced) are hashed on a worker thread. 4 MiB takes in the
 * chunks of the storage service: measured, the server's main thread (which also runs Noise and
 * yamux, the bottleneck) spends about 0.7-0.9 s/GiB less, for about the same total CPU.
 */
const workerHashBytesMin = 4 * 1024 * 1024;
/** Directory handles kept open for fsync. */
const directoryHandlesMax = 64;

export type Body = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** What a caller supplies to ingest: the header fields it knows; id is required. */
export type HeaderInit = Partial<ObjectHeader> & { id: ObjectId };

export interface ObjectInfo {
  readonly header: ObjectHeader;
  /** Bytes the object file occupies on disk (allocated blocks). */
  readonly allocatedBytes: number;
  /** Logical size of the object file (slots + body + trailer). */
  readonly fileBytes: number;
}

export interface IngestOptions {
  /**
   * Called once for each body chunk when the ingest no longer reads it (it was written and
   * hashed), so the caller may reuse its buffer (e.g. a PiecePool). Chunks of a failed ingest
   * may never be released.
   */
  readonly release?: (chunk: Uint8Array) => void;
}

export type ReadVerification = 'blocks' | 'full';

export interface ReadOptions {
  readonly offset?: number;
  readonly length?: number;
  /**
   * 'blocks' (default): every block read is checked against its checksum before any of it is yielded.
   * 'full': additionally the content hash of the whole body is checked at the end (whole-object reads only).
   */
  readonly verify?: ReadVerification;
  /**
   * Cut `length` at the body's end instead of refusing a range beyond it (an offset beyond the
   * end is still InvalidArgumentError).
   */
  readonly clamp?: boolean;
  /** Called with the object's header once it is loaded, before any byte is read. */
  readonly onHeader?: (header: ObjectHeader) => void;
}

export type ScanEntry =
  | { readonly kind: 'object'; readonly id: ObjectId; readonly header: ObjectHeader; readonly path: string }
  | { readonly kind: 'corrupt'; readonly id: ObjectId; readonly path: string; readonly error: ZhsmError }
  | { readonly kind: 'stray'; readonly path: string; readonly error: ZhsmError };

export interface ScrubProblem {
  readonly path: string;
  readonly id?: string;
  readonly code: string;
  readonly message: string;
}

export interface ScrubReport {
  readonly objectsChecked: number;
  readonly bytesChecked: number;
  readonly corrupt: readonly ScrubProblem[];
  readonly stray: readonly ScrubProblem[];
}

export interface ScrubProgress {
  readonly objectsChecked: number;
  readonly bytesChecked: number;
  readonly problems: number;
}

export interface BackendOptions {
  readonly cell: string;
  readonly fs?: FileSystem;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Body bytes read (verified spans, scrubs too) and ingested (metrics: node/daemon/metrics.ts). */
  readonly onIo?: (backend: Backend, kind: 'read' | 'write', bytes: number) => void;
}

interface LoadedHeader {
  readonly header: ObjectHeader;
  readonly slotBytes: number;
  readonly currentSlot: 0 | 1;
  readonly sequence: number;
}

function isFullError(error: unknown): boolean {
  return isSystemError(error, 'ENOSPC') || isSystemError(error, 'EDQUOT');
}

function uuidToString(uuid: Uint8Array): string {
  const hex = Buffer.from(uuid).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Large buffers are handed to the writer in pieces so hashing and writing overlap (1 MiB measured
 * best: a piece stays in the core's cache from the hashers to the page scan).
 */
const bodyPieceBytes = 1024 * 1024;

async function* bodyChunks(body: Body): AsyncIterable<Uint8Array> {
  if (body instanceof Uint8Array) {
    for (let offset = 0; offset < body.length; offset += bodyPieceBytes) {
      yield body.subarray(offset, Math.min(body.length, offset + bodyPieceBytes));
    }
    return;
  }
  yield* body;
}

/** Wait for every task, then rethrow the first failure: no write is left running behind an error. */
async function settleAll(tasks: readonly Promise<unknown>[]): Promise<void> {
  for (const result of await Promise.allSettled(tasks)) if (result.status === 'rejected') throw result.reason;
}

/**
 * Make directories that mkdirp created durable: fsync the parent of each, from the deepest
 * (`directory`) up to the first one created (`created`).
 */
async function syncCreatedDirectories(
  fs: FileSystem,
  directory: string,
  created: string | undefined,
): Promise<void> {
  if (created === undefined) return;
  for (let path = directory; path.length >= created.length; path = join(path, '..')) {
    await fs.syncDirectory(join(path, '..'));
  }
}

async function readFully(handle: FileHandleLike, length: number, position: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const read = await handle.read(buffer, done, length - done, position + done);
    if (read === 0) break;
    done += read;
  }
  return done === length ? buffer : buffer.subarray(0, done);
}

async function writeFully(handle: FileHandleLike, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    done += await handle.write(data, done, data.length - done, position + done);
  }
}

export class Backend {
  readonly root: string;
  readonly cell: string;
  readonly uuid: Uint8Array;
  readonly #fs: FileSystem;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #onIo: BackendOptions['onIo'];
  readonly #locks = new KeyedMutex();
  #closed = false;
  #space: { atMs: number; availableBytes: number } | undefined;
  /**
   * Object directories made durable, or being made so (directories in a backend are never
   * removed): the attempt, which ingests into the directory wait for.
   */
  readonly #knownDirectories = new LRUCache<string, Promise<void>>({ max: 70_000 });
  /** Open handles of object directories, for the fsync after a rename or unlink. */
  readonly #directoryHandles: DirectoryHandles;
  readonly #tempPrefix = randomBytes(4).toString('hex');
  #tempCount = 0;

  private constructor(root: string, identity: BackendIdentity, options: BackendOptions) {
    this.root = root;
    this.cell = identity.cell;
    this.uuid = identity.backendUuid;
    this.#fs = options.fs ?? nodeFileSystem;
    this.#directoryHandles = new DirectoryHandles(this.#fs, directoryHandlesMax);
    this.#clock = options.clock ?? systemClock;
    this.#log = (options.logger ?? silentLogger()).child({ backend: uuidToString(identity.backendUuid) });
    this.#onIo = options.onIo;
  }

  get uuidString(): string {
    return uuidToString(this.uuid);
  }

  /** Make `root` (missing or empty) a backend of `cell`. */
  static async create(root: string, options: BackendOptions): Promise<Backend> {
    const fs = options.fs ?? nodeFileSystem;
    if (options.cell.length === 0) throw new InvalidArgumentError('a backend needs a cell name');
    const createdRoot = await fs.mkdirp(root);
    const existing = await fs.readdir(root);
    if (existing.some((entry) => entry.name === IDENTITY_FILE)) {
      throw new AlreadyExistsError(`${root} is already a backend`, { root });
    }
    if (existing.length > 0) {
      throw new InvalidArgumentError(`${root} is not empty; a new backend needs an empty directory`, {
        root,
      });
    }
    const identity: BackendIdentity = {
      magic: IDENTITY_MAGIC,
      formatVersion: BACKEND_FORMAT_VERSION,
      backendUuid: new Uint8Array(randomBytes(16)),
      cell: options.cell,
      createdMs: (options.clock ?? systemClock).nowMs(),
    };
    // Version-4 UUID layout.
    identity.backendUuid[6] = (identity.backendUuid[6]! & 0x0f) | 0x40;
    identity.backendUuid[8] = (identity.backendUuid[8]! & 0x3f) | 0x80;
    await fs.mkdirp(join(root, TEMP_DIRECTORY));
    // The first level of the fan-out now (made durable by the root's fsync below): the first
    // objects of a new backend then create one directory each, not two, and fsync one parent, not
    // two (4 KiB ingests into a fresh backend: about 345 -> 440 objects/s here).
    const fanOut = fanOutDirectories();
    for (let at = 0; at < fanOut.length; at += 16) {
      await Promise.all(fanOut.slice(at, at + 16).map((name) => fs.mkdirp(join(root, name))));
    }
    const temp = join(root, TEMP_DIRECTORY, `${IDENTITY_FILE}.new`);
    const handle = await fs.open(temp, 'w', 0o644);
    try {
      await writeFully(handle, identityCodec.encode(identity), 0);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temp, join(root, IDENTITY_FILE));
    await fs.syncDirectory(root);
    await syncCreatedDirectories(fs, root, createdRoot);
    return new Backend(root, identity, options);
  }

  /** Open an existing backend of `cell`; cleans leftovers of interrupted ingests. */
  static async open(root: string, options: BackendOptions): Promise<Backend> {
    const fs = options.fs ?? nodeFileSystem;
    let bytes: Uint8Array;
    try {
      bytes = await fs.readFile(join(root, IDENTITY_FILE));
    } catch (error) {
      if (isSystemError(error, 'ENOENT') || isSystemError(error, 'ENOTDIR')) {
        throw new NotABackendError(`${root} is not a zhsm backend (no ${IDENTITY_FILE})`, { root });
      }
      throw error;
    }
    let identity: BackendIdentity;
    try {
      identity = identityCodec.decode(bytes);
    } catch (error) {
      throw new NotABackendError(`${root}: ${IDENTITY_FILE} is damaged`, { root }, { cause: error });
    }
    if (identity.magic !== IDENTITY_MAGIC || identity.backendUuid.length !== 16) {
      throw new NotABackendError(`${root}: ${IDENTITY_FILE} is not a zhsm backend identity`, { root });
    }
    if (identity.formatVersion !== BACKEND_FORMAT_VERSION) {
      throw new UnsupportedFormatError(
        `${root}: backend format version ${identity.formatVersion} is not supported (this build: ${BACKEND_FORMAT_VERSION})`,
        { root },
      );
    }
    if (identity.cell !== options.cell) {
      throw new WrongCellError(
        `${root} belongs to cell ${JSON.stringify(identity.cell)}, not ${JSON.stringify(options.cell)}`,
        {
          root,
          cell: identity.cell,
        },
      );
    }
    const backend = new Backend(root, identity, options);
    await backend.#cleanTemp();
    return backend;
  }

  /** Read a backend's identity without opening it (e.g. to learn its cell). */
  static async identify(
    root: string,
    fs: FileSystem = nodeFileSystem,
  ): Promise<{ uuid: string; cell: string }> {
    try {
      const identity = identityCodec.decode(await fs.readFile(join(root, IDENTITY_FILE)));
      if (identity.magic !== IDENTITY_MAGIC) throw new Error('bad magic');
      return { uuid: uuidToString(identity.backendUuid), cell: identity.cell };
    } catch (error) {
      throw new NotABackendError(`${root} is not a zhsm backend`, { root }, { cause: error });
    }
  }

  /** Release cached directory handles; further calls fail with CLOSED. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#directoryHandles.close();
  }

  objectPath(id: ObjectId): string {
    return join(this.root, objectRelativePath(id));
  }

  async space(): Promise<FsSpace> {
    return this.#fs.statfs(this.root);
  }

  /**
   * Store an object atomically. The header's `bodySize` (if given) and `contentHash` (if non-empty)
   * are verified against the body; otherwise they are computed. Returns the stored header.
   */
  async ingest(init: HeaderInit, body: Body, options: IngestOptions = {}): Promise<ObjectHeader> {
    this.#checkOpen();
    const header = await this.#ingest(init, body, true, options.release);
    this.#onIo?.(this, 'write', header.bodySize);
    return header;
  }

  async #ingest(
    init: HeaderInit,
    body: Body,
    lock: boolean,
    release?: (chunk: Uint8Array) => void,
  ): Promise<ObjectHeader> {
    const hex = objectIdToHex(init.id);
    const context = { objectId: hex, backend: this.uuidString };
    const expectedHash =
      init.contentHash !== undefined && init.contentHash.length > 0 ? init.contentHash : undefined;
    const algorithm =
      expectedHash === undefined
        ? CONTENT_HASH_CURRENT
        : contentHashAlgorithmOf(checkContentHash(expectedHash, 'content hash', context))!;
    const header: ObjectHeader = {
      ...emptyHeader(),
      ...init,
      blockSize: BLOCK_BYTES,
      hashAlgorithm: algorithm,
      // What the hashers compute for every new body.
      blockChecksum: BLOCK_CHECKSUM_CURRENT,
    };
    if (header.mtimeMs === 0) header.mtimeMs = this.#clock.nowMs();
    const expectedSize = init.bodySize;
    if (expectedSize !== undefined && (!Number.isSafeInteger(expectedSize) || expectedSize < 0)) {
      throw new InvalidArgumentError(`invalid body size ${expectedSize}`, context);
    }
    // Size the header slots for the largest encoding of this header (hash and size not yet known).
    const estimate = headerCodec.encode({
      ...header,
      contentHash: new Uint8Array(CONTENT_HASH_BYTES_MAX),
      bodySize: Number.MAX_SAFE_INTEGER,
      blockChecksums: new Array(HEADER_BLOCKS_MAX).fill(0xffffffff),
    });
    const slotBytes = slotBytesFor(estimate.length);
    if (slotBytes > SLOT_BYTES_MAX) {
      throw new InvalidArgumentError(`object header too large (${estimate.length} bytes)`, context);
    }
    const bodyOffset = 2 * slotBytes;
    if (expectedSize !== undefined) {
      const needed = bodyOffset + expectedSize + trailerBytesMax(expectedSize, BLOCK_BYTES);
      const availableBytes = await this.#availableBytes(needed);
      if (needed > availableBytes) {
        throw new BackendFullError(
          `backend is full: ${needed} bytes needed, ${availableBytes} available`,
          context,
        );
      }
    }
    // Start the I/O that does not wait for the body, alongside the body's writes: the temp file,
    // and the object's directory (mkdir -p and the fsyncs of its parents where it is new, then a
    // handle on it for the fsync after the rename). A small ingest is mostly trips to the thread
    // pool; in sequence they would double its time.
    const tempPath = join(this.root, TEMP_DIRECTORY, `${hex}.${this.#tempTag()}.tmp`);
    const opening = this.#fs.open(tempPath, 'wx', 0o600);
    opening.catch(() => {});
    const directory = this.#objectDirectory(init.id);
    const leasing = this.#prepareObjectDirectory(directory);
    leasing.catch(() => {});
    let writer: SparseBodyWriter | undefined;
    /** Set once the temp file's close is in the hands of the install below. */
    let closeArranged = false;
    try {
      const hasher =
        algorithm === 'SHA256' && expectedSize !== undefined && expectedSize >= workerHashBytesMin
          ? new WorkerHasher(BLOCK_BYTES)
          : new InlineHasher(BLOCK_BYTES, algorithm);
      writer = new SparseBodyWriter({
        handle: opening,
        bodyOffset,
        blockBytes: BLOCK_BYTES,
        hasher,
        // A Uint8Array body is pushed in views of itself: no chunk of it can be handed back alone.
        ...(release === undefined || body instanceof Uint8Array ? {} : { release }),
      });
      if (body instanceof Uint8Array && body.length <= bodyPieceBytes) {
        await writer.push(body);
      } else {
        for await (const chunk of bodyChunks(body)) {
          await writer.push(chunk);
          if (expectedSize !== undefined && writer.received > expectedSize) {
            throw new SizeMismatchError(`body is longer than the announced ${expectedSize} bytes`, context);
          }
        }
      }
      // The body's last writes may still be in flight: the header's go alongside (one trip to the
      // thread pool less per object; a small ingest is mostly such trips), all before the fsync.
      const { hash, crcs, size } = await writer.digest();
      if (expectedSize !== undefined && size !== expectedSize) {
        throw new SizeMismatchError(`body has ${size} bytes, ${expectedSize} announced`, context);
      }
      if (expectedHash !== undefined && Buffer.compare(hash, expectedHash) !== 0) {
        throw new HashMismatchError(
          `content hash mismatch: got ${Buffer.from(hash).toString('hex')}, expected ${Buffer.from(expectedHash).toString('hex')}`,
          context,
        );
      }
      header.bodySize = size;
      header.contentHash = hash;
      const written = await opening;
      const tasks: Promise<unknown>[] = [writer.drain()];
      if (crcs.length <= HEADER_BLOCKS_MAX) {
        header.blockChecksums = crcs;
        // The file must end at the body's end; trailing zero pages stay holes (no body write goes
        // past the last data page, so the truncate may run alongside them).
        if (!writer.endsWithData) tasks.push(written.truncate(bodyOffset + size));
      } else {
        header.blockChecksums = [];
        tasks.push(writeFully(written, encodeTrailer(BLOCK_BYTES, crcs), bodyOffset + size));
      }
      const encoded = headerCodec.encode(header);
      // The header alongside the body's last writes, then the fsync that makes them all durable.
      tasks.push(
        writeFully(written, encodeSlot({ header: encoded, slotIndex: 0, sequence: 1, slotBytes }), 0),
      );
      await settleAll(tasks);
      await written.sync();
      const lease = await leasing;
      const target = this.objectPath(header.id);
      // The rename first; the file times alongside it, only now: a write or truncate still running
      // would set the mtime to the present (measured: 7.5 % of objects had a wrong mtime when
      // utimes ran beside the header write). Both precede the directory's fsync, which commits them
      // on a journaling filesystem; the header holds the mtime in any case (info() puts the file's
      // right after a crash). The close waits for the times; the rename needs neither.
      let closed: Promise<void> | undefined;
      const install = async () => {
        const renamed = this.#fs.rename(tempPath, target);
        renamed.catch(() => {});
        const timesSet = written.setTimes(header.atimeMs || header.mtimeMs, header.mtimeMs);
        closed = timesSet.finally(() => written.close());
        closed.catch(() => {});
        await Promise.all([renamed, timesSet]);
        await lease.sync();
      };
      closeArranged = true;
      try {
        if (lock) await this.#locks.run(hex, install);
        else await install();
      } finally {
        // The close may not have started (the lock's wait failed): close here then.
        await (closed ?? written.close()).catch(() => {});
      }
      await closed;
      this.#log.debug({ objectId: hex, size }, 'object ingested');
      return headerCodec.decode(encoded);
    } catch (error) {
      writer?.abort();
      // No write of the body may still run when the file is closed (its descriptor reused).
      await writer?.drain().catch(() => {});
      if (!closeArranged) await (await opening.catch(() => undefined))?.close().catch(() => {});
      await this.#fs.unlink(tempPath).catch(() => {});
      if (isFullError(error)) {
        throw new BackendFullError(`backend is full while storing ${hex}`, context, { cause: error });
      }
      throw error;
    } finally {
      // Whether or not the ingest got as far as using it (a release is once only).
      void leasing.then(
        (lease) => lease.release(),
        () => {},
      );
    }
  }

  /**
   * Store a META object (an inode's namespace header, node/recovery/) unless the stored one is
   * newer (ctime, then change index) or the same change. Returns whether it was written.
   */
  async putMeta(init: HeaderInit, body: Uint8Array): Promise<boolean> {
    this.#checkOpen();
    if (init.mainType !== 'META') throw new InvalidArgumentError('putMeta stores META objects only');
    const hex = objectIdToHex(init.id);
    return this.#locks.run(hex, async () => {
      try {
        const stored = (await this.info(init.id)).header;
        if (stored.mainType !== 'META')
          throw new InvalidArgumentError(`object ${hex} is not a META object`, { objectId: hex });
        const order = (init.ctimeMs ?? 0) - stored.ctimeMs || (init.changeIndex ?? 0) - stored.changeIndex;
        if (order <= 0) return false;
      } catch (error) {
        // Missing: store it. Damaged: replace it (this copy is whole and at least as new as any).
        if (
          !(error instanceof NotFoundError) &&
          !(error instanceof ZhsmError && DAMAGE_CODES.has(error.code))
        )
          throw error;
      }
      await this.#ingest({ ...init, bodySize: body.length }, body, false);
      return true;
    });
  }

  /** The current header of an object. */
  async head(id: ObjectId): Promise<ObjectHeader> {
    return (await this.info(id)).header;
  }

  async info(id: ObjectId): Promise<ObjectInfo> {
    this.#checkOpen();
    const handle = await this.#openObject(id, 'r');
    try {
      const loaded = await this.#loadHeader(handle, id);
      const stat = await handle.stat();
      if (Math.round(stat.mtimeMs) !== loaded.header.mtimeMs) {
        // The header is authoritative: a crash between a header update and its utimes leaves the
        // file's mtime behind; put it right while we are here.
        await handle.setTimes(loaded.header.atimeMs || loaded.header.mtimeMs, loaded.header.mtimeMs);
      }
      return { header: loaded.header, allocatedBytes: stat.blocks * 512, fileBytes: stat.size };
    } finally {
      await handle.close();
    }
  }

  async has(id: ObjectId): Promise<boolean> {
    try {
      await this.#fs.stat(this.objectPath(id));
      return true;
    } catch (error) {
      if (isSystemError(error, 'ENOENT')) return false;
      throw error;
    }
  }

  /** Stream a byte range of the body, verified (see ReadOptions). */
  async *read(id: ObjectId, options: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    this.#checkOpen();
    const hex = objectIdToHex(id);
    const handle = await this.#openObject(id, 'r');
    try {
      const { header, slotBytes } = await this.#loadHeader(handle, id);
      const path = this.objectPath(id);
      const context = { objectId: hex, path, backend: this.uuidString };
      options.onHeader?.(header);
      const offset = options.offset ?? 0;
      let length = options.length ?? header.bodySize - offset;
      const verify = options.verify ?? 'blocks';
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
        throw new InvalidArgumentError(`invalid range offset=${offset} length=${length}`, context);
      }
      if (options.clamp === true && offset <= header.bodySize) {
        length = Math.min(length, header.bodySize - offset);
      }
      if (offset + length > header.bodySize) {
        throw new InvalidArgumentError(
          `range ${offset}+${length} beyond body of ${header.bodySize} bytes`,
          context,
        );
      }
      if (verify === 'full' && (offset !== 0 || length !== header.bodySize)) {
        throw new InvalidArgumentError("verify 'full' needs a whole-object read", context);
      }
      const bodyOffset = 2 * slotBytes;
      const blockSize = header.blockSize;
      if (blockSize <= 0 || blockSize % 4096 !== 0)
        throw new CorruptObjectError('invalid block size in header', context);
      const stat = await handle.stat();
      const bodyEnd = bodyOffset + header.bodySize;
      const blockCount = Math.ceil(header.bodySize / blockSize);
      let blockCrcs: number[];
      if (blockCount <= HEADER_BLOCKS_MAX) {
        if (stat.size < bodyEnd) {
          throw new CorruptObjectError(
            `object is truncated (${stat.size} bytes, body ends at ${bodyEnd})`,
            context,
          );
        }
        blockCrcs = header.blockChecksums;
      } else {
        if (stat.size < bodyEnd + TRAILER_PREFIX_BYTES) {
          throw new CorruptObjectError(
            `object is truncated (${stat.size} bytes, body ends at ${bodyEnd})`,
            context,
          );
        }
        const trailerBytes = await readFully(
          handle,
          Math.min(stat.size - bodyEnd, trailerBytesMax(header.bodySize, blockSize)),
          bodyEnd,
        );
        const trailer = decodeTrailer(trailerBytes, context);
        if (trailer.blockSize !== blockSize)
          throw new CorruptObjectError('block table does not match the header', context);
        blockCrcs = trailer.checksums;
      }
      if (blockCrcs.length !== blockCount) {
        throw new CorruptObjectError('block table does not match the header', context);
      }
      let hash: ContentHasher | undefined;
      if (verify === 'full') {
        const algorithm = contentHashAlgorithmOf(header.contentHash);
        if (algorithm === undefined) {
          throw new CorruptObjectError(
            `header has no valid content hash (${header.contentHash.length} bytes)`,
            context,
          );
        }
        hash = createContentHasher(algorithm);
      }
      const end = offset + length;
      const firstBlock = Math.floor(offset / blockSize);
      // Spans of whole blocks, up to readSpanBytes, never past the block holding the range's end.
      const lastBlockEnd = Math.min(header.bodySize, Math.ceil(end / blockSize) * blockSize);
      const spanBlocks = Math.max(1, Math.floor(readSpanBytes / blockSize));
      const queue: Array<{ block: number; start: number; end: number; data: Promise<Buffer> }> = [];
      let nextBlock = firstBlock;
      const fill = () => {
        while (queue.length < readAheadSpans + 1 && nextBlock * blockSize < lastBlockEnd && length > 0) {
          const spanStart = nextBlock * blockSize;
          const spanEnd = Math.min(lastBlockEnd, (nextBlock + spanBlocks) * blockSize);
          const data = readFully(handle, spanEnd - spanStart, bodyOffset + spanStart);
          data.catch(() => {}); // awaited below; never an unhandled rejection if the reader stops early
          queue.push({ block: nextBlock, start: spanStart, end: spanEnd, data });
          nextBlock += spanBlocks;
        }
      };
      try {
        fill();
        for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
          const span = await item.data;
          this.#onIo?.(this, 'read', span.length);
          fill();
          if (span.length !== item.end - item.start) {
            throw new CorruptObjectError(
              `object is truncated at body offset ${item.start + span.length}`,
              context,
            );
          }
          for (let b = 0; b * blockSize < span.length; b++) {
            const piece = span.subarray(b * blockSize, Math.min(span.length, (b + 1) * blockSize));
            if (blockChecksum(piece, header.blockChecksum) !== blockCrcs[item.block + b]) {
              throw new CorruptObjectError(
                `block ${item.block + b} (body offset ${item.start + b * blockSize}) fails its checksum`,
                { ...context, block: item.block + b },
              );
            }
          }
          hash?.update(span);
          const from = Math.max(offset, item.start) - item.start;
          const to = Math.min(end, item.end) - item.start;
          if (to > from) yield span.subarray(from, to);
        }
      } finally {
        await Promise.allSettled(queue.map((item) => item.data));
      }
      if (hash !== undefined) {
        if (Buffer.compare(hash.digest(), header.contentHash) !== 0) {
          throw new HashMismatchError('content hash of the body does not match the header', context);
        }
      }
    } finally {
      await handle.close();
    }
  }

  /** Read a whole object body into memory (small objects, tests). */
  async readAll(id: ObjectId, verify: ReadVerification = 'full'): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    for await (const part of this.read(id, { verify })) parts.push(part);
    return Buffer.concat(parts);
  }

  /**
   * Change an object's header (flags, refcount, xattrs, namespace fields) crash-safely: the new
   * header goes into the older slot, so a torn write leaves the previous header. `mutate` must not
   * change id, body size, hash or block size. Returns the new header.
   */
  async updateHeader(id: ObjectId, mutate: (header: ObjectHeader) => ObjectHeader): Promise<ObjectHeader> {
    this.#checkOpen();
    const hex = objectIdToHex(id);
    return this.#locks.run(hex, async () => {
      const handle = await this.#openObject(id, 'r+');
      let next: ObjectHeader;
      let needsRewrite = false;
      try {
        const loaded = await this.#loadHeader(handle, id);
        next = mutate(structuredClone(loaded.header));
        const context = { objectId: hex, backend: this.uuidString };
        if (
          !objectIdsEqual(next.id, loaded.header.id) ||
          next.bodySize !== loaded.header.bodySize ||
          next.blockSize !== loaded.header.blockSize ||
          next.blockChecksums.join() !== loaded.header.blockChecksums.join() ||
          next.blockChecksum !== loaded.header.blockChecksum ||
          Buffer.compare(next.contentHash, loaded.header.contentHash) !== 0
        ) {
          throw new InvalidArgumentError(
            'a header update may not change id, body size, block size or hash',
            context,
          );
        }
        const encoded = headerCodec.encode(next);
        if (SLOT_PREFIX_BYTES + encoded.length <= loaded.slotBytes) {
          const slotIndex = loaded.currentSlot === 0 ? 1 : 0;
          const slot = encodeSlot({
            header: encoded,
            slotIndex,
            sequence: loaded.sequence + 1,
            slotBytes: loaded.slotBytes,
          });
          await writeFully(handle, slot, slotIndex * loaded.slotBytes);
          await handle.setTimes(next.atimeMs || next.mtimeMs, next.mtimeMs);
          await handle.sync();
          next = headerCodec.decode(encoded);
        } else {
          needsRewrite = true;
        }
      } catch (error) {
        if (isFullError(error)) {
          throw new BackendFullError(
            `backend is full while updating ${hex}`,
            { objectId: hex },
            { cause: error },
          );
        }
        throw error;
      } finally {
        await handle.close();
      }
      if (needsRewrite) {
        // The header outgrew its slots: rewrite the object (still atomic: temp + rename).
        const body = this.read(id, { verify: 'full' });
        return this.#ingest({ ...next, bodySize: next.bodySize }, body, false);
      }
      return next;
    });
  }

  /** Add a reference to an object. */
  async retain(id: ObjectId): Promise<number> {
    const header = await this.updateHeader(id, (h) => ({ ...h, refcount: h.refcount + 1 }));
    return header.refcount;
  }

  /** Drop a reference; the object is deleted when none is left. Returns the references left. */
  async release(id: ObjectId): Promise<number> {
    const hex = objectIdToHex(id);
    const header = await this.head(id);
    if (header.refcount <= 1) {
      await this.remove(id);
      return 0;
    }
    const updated = await this.updateHeader(id, (h) => ({ ...h, refcount: h.refcount - 1 }));
    this.#log.debug({ objectId: hex, refcount: updated.refcount }, 'reference released');
    return updated.refcount;
  }

  /** Delete an object whatever its refcount. */
  async remove(id: ObjectId): Promise<void> {
    this.#checkOpen();
    const hex = objectIdToHex(id);
    const path = this.objectPath(id);
    await this.#locks.run(hex, async () => {
      try {
        await this.#fs.unlink(path);
      } catch (error) {
        if (isSystemError(error, 'ENOENT')) throw new NotFoundError(`no object ${hex}`, { objectId: hex });
        throw error;
      }
      await this.#directoryHandles.sync(join(path, '..'));
    });
  }

  /**
   * Stream the header of every object. Damaged objects and files that do not belong in the tree
   * are reported as entries of their own; the scan never stops at one.
   */
  async *scan(options: { after?: ObjectId } = {}): AsyncGenerator<ScanEntry> {
    this.#checkOpen();
    // Resume after an id: skip the directories wholly before it (names sort like the ids' hex).
    const after = options.after === undefined ? undefined : objectIdToHex(options.after);
    const skipFirst = (name: string) => after !== undefined && name < after.slice(0, 2);
    const skipSecond = (first: string, name: string) =>
      after !== undefined && `${first}${name}` < after.slice(0, 4);
    const skipLeaf = (hex: string) => after !== undefined && hex <= after;
    const stray = (path: string, what: string): ScanEntry => ({
      kind: 'stray',
      path,
      error: new StrayFileError(`stray ${what} in backend: ${path}`, { path }),
    });
    for (const first of await this.#sortedEntries(this.root)) {
      const firstPath = join(this.root, first.name);
      if (first.name === IDENTITY_FILE || first.name === TEMP_DIRECTORY) continue;
      if (!first.isDirectory || !hexByte.test(first.name)) {
        if (after === undefined) yield stray(firstPath, first.isDirectory ? 'directory' : 'file');
        continue;
      }
      if (skipFirst(first.name)) continue;
      for (const second of await this.#sortedEntries(firstPath)) {
        const secondPath = join(firstPath, second.name);
        if (!second.isDirectory || !hexByte.test(second.name)) {
          if (after === undefined) yield stray(secondPath, second.isDirectory ? 'directory' : 'file');
          continue;
        }
        if (skipSecond(first.name, second.name)) continue;
        for (const leaf of await this.#sortedEntries(secondPath)) {
          const leafPath = join(secondPath, leaf.name);
          const id = leaf.isFile ? objectIdFromPathParts(first.name, second.name, leaf.name) : undefined;
          if (id === undefined) {
            if (after === undefined) yield stray(leafPath, leaf.isDirectory ? 'directory' : 'file');
            continue;
          }
          if (skipLeaf(`${first.name}${second.name}${leaf.name}`)) continue;
          try {
            const header = await this.head(id);
            yield { kind: 'object', id, header, path: leafPath };
          } catch (error) {
            if (isSystemError(error, 'ENOENT') || error instanceof NotFoundError) continue; // deleted meanwhile
            if (!(error instanceof ZhsmError)) throw error;
            yield { kind: 'corrupt', id, path: leafPath, error };
          }
        }
      }
    }
  }

  /** Re-hash every object (full verification), throttled; report damaged and stray files. */
  async scrub(
    options: { bytesPerSecond?: number; onProgress?: (progress: ScrubProgress) => void } = {},
  ): Promise<ScrubReport> {
    const corrupt: ScrubProblem[] = [];
    const stray: ScrubProblem[] = [];
    let objectsChecked = 0;
    let bytesChecked = 0;
    const startedMs = this.#clock.monotonicMs();
    const report = () =>
      options.onProgress?.({ objectsChecked, bytesChecked, problems: corrupt.length + stray.length });
    for await (const entry of this.scan()) {
      if (entry.kind === 'stray') {
        stray.push({ path: entry.path, code: entry.error.code, message: entry.error.message });
        continue;
      }
      const hex = objectIdToHex(entry.id);
      if (entry.kind === 'corrupt') {
        corrupt.push({ path: entry.path, id: hex, code: entry.error.code, message: entry.error.message });
        continue;
      }
      try {
        for await (const part of this.read(entry.id, { verify: 'full' })) {
          bytesChecked += part.length;
          if (options.bytesPerSecond !== undefined && options.bytesPerSecond > 0) {
            const aheadMs =
              (bytesChecked / options.bytesPerSecond) * 1000 - (this.#clock.monotonicMs() - startedMs);
            if (aheadMs > 1) await new Promise<void>((resolve) => this.#clock.setTimer(aheadMs, resolve));
          }
        }
      } catch (error) {
        if (error instanceof NotFoundError) continue;
        if (!(error instanceof ZhsmError)) throw error;
        corrupt.push({ path: entry.path, id: hex, code: error.code, message: error.message });
      }
      objectsChecked++;
      report();
    }
    report();
    if (corrupt.length > 0 || stray.length > 0) {
      this.#log.warn({ corrupt: corrupt.length, stray: stray.length }, 'scrub found problems');
    }
    return { objectsChecked, bytesChecked, corrupt, stray };
  }

  async #sortedEntries(path: string) {
    const entries = await this.#fs.readdir(path);
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  #checkOpen(): void {
    if (this.#closed) throw new ZhsmError('CLOSED', `backend ${this.root} is closed`);
  }

  async #cleanTemp(): Promise<void> {
    const temp = join(this.root, TEMP_DIRECTORY);
    await this.#fs.mkdirp(temp);
    const leftovers = await this.#fs.readdir(temp);
    for (const entry of leftovers) await this.#fs.rmrf(join(temp, entry.name));
    if (leftovers.length > 0) {
      await this.#fs.syncDirectory(temp);
      this.#log.info({ removed: leftovers.length }, 'removed leftovers of interrupted ingests');
    }
  }

  #objectDirectory(id: ObjectId): string {
    return join(this.objectPath(id), '..');
  }

  /**
   * Make sure an object directory exists, durably (mkdir -p, then fsync the parents of what it
   * created; ingests into one new directory share the one attempt), and lease its handle.
   */
  async #prepareObjectDirectory(directory: string): Promise<DirectoryLease> {
    let ready = this.#knownDirectories.get(directory);
    if (ready === undefined) {
      const attempt = (async () => {
        const created = await this.#fs.mkdirp(directory);
        await syncCreatedDirectories(this.#fs, directory, created);
      })();
      attempt.catch(() => {
        if (this.#knownDirectories.peek(directory) === attempt) this.#knownDirectories.delete(directory);
      });
      this.#knownDirectories.set(directory, attempt);
      ready = attempt;
    }
    await ready;
    return this.#directoryHandles.acquire(directory);
  }

  /** A tag that makes a temp file's name unique: this instance's random prefix and a counter. */
  #tempTag(): string {
    this.#tempCount += 1;
    return `${this.#tempPrefix}${this.#tempCount.toString(36)}`;
  }

  /** Free space for the early "is it full" check; statfs at most once a second unless close to full. */
  async #availableBytes(neededBytes: number): Promise<number> {
    const nowMs = this.#clock.monotonicMs();
    const cached = this.#space;
    if (
      cached !== undefined &&
      nowMs - cached.atMs < 1000 &&
      cached.availableBytes > 64 * neededBytes + 64 * 1024 * 1024
    ) {
      return cached.availableBytes;
    }
    const space = await this.#fs.statfs(this.root);
    this.#space = { atMs: nowMs, availableBytes: space.availableBytes };
    return space.availableBytes;
  }

  async #openObject(id: ObjectId, flags: 'r' | 'r+'): Promise<FileHandleLike> {
    try {
      return await this.#fs.open(this.objectPath(id), flags);
    } catch (error) {
      if (isSystemError(error, 'ENOENT')) {
        throw new NotFoundError(`no object ${objectIdToHex(id)} on backend ${this.uuidString}`, {
          objectId: objectIdToHex(id),
        });
      }
      throw error;
    }
  }

  /** Read both header slots and pick the valid one with the higher sequence. */
  async #loadHeader(handle: FileHandleLike, id: ObjectId): Promise<LoadedHeader> {
    const hex = objectIdToHex(id);
    const context = { objectId: hex, path: this.objectPath(id), backend: this.uuidString };
    const candidates: LoadedHeader[] = [];
    let unsupported: number | undefined;
    const tryRead = async (position: number, expectIndex: 0 | 1, expectSlotBytes?: number) => {
      const prefixBytes = await readFully(handle, SLOT_PREFIX_BYTES, position);
      const prefix = parseSlotPrefix(prefixBytes);
      if (prefix === undefined || prefix.slotIndex !== expectIndex || !isPlausibleSlotBytes(prefix.slotBytes))
        return;
      if (expectSlotBytes !== undefined && prefix.slotBytes !== expectSlotBytes) return;
      if (SLOT_PREFIX_BYTES + prefix.headerBytes > prefix.slotBytes) return;
      const headerBytes = await readFully(handle, prefix.headerBytes, position + SLOT_PREFIX_BYTES);
      if (headerBytes.length !== prefix.headerBytes) return;
      if (!slotChecksumMatches(prefixBytes, headerBytes, prefix.crc)) return;
      if (prefix.formatVersion !== FORMAT_VERSION) {
        unsupported = prefix.formatVersion;
        return;
      }
      let header: ObjectHeader;
      try {
        header = headerCodec.decode(headerBytes);
      } catch {
        return;
      }
      candidates.push({
        header,
        slotBytes: prefix.slotBytes,
        currentSlot: expectIndex,
        sequence: prefix.sequence,
      });
    };
    await tryRead(0, 0);
    const first = candidates[0];
    if (first !== undefined) {
      await tryRead(first.slotBytes, 1, first.slotBytes);
    } else {
      // Slot A is unreadable: look for slot B at every possible slot size.
      for (
        let slotBytes = SLOT_BYTES_MIN;
        slotBytes <= SLOT_BYTES_MAX && candidates.length === 0;
        slotBytes *= 2
      ) {
        await tryRead(slotBytes, 1, slotBytes);
      }
    }
    if (candidates.length === 0) {
      if (unsupported !== undefined) checkFormatVersion(unsupported, context);
      throw new CorruptObjectError(`object ${hex} has no valid header`, context);
    }
    candidates.sort((a, b) => b.sequence - a.sequence);
    const best = candidates[0]!;
    if (!objectIdsEqual(best.header.id, id)) {
      throw new CorruptObjectError(
        `object file ${hex} holds a header for ${objectIdToHex(best.header.id)}`,
        context,
      );
    }
    return best;
  }
}
