import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  applyChunkWrites,
  chunkLookup,
  copyHoldsChunk,
  mergeChunk,
  planRead,
  planWrite,
  truncateChunks,
  validateChunks,
} from '../../node/client/layout.ts';
import type { Chunk } from '../../node/metadata/records.ts';
import { contentHashOf } from '../../node/store/content-hash.ts';

const C = 4096; // small chunks for the test

/** A file as chunk objects (id -> bytes, immutable) plus the chunk list, like a cell stores it. */
class ChunkedFile {
  chunks: Chunk[] = [];
  size = 0;
  readonly objects = new Map<string, Uint8Array>();

  write(offset: number, data: Uint8Array): void {
    const newSize = Math.max(this.size, offset + data.length);
    const replacements: Chunk[] = [];
    const plan = planWrite(this.chunks, offset, data.length, newSize, C);
    // A lookup by index plans the same as the list.
    assert.deepEqual(planWrite(chunkLookup(this.chunks, C), offset, data.length, newSize, C), plan);
    for (const w of plan) {
      const previousBytes =
        w.previous === undefined ? undefined : this.objects.get(Buffer.from(w.previous.id).toString('hex'));
      const part = data.subarray(w.spanStart + w.writeStart - offset, w.spanStart + w.writeEnd - offset);
      const bytes = mergeChunk(w, previousBytes, part);
      const id = new Uint8Array(randomBytes(16));
      this.objects.set(Buffer.from(id).toString('hex'), bytes);
      replacements.push({ id, offset: w.spanStart, size: bytes.length, hash: new Uint8Array(0) });
    }
    this.chunks = applyChunkWrites(this.chunks, replacements, C);
    this.size = newSize;
    validateChunks(this.chunks, this.size, C);
  }

  truncate(size: number): void {
    this.chunks = truncateChunks(this.chunks, size).kept;
    this.size = size;
    validateChunks(this.chunks, this.size, C);
  }

  read(offset: number, length: number): Uint8Array {
    const out: Uint8Array[] = [];
    const plan = planRead(this.chunks, this.size, offset, length, C);
    assert.deepEqual(planRead(chunkLookup(this.chunks, C), this.size, offset, length, C), plan);
    for (const piece of plan) {
      if (piece.kind === 'zeros') out.push(new Uint8Array(piece.length));
      else {
        const bytes = this.objects.get(Buffer.from(piece.chunk.id).toString('hex'))!;
        out.push(bytes.subarray(piece.chunkOffset, piece.chunkOffset + piece.length));
      }
    }
    return Buffer.concat(out);
  }
}

const op = fc.oneof(
  fc.record({
    kind: fc.constant('write' as const),
    offset: fc.integer({ min: 0, max: 6 * C }),
    data: fc.uint8Array({ minLength: 1, maxLength: 3 * C }),
  }),
  fc.record({ kind: fc.constant('truncate' as const), size: fc.integer({ min: 0, max: 7 * C }) }),
);

