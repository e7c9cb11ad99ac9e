/**
 * The client of the storage service (service.ts): write, read, head, delete and space calls to a
 * storage server, chunk data streamed directly between the two peers.
 *
 * A write is one streaming call: request, body and end go out back to back, then the server's
 * response (sent once the object is durable). There is no extra round trip, so the way to fill a
 * link with fsync'd chunks is several writes in flight (see bench/storage-net.ts).
 *
 * A read returns exactly the bytes asked for, or fewer only where the object ends; anything else
 * (a short stream, more bytes than asked for, a trailer that disagrees) is an IoError. The server
 * checks every block's checksum before it sends it; with `expectedHash` a read of a whole object
 * also checks its content hash here.
 */
import { HashMismatchError, InvalidArgumentError, IoError, SizeMismatchError } from '../common/errors.ts';
import type { Host } from '../net/host.ts';
import { call, callStream, type PeerTarget } from '../net/rpc.ts';
import { checkContentHash, checkOptionalContentHash, hasherFor } from '../store/content-hash.ts';
import {
  backendUuidBytes,
  checkBytes,
  checkCount,
  type HeadResponse,
  type ListedObject,
  type MetaObject,
  objectIdBytes,
  storageDelete,
  storageFetch,
  storageHead,
  storageList,
  storageMeta,
  storageRead,
  storageSpace,
  storageVerify,
  storageWrite,
  type VerifyResult,
} from './service.ts';

/** Ids per delete call (each removal costs the server a directory fsync). */
export const deleteBatchIds = 4096;

export interface StorageCallOptions {
  readonly signal?: AbortSignal;
  /** Unary calls: the whole call; streaming calls: opening the stream and sending the request. */
  readonly timeoutMs?: number;
}

export interface StorageStreamOptions extends StorageCallOptions {
  /** A streaming call fails when no byte moves for this long (default 120 s). */
  readonly idleTimeoutMs?: number;
}

export interface WriteOptions extends StorageStreamOptions {
  /** The version's mtime stored in the object header; default: the server's clock. */
  readonly mtimeMs?: number;
}

export interface ReadOptions extends StorageStreamOptions {
  /** The object's content hash: checked when the read covers the whole object. */
  readonly expectedHash?: Uint8Array;
}

export interface ReadIntoOptions extends ReadOptions {
  /**
   * Where the bytes go (at least `length` bytes long): `read` then returns the part of it that
   * was filled, and the bytes are copied once, from the network into place (no list of pieces
   * to join). Its other bytes are left as they were.
   */
  readonly into?: Uint8Array;
}

export interface WriteResult {
  /** Body bytes stored. */
  readonly size: number;
  /** The stored header's mtime. */
  readonly mtimeMs: number;
}

export interface ObjectHead {
  readonly size: number;
  readonly contentHash: Uint8Array;
  readonly mtimeMs: number;
  readonly refcount: number;
  /** 'DATA' or 'META'. */
  readonly mainType: string;
}

export interface BackendSpaceInfo {
  /** 16-byte backend uuid. */
  readonly backend: Uint8Array;
  /** The backend's directory on the server. */
  readonly path: string;
  readonly capacityBytes: number;
  /** Bytes available to the server. */
  readonly freeBytes: number;
  /** Objects on the backend (only when counted). */
  readonly objects?: number;
}

function streamOptions(options: StorageStreamOptions) {
  return {
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.timeoutMs === undefined ? {} : { openTimeoutMs: options.timeoutMs }),
    ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
  };
}

function callOptions(options: StorageCallOptions) {
  return {
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
  };
}

/**
 * `source`, except that a pending `next()` rejects as soon as `signal` aborts: callStream waits for
 * its upload source before it reports a failure, so a stalled source would delay an abort.
 */
async function* abortable(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  signal: AbortSignal,
): AsyncGenerator<Uint8Array, void, undefined> {
  const iterator =
    Symbol.asyncIterator in source
      ? source[Symbol.asyncIterator]()
      : (source as Iterable<Uint8Array>)[Symbol.iterator]();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {});
  let finished = false;
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next.done === true) {
        finished = true;
        return;
      }
      yield next.value;
    }
  } finally {
    signal.removeEventListener('abort', onAbort!);
    if (!finished) void Promise.resolve(iterator.return?.()).catch(() => {});
  }
}

