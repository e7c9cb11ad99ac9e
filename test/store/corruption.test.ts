import assert from 'node:assert/strict';
import {
  appendFileSync,
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Backend } from '../../node/store/backend.ts';
import { newObjectId, objectIdToHex } from '../../node/store/object-id.ts';
import { collect, patternBytes, tempDirectory } from '../helpers.ts';

async function backendWithObjects(t: import('node:test').TestContext, count = 3) {
  const root = tempDirectory(t);
  const backend = await Backend.create(root, { cell: 'c' });
  t.after(() => backend.close());
  const objects = [];
  for (let i = 0; i < count; i++) {
    const id = newObjectId();
    const body = patternBytes(200_000 + i * 1000, i + 1);
    await backend.ingest({ id, version: 1 }, body);
    objects.push({ id, body, path: backend.objectPath(id) });
  }
  return { root, backend, objects };
}

function flipByte(path: string, position: number): void {
  const fd = openSync(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, position);
    byte[0] = byte[0]! ^ 0x5a;
    writeSync(fd, byte, 0, 1, position);
  } finally {
    closeSync(fd);
  }
}

async function othersStillReadable(backend: Backend, objects: Array<{ id: Uint8Array; body: Buffer }>) {
  for (const object of objects) assert.ok((await backend.readAll(object.id)).equals(object.body));
}

test('a flipped body byte fails the read of its block, names the object, and scrub reports it', async (t) => {
  const { backend, objects } = await backendWithObjects(t);
  const [victim, ...others] = objects;
  flipByte(victim!.path, 8192 + 150_000);
  await assert.rejects(
    backend.readAll(victim!.id),
    (error: Error & { code?: string; context?: Record<string, unknown> }) => {
      assert.equal(error.code, 'CORRUPT_OBJECT');
      assert.equal(error.context?.objectId, objectIdToHex(victim!.id));
      assert.match(error.message, /block 2/);
      return true;
    },
  );
  // Ranges that do not touch the damaged block still read.
  assert.ok(
    (await collect(backend.read(victim!.id, { offset: 0, length: 65536 }))).equals(
      victim!.body.subarray(0, 65536),
    ),
  );
  await othersStillReadable(backend, others);
  const report = await backend.scrub();
  assert.equal(report.objectsChecked, 3);
  assert.deepEqual(
    report.corrupt.map((p) => [p.id, p.code]),
    [[objectIdToHex(victim!.id), 'CORRUPT_OBJECT']],
  );
});

test('a damaged header slot falls back to the other slot; both damaged is a clear error', async (t) => {
  const { backend, objects } = await backendWithObjects(t);
  const [victim, ...others] = objects;
  // Give the object a second header generation (slot B), then damage slot B: slot A still serves.
  await backend.updateHeader(victim!.id, (h) => ({ ...h, version: 2 }));
  assert.equal((await backend.head(victim!.id)).version, 2);
  flipByte(victim!.path, 4096 + 30);
  assert.equal((await backend.head(victim!.id)).version, 1, 'torn newer slot: previous header');
  // Damage slot A too: no valid header.
  flipByte(victim!.path, 30);
  await assert.rejects(backend.head(victim!.id), { code: 'CORRUPT_OBJECT' });
  await assert.rejects(backend.readAll(victim!.id), { code: 'CORRUPT_OBJECT' });
  await othersStillReadable(backend, others);
});

test('slot B is found when slot A is unreadable', async (t) => {
  const { backend, objects } = await backendWithObjects(t, 1);
  const object = objects[0]!;
  await backend.updateHeader(object.id, (h) => ({ ...h, version: 7 }));
  flipByte(object.path, 2); // slot A magic
  assert.equal((await backend.head(object.id)).version, 7);
  assert.ok((await backend.readAll(object.id)).equals(object.body));
});

test('a truncated object is reported as truncated', async (t) => {
  const { backend, objects } = await backendWithObjects(t);
  const [victim, ...others] = objects;
  truncateSync(victim!.path, 8192 + 100_000);
  await assert.rejects(backend.readAll(victim!.id), { code: 'CORRUPT_OBJECT' });
  truncateSync(victim!.path, 10);
  await assert.rejects(backend.head(victim!.id), { code: 'CORRUPT_OBJECT' });
  truncateSync(victim!.path, 0);
  await assert.rejects(backend.head(victim!.id), { code: 'CORRUPT_OBJECT' });
  await othersStillReadable(backend, others);
});

