/**
 * Streams an object body into a temp file: hashes it (content-hash.ts) and checksums each block (checksum.ts)
 * through a BodyHasher (inline, or on a worker thread for large bodies),
 * and leaves every all-zero 4 KiB page unwritten so that holes stay holes on disk.
 *
 * The body starts at a page-aligned file offset, so a zero page of the body is a whole filesystem
 * block that is never allocated. Writes of consecutive non-zero pages are merged into one pwrite;
 * up to `inflightWritesMax` writes run in the thread pool while the next chunk is hashed.
 * Pushed buffers must not be reused by the producer (Node streams and libp2p never do) until the
 * writer hands them back through `release` (when given): then nothing reads them any more.
 */
import { assert } from '../common/errors.ts';
import type { FileHandleLike } from '../common/fs.ts';
import { CONTENT_HASH_CURRENT } from './content-hash.ts';
import { PAGE_BYTES } from './format.ts';
import { type BodyHasher, InlineHasher } from './hasher.ts';

const ZERO_PAGE = Buffer.alloc(PAGE_BYTES);
const inflightWritesMax = 4;
/** Largest single pwrite; longer runs are split. */
const writeBytesMax = 4 * 1024 * 1024;
/**
 * Start writing dirty pages back (fdatasync in the thread pool) after this many bytes, so the disk
 * works while the next pieces are hashed and the final fsync has little left to do.
 */
const writebackBytes = 16 * 1024 * 1024;

export class SparseBodyWriter {
  readonly #handle: Promise<FileHandleLike>;
  readonly #bodyOffset: number;
  readonly #hasher: BodyHasher;
  readonly #release: ((chunk: Uint8Array) => void) | undefined;
  /** Logical bytes received so far. */
  #received = 0;
  /** A partial page (< PAGE_BYTES) waiting for more data; starts at a page boundary. */
  #carry: Buffer = Buffer.alloc(PAGE_BYTES);
  #carryLength = 0;
  readonly #inflight = new Set<Promise<void>>();
  #failure: unknown;
  #bytesWritten = 0;
  /** End of the furthest byte written (holes excluded), relative to the body. */
  #writtenEnd = 0;
  #bytesSinceWriteback = 0;

  constructor(options: {
    /** The temp file, or its open still running (hashing starts meanwhile; writes wait for it). */
    handle: FileHandleLike | Promise<FileHandleLike>;
    bodyOffset: number;
    blockBytes: number;
    hasher?: BodyHasher;
    /**
     * Called once for each pushed chunk when no write or hash reads it any more (so its buffer may
     * be reused). A chunk of a failed ingest may never be released.
     */
    release?: (chunk: Uint8Array) => void;
  }) {
    assert(options.bodyOffset % PAGE_BYTES === 0, 'body offset must be page-aligned');
    assert(options.blockBytes % PAGE_BYTES === 0, 'block size must be a multiple of the page size');
    this.#handle = Promise.resolve(options.handle);
    this.#bodyOffset = options.bodyOffset;
    this.#hasher = options.hasher ?? new InlineHasher(options.blockBytes, CONTENT_HASH_CURRENT);
    this.#release = options.release;
  }

  get received(): number {
    return this.#received;
  }

  /** True when the body is not empty and its last bytes were written (the file already ends there). */
  get endsWithData(): boolean {
    return this.#received > 0 && this.#writtenEnd === this.#received;
  }