/** InvalidArgumentError unless a read's target buffer (if any) can take `length` bytes. */
export function checkReadTarget(into: Uint8Array | undefined, length: number): void {
  if (into !== undefined && into.byteLength < length)
    throw new InvalidArgumentError(`a ${into.byteLength}-byte buffer cannot take ${length} bytes`);
}

/** HashMismatchError unless a body's digest is the expected content hash. */
function checkDigest(digest: Uint8Array, expected: Uint8Array, context: Record<string, unknown>): void {
  if (Buffer.compare(digest, expected) === 0) return;
  throw new HashMismatchError(
    `content hash mismatch: got ${Buffer.from(digest).toString('hex')}, expected ${Buffer.from(expected).toString('hex')}`,
    context,
  );
}

/** A protobufjs bytes field as a plain Uint8Array (it decodes to Buffer on Node). */
function plain(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export class StorageClient {
  readonly #host: Host;

  constructor(host: Host) {
    this.#host = host;
  }

  /**
   * Store a chunk object (`size` bytes, content hash `hash`) on a backend of `peer`. Resolves when the
   * object is durable there; a wrong size or hash rejects with SizeMismatchError/HashMismatchError
   * and nothing is stored. An existing object with this id is replaced atomically. An empty `hash`:
   * none is known (a trimmed chunk, see checkOptionalContentHash); the server hashes what arrives.
   */
  async write(
    peer: PeerTarget,
    backend: Uint8Array,
    id: Uint8Array,
    body: Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    size: number,
    hash: Uint8Array,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    checkBytes(backend, backendUuidBytes, 'backend uuid');
    checkBytes(id, objectIdBytes, 'object id');
    checkOptionalContentHash(hash);
    checkCount(size, 'size');
    const mtimeMs = checkCount(options.mtimeMs ?? 0, 'mtime');
    if (body instanceof Uint8Array && body.byteLength !== size) {
      throw new SizeMismatchError(`body has ${body.byteLength} bytes, ${size} announced`);
    }
    const upload =
      body instanceof Uint8Array
        ? [body]
        : options.signal === undefined
          ? body
          : abortable(body, options.signal);
    const stream = await callStream(
      this.#host,
      peer,
      storageWrite,
      { backend, id, size, contentHash: hash, mtimeMs },
      { ...streamOptions(options), upload },
    );
    const response = await stream.response();
    if (response.size !== size) {
      throw new IoError(`the server stored ${response.size} bytes of a ${size}-byte object`, {
        size,
        stored: response.size,
      });
    }
    return { size: response.size, mtimeMs: response.mtimeMs };
  }

  /**
   * Read bytes [offset, offset + length) of an object: exactly `length` bytes, fewer only where
   * the object ends. An offset beyond the end is InvalidArgumentError, a missing object NotFound.
   */
  async read(
    peer: PeerTarget,
    backend: Uint8Array,
    id: Uint8Array,
    offset: number,
    length: number,
    options: ReadIntoOptions = {},
  ): Promise<Uint8Array> {
    const { into, ...streamed } = options;
    if (into === undefined) {
      const parts: Uint8Array[] = [];
      let bytes = 0;
      for await (const part of this.readStream(peer, backend, id, offset, length, streamed)) {
        parts.push(part);
        bytes += part.byteLength;
      }
      if (parts.length === 1) return parts[0]!;
      return Buffer.concat(parts, bytes);
    }
    if (streamed.expectedHash !== undefined) checkContentHash(streamed.expectedHash, 'expected hash');
    checkReadTarget(into, length);
    // The content hash, if any, is checked once over the assembled bytes (one call over the
    // whole chunk hashes faster than one per network piece).
    const { expectedHash, ...rest } = streamed;
    let received = 0;
    let objectSize = 0;
    for await (const part of this.#readStream(peer, backend, id, offset, length, rest, (size) => {
      objectSize = size;
    })) {
      into.set(part, received);
      received += part.byteLength;
    }
    const bytes = into.subarray(0, received);
    if (expectedHash !== undefined && offset === 0 && received === objectSize) {
      const hash = hasherFor(expectedHash);
      hash.update(bytes);
      checkDigest(hash.digest(), expectedHash, { objectId: Buffer.from(id).toString('hex'), offset, length });
    }
    return bytes;
  }

  /**
   * As `read`, streamed: pieces are yielded as they arrive (each verified by the server's block
   * checksums); the length and trailer checks (and `expectedHash`) run at the end, so the last
   * step throws if the stream was short. Breaking out of the loop abandons the call.
   */
  async *readStream(
    peer: PeerTarget,
    backend: Uint8Array,
    id: Uint8Array,
    offset: number,
    length: number,
    options: ReadOptions = {},
  ): AsyncGenerator<Uint8Array, void, undefined> {
    yield* this.#readStream(peer, backend, id, offset, length, options);
  }

  /** readStream; `onObjectSize` learns the object's size once the trailer has been checked. */
  async *#readStream(
    peer: PeerTarget,
    backend: Uint8Array,
    id: Uint8Array,
    offset: number,
    length: number,
    options: ReadOptions,
    onObjectSize?: (size: number) => void,
  ): AsyncGenerator<Uint8Array, void, undefined> {
    checkBytes(backend, backendUuidBytes, 'backend uuid');
    checkBytes(id, objectIdBytes, 'object id');
    checkCount(offset, 'offset');
    checkCount(length, 'length');
    if (options.expectedHash !== undefined) checkContentHash(options.expectedHash, 'expected hash');
    const stream = await callStream(
      this.#host,
      peer,
      storageRead,
      { backend, id, offset, length },
      streamOptions(options),
    );
    const hash =
      options.expectedHash !== undefined && offset === 0 ? hasherFor(options.expectedHash) : undefined;
    const context = { objectId: Buffer.from(id).toString('hex'), offset, length };
    let received = 0;
    let complete = false;
    try {
      for await (const piece of stream.data) {
        if (received + piece.byteLength > length) {
          throw new IoError(`the server sent more than the ${length} bytes asked for`, context);
        }
        received += piece.byteLength;
        hash?.update(piece);
        yield piece;
      }
      complete = true;
    } finally {
      if (!complete) stream.abort();
    }
    const trailer = await stream.response();
    if (trailer.bytesSent !== received) {
      throw new IoError(`read ${received} bytes, the server says it sent ${trailer.bytesSent}`, context);
    }
    const expected = Math.max(0, Math.min(length, trailer.objectSize - offset));
    if (received !== expected) {
      throw new IoError(
        `read ${received} bytes, expected ${expected} (object of ${trailer.objectSize} bytes)`,
        context,
      );
    }
    if (hash !== undefined && received === trailer.objectSize)
      checkDigest(hash.digest(), options.expectedHash!, context);
    onObjectSize?.(trailer.objectSize);
  }

  /**
   * Delete objects from one backend of `peer`, or from all of them when `backend` is omitted
   * (missing objects are fine). Returns how many objects were removed.
   */
  async delete(
    peer: PeerTarget,
    ids: readonly Uint8Array[],
    backend?: Uint8Array,
    options: StorageCallOptions = {},
  ): Promise<number> {
    for (const id of ids) checkBytes(id, objectIdBytes, 'object id');
    if (backend !== undefined) checkBytes(backend, backendUuidBytes, 'backend uuid');
    let removed = 0;
    for (let start = 0; start < ids.length || start === 0; start += deleteBatchIds) {
      const batch = ids.slice(start, start + deleteBatchIds);
      if (batch.length === 0) break;
      const response = await call(
        this.#host,
        peer,
        storageDelete,
        { ids: [...batch], backend: backend ?? new Uint8Array(0) },
        callOptions(options),
      );
      removed += response.removed;
    }
    return removed;
  }

  /** The backends of `peer` with their space (and object counts, which scan every backend). */
  async space(
    peer: PeerTarget,
    options: StorageCallOptions & { countObjects?: boolean } = {},
  ): Promise<BackendSpaceInfo[]> {
    const response = await call(
      this.#host,
      peer,
      storageSpace,
      { countObjects: options.countObjects === true },
      callOptions(options),
    );
    return response.backends.map((entry) => ({
      backend: plain(entry.backend),
      path: entry.path,
      capacityBytes: entry.capacityBytes,
      freeBytes: entry.freeBytes,
      ...(entry.objectsCounted ? { objects: entry.objects } : {}),
    }));
  }

  /** The header fields of an object; NotFoundError if it is not there. */
  /**
   * Have server `peer` copy object `id` from `sourceBackend` (on another server) into its
   * `backend`, server to server; resolves when the copy is durable and its content hash checked
   * (`hash` empty: none known, as for write).
   */
  async fetch(
    peer: PeerTarget,
    backend: Uint8Array,
    id: Uint8Array,
    size: number,
    hash: Uint8Array,
    sourceBackend: Uint8Array,
    options: StorageCallOptions = {},
  ): Promise<WriteResult> {
    checkBytes(backend, backendUuidBytes, 'backend uuid');
    checkBytes(sourceBackend, backendUuidBytes, 'source backend uuid');
    checkBytes(id, objectIdBytes, 'object id');
    checkOptionalContentHash(hash);
    checkCount(size, 'size');
    const response = await call(
      this.#host,
      peer,
      storageFetch,
      { backend, id, size, contentHash: hash, sourceBackend },
      callOptions({ timeoutMs: 120_000, ...options }),
    );
    if (response.size !== size)
      throw new IoError(`the server stored ${response.size} bytes of a ${size}-byte object`, { size });
    return { size: response.size, mtimeMs: response.mtimeMs };
  }

  /** Store META objects on one backend (each only if newer than the stored one). */
  async putMeta(
    peer: PeerTarget,
    backend: Uint8Array,
    objects: readonly MetaObject[],
    options: StorageCallOptions = {},
  ): Promise<number> {
    checkBytes(backend, backendUuidBytes, 'backend uuid');
    const response = await call(
      this.#host,
      peer,
      storageMeta,
      { backend, objects: [...objects] },
      callOptions({ timeoutMs: 120_000, ...options }),
    );
    return response.stored;
  }

  /** Re-hash objects on one backend, on its server (scrub). */
  async verify(
    peer: PeerTarget,
    backend: Uint8Array,
    ids: readonly Uint8Array[],
    bytesPerSecond: number,
    options: StorageCallOptions = {},
  ): Promise<VerifyResult[]> {
    checkBytes(backend, backendUuidBytes, 'backend uuid');
    const response = await call(
      this.#host,
      peer,
      storageVerify,
      { backend, ids: [...ids], bytesPerSecond },
      callOptions({ timeoutMs: 600_000, ...options }),
    );
    return response.results;
  }

  /** One page of a backend's object headers (META ones with their bodies), in id order. */
  async list(
    peer: PeerTarget,
    backend: Uint8Array,
    page: { after?: Uint8Array; limit?: number; metaOnly?: boolean },
    options: StorageCallOptions = {},
  ): Promise<{ objects: ListedObject[]; next: Uint8Array | undefined }> {
    checkBytes(backend, backendUuidBytes, 'backend uuid');
    const response = await call(
      this.#host,
      peer,
      storageList,
      {
        backend,
        after: page.after ?? new Uint8Array(0),
        limit: page.limit ?? 0,
        metaOnly: page.metaOnly ?? false,
      },
      callOptions({ timeoutMs: 120_000, ...options }),
    );
    return { objects: response.objects, next: response.next.length === 0 ? undefined : response.next };
  }

  async head(
    peer: PeerTarget,
    backend: Uint8Array,
    id: Uint8Array,
    options: StorageCallOptions = {},
  ): Promise<ObjectHead> {
    checkBytes(backend, backendUuidBytes, 'backend uuid');
    checkBytes(id, objectIdBytes, 'object id');
    const response: HeadResponse = await call(
      this.#host,
      peer,
      storageHead,
      { backend, id },
      callOptions(options),
    );
    return { ...response, contentHash: plain(response.contentHash) };
  }
}
