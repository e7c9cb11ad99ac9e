/**
 * Sequential read-ahead for one open file, in the client's chunk-sized pieces.
 *
 * The kernel asks for at most 128 KiB per read (libfuse 2). Passed on one by one, each would be a
 * round trip to a storage server for a slice of a chunk; the client handle answers them one at a
 * time. Once reads on an fd run sequentially, this fetches whole aligned pieces (4 MiB by default,
 * the client's chunk size: one verified whole-chunk transfer each) ahead of the reader, a few at
 * a time, and answers the kernel's reads from them.
 *
 * Coherence stays close-to-open: every byte comes from this open's own client handle, only earlier
 * (at most the window ahead of the reader), so data another peer commits while the file is open
 * may show up a window later than without read-ahead; an open after that peer's close sees it as
 * before. The handle's own look for growth is kept: a read past the data a piece held (the end of
 * the file, e.g. `tail -f`) goes to the handle, and a short answer drops every piece. Only files
 * opened read-only use it (a handle that writes changes its own data under the pieces).
 */

import type { ChunkBufferPool } from '../node/client/buffer-pool.ts';

/**
 * Reads `length` bytes at `offset` from the client handle (short at the end of the file); with
 * `into`, into it (the result is the filled part of it).
 */
export type ReadFunction = (offset: number, length: number, into?: Uint8Array) => Promise<Uint8Array>;

export interface ReadAheadOptions {
  /** Piece size: aligned whole pieces are fetched (a multiple of the client's chunk size is best). */
  readonly pieceBytes: number;
  /** Pieces kept ahead of the reader. */
  readonly pieces: number;
  /** Bytes all open files may hold in pieces together (fetches beyond it are skipped). */
  readonly budget: ReadAheadBudget;
  /**
   * Buffers of pieceBytes to fetch pieces into, reused (a cold sequential read otherwise fills
   * fresh memory at the network's pace: page faults and garbage collections). A dropped piece's
   * buffer goes back once its fetch has settled and a turn of the event loop has passed, so that
   * every read answered from it has copied its bytes out (a FUSE read copies them into the
   * kernel's buffer as soon as it resumes, in the same turn).
   */
  readonly buffers?: ChunkBufferPool;
}

/** The memory all read-ahead buffers of a mount may hold. */
export class ReadAheadBudget {
  readonly #bytesMax: number;
  #bytes = 0;

  constructor(bytesMax: number) {
    this.#bytesMax = bytesMax;
  }

  get bytes(): number {
    return this.#bytes;
  }

  take(bytes: number): boolean {
    if (this.#bytes + bytes > this.#bytesMax) return false;
    this.#bytes += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#bytes -= bytes;
  }
}

interface Piece {
  /** File offset of the first byte: the piece's aligned start, or where the reader was when a run began. */
  readonly start: number;
  readonly promise: Promise<Uint8Array>;
  /** Set once fetched. */
  bytes?: Uint8Array;
  /** The pooled buffer the piece is fetched into. */
  readonly buffer?: Uint8Array;
}

/** How many recent read ends are remembered (the kernel's parallel reads arrive out of order). */
const recentEndsMax = 32;

export class ReadAhead {
  readonly #read: ReadFunction;
  readonly #pieceBytes: number;
  readonly #window: number;
  readonly #budget: ReadAheadBudget;
  readonly #buffers: ChunkBufferPool | undefined;
  readonly #pieces = new Map<number, Piece>();
  #recentEnds: number[] = [];
  /** Bumped when every piece is dropped: fetches started before then are not kept. */
  #generation = 0;
  /** The piece of the latest read served from the pieces (the window starts there). */
  #position = 0;
  /** A piece of this run came back full: the file is long, later pieces may be asked before. */
  #long = false;
  #closed = false;