test('a damaged trailer (block table of a large object) is a clear error', async (t) => {
  const { backend, objects } = await backendWithObjects(t, 2);
  const large = newObjectId();
  const body = patternBytes(2 * 1024 * 1024 + 5, 42); // more blocks than fit in the header
  await backend.ingest({ id: large }, body);
  const path = backend.objectPath(large);
  flipByte(path, statSync(path).size - 3);
  await assert.rejects(backend.readAll(large), /trailer checksum mismatch/);
  await othersStillReadable(backend, objects);
});

test('small objects keep their block checksums in the header: no trailer, damage still found', async (t) => {
  const { backend, objects } = await backendWithObjects(t, 2);
  const victim = objects[0]!;
  const head = await backend.head(victim.id);
  assert.equal(head.blockChecksums.length, Math.ceil(victim.body.length / 65536));
  assert.equal(statSync(victim.path).size, 8192 + victim.body.length, 'the file ends with the body');
  const tail = newObjectId();
  await backend.ingest({ id: tail }, Buffer.concat([Buffer.from('x'), Buffer.alloc(100_000)]));
  assert.equal(
    statSync(backend.objectPath(tail)).size,
    8192 + 100_001,
    'trailing zeros are a hole up to the end',
  );
  assert.ok((await backend.readAll(tail)).equals(Buffer.concat([Buffer.from('x'), Buffer.alloc(100_000)])));
  flipByte(victim.path, 8192 + victim.body.length - 1);
  await assert.rejects(backend.readAll(victim.id), { code: 'CORRUPT_OBJECT' });
  await othersStillReadable(backend, objects.slice(1));
});

test('an unknown format version is UNSUPPORTED_FORMAT', async (t) => {
  const { backend, objects } = await backendWithObjects(t, 2);
  const victim = objects[0]!;
  // Rewrite slot A as version 99 with a correct checksum.
  const { encodeSlot } = await import('../../node/store/format.ts');
  const { crc32 } = await import('node:zlib');
  const data = readFileSync(victim.path);
  const headerLength = data.readUInt32LE(12);
  const slot = Buffer.from(
    encodeSlot({ header: data.subarray(28, 28 + headerLength), slotIndex: 0, sequence: 1, slotBytes: 4096 }),
  );
  slot.writeUInt16LE(99, 4);
  slot.writeUInt32LE(crc32(slot.subarray(28), crc32(slot.subarray(0, 24))), 24);
  const fd = openSync(victim.path, 'r+');
  writeSync(fd, slot, 0, slot.length, 0);
  closeSync(fd);
  await assert.rejects(backend.head(victim.id), { code: 'UNSUPPORTED_FORMAT' });
  await othersStillReadable(backend, objects.slice(1));
});

test('stray files and directories are reported by scan and scrub, objects still listed', async (t) => {
  const { root, backend, objects } = await backendWithObjects(t, 2);
  writeFileSync(join(root, 'notes.txt'), 'hello');
  mkdirSync(join(root, 'zz'));
  const first = objectIdToHex(objects[0]!.id);
  writeFileSync(join(root, first.slice(0, 2), first.slice(2, 4), 'not-an-object'), 'x');
  appendFileSync(join(root, first.slice(0, 2), 'stray-in-level-1'), 'x');
  const entries = [];
  for await (const entry of backend.scan()) entries.push(entry);
  assert.equal(entries.filter((e) => e.kind === 'object').length, 2);
  const stray = entries.filter((e) => e.kind === 'stray');
  assert.equal(stray.length, 4);
  for (const entry of stray) assert.equal(entry.kind === 'stray' && entry.error.code, 'STRAY_FILE');
  const report = await backend.scrub();
  assert.equal(report.objectsChecked, 2);
  assert.equal(report.stray.length, 4);
  assert.equal(report.corrupt.length, 0);
});