  /** Bytes actually written to disk (holes excluded). */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  async push(input: Uint8Array): Promise<void> {
    if (this.#failure !== undefined) throw this.#failure;
    const release = this.#release;
    if (input.length === 0) {
      release?.(input);
      return;
    }
    const chunk = Buffer.isBuffer(input)
      ? input
      : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    // References to `input`: this call, the hasher, and each write of a part of it.
    let references = 2;
    const unreference =
      release === undefined
        ? undefined
        : () => {
            references -= 1;
            if (references === 0) release(input);
          };
    await this.#hasher.update(chunk, unreference);
    let rest = chunk;
    const start = this.#received;
    this.#received += chunk.length;
    if (this.#carryLength > 0) {
      const take = Math.min(PAGE_BYTES - this.#carryLength, rest.length);
      rest.copy(this.#carry, this.#carryLength, 0, take);
      this.#carryLength += take;
      rest = rest.subarray(take);
      if (this.#carryLength === PAGE_BYTES) {
        const page = this.#carry;
        this.#carry = Buffer.alloc(PAGE_BYTES);
        this.#carryLength = 0;
        if (!page.equals(ZERO_PAGE)) await this.#write(page, start + take - PAGE_BYTES);
      }
    }
    const restStart = start + (chunk.length - rest.length);
    assert(rest.length === 0 || restStart % PAGE_BYTES === 0, 'page alignment lost');
    const fullPages = Math.floor(rest.length / PAGE_BYTES);
    let runStart = -1;
    for (let page = 0; page <= fullPages; page++) {
      const isData =
        page < fullPages && !rest.subarray(page * PAGE_BYTES, (page + 1) * PAGE_BYTES).equals(ZERO_PAGE);
      if (isData && runStart < 0) runStart = page;
      const runEnds = runStart >= 0 && (!isData || (page - runStart) * PAGE_BYTES >= writeBytesMax);
      if (runEnds) {
        references += 1;
        await this.#write(
          rest.subarray(runStart * PAGE_BYTES, page * PAGE_BYTES),
          restStart + runStart * PAGE_BYTES,
          unreference,
        );
        runStart = isData ? page : -1;
      }
    }
    const tail = rest.subarray(fullPages * PAGE_BYTES);
    if (tail.length > 0) {
      tail.copy(this.#carry, 0);
      this.#carryLength = tail.length;
    }
    unreference?.();
  }

  /**
   * Queue the last partial page and return the content hash and block checksums, without waiting
   * for the writes: the caller may start its own (the header) alongside, then `drain()`.
   */
  async digest(): Promise<{ hash: Uint8Array; crcs: number[]; size: number }> {
    if (this.#carryLength > 0) {
      const tail = this.#carry.subarray(0, this.#carryLength);
      if (!tail.equals(ZERO_PAGE.subarray(0, this.#carryLength))) {
        await this.#write(tail, this.#received - this.#carryLength);
      }
      this.#carryLength = 0;
    }
    const { hash, crcs } = await this.#hasher.finish();
    return { hash, crcs, size: this.#received };
  }

  /** Stop hashing (the ingest failed). */
  abort(): void {
    this.#hasher.abort();
  }

  /** Wait for all writes in flight; rethrows the first write failure. */
  async drain(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** Write `data` (pages of the body); `done` is called when the write no longer reads it. */
  async #write(data: Buffer, logicalOffset: number, done?: () => void): Promise<void> {
    this.#writtenEnd = Math.max(this.#writtenEnd, logicalOffset + data.length);
    while (this.#inflight.size >= inflightWritesMax) await Promise.race(this.#inflight);
    if (this.#failure !== undefined) throw this.#failure;
    const task = this.#writeFully(data, this.#bodyOffset + logicalOffset).then(
      () => {
        this.#bytesWritten += data.length;
        this.#bytesSinceWriteback += data.length;
        if (this.#bytesSinceWriteback >= writebackBytes) {
          this.#bytesSinceWriteback = 0;
          this.#track(this.#handle.then((handle) => handle.sync()));
        }
      },
      (error: unknown) => {
        this.#failure ??= error;
      },
    );
    this.#track(done === undefined ? task : task.finally(done));
  }

  #track(task: Promise<void>): void {
    const tracked = task
      .catch((error: unknown) => {
        this.#failure ??= error;
      })
      .finally(() => this.#inflight.delete(tracked));
    this.#inflight.add(tracked);
  }

  async #writeFully(data: Buffer, position: number): Promise<void> {
    const handle = await this.#handle;
    let done = 0;
    while (done < data.length) {
      const written = await handle.write(data, done, data.length - done, position + done);
      assert(written > 0, 'write made no progress');
      done += written;
    }
  }
}
