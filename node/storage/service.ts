/**
 * The network service of a storage server: cell members write, read, inspect and delete chunk
 * objects on the server's backends (node/store/backend.ts), streaming directly peer to peer over
 * libp2p (node/net/rpc.ts; messages in proto/storage.proto).
 *
 *   storage/write   streaming upload   {backend, id, size, hash, mtime} + body  -> {size, mtime}
 *   storage/read    streaming download {backend, id, offset, length} -> bytes + {bytes sent, size}
 *   storage/delete  unary              {ids[], backend?}   -> {removed}
 *   storage/space   unary              {count objects?}    -> [{backend, path, capacity, free, objects?}]
 *   storage/head    unary              {backend, id}       -> {size, hash, mtime, refcount, type}
 *
 * A write streams the upload into `Backend.ingest` (re-chunked into aligned 1 MiB pieces, nothing
 * buffers a whole chunk): the backend verifies size and hash and makes the object durable (fsync,
 * rename, directory fsync) before the response is sent, so a caller that got the response may rely
 * on the copy. A failed or abandoned upload leaves no object and no temp file (ingest removes its
 * temp file).
 *
 * At most `writesMax` writes per server run at once; further writes wait without reading their
 * upload: the stream is paused once about 4 MiB are buffered (node/net/frames.ts), so a waiting
 * write holds at most that plus what its yamux window still admitted (at most 16 MiB; in practice
 * the initial 256 KiB). Streams per connection (256, rpc.ts) bound the number of waiting writes.
 *
 * Only cell members reach these handlers (rpc.ts refuses every other peer). Every request field is
 * validated: bad lengths and ranges are InvalidArgumentError, an unknown backend or object is
 * NotFoundError; the typed error goes back to the caller and the service keeps serving. Operating
 * system errors of a backend (EIO, EACCES...) go back as IoError with their errno code.
 */

import { codec } from '../../proto/index.ts';
import {
  InvalidArgumentError,
  IoError,
  NotFoundError,
  UnavailableError,
  ZhsmError,
} from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { forEachLimited } from '../common/pool.ts';
import { Semaphore } from '../common/semaphore.ts';
import type { Host } from '../net/host.ts';
import { defineMethod, type Method, type Service, serve, serveStream } from '../net/rpc.ts';
import type { Backend } from '../store/backend.ts';
import { checkOptionalContentHash } from '../store/content-hash.ts';
import type { ObjectHeader } from '../store/format.ts';
import { PiecePool } from '../store/piece-pool.ts';

export const backendUuidBytes = 16;
export const objectIdBytes = 16;
/** Writes one server runs at once (each one streams into an ingest and ends with fsyncs). */
export const writesMaxDefault = 16;
/** META bodies (inline file content, symlink targets) at most. */
export const metaBodyBytesMax = 64 * 1024;
/** Object ids one delete call may carry (the client splits longer lists). */
export const deleteIdsMax = 65_536;
/**
 * An upload reaches the handler in the pieces the network delivered (about 64 KiB, not page
 * aligned); the backend writes and hashes them much more cheaply in aligned pieces of this size
 * (measured: about half the CPU per GiB), so uploads are re-chunked (one copy) on the way in.
 */
export const ingestPieceBytes = 1024 * 1024;
/**
 * Idle ingest pieces kept for reuse (process-wide; pieces in use are bounded by the writes running
 * at once, each holding a few). Reused pieces spare V8 a full collection every ~64 MiB of uploads.
 */
const idlePiecesMax = 32;
const ingestPieces = new PiecePool(ingestPieceBytes, idlePiecesMax);
/** Removals a delete call runs at once (each one unlinks and fsyncs a directory). */
const removalsInFlight = 8;

export interface WriteRequest {
  backend: Uint8Array;
  id: Uint8Array;
  size: number;
  contentHash: Uint8Array;
  mtimeMs: number;
}
export interface WriteResponse {
  size: number;
  mtimeMs: number;
}
export interface ReadRequest {
  backend: Uint8Array;
  id: Uint8Array;
  offset: number;
  length: number;
}
export interface ReadResponse {
  bytesSent: number;
  objectSize: number;
}
export interface DeleteRequest {
  ids: Uint8Array[];
  backend: Uint8Array;
}
export interface DeleteResponse {
  removed: number;
}
export interface SpaceRequest {
  countObjects: boolean;
}
export interface BackendSpace {
  backend: Uint8Array;
  path: string;
  capacityBytes: number;
  freeBytes: number;
  objectsCounted: boolean;
  objects: number;
}
export interface SpaceResponse {
  backends: BackendSpace[];
}
export interface HeadRequest {
  backend: Uint8Array;
  id: Uint8Array;
}
export interface HeadResponse {
  size: number;
  contentHash: Uint8Array;
  mtimeMs: number;
  refcount: number;
  mainType: string;
}

