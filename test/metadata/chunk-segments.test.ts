/**
 * Chunk lists kept apart from their inodes (metadata level 2, Inode.chunks_apart): the same
 * commands give the same answers and the same files as with whole lists in the inode (level 1),
 * a write of a few chunks to a large file writes a few segments, not the list, and files of a
 * cell from before level 2 move their lists apart when they are next written.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type KvOperation, MemoryKv } from '../../node/metadata/kv.ts';
import { type Chunk, inodeCodec, type Result } from '../../node/metadata/records.ts';
import { CHUNK_SEGMENT_BYTES, keys } from '../../node/metadata/state-machine.ts';
import { Harness, id, sha256 } from './harness.ts';

const MiB = 2 ** 20;
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

/** A MemoryKv that counts the bytes of values written. */
class CountingKv extends MemoryKv {
  bytesWritten = 0;
  override async write(operations: readonly KvOperation[]): Promise<void> {
    for (const operation of operations)
      if (operation.type === 'put') this.bytesWritten += operation.value.length;
    return super.write(operations);
  }
}

async function keysOf(kv: MemoryKv, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const [key] of kv.range({ gte: prefix, lt: `${prefix}\uffff` })) found.push(key);
  return found;
}

const ids = (chunks: readonly Chunk[]) =>
  chunks.map((c) => `${c.offset}+${c.size}:${hex(c.id)}:${hex(c.hash)}`);

const view = (result: Result) => ({
  code: result.code,
  released: result.releasedObjects.map(hex).sort(),
  chunks: result.inode?.type === 'FILE' ? result.inode.chunks.map((c) => `${c.offset}+${c.size}`) : null,
});

const SLOT = 256 * MiB;
const chunkArb = fc.record({
  slot: fc.nat({ max: 11 }),
  shift: fc.constantFrom(0, 100 * MiB),
  size: fc.constantFrom(SLOT, 100 * MiB, 1),
});
const operationArb = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      chunks: fc.array(chunkArb, { minLength: 1, maxLength: 4 }),
      floor: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('commit' as const),
      keep: fc.array(fc.boolean(), { maxLength: 12 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('truncate' as const),
      slot: fc.nat({ max: 12 }),
      shift: fc.constantFrom(0, 7),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('chmod' as const), mode: fc.constantFrom(0o600, 0o644) }),
  },
);

test('kept apart or whole in the inode: the same answers and the same files (property)', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(operationArb, { minLength: 5, maxLength: 25 }), async (operations) => {
      const ids = { root: id(), lostFound: id() };
      const whole = await Harness.create(new MemoryKv(), ids, 1);
      const apartKv = new MemoryKv();
      const apart = await Harness.create(apartKv, ids, 2);
      const file = id();
      const both = async (command: Parameters<Harness['run']>[0]) => {
        const [a, b] = [await whole.run(command), await apart.run(command)];
        assert.deepEqual(
          view(b),
          view(a),
          JSON.stringify(command, (_, v) => (v instanceof Uint8Array ? hex(v) : v)),
        );
        return a;
      };
      await both({
        create: { parent: ids.root, name: 'f', id: file, type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
      });
      for (const o of operations) {
        const current = (await whole.machine.inode(file))!;
        if (o.op === 'write') {
          const chunks: Chunk[] = o.chunks
            .map((c) => ({
              id: id(),
              offset: c.slot * SLOT + c.shift,
              size: c.size,
              hash: sha256(`${c.slot}`),
            }))
            .sort((a, b) => a.offset - b.offset)
            .filter((c, i, all) => i === 0 || c.offset !== all[i - 1]!.offset);
          const end = Math.max(...chunks.map((c) => c.offset + c.size));
          await both({ writeChunks: { id: file, sizeFloor: o.floor ? end : 0, chunks, mtimeMs: 1 } });
        } else if (o.op === 'commit') {
          const chunks = current.chunks
            .filter((_, i) => o.keep[i] !== false)
            .map((c, i) => (o.keep[i] === undefined ? { ...c, id: id() } : c));
          await both({ commitWrite: { id: file, size: current.size, chunks, mtimeMs: 2 } });
        } else if (o.op === 'truncate') {
          await both({ setAttributes: { id: file, attributes: { size: o.slot * SLOT + o.shift } } });
        } else {
          await both({ setAttributes: { id: file, attributes: { mode: o.mode } } });
        }
        const [a, b] = [(await whole.machine.inode(file))!, (await apart.machine.inode(file))!];
        assert.deepEqual(b.chunks, a.chunks);
        assert.deepEqual([b.size, b.version, b.mode], [a.size, a.version, a.mode]);
        // Level 2 stores the inode without its list, and a segment per GiB that holds chunks.
        const stored = inodeCodec.decode((await apartKv.get(keys.inode(file)))!);
        assert.equal(stored.chunksApart, true);
        assert.deepEqual(stored.chunks, []);
        const segments = new Set(b.chunks.map((c) => Math.floor(c.offset / CHUNK_SEGMENT_BYTES)));
        assert.equal((await keysOf(apartKv, keys.chunkSegments(file))).length, segments.size);
      }
      await both({ unlink: { parent: ids.root, name: 'f', directory: false } });
      assert.deepEqual(await keysOf(apartKv, keys.chunkSegments(file)), [], 'the segments go with the file');
    }),
    { numRuns: 60 },
  );
});

