/**
 * Body hashing for ingest: the content hash (content-hash.ts) and a checksum per block.
 * - InlineHasher, on the calling thread: every BLAKE3 body (native BLAKE3 hashes faster than the
 *   body could be copied to another thread) and small SHA256 ones;
 * - WorkerHasher, on a shared worker thread: large SHA256 bodies (copies of objects written before
 *   BLAKE3), so that the slow sha256 overlaps with writing on another core.
 */
import { Worker } from 'node:worker_threads';
import { BlockChecksummer } from './checksum.ts';
import { type ContentHashAlgorithm, type ContentHasher, createContentHasher } from './content-hash.ts';

export interface BodyHasher {
  /**
   * Hash `chunk`. `released` (if given) is called once the hasher no longer reads the chunk (both
   * hashers here are done with it when `update` returns: the worker hashes a copy).
   */
  update(chunk: Uint8Array, released?: () => void): Promise<void>;
  finish(): Promise<{ hash: Uint8Array; crcs: number[] }>;
  /** Give up (error path): release resources, ignore further results. */
  abort(): void;
}

/** Bytes handed to the worker and not yet hashed, per stream, at most. */
const workerInflightBytesMax = 32 * 1024 * 1024;

export class InlineHasher implements BodyHasher {
  readonly #hash: ContentHasher;
  readonly #blocks: BlockChecksummer;

  constructor(blockBytes: number, algorithm: ContentHashAlgorithm) {
    this.#hash = createContentHasher(algorithm);
    this.#blocks = new BlockChecksummer(blockBytes);
  }

  async update(chunk: Uint8Array, released?: () => void): Promise<void> {
    this.#hash.update(chunk);
    this.#blocks.update(chunk);
    released?.();
  }

  async finish(): Promise<{ hash: Uint8Array; crcs: number[] }> {
    return { hash: this.#hash.digest(), crcs: this.#blocks.finish() };
  }

  abort(): void {}
}

type WorkerReply = {
  stream: number;
  consumed?: number;
  /** The memory of a hashed piece, transferred back for reuse. */
  memory?: ArrayBuffer;
  hash?: Uint8Array;
  crcs?: number[];
};

/**
 * Pieces are copied into buffers of this size that travel to the worker and back (transferred,
 * never cloned): fresh memory for every copy cost page faults about as long as the hashing.
 */
const copyBytes = 1024 * 1024;
/** Idle copy buffers kept per hash thread. */
const copiesIdleMax = 48;

/** One worker thread shared by all ingests of a process (per block size); unref'd. */
class HashThread {
  readonly #worker: Worker;
  readonly #listeners = new Map<number, (reply: WorkerReply) => void>();
  /**
   * Idle copy buffers. Not a PiecePool: a buffer transferred to the worker and back is a new
   * object here, which a pool that knows its buffers by identity would not take back.
   */
  readonly #idle: ArrayBuffer[] = [];
  #nextStream = 1;

  constructor(blockBytes: number) {
    // From the sources the worker is hash-thread.ts next to this file; in the bundle (dist/), the
    // bundled hash-thread.mjs next to the bundle's chunks (scripts/bundle.mjs).
    const file = import.meta.url.endsWith('.ts') ? './hash-thread.ts' : './hash-thread.mjs';
    this.#worker = new Worker(new URL(file, import.meta.url), { workerData: { blockBytes } });
    this.#worker.unref();
    this.#worker.on('message', (reply: WorkerReply) => {
      if (reply.memory?.byteLength === copyBytes && this.#idle.length < copiesIdleMax)
        this.#idle.push(reply.memory);
      this.#listeners.get(reply.stream)?.(reply);
    });
    this.#worker.on('error', (error) => {
      for (const listener of this.#listeners.values())
        listener({ stream: -1, consumed: Number.NaN, crcs: [String(error)] as unknown as number[] });
    });
  }

  /** A buffer of copyBytes for a piece to hash (its contents undefined). */
  copyBuffer(): ArrayBuffer {
    return this.#idle.pop() ?? new ArrayBuffer(copyBytes);
  }

  open(listener: (reply: WorkerReply) => void): {
    stream: number;
    post: (message: unknown, transfer?: ArrayBuffer[]) => void;
    close: () => void;
  } {
    const stream = this.#nextStream++;
    this.#listeners.set(stream, listener);
    // Keep the process alive only while some stream is being hashed.
    if (this.#listeners.size === 1) this.#worker.ref();
    return {
      stream,
      post: (message, transfer) => this.#worker.postMessage(message, transfer ?? []),
      close: () => {
        if (this.#listeners.delete(stream) && this.#listeners.size === 0) this.#worker.unref();
      },
    };
  }
}

const threads = new Map<number, HashThread>();

/** SHA256 content hashes (the worker's sha256 digest is the SHA256 form) and block checksums. */
export class WorkerHasher implements BodyHasher {
  readonly #thread: HashThread;
  readonly #channel: ReturnType<HashThread['open']>;
  #inflight = 0;
  #drained: (() => void) | undefined;
  #result: ((value: { hash: Uint8Array; crcs: number[] }) => void) | undefined;
  #failure: Error | undefined;

  constructor(blockBytes: number) {
    let thread = threads.get(blockBytes);
    if (thread === undefined) {
      thread = new HashThread(blockBytes);
      threads.set(blockBytes, thread);
    }
    this.#thread = thread;
    this.#channel = thread.open((reply) => {
      if (reply.stream === -1 || Number.isNaN(reply.consumed)) {
        this.#failure = new Error('hash worker failed');
        this.#drained?.();
        return;
      }
      if (reply.consumed !== undefined) {
        this.#inflight -= reply.consumed;
        if (this.#inflight <= workerInflightBytesMax / 2) this.#drained?.();
      }
      if (reply.hash !== undefined) this.#result?.({ hash: reply.hash, crcs: reply.crcs ?? [] });
    });
  }

  async update(chunk: Uint8Array, released?: () => void): Promise<void> {
    if (this.#failure !== undefined) throw this.#failure;
    // Copies of these bytes in pieces of reused buffers, transferred to the worker and back
    // (posting a view of the caller's buffer would clone all of it).
    for (let offset = 0; offset < chunk.length; offset += copyBytes) {
      const length = Math.min(copyBytes, chunk.length - offset);
      const copy = new Uint8Array(this.#thread.copyBuffer(), 0, length);
      copy.set(chunk.subarray(offset, offset + length));
      this.#inflight += length;
      this.#channel.post({ stream: this.#channel.stream, chunk: copy }, [copy.buffer]);
    }
    released?.();
    while (this.#inflight > workerInflightBytesMax && this.#failure === undefined) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
      this.#drained = undefined;
    }
    if (this.#failure !== undefined) throw this.#failure;
  }

  finish(): Promise<{ hash: Uint8Array; crcs: number[] }> {
    return new Promise((resolve, reject) => {
      if (this.#failure !== undefined) {
        reject(this.#failure);
        return;
      }
      this.#result = (value) => {
        this.#channel.close();
        resolve(value);
      };
      this.#channel.post({ stream: this.#channel.stream, end: true });
    });
  }

  abort(): void {
    this.#channel.post({ stream: this.#channel.stream, end: true });
    this.#channel.close();
  }
}