test('chunked files behave like a flat byte array under writes, holes and truncates', () => {
  fc.assert(
    fc.property(
      fc.array(op, { maxLength: 25 }),
      fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 5 }),
      (ops, reads) => {
        const file = new ChunkedFile();
        let model = Buffer.alloc(0);
        for (const o of ops) {
          if (o.kind === 'write') {
            file.write(o.offset, o.data);
            if (model.length < o.offset + o.data.length)
              model = Buffer.concat([model, Buffer.alloc(o.offset + o.data.length - model.length)]);
            model.set(o.data, o.offset);
          } else {
            file.truncate(o.size);
            model =
              o.size <= model.length
                ? Buffer.from(model.subarray(0, o.size))
                : Buffer.concat([model, Buffer.alloc(o.size - model.length)]);
          }
          assert.equal(file.size, model.length);
        }
        assert.ok(Buffer.from(file.read(0, file.size + 10)).equals(model), 'whole file');
        for (const [a, b] of reads) {
          const offset = a % (model.length + 1);
          const length = b % (model.length + 1);
          assert.ok(
            Buffer.from(file.read(offset, length)).equals(model.subarray(offset, offset + length)),
            `read ${offset}+${length}`,
          );
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('planRead merges adjacent holes; planWrite covers every touched chunk', () => {
  const chunk = (index: number, size: number): Chunk => ({
    id: new Uint8Array(16).fill(index),
    offset: index * C,
    size,
    hash: new Uint8Array(0),
  });
  const pieces = planRead([chunk(0, 100), chunk(3, C)], 4 * C, 50, 4 * C, C);
  assert.deepEqual(
    pieces.map((p) => [p.kind, p.fileOffset, p.length]),
    [
      ['chunk', 50, 50],
      ['zeros', 100, 3 * C - 100],
      ['chunk', 3 * C, C],
    ],
  );
  const writes = planWrite([], C - 1, 2, C + 1, C);
  assert.deepEqual(
    writes.map((w) => [w.index, w.writeStart, w.writeEnd, w.newSize]),
    [
      [0, C - 1, C, C],
      [1, 0, 1, 1],
    ],
  );
  assert.throws(() => planRead([], 0, -1, 1), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => validateChunks([chunk(1, 10), chunk(0, 10)], 10 * C, C), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => validateChunks([{ ...chunk(0, 10), offset: 5 }], 10 * C, C), {
    code: 'INVALID_ARGUMENT',
  });
});

test('copyHoldsChunk: same size and hash; a trimmed chunk (no hash) is held by any copy at least its size', () => {
  const body = randomBytes(3 * C);
  const hash = contentHashOf(body);
  const chunk: Chunk = { id: new Uint8Array(16).fill(1), offset: 0, size: body.length, hash };
  assert.equal(copyHoldsChunk(chunk, { size: body.length, contentHash: hash }), true);
  assert.equal(
    copyHoldsChunk(chunk, { size: body.length, contentHash: contentHashOf(randomBytes(8)) }),
    false,
  );
  assert.equal(copyHoldsChunk(chunk, { size: body.length + 1, contentHash: hash }), false);
  // Legacy sha256 hashes compare as bytes too: a BLAKE3 copy of other bytes is not the chunk.
  const legacy = { ...chunk, hash: contentHashOf(body, 'SHA256') };
  assert.equal(
    copyHoldsChunk(legacy, { size: body.length, contentHash: contentHashOf(body, 'SHA256') }),
    true,
  );
  assert.equal(copyHoldsChunk(legacy, { size: body.length, contentHash: hash }), false);

  const [trimmed] = truncateChunks([chunk], C).kept;
  assert.equal(trimmed!.size, C);
  assert.equal(trimmed!.hash.length, 0, 'the hash of the longer object no longer describes the chunk');
  // The original object (longer), and a copy of its first C bytes (hashed where it landed).
  assert.equal(copyHoldsChunk(trimmed!, { size: body.length, contentHash: hash }), true);
  assert.equal(copyHoldsChunk(trimmed!, { size: C, contentHash: contentHashOf(body.subarray(0, C)) }), true);
  assert.equal(copyHoldsChunk(trimmed!, { size: C - 1, contentHash: hash }), false);
});

test('mergeChunk into a reused buffer zeroes what neither the previous bytes nor the write cover', () => {
  const target = new Uint8Array(64).fill(0xee);
  const previous = { id: new Uint8Array(16), offset: 0, size: 8, hash: new Uint8Array(0) };
  const [write] = planWrite([previous], 20, 4, 40, 64);
  const merged = mergeChunk(write!, new Uint8Array(16).fill(5), new Uint8Array(4).fill(9), target);
  const expected = new Uint8Array(write!.newSize);
  expected.fill(5, 0, 8); // the previous chunk's logical size only
  expected.fill(9, 20, 24);
  assert.deepEqual([...merged], [...expected]);
  assert.equal(merged.buffer, target.buffer, 'in the given buffer');
  assert.throws(() => mergeChunk(write!, undefined, new Uint8Array(4), new Uint8Array(8)), /cannot hold/);
});