test('an object file whose header names another object is corrupt', async (t) => {
  const { root, backend, objects } = await backendWithObjects(t, 2);
  const [a, b] = objects;
  const { copyFileSync } = await import('node:fs');
  copyFileSync(a!.path, b!.path);
  await assert.rejects(backend.head(b!.id), { code: 'CORRUPT_OBJECT' });
  assert.ok((await backend.readAll(a!.id)).equals(a!.body));
  assert.ok(root.length > 0);
});

test('scrub is throttled and reports progress', async (t) => {
  const { backend } = await backendWithObjects(t, 3);
  const progress: number[] = [];
  const started = performance.now();
  const report = await backend.scrub({
    bytesPerSecond: 2_000_000,
    onProgress: (p) => progress.push(p.objectsChecked),
  });
  const elapsedSeconds = (performance.now() - started) / 1000;
  assert.equal(report.objectsChecked, 3);
  assert.ok(report.bytesChecked > 600_000);
  assert.ok(
    elapsedSeconds >= 0.25,
    `throttled scrub of ${report.bytesChecked} bytes at 2 MB/s took ${elapsedSeconds}s`,
  );
  assert.deepEqual(progress.slice(0, 3), [1, 2, 3]);
});

test('objects from before BlockChecksum (xxh32 blocks) still read and verify; new ones use xxh64', async (t) => {
  const root = tempDirectory(t);
  const backend = await Backend.create(root, { cell: 'c' });
  t.after(() => backend.close());
  const { encodeSlot, encodeTrailer, headerCodec, BLOCK_BYTES } = await import('../../node/store/format.ts');
  const { xxh32Blocks } = await import('../../node/store/checksum.ts');
  const { crc32 } = await import('node:zlib');
  // Rewrite an object as the earlier format wrote it: no block_checksum field, xxh32 checksums
  // (in the header for a small body, in the trailer for a large one).
  const asEarlierFormat = (path: string, body: Uint8Array, checksums: number[]) => {
    const data = readFileSync(path);
    const header = headerCodec.decode(data.subarray(28, 28 + data.readUInt32LE(12)));
    assert.equal(header.blockChecksum, 'BLOCK_CHECKSUM_XXH64_LOW32', 'new objects: xxh64');
    const old = { ...header, blockChecksum: 'BLOCK_CHECKSUM_XXH32' as const };
    if (header.blockChecksums.length > 0) old.blockChecksums = checksums;
    const encoded = headerCodec.encode(old);
    const slot = Buffer.from(encodeSlot({ header: encoded, slotIndex: 0, sequence: 1, slotBytes: 4096 }));
    slot.writeUInt32LE(crc32(slot.subarray(28), crc32(slot.subarray(0, 24))), 24);
    const fd = openSync(path, 'r+');
    writeSync(fd, slot, 0, slot.length, 0);
    if (header.blockChecksums.length === 0) {
      const trailer = encodeTrailer(BLOCK_BYTES, checksums);
      writeSync(fd, trailer, 0, trailer.length, 8192 + body.length);
    }
    closeSync(fd);
  };
  for (const size of [200_000, 3 * 1024 * 1024 + 5]) {
    const id = newObjectId();
    const body = patternBytes(size, 7);
    await backend.ingest({ id }, body);
    const path = backend.objectPath(id);
    asEarlierFormat(path, body, xxh32Blocks(body, BLOCK_BYTES));
    assert.equal((await backend.head(id)).blockChecksum, 'BLOCK_CHECKSUM_XXH32');
    assert.ok((await backend.readAll(id)).equals(body), `${size}: reads back`);
    const part = await collect(backend.read(id, { offset: 70_000, length: 1000 }));
    assert.ok(part.equals(body.subarray(70_000, 71_000)), `${size}: ranged read`);
    // Damage is still found with the earlier algorithm.
    flipByte(path, 8192 + 65_536 + 3);
    await assert.rejects(backend.readAll(id), { code: 'CORRUPT_OBJECT' });
  }
  // Checksums of one algorithm do not pass for the other.
  const id = newObjectId();
  const body = patternBytes(100_000, 9);
  await backend.ingest({ id }, body);
  const head = await backend.head(id);
  asEarlierFormat(backend.objectPath(id), body, head.blockChecksums);
  await assert.rejects(backend.readAll(id), { code: 'CORRUPT_OBJECT' });
});
