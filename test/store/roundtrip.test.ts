import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { Backend } from '../../node/store/backend.ts';
import { newObjectId } from '../../node/store/object-id.ts';
import { blake3ContentHash, collect, createTestBackend, patternBytes, tempDirectory } from '../helpers.ts';

const MiB = 1024 * 1024;

/** A body described as a size plus data segments; everything else is zeros (holes). */
const bodyArbitrary = fc
  .record({
    size: fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: 0, max: 256 * 1024 }) },
      { weight: 2, arbitrary: fc.integer({ min: 0, max: 8 * MiB }) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 64 * MiB }) },
    ),
    segments: fc.array(
      fc.record({
        at: fc.double({ min: 0, max: 1, noNaN: true }),
        length: fc.integer({ min: 1, max: 300_000 }),
        seed: fc.integer(),
      }),
      { maxLength: 6 },
    ),
    pieceBytes: fc.integer({ min: 1, max: 3 * MiB }),
  })
  .map(({ size, segments, pieceBytes }) => {
    const body = Buffer.alloc(size);
    for (const segment of segments) {
      const start = Math.floor(segment.at * size);
      const length = Math.min(segment.length, size - start);
      if (length > 0) patternBytes(length, segment.seed).copy(body, start);
    }
    // Odd piece sizes exercise alignment; bound the piece count so big bodies stay quick.
    return { body, pieceBytes: Math.max(pieceBytes, Math.ceil(size / 2000)) };
  });

async function* pieces(body: Buffer, pieceBytes: number): AsyncIterable<Uint8Array> {
  for (let offset = 0; offset < body.length; offset += pieceBytes) {
    yield Buffer.from(body.subarray(offset, offset + pieceBytes));
  }
}

test('round trip: any body, any piece size, ranged reads, header fields', async (t) => {
  const backend = await createTestBackend(t);
  await fc.assert(
    fc.asyncProperty(
      bodyArbitrary,
      fc.array(
        fc.record({
          name: fc.string({ minLength: 1, maxLength: 40 }),
          value: fc.uint8Array({ maxLength: 300 }),
        }),
        {
          maxLength: 4,
        },
      ),
      fc.boolean(),
      fc.array(
        fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })),
        {
          minLength: 1,
          maxLength: 4,
        },
      ),
      async ({ body, pieceBytes }, xattrs, chunked, ranges) => {
        const id = newObjectId();
        const mtimeMs = 1_700_000_000_000 + Math.floor(Math.random() * 1e9);
        const chunks = chunked
          ? [
              { id: newObjectId(), offset: 0, size: 123, hash: new Uint8Array(32).fill(1) },
              { id: newObjectId(), offset: 123, size: 5, hash: new Uint8Array(32) },
            ]
          : [];
        const stored = await backend.ingest(
          {
            id,
            mainType: chunked ? 'META' : 'DATA',
            subType: chunked ? 'FILE' : 'SUB_TYPE_UNSPECIFIED',
            layout: chunked ? 'CHUNKS' : 'INLINE',
            chunks,
            xattrs,
            mtimeMs,
            bodySize: body.length,
            flags: { outdated: false, hot: true, fragmentsMeta: chunked },
            name: 'file name',
            mode: 0o100644,
          },
          pieces(body, pieceBytes),
        );
        assert.equal(stored.bodySize, body.length);
        assert.deepEqual(Buffer.from(stored.contentHash), blake3ContentHash(body));
        assert.equal(stored.hashAlgorithm, 'BLAKE3');
        const head = await backend.head(id);
        assert.deepEqual(head, stored);
        assert.equal(head.chunks.length, chunks.length);
        assert.deepEqual(
          head.xattrs.map((x) => [x.name, Buffer.from(x.value).toString('hex')]),
          xattrs.map((x) => [x.name, Buffer.from(x.value).toString('hex')]),
        );
        assert.equal(statSync(backend.objectPath(id)).mtimeMs, mtimeMs);
        assert.ok((await backend.readAll(id)).equals(body), 'whole body round trip');
        for (const [a, b] of ranges) {
          const offset = Math.floor(Math.min(a, b) * body.length);
          const length = Math.floor(Math.abs(a - b) * body.length);
          const got = await collect(backend.read(id, { offset, length }));
          assert.ok(got.equals(body.subarray(offset, offset + length)), `range ${offset}+${length}`);
        }
        await backend.remove(id);
      },
    ),
    {
      numRuns: 100,
      examples: [
        // Always include the largest size: 64 MiB with data at odd places and odd piece sizes.
        [
          (() => {
            const body = Buffer.alloc(64 * MiB);
            patternBytes(1_000_003, 5).copy(body, 7);
            patternBytes(65_537, 6).copy(body, 40 * MiB + 4095);
            patternBytes(3, 7).copy(body, 64 * MiB - 3);
            return { body, pieceBytes: 999_999 };
          })(),
          [{ name: 'user.k', value: new Uint8Array([1, 2, 3]) }],
          false,
          [
            [0.1, 0.9],
            [0.62, 0.63],
          ],
        ],
      ],
    },
  );
});

test('sparse bodies stay sparse on disk (st_blocks)', async (t) => {
  const backend = await createTestBackend(t);
  const body = Buffer.alloc(64 * MiB);
  patternBytes(10_000, 7).copy(body, 20 * MiB + 123);
  patternBytes(100, 8).copy(body, 64 * MiB - 100);
  const id = newObjectId();
  await backend.ingest({ id }, body);
  const info = await backend.info(id);
  assert.ok(info.fileBytes > 64 * MiB, 'logical size covers the body');
  assert.ok(info.allocatedBytes < 256 * 1024, `allocated ${info.allocatedBytes} bytes for 10 KB of data`);
  assert.ok((await backend.readAll(id)).equals(body));
  const allZero = newObjectId();
  await backend.ingest({ id: allZero }, Buffer.alloc(16 * MiB));
  assert.ok((await backend.info(allZero)).allocatedBytes <= 64 * 1024);
});

