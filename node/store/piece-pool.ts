/**
 * A free list of equal-sized body pieces for ingests of uploads.
 *
 * Why: every fresh ArrayBuffer counts against V8's external memory, and allocating external
 * memory fast makes V8 run a full (mark-compact) collection every ~64 MiB. Re-chunking each upload
 * into freshly allocated pieces (storage/service.ts) cost about 0.6-0.8 s of CPU per GiB in
 * collections; pieces taken from and returned to a pool do not.
 *
 * Pieces are plain ArrayBuffers (copying into a SharedArrayBuffer, which the hash worker could
 * read in place, costs V8 about four times as much: 0.2 s/GiB against 0.05). A piece goes back
 * with `give()` only when nothing uses it any more (the backend reports that through
 * `IngestOptions.release`); a piece that is never given back is simply collected. The pool holds
 * at most `freeMax` idle pieces.
 */
import { assert } from '../common/errors.ts';

export class PiecePool {
  readonly pieceBytes: number;
  readonly #freeMax: number;
  readonly #free: ArrayBuffer[] = [];
  /** Buffers this pool made (a foreign buffer is never taken in). */
  readonly #owned = new WeakSet<ArrayBuffer>();
  /** Buffers idle in the free list (guards against a piece given back twice). */
  readonly #idle = new WeakSet<ArrayBuffer>();

  constructor(pieceBytes: number, freeMax: number) {
    assert(Number.isSafeInteger(pieceBytes) && pieceBytes > 0, 'piece size must be a positive integer');
    this.pieceBytes = pieceBytes;
    this.#freeMax = freeMax;
  }

  /** Idle pieces held. */
  get idle(): number {
    return this.#free.length;
  }

  /** A piece of `pieceBytes` bytes (contents undefined), owned by the caller until given back. */
  take(): Buffer {
    let memory = this.#free.pop();
    if (memory === undefined) {
      memory = new ArrayBuffer(this.pieceBytes);
      this.#owned.add(memory);
    } else {
      this.#idle.delete(memory);
    }
    return Buffer.from(memory, 0, this.pieceBytes);
  }

  /** Return a piece (or any view of one) that nothing uses any more; other buffers are ignored. */
  give(piece: Uint8Array): void {
    const memory = piece.buffer;
    if (!(memory instanceof ArrayBuffer) || !this.#owned.has(memory)) return;
    assert(!this.#idle.has(memory), 'a pooled piece was given back twice');
    if (this.#free.length >= this.#freeMax) return;
    this.#idle.add(memory);
    this.#free.push(memory);
  }
}
