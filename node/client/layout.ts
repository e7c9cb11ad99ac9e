/**
 * How a file's bytes map onto chunk objects (pure functions, no I/O).
 *
 * A file larger than the inline limit is a list of chunks at fixed boundaries: chunk k covers
 * [k·C, (k+1)·C) of the file (C = chunk size, default 4 MiB), holds `size` bytes from its start
 * (the rest of its span reads as zeros), and may be missing entirely (a hole). Chunk objects are
 * immutable: a write replaces every chunk it touches with a new object (copy-on-write; a partial
 * write merges the old chunk's bytes), then commits the new chunk list to the metadata in one
 * command. Readers and the replicas therefore never see a half-written chunk, and the old list
 * stays valid until the commit.
 */
import { InvalidArgumentError } from '../common/errors.ts';
import type { Chunk } from '../metadata/records.ts';

export const CHUNK_BYTES_DEFAULT = 4 * 1024 * 1024;

/** A piece of a read: bytes [fileOffset, fileOffset + length) come from `chunk` at `chunkOffset`, or are zeros. */
export type ReadPiece =
  | {
      readonly kind: 'chunk';
      readonly fileOffset: number;
      readonly length: number;
      readonly chunk: Chunk;
      readonly chunkOffset: number;
    }
  | { readonly kind: 'zeros'; readonly fileOffset: number; readonly length: number };

function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new InvalidArgumentError(`invalid range offset=${offset} length=${length}`);
  }
}

/** Check a chunk list: ordered, aligned to the chunk size, within the file. */
export function validateChunks(
  chunks: readonly Chunk[],
  fileSize: number,
  chunkBytes = CHUNK_BYTES_DEFAULT,
): void {
  let previous = -1;
  for (const chunk of chunks) {
    const index = chunk.offset / chunkBytes;
    if (!Number.isInteger(index))
      throw new InvalidArgumentError(`chunk at ${chunk.offset} is not aligned to ${chunkBytes}`);
    if (index <= previous) throw new InvalidArgumentError('chunks out of order or duplicated');
    if (chunk.size <= 0 || chunk.size > chunkBytes)
      throw new InvalidArgumentError(`chunk size ${chunk.size} out of range`);
    if (chunk.offset + chunk.size > fileSize)
      throw new InvalidArgumentError('chunk extends past the file size');
    previous = index;
  }
}

/**
 * A file's chunks: a list (in any order), or a lookup by chunk index (a large file's list need
 * not be indexed again for every read and write).
 */
export type ChunkSource = readonly Chunk[] | ((index: number) => Chunk | undefined);

/** The lookup by chunk index of a ChunkSource. */
export function chunkLookup(chunks: ChunkSource, chunkBytes: number): (index: number) => Chunk | undefined {
  if (typeof chunks === 'function') return chunks;
  const byIndex = new Map(chunks.map((chunk) => [chunk.offset / chunkBytes, chunk]));
  return (index) => byIndex.get(index);
}

/** The pieces that make up bytes [offset, offset+length) of a file (clipped to its size). */
export function planRead(
  chunks: ChunkSource,
  fileSize: number,
  offset: number,
  length: number,
  chunkBytes = CHUNK_BYTES_DEFAULT,
): ReadPiece[] {
  checkRange(offset, length);
  const end = Math.min(fileSize, offset + length);
  const pieces: ReadPiece[] = [];
  const chunkAt = chunkLookup(chunks, chunkBytes);
  let position = offset;
  while (position < end) {
    const index = Math.floor(position / chunkBytes);
    const spanStart = index * chunkBytes;
    const spanEnd = Math.min(end, spanStart + chunkBytes);
    const chunk = chunkAt(index);
    const dataEnd = chunk === undefined ? spanStart : Math.min(spanEnd, spanStart + chunk.size);
    if (chunk !== undefined && position < dataEnd) {
      pieces.push({
        kind: 'chunk',
        fileOffset: position,
        length: dataEnd - position,
        chunk,
        chunkOffset: position - spanStart,
      });
      position = dataEnd;
    }
    if (position < spanEnd) {
      const last = pieces.at(-1);
      if (last?.kind === 'zeros' && last.fileOffset + last.length === position) {
        pieces[pieces.length - 1] = {
          kind: 'zeros',
          fileOffset: last.fileOffset,
          length: last.length + spanEnd - position,
        };
      } else {
        pieces.push({ kind: 'zeros', fileOffset: position, length: spanEnd - position });
      }
      position = spanEnd;
    }
  }
  return pieces;
}

/** One chunk a write replaces: its index, and which part of it the write covers. */
export interface ChunkWrite {
  readonly index: number;
  /** The chunk's span in the file. */
  readonly spanStart: number;
  /** The written bytes, relative to the span. */
  readonly writeStart: number;
  readonly writeEnd: number;
  /** The chunk it replaces, if any (its bytes outside the write are kept). */
  readonly previous?: Chunk;
  /** Size of the new chunk: covers the write and what the previous chunk held, within the file. */
  readonly newSize: number;
}