test('a write of 16 chunks to a file of 20,000 writes a segment or two, not the list', async () => {
  const kv = new CountingKv();
  const h = await Harness.create(kv);
  const file = (await h.createFile(h.rootId, 'big')).inode!;
  const C = 4 * MiB;
  const chunk = (index: number) => ({ id: id(), offset: index * C, size: C, hash: sha256(`${index}`) });
  const n = 20_000;
  for (let start = 0; start < n; start += 1000) {
    const chunks = Array.from({ length: 1000 }, (_, i) => chunk(start + i));
    assert.equal(
      (await h.run({ writeChunks: { id: file.id, sizeFloor: (start + 1000) * C, chunks, mtimeMs: 1 } })).code,
      'OK',
    );
  }
  const list = (await h.machine.inode(file.id))!.chunks;
  assert.equal(list.length, n);
  const wholeListBytes = inodeCodec.encode({
    ...(await h.machine.inode(file.id))!,
    chunksApart: false,
  }).length;
  // Overwrite 16 chunks in the middle, then append 16.
  for (const first of [9_000, n]) {
    kv.bytesWritten = 0;
    const chunks = Array.from({ length: 16 }, (_, i) => chunk(first + i));
    const result = await h.run({
      writeChunks: { id: file.id, sizeFloor: (first + 16) * C, chunks, mtimeMs: 2 },
    });
    assert.equal(result.code, 'OK');
    assert.equal(result.releasedObjects.length, first === n ? 0 : 16);
    assert.ok(
      kv.bytesWritten < 60_000,
      `${kv.bytesWritten} bytes written for 16 chunks (the whole list is ${wholeListBytes})`,
    );
  }
  assert.ok(wholeListBytes > 1_000_000);
  const after = (await h.machine.inode(file.id))!.chunks;
  assert.equal(after.length, n + 16);
  assert.deepEqual(
    after.map((c) => c.offset),
    Array.from({ length: n + 16 }, (_, i) => i * C),
  );
  // A chunk that reaches into the next segment's first chunk is refused.
  const last = Math.floor(CHUNK_SEGMENT_BYTES / C) - 1;
  const over = { ...chunk(last), size: C + 1 };
  assert.equal(
    (await h.run({ writeChunks: { id: file.id, sizeFloor: 0, chunks: [over], mtimeMs: 3 } })).code,
    'INVALID_ARGUMENT',
  );
  assert.equal(
    (
      await h.run({
        writeChunks: { id: file.id, sizeFloor: 0, chunks: [{ ...chunk(last), size: 0 }], mtimeMs: 3 },
      })
    ).code,
    'INVALID_ARGUMENT',
    'empty chunks are refused',
  );
});

test('a file of a cell from before level 2 moves its list apart when next written', async () => {
  const kv = new MemoryKv();
  const h = await Harness.create(kv, undefined, 1);
  const file = (await h.createFile(h.rootId, 'old')).inode!;
  const C = 4 * MiB;
  const chunks = Array.from({ length: 300 }, (_, i) => ({
    id: id(),
    offset: i * C,
    size: C,
    hash: sha256(`${i}`),
  }));
  await h.run({ writeChunks: { id: file.id, sizeFloor: 300 * C, chunks, mtimeMs: 1 } });
  assert.equal(
    inodeCodec.decode((await kv.get(keys.inode(file.id)))!).chunks.length,
    300,
    'level 1: in the inode',
  );
  assert.equal((await h.run({ setMetadataLevel: { level: 2 } })).code, 'OK');
  // Not touched yet: still whole in the inode, read as before.
  assert.equal((await h.machine.inode(file.id))!.chunks.length, 300);
  const renamed = await h.run({
    rename: { parent: h.rootId, name: 'old', newParent: h.rootId, newName: 'older' },
  });
  assert.equal(renamed.code, 'OK');
  const stored = inodeCodec.decode((await kv.get(keys.inode(file.id)))!);
  assert.deepEqual([stored.chunksApart, stored.chunks.length], [true, 0]);
  assert.equal((await keysOf(kv, keys.chunkSegments(file.id))).length, 2, '1.2 GiB: two segments');
  assert.deepEqual(ids((await h.machine.inode(file.id))!.chunks), ids(chunks));
  const more = { id: id(), offset: 300 * C, size: C, hash: sha256('more') };
  await h.run({ writeChunks: { id: file.id, sizeFloor: 301 * C, chunks: [more], mtimeMs: 2 } });
  assert.deepEqual(ids((await h.machine.inode(file.id))!.chunks), ids([...chunks, more]));
});