export const storageWrite: Method<WriteRequest, WriteResponse> = defineMethod({
  name: 'storage/write',
  requestCodec: codec<WriteRequest>('zhsm.storage.WriteRequest'),
  responseCodec: codec<WriteResponse>('zhsm.storage.WriteResponse'),
});
export const storageRead: Method<ReadRequest, ReadResponse> = defineMethod({
  name: 'storage/read',
  requestCodec: codec<ReadRequest>('zhsm.storage.ReadRequest'),
  responseCodec: codec<ReadResponse>('zhsm.storage.ReadResponse'),
});
export const storageDelete: Method<DeleteRequest, DeleteResponse> = defineMethod({
  name: 'storage/delete',
  requestCodec: codec<DeleteRequest>('zhsm.storage.DeleteRequest'),
  responseCodec: codec<DeleteResponse>('zhsm.storage.DeleteResponse'),
});
export const storageSpace: Method<SpaceRequest, SpaceResponse> = defineMethod({
  name: 'storage/space',
  requestCodec: codec<SpaceRequest>('zhsm.storage.SpaceRequest'),
  responseCodec: codec<SpaceResponse>('zhsm.storage.SpaceResponse'),
});
export interface FetchRequest {
  backend: Uint8Array;
  id: Uint8Array;
  size: number;
  contentHash: Uint8Array;
  sourceBackend: Uint8Array;
}
export interface FetchResponse {
  size: number;
  mtimeMs: number;
}
export const storageFetch: Method<FetchRequest, FetchResponse> = defineMethod({
  name: 'storage/fetch',
  requestCodec: codec<FetchRequest>('zhsm.storage.FetchRequest'),
  responseCodec: codec<FetchResponse>('zhsm.storage.FetchResponse'),
});
export interface MetaObject {
  header: ObjectHeader;
  body: Uint8Array;
}
export interface MetaRequest {
  backend: Uint8Array;
  objects: MetaObject[];
}
export interface MetaResponse {
  stored: number;
}
export interface ListRequest {
  backend: Uint8Array;
  after: Uint8Array;
  limit: number;
  metaOnly: boolean;
}
export interface ListedObject {
  id: Uint8Array;
  /** null when the object is damaged (see errorCode/error). */
  header: ObjectHeader | null;
  body: Uint8Array;
  errorCode: string;
  error: string;
}
export interface ListResponse {
  objects: ListedObject[];
  next: Uint8Array;
}
/**
 * META objects stored at once by `storeMetaObjects`. Each is a small file with a file and a
 * directory fsync; side by side the filesystem commits their fsyncs together (one journal commit
 * for many, on ext4), where one after the other each forced a commit of its own, and those
 * commits also held up every other fsync on the disk (a controller's log write among them).
 */
export const metaWritesInParallel = 16;

/**
 * Store META objects (inode headers from the primary's header writer, node/recovery/) on a backend
 * of this node, `metaWritesInParallel` at a time. Each is written unless the stored one is newer
 * (see Backend.putMeta). Returns how many were written; the first failure rejects (after the
 * writes already started have finished: none is left half done).
 */
export async function storeMetaObjects(backend: Backend, objects: readonly MetaObject[]): Promise<number> {
  let stored = 0;
  await forEachLimited(objects, metaWritesInParallel, async ({ header, body }) => {
    // What the store computes itself for the body it writes.
    const { contentHash: _hash, bodySize: _size, blockChecksums: _crcs, ...init } = header;
    if (await backend.putMeta({ ...init, refcount: 1 }, body)) stored += 1;
  });
  return stored;
}