/** The chunks a write of [offset, offset+length) replaces, for a file that becomes `newFileSize` long. */
export function planWrite(
  chunks: ChunkSource,
  offset: number,
  length: number,
  newFileSize: number,
  chunkBytes = CHUNK_BYTES_DEFAULT,
): ChunkWrite[] {
  checkRange(offset, length);
  if (length === 0) return [];
  if (newFileSize < offset + length) throw new InvalidArgumentError('the file size must cover the write');
  const chunkAt = chunkLookup(chunks, chunkBytes);
  const writes: ChunkWrite[] = [];
  const first = Math.floor(offset / chunkBytes);
  const last = Math.floor((offset + length - 1) / chunkBytes);
  for (let index = first; index <= last; index++) {
    const spanStart = index * chunkBytes;
    const writeStart = Math.max(offset, spanStart) - spanStart;
    const writeEnd = Math.min(offset + length, spanStart + chunkBytes) - spanStart;
    const previous = chunkAt(index);
    const newSize = Math.min(Math.max(writeEnd, previous?.size ?? 0), newFileSize - spanStart);
    writes.push({ index, spanStart, writeStart, writeEnd, previous, newSize });
  }
  return writes;
}

/**
 * Build a new chunk's bytes: the previous chunk's bytes (if any) with `data` written at
 * writeStart, in a new buffer or at the start of `target` (a reused buffer, at least newSize
 * bytes: what neither the previous bytes nor the write cover is zeroed). Returns the chunk's bytes.
 */
export function mergeChunk(
  write: ChunkWrite,
  previousBytes: Uint8Array | undefined,
  data: Uint8Array,
  target?: Uint8Array,
): Uint8Array {
  if (data.length !== write.writeEnd - write.writeStart)
    throw new InvalidArgumentError('data does not match the write');
  if (target !== undefined && target.length < write.newSize)
    throw new InvalidArgumentError(
      `a ${target.length}-byte buffer cannot hold a ${write.newSize}-byte chunk`,
    );
  const bytes = target === undefined ? new Uint8Array(write.newSize) : target.subarray(0, write.newSize);
  let keep = 0;
  if (previousBytes !== undefined) {
    // Only the previous chunk's logical size counts: bytes past it (left by a truncate) are zeros.
    keep = Math.min(previousBytes.length, write.previous?.size ?? 0, write.newSize);
    bytes.set(previousBytes.subarray(0, keep));
  }
  if (target !== undefined) {
    if (write.writeStart > keep) bytes.fill(0, keep, write.writeStart);
    bytes.fill(0, Math.max(keep, write.writeEnd), write.newSize);
  }
  bytes.set(data, write.writeStart);
  return bytes;
}

/** The chunk list after a write: replaced chunks swapped for the new ones, the rest kept. */
export function applyChunkWrites(
  chunks: readonly Chunk[],
  replacements: readonly Chunk[],
  chunkBytes = CHUNK_BYTES_DEFAULT,
): Chunk[] {
  const byIndex = new Map(chunks.map((chunk) => [chunk.offset / chunkBytes, chunk]));
  for (const chunk of replacements) byIndex.set(chunk.offset / chunkBytes, chunk);
  return [...byIndex.entries()].sort(([a], [b]) => a - b).map(([, chunk]) => chunk);
}

/**
 * Whether a stored object (its header's body size and content hash) holds the bytes of `chunk`.
 * Object ids are never reused (every write makes new ones), so a copy holds the chunk when its
 * size and hash are the chunk's; a chunk trimmed by a truncate has no hash (see truncateChunks),
 * and any copy at least its size holds it (the original, longer object, or a copy of its first
 * `size` bytes made since).
 */
export function copyHoldsChunk(
  chunk: Pick<Chunk, 'size' | 'hash'>,
  copy: { readonly size: number; readonly contentHash: Uint8Array },
): boolean {
  if (chunk.hash.length === 0) return copy.size >= chunk.size;
  return copy.size === chunk.size && Buffer.compare(copy.contentHash, chunk.hash) === 0;
}

/**
 * Set a file's size: chunks past the end are released, a chunk across it is trimmed. A trimmed
 * chunk keeps its stored object (longer than the chunk now is), so its content hash no longer
 * describes its bytes: the hash is cleared, and reads and copies of it rely on the backends' block
 * checksums (copies are hashed where they land).
 */
export function truncateChunks(
  chunks: readonly Chunk[],
  size: number,
): { kept: Chunk[]; released: Uint8Array[] } {
  const kept: Chunk[] = [];
  const released: Uint8Array[] = [];
  for (const chunk of chunks) {
    if (chunk.offset >= size) released.push(chunk.id);
    else
      kept.push(
        chunk.offset + chunk.size > size
          ? { ...chunk, size: size - chunk.offset, hash: new Uint8Array(0) }
          : chunk,
      );
  }
  return { kept, released };
}