  constructor(read: ReadFunction, options: ReadAheadOptions) {
    this.#read = read;
    this.#pieceBytes = options.pieceBytes;
    this.#window = options.pieces;
    this.#budget = options.budget;
    this.#buffers = options.buffers?.bufferBytes === options.pieceBytes ? options.buffers : undefined;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const sequential = this.#recentEnds.includes(offset);
    this.#recentEnds.push(offset + length);
    if (this.#recentEnds.length > recentEndsMax) this.#recentEnds.shift();
    const index = Math.floor(offset / this.#pieceBytes);
    const lastIndex = Math.floor((offset + Math.max(length, 1) - 1) / this.#pieceBytes);
    if (length > 0 && index === lastIndex && !this.#closed) {
      if (sequential || this.#pieces.has(index)) {
        this.#position = index;
        this.#fill(index, offset);
      }
      const piece = this.#pieces.get(index);
      if (piece !== undefined && offset >= piece.start) {
        const bytes = await piece.promise.catch(() => undefined);
        const start = offset - piece.start;
        if (bytes !== undefined && start + length <= bytes.length) {
          this.#position = index;
          this.#evictBefore(index - 1);
          return bytes.subarray(start, start + length);
        }
      }
    }
    const data = await this.#read(offset, length);
    if (data.length < length) {
      // The end of the file, where the handle looks for growth: start over, and treat the next
      // read as a new run (`tail -f` polling the end must not fetch whole pieces again and again).
      this.clear();
      this.#recentEnds = [];
    }
    return data;
  }

  /** Drops every piece (and what is still being fetched). */
  clear(): void {
    this.#generation += 1;
    this.#position = 0;
    this.#long = false;
    for (const index of [...this.#pieces.keys()]) this.#drop(index);
  }

  close(): void {
    this.#closed = true;
    this.clear();
  }

  /**
   * Fetches piece `index` (from `from` when that lies inside it: the bytes before were read
   * already) and the window after it: a piece once the one before came back full, or while the
   * one before is still coming when an earlier piece came back full (a long file: at its end, at
   * most the window is asked past it, and comes back empty).
   */
  #fill(index: number, from = index * this.#pieceBytes): void {
    for (let next = index; next < index + this.#window; next++) {
      if (this.#pieces.has(next)) continue;
      const end = (next + 1) * this.#pieceBytes;
      if (next > index) {
        const previous = this.#pieces.get(next - 1);
        if (previous === undefined) return;
        if (
          previous.bytes === undefined
            ? !this.#long
            : previous.start + previous.bytes.length < end - this.#pieceBytes
        )
          return;
      }
      if (!this.#budget.take(this.#pieceBytes)) return;
      const generation = this.#generation;
      const start = Math.max(from, next * this.#pieceBytes);
      const buffer = this.#buffers?.take();
      const piece: Piece = {
        start,
        ...(buffer === undefined ? {} : { buffer }),
        promise: this.#read(start, end - start, buffer?.subarray(0, end - start)).then((bytes) => {
          piece.bytes = bytes;
          if (generation === this.#generation && start + bytes.length === end) this.#long = true;
          if (generation === this.#generation && !this.#closed) this.#fill(this.#position);
          return bytes;
        }),
      };
      piece.promise.catch(() => {
        if (this.#pieces.get(next) === piece) this.#drop(next);
      });
      this.#pieces.set(next, piece);
    }
  }

  #evictBefore(index: number): void {
    for (const key of this.#pieces.keys()) if (key < index) this.#drop(key);
  }

  #drop(index: number): void {
    const piece = this.#pieces.get(index);
    if (piece === undefined) return;
    this.#pieces.delete(index);
    this.#budget.give(this.#pieceBytes);
    const { buffer } = piece;
    const buffers = this.#buffers;
    if (buffer === undefined || buffers === undefined) return;
    // Not while its fetch may still write into it, nor before the reads it answered have copied.
    const settled = () => setImmediate(() => buffers.give(buffer));
    piece.promise.then(settled, settled);
  }
}