/** Objects per storage/meta request at most. */
export const metaObjectsMax = 1024;
/** Objects per storage/list page at most, and the bytes a page carries at most (about). */
export const listLimitMax = 4096;
const listPageBytesMax = 4 * 1024 * 1024;
export const storageMeta: Method<MetaRequest, MetaResponse> = defineMethod({
  name: 'storage/meta',
  requestCodec: codec<MetaRequest>('zhsm.storage.MetaRequest'),
  responseCodec: codec<MetaResponse>('zhsm.storage.MetaResponse'),
});
export const storageList: Method<ListRequest, ListResponse> = defineMethod({
  name: 'storage/list',
  requestCodec: codec<ListRequest>('zhsm.storage.ListRequest'),
  responseCodec: codec<ListResponse>('zhsm.storage.ListResponse'),
});
export interface VerifyRequest {
  backend: Uint8Array;
  ids: Uint8Array[];
  bytesPerSecond: number;
}
export interface VerifyResult {
  id: Uint8Array;
  errorCode: string;
  error: string;
  bytes: number;
}
export interface VerifyResponse {
  results: VerifyResult[];
}
/** Ids per storage/verify request at most. */
export const verifyIdsMax = 1024;
export const storageVerify: Method<VerifyRequest, VerifyResponse> = defineMethod({
  name: 'storage/verify',
  requestCodec: codec<VerifyRequest>('zhsm.storage.VerifyRequest'),
  responseCodec: codec<VerifyResponse>('zhsm.storage.VerifyResponse'),
});

/** Re-hash objects of a backend (storage/verify, and scrub on a node's own backends). */
export async function verifyObjects(
  backend: Backend,
  ids: readonly Uint8Array[],
  bytesPerSecond: number,
  signal?: AbortSignal,
): Promise<VerifyResult[]> {
  const results: VerifyResult[] = [];
  const started = performance.now();
  let total = 0;
  for (const id of ids) {
    let bytes = 0;
    try {
      for await (const part of backend.read(id, { verify: 'full' })) {
        bytes += part.length;
        total += part.length;
        if (bytesPerSecond > 0) {
          const aheadMs = (total / bytesPerSecond) * 1000 - (performance.now() - started);
          if (aheadMs > 1) await new Promise((resolve) => setTimeout(resolve, aheadMs));
        }
        if (signal?.aborted) throw signal.reason;
      }
      results.push({ id, errorCode: '', error: '', bytes });
    } catch (error) {
      if (!(error instanceof ZhsmError)) throw error;
      results.push({ id, errorCode: error.code, error: error.message, bytes });
    }
  }
  return results;
}

export const storageHead: Method<HeadRequest, HeadResponse> = defineMethod({
  name: 'storage/head',
  requestCodec: codec<HeadRequest>('zhsm.storage.HeadRequest'),
  responseCodec: codec<HeadResponse>('zhsm.storage.HeadResponse'),
});

/** When the service last served data (power management: a server idle for long may sleep). */
export interface StorageActivity {
  /** Wall-clock ms of the last read or write served (start or end of its transfer); 0: none. */
  lastAccessMs: number;
}

export interface StorageServiceOptions {
  /** The server's backends by hex uuid (32 lowercase hex digits), consulted on every request. */
  readonly backends: () => ReadonlyMap<string, Backend>;
  /** Updated on every read and write (their start and end). */
  readonly activity?: StorageActivity;
  readonly logger?: Logger;
  /** Writes run at once (default 16). */
  readonly writesMax?: number;
  /**
   * Read `size` bytes of object `id` from `sourceBackend` on another server (storage/fetch; the
   * node reaches the cell's servers). Absent: storage/fetch answers UNAVAILABLE.
   */
  readonly fetch?: (sourceBackend: Uint8Array, id: Uint8Array, size: number) => AsyncIterable<Uint8Array>;
}

export interface StorageService {
  /** Stop accepting new calls (running calls finish). */
  stop(): Promise<void>;
}

const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');

/** Throws InvalidArgumentError unless `bytes` has exactly `length` bytes. */
export function checkBytes(bytes: Uint8Array | undefined, length: number, what: string): Uint8Array {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength !== length) {
    throw new InvalidArgumentError(
      `${what} must be ${length} bytes, got ${bytes instanceof Uint8Array ? bytes.byteLength : 'none'}`,
      { what },
    );
  }
  return bytes;
}