test('a stated hash or size that does not match is refused and leaves nothing behind', async (t) => {
  const root = tempDirectory(t);
  const backend = await Backend.create(root, { cell: 'test' });
  t.after(() => backend.close());
  const id = newObjectId();
  const body = patternBytes(100_000, 1);
  await assert.rejects(backend.ingest({ id, contentHash: new Uint8Array(32) }, body), {
    code: 'HASH_MISMATCH',
  });
  await assert.rejects(backend.ingest({ id, bodySize: 5 }, body), { code: 'SIZE_MISMATCH' });
  await assert.rejects(backend.ingest({ id, bodySize: 200_000 }, body), { code: 'SIZE_MISMATCH' });
  assert.equal(await backend.has(id), false);
  const { readdirSync } = await import('node:fs');
  assert.deepEqual(readdirSync(`${root}/tmp`), []);
  const hash = createHash('sha256').update(body).digest();
  const stored = await backend.ingest({ id, contentHash: hash, bodySize: body.length }, body);
  assert.equal(stored.bodySize, body.length);
});

test('re-ingest replaces an object; refcount and header updates survive reopening', async (t) => {
  const root = tempDirectory(t);
  const backend = await Backend.create(root, { cell: 'test' });
  t.after(() => backend.close());
  const id = newObjectId();
  await backend.ingest({ id, version: 1 }, patternBytes(5000, 1));
  await backend.ingest({ id, version: 2 }, patternBytes(7000, 2));
  assert.equal((await backend.head(id)).version, 2);
  assert.equal(await backend.retain(id), 2);
  assert.equal(await backend.retain(id), 3);
  await backend.updateHeader(id, (h) => ({
    ...h,
    flags: { ...h.flags, outdated: true },
    mtimeMs: 1_650_000_000_001,
  }));
  const reopened = await Backend.open(root, { cell: 'test' });
  t.after(() => reopened.close());
  const head = await reopened.head(id);
  assert.equal(head.refcount, 3);
  assert.equal(head.flags.outdated, true);
  assert.equal(statSync(reopened.objectPath(id)).mtimeMs, 1_650_000_000_001);
  assert.ok((await reopened.readAll(id)).equals(patternBytes(7000, 2)));
  assert.equal(await reopened.release(id), 2);
  assert.equal(await reopened.release(id), 1);
  assert.equal(await reopened.release(id), 0);
  assert.equal(await reopened.has(id), false);
  await assert.rejects(reopened.head(id), { code: 'NOT_FOUND' });
  await assert.rejects(reopened.remove(id), { code: 'NOT_FOUND' });
  await assert.rejects(
    reopened.updateHeader(newObjectId(), (h) => h),
    { code: 'NOT_FOUND' },
  );
});

test('a header that outgrows its slot is rewritten atomically', async (t) => {
  const backend = await createTestBackend(t);
  const id = newObjectId();
  const body = patternBytes(300_000, 3);
  await backend.ingest({ id }, body);
  const big = Array.from({ length: 40 }, (_, i) => ({ name: `user.attr${i}`, value: patternBytes(500, i) }));
  await backend.updateHeader(id, (h) => ({ ...h, xattrs: big }));
  const head = await backend.head(id);
  assert.equal(head.xattrs.length, 40);
  assert.ok((await backend.readAll(id)).equals(body));
  await assert.rejects(
    backend.updateHeader(id, (h) => ({ ...h, bodySize: 1 })),
    { code: 'INVALID_ARGUMENT' },
  );
});

test('concurrent ingests and header updates of one object never tear it', async (t) => {
  const backend = await createTestBackend(t);
  const id = newObjectId();
  await backend.ingest({ id, version: 0 }, patternBytes(1000, 0));
  const work: Promise<unknown>[] = [];
  for (let i = 1; i <= 20; i++) {
    work.push(backend.ingest({ id, version: i }, patternBytes(1000 + i * 4099, i)));
    work.push(backend.updateHeader(id, (h) => ({ ...h, flags: { ...h.flags, hot: !h.flags.hot } })));
  }
  await Promise.all(work);
  const head = await backend.head(id);
  assert.ok((await backend.readAll(id)).equals(patternBytes(1000 + head.version * 4099, head.version)));
});

test("every ingested object's file has the original's mtime (no write or truncate lands after the utimes)", async (t) => {
  const backend = await createTestBackend(t);
  const sizes = [0, 100, 4096, 70_000, 300_000, 70 * 64 * 1024];
  const wrong: string[] = [];
  for (let i = 0; i < 240; i++) {
    const id = newObjectId();
    const mtimeMs = 1_600_000_000_000 + i * 1001;
    const body = new Uint8Array(sizes[i % sizes.length]!);
    if (i % 2 === 0) body.fill(7, 0, Math.min(body.length, 5000)); // some end in a hole (truncate)
    await backend.ingest({ id, mtimeMs }, body);
    const onDisk = Math.round(statSync(backend.objectPath(id)).mtimeMs);
    if (onDisk !== mtimeMs) wrong.push(`object ${i} (${body.length} bytes): ${onDisk} != ${mtimeMs}`);
  }
  assert.deepEqual(wrong, []);
});
