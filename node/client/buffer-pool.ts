/**
 * Chunk-sized write buffers, reused. A sequential writer fills one chunk buffer after another
 * (4 MiB each by default); allocating each afresh costs page faults on first touch and, with that
 * much external memory churned, frequent full garbage collections: measured here, about a third
 * of a cell client's CPU time while it wrote a 1 GiB file. Buffers come back once their chunk is
 * committed, and the idle ones are dropped after `idleMs` without use.
 *
 * A buffer from `take` holds whatever its last user left in it: the caller writes every byte it
 * exposes (DirtyChunk fills the gaps it leaves with zeros).
 */
export class ChunkBufferPool {
  readonly bufferBytes: number;
  readonly #buffersMax: number;
  readonly #idleMs: number;
  readonly #free: Uint8Array[] = [];
  #idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(bufferBytes: number, buffersMax: number, idleMs = 10_000) {
    this.bufferBytes = bufferBytes;
    this.#buffersMax = Math.max(0, Math.floor(buffersMax));
    this.#idleMs = idleMs;
  }

  /** Buffers waiting to be reused. */
  get idle(): number {
    return this.#free.length;
  }

  /** A buffer of bufferBytes, contents unspecified. */
  take(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.bufferBytes);
  }

  /**
   * Give back a buffer from `take` that nothing references any more (its bytes will be
   * overwritten by the next user). Buffers of another size are left to the garbage collector.
   */
  give(buffer: Uint8Array): void {
    if (buffer.byteLength !== this.bufferBytes || buffer.byteOffset !== 0) return;
    if (buffer.buffer.byteLength !== this.bufferBytes) return;
    if (this.#free.length >= this.#buffersMax) return;
    this.#free.push(buffer);
    if (this.#idleTimer === undefined) {
      this.#idleTimer = setTimeout(() => this.#dropIdle(), this.#idleMs);
      this.#idleTimer.unref?.();
    } else {
      this.#idleTimer.refresh();
    }
  }

  #dropIdle(): void {
    this.#idleTimer = undefined;
    this.#free.length = 0;
  }
}