/** Throws InvalidArgumentError unless `value` is a non-negative safe integer. */
export function checkCount(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${value}`, { what });
  }
  return value;
}

/**
 * `source` re-chunked into pieces of `pieceBytes` (the last one shorter), each a buffer of its own
 * (the backend may still be writing a piece when the next one is produced). With `pool` (whose
 * piece size must be `pieceBytes`), pieces of full size are taken from it, and the consumer gives
 * them back when done; otherwise pieces are sized by the bytes still announced, so a small upload
 * does not allocate a whole piece.
 */
export async function* coalesce(
  source: AsyncIterable<Uint8Array>,
  announcedBytes: number,
  pieceBytes: number = ingestPieceBytes,
  pool?: PiecePool,
): AsyncGenerator<Uint8Array, void, undefined> {
  if (pool !== undefined && pool.pieceBytes !== pieceBytes) {
    throw new InvalidArgumentError('the pool has pieces of another size');
  }
  let piece: Buffer | undefined;
  let filled = 0;
  let total = 0;
  for await (const chunk of source) {
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (piece === undefined) {
        const bytes = Math.min(pieceBytes, Math.max(announcedBytes - total, 4096));
        piece = pool !== undefined && bytes === pieceBytes ? pool.take() : Buffer.allocUnsafe(bytes);
        filled = 0;
      }
      const take = Math.min(piece.byteLength - filled, chunk.byteLength - offset);
      piece.set(
        offset === 0 && take === chunk.byteLength ? chunk : chunk.subarray(offset, offset + take),
        filled,
      );
      filled += take;
      offset += take;
      total += take;
      if (filled === piece.byteLength) {
        const full = piece;
        piece = undefined;
        yield full;
      }
    }
  }
  if (piece !== undefined && filled > 0) yield piece.subarray(0, filled);
}

/**
 * One page of a backend's objects in id order after `after` (storage/list, and a node's own
 * backends): headers, META bodies, and the objects that cannot be read as entries with an error.
 * `next`: the id to continue after (undefined: the end), counting entries skipped by `metaOnly`.
 */
export async function listBackendPage(
  backend: Backend,
  page: { after?: Uint8Array; limit?: number; metaOnly?: boolean },
): Promise<{ objects: ListedObject[]; next: Uint8Array | undefined }> {
  const limit = Math.min(page.limit || listLimitMax, listLimitMax);
  const objects: ListedObject[] = [];
  const empty = new Uint8Array(0);
  let bytes = 0;
  let last: Uint8Array | undefined;
  for await (const entry of backend.scan(page.after === undefined ? {} : { after: page.after })) {
    if (entry.kind === 'stray') continue;
    if (objects.length >= limit || bytes >= listPageBytesMax) return { objects, next: last };
    last = entry.id;
    if (entry.kind === 'corrupt') {
      objects.push({
        id: entry.id,
        header: null,
        body: empty,
        errorCode: entry.error.code,
        error: entry.error.message,
      });
      continue;
    }
    if (page.metaOnly && entry.header.mainType !== 'META') continue;
    let body: Uint8Array = empty;
    if (entry.header.mainType === 'META' && entry.header.bodySize > 0) {
      try {
        body = await backend.readAll(entry.id, 'full');
      } catch (error) {
        if (error instanceof NotFoundError) continue;
        if (!(error instanceof ZhsmError)) throw error;
        objects.push({ id: entry.id, header: null, body, errorCode: error.code, error: error.message });
        continue;
      }
    }
    bytes += 256 + body.length + entry.header.xattrs.reduce((sum, x) => sum + x.value.length, 0);
    objects.push({ id: entry.id, header: entry.header, body, errorCode: '', error: '' });
  }
  return { objects, next: undefined };
}

/** A system error of a backend as a typed IoError (rpc.ts would report only "internal error"). */
function typed(error: unknown, what: string, log: Logger): unknown {
  if (error instanceof ZhsmError) return error;
  log.error({ err: error }, `${what} failed`);
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const message = (error as Error | undefined)?.message ?? String(error);
  return new IoError(
    `${what} failed: ${code === undefined ? message : `${code}: ${message}`}`,
    {},
    {
      cause: error,
    },
  );
}

/** Register the storage methods on `host`. */
export async function serveStorage(host: Host, options: StorageServiceOptions): Promise<StorageService> {
  const log = (options.logger ?? host.log).child({ component: 'storage-service' });
  const writeSlots = new Semaphore(options.writesMax ?? writesMaxDefault);
  const accessed = () => {
    if (options.activity !== undefined) options.activity.lastAccessMs = Date.now();
  };

  const backendFor = (uuid: Uint8Array | undefined): Backend => {
    const key = hex(checkBytes(uuid, backendUuidBytes, 'backend uuid'));
    const backend = options.backends().get(key);
    if (backend === undefined) throw new NotFoundError(`no backend ${key} on this server`, { backend: key });
    return backend;
  };

  /** Ingest `body` into `backend` in a write slot (storage/write and storage/fetch). */
  const ingest = async (
    what: string,
    backend: Backend,
    head: { id: Uint8Array; bodySize: number; contentHash: Uint8Array; mtimeMs: number },
    body: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ) => {
    accessed();
    const release = await writeSlots.hold(signal);
    try {
      const header = await backend.ingest(
        { ...head, mainType: 'DATA', layout: 'INLINE' },
        coalesce(body, head.bodySize, ingestPieceBytes, ingestPieces),
        { release: (piece) => ingestPieces.give(piece) },
      );
      return { size: header.bodySize, mtimeMs: header.mtimeMs };
    } catch (error) {
      throw typed(error, `${what} of ${hex(head.id)}`, log);
    } finally {
      release();
      accessed();
    }
  };

  const services: Service[] = [];
  try {
    services.push(
      await serveStream(host, {
        ...storageWrite,
        async handler(request, context) {
          const backend = backendFor(request.backend);
          const id = checkBytes(request.id, objectIdBytes, 'object id');
          const contentHash = checkOptionalContentHash(request.contentHash ?? new Uint8Array(0));
          const bodySize = checkCount(request.size, 'size');
          const mtimeMs = checkCount(request.mtimeMs, 'mtime');
          return ingest(
            'write',
            backend,
            { id, bodySize, contentHash, mtimeMs },
            context.data,
            context.signal,
          );
        },
      }),
    );
    services.push(
      await serveStream(host, {
        ...storageRead,
        async *handler(request) {
          const backend = backendFor(request.backend);
          const id = checkBytes(request.id, objectIdBytes, 'object id');
          const offset = checkCount(request.offset, 'offset');
          const length = checkCount(request.length, 'length');
          let sent = 0;
          let objectSize = 0;
          accessed();
          try {
            // One open: the backend reports the size and cuts the range at the object's end.
            const pieces = backend.read(id, {
              offset,
              length,
              clamp: true,
              onHeader(header) {
                objectSize = header.bodySize;
                if (offset > objectSize) {
                  throw new InvalidArgumentError(
                    `offset ${offset} is beyond the end of object ${hex(id)} (${objectSize} bytes)`,
                    { objectId: hex(id) },
                  );
                }
              },
            });
            for await (const piece of pieces) {
              sent += piece.byteLength;
              yield piece;
            }
          } catch (error) {
            throw typed(error, `read of ${hex(id)}`, log);
          } finally {
            accessed();
          }
          return { bytesSent: sent, objectSize };
        },
      }),
    );
    services.push(
      await serve(host, {
        ...storageDelete,
        async handler(request) {
          const ids = request.ids.map((id) => checkBytes(id, objectIdBytes, 'object id'));
          if (ids.length > deleteIdsMax) {
            throw new InvalidArgumentError(`at most ${deleteIdsMax} ids per delete, got ${ids.length}`);
          }
          const scope =
            request.backend.byteLength === 0
              ? [...options.backends().values()]
              : [backendFor(request.backend)];
          let removed = 0;
          const work = scope.flatMap((backend) => ids.map((id) => ({ backend, id })));
          await forEachLimited(work, removalsInFlight, async ({ backend, id }) => {
            try {
              await backend.remove(id);
              removed += 1;
            } catch (error) {
              if (error instanceof NotFoundError) return;
              throw typed(error, `delete of ${hex(id)}`, log);
            }
          });
          return { removed };
        },
      }),
    );
    services.push(
      await serve(host, {
        ...storageSpace,
        async handler(request) {
          const backends: BackendSpace[] = [];
          for (const backend of options.backends().values()) {
            try {
              const space = await backend.space();
              let objects = 0;
              if (request.countObjects) {
                for await (const entry of backend.scan()) if (entry.kind === 'object') objects += 1;
              }
              backends.push({
                backend: backend.uuid,
                path: backend.root,
                capacityBytes: space.totalBytes,
                freeBytes: space.availableBytes,
                objectsCounted: request.countObjects,
                objects,
              });
            } catch (error) {
              throw typed(error, `space of backend ${hex(backend.uuid)}`, log);
            }
          }
          return { backends };
        },
      }),
    );
    services.push(
      await serve(host, {
        ...storageFetch,
        async handler(request, context) {
          const backend = backendFor(request.backend);
          const id = checkBytes(request.id, objectIdBytes, 'object id');
          const contentHash = checkOptionalContentHash(request.contentHash ?? new Uint8Array(0));
          const source = checkBytes(request.sourceBackend, backendUuidBytes, 'source backend uuid');
          const bodySize = checkCount(request.size, 'size');
          if (options.fetch === undefined) throw new UnavailableError('this server cannot fetch from others');
          if (options.backends().has(hex(source)))
            throw new InvalidArgumentError('the source backend is on this server (copy it locally)');
          const body = options.fetch(source, id, bodySize);
          return ingest('fetch', backend, { id, bodySize, contentHash, mtimeMs: 0 }, body, context.signal);
        },
      }),
    );
    services.push(
      await serve(host, {
        ...storageMeta,
        async handler(request, context) {
          const backend = backendFor(request.backend);
          if (request.objects.length > metaObjectsMax)
            throw new InvalidArgumentError(`at most ${metaObjectsMax} objects per request`);
          const objects = request.objects.map(({ header, body }) => {
            if (header == null) throw new InvalidArgumentError('META object without a header');
            checkBytes(header.id, objectIdBytes, 'object id');
            if (header.mainType !== 'META') throw new InvalidArgumentError('not a META object header');
            if (body.length > metaBodyBytesMax)
              throw new InvalidArgumentError(`META body larger than ${metaBodyBytesMax} bytes`);
            return { header, body };
          });
          accessed();
          const release = await writeSlots.hold(context.signal);
          let stored = 0;
          try {
            stored = await storeMetaObjects(backend, objects);
          } catch (error) {
            throw typed(error, 'META write', log);
          } finally {
            release();
            accessed();
          }
          return { stored };
        },
      }),
    );
    services.push(
      await serve(host, {
        ...storageList,
        async handler(request) {
          const backend = backendFor(request.backend);
          const after =
            request.after.length === 0 ? undefined : checkBytes(request.after, objectIdBytes, 'after');
          const limit = Math.min(checkCount(request.limit, 'limit') || listLimitMax, listLimitMax);
          try {
            const page = await listBackendPage(backend, {
              ...(after === undefined ? {} : { after }),
              limit,
              metaOnly: request.metaOnly,
            });
            return { objects: page.objects, next: page.next ?? new Uint8Array(0) };
          } catch (error) {
            throw typed(error, `list of backend ${hex(backend.uuid)}`, log);
          }
        },
      }),
    );
    services.push(
      await serve(host, {
        ...storageVerify,
        async handler(request, context) {
          const backend = backendFor(request.backend);
          if (request.ids.length > verifyIdsMax)
            throw new InvalidArgumentError(`at most ${verifyIdsMax} ids per verify`);
          const ids = request.ids.map((id) => checkBytes(id, objectIdBytes, 'object id'));
          const bytesPerSecond = checkCount(request.bytesPerSecond, 'bytes per second');
          try {
            return { results: await verifyObjects(backend, ids, bytesPerSecond, context.signal) };
          } catch (error) {
            throw typed(error, 'verify', log);
          }
        },
      }),
    );
    services.push(
      await serve(host, {
        ...storageHead,
        async handler(request) {
          const backend = backendFor(request.backend);
          const id = checkBytes(request.id, objectIdBytes, 'object id');
          try {
            const header = await backend.head(id);
            return {
              size: header.bodySize,
              contentHash: header.contentHash,
              mtimeMs: header.mtimeMs,
              refcount: header.refcount,
              mainType: header.mainType,
            };
          } catch (error) {
            throw typed(error, `head of ${hex(id)}`, log);
          }
        },
      }),
    );
  } catch (error) {
    await Promise.allSettled(services.map((service) => service.stop()));
    throw error;
  }
  log.debug({ protocols: services.map((service) => service.protocol) }, 'storage service started');
  return {
    async stop() {
      await Promise.allSettled(services.map((service) => service.stop()));
    },
  };
}
