import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MetadataStateMachine } from '../../node/metadata/state-machine.ts';
import { HeaderWriter } from '../../node/recovery/header-writer.ts';

const id = (n: number) => new Uint8Array(16).fill(n);

/**
 * The parts of the state machine the header writer reads: `marks` pending, inodes all gone (so a
 * mark only needs clearing), and one storage server awake or asleep.
 */
function cell(marks: number, awake: boolean) {
  let pending = Array.from({ length: marks }, (_, i) => ({ id: id(i + 1), queued: i + 1 }));
  const calls = { headerMarks: 0, cleared: 0 };
  const server = { uuid: id(200), online: awake, power: awake ? 'ON' : 'SLEEPING' };
  const state = {
    async headerMarks(limit: number) {
      calls.headerMarks += 1;
      return pending.slice(0, limit);
    },
    servers: async () => [server],
    backends: async () => [{ uuid: id(201), serverUuid: id(200), tags: [] }],
    chains: async () => undefined,
    inode: async () => undefined,
    deletedInode: async () => undefined,
    names: async () => [],
  } as unknown as MetadataStateMachine;
  const io = {
    async propose(command: { headersDone?: { files: Array<{ id: Uint8Array }> } }) {
      const done = new Set(command.headersDone?.files.map((file) => file.id[0]));
      calls.cleared += done.size;
      pending = pending.filter((mark) => !done.has(mark.id[0]));
      return { code: 'OK' as const, message: '', releasedObjects: [] };
    },
    putMeta: async () => 0,
  };
  return { state, io, calls, left: () => pending.length };
}

test('header writer: full batches go on at once while they make progress', async () => {
  const { state, io, calls, left } = cell(12, true);
  const writer = new HeaderWriter({ state, io: io as never, batch: 4, intervalMs: 60_000 });
  writer.start();
  const deadline = Date.now() + 5_000;
  while (left() > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  await writer.stop();
  assert.equal(left(), 0, 'three full batches, then the rest, without waiting the interval');
  assert.equal(calls.cleared, 12);
});

test('header writer: with every server asleep it waits the interval, no busy loop over the same marks', async () => {
  const { state, io, calls, left } = cell(12, false);
  const writer = new HeaderWriter({ state, io: io as never, batch: 4, intervalMs: 60_000 });
  writer.start();
  await new Promise((resolve) => setTimeout(resolve, 300));
  await writer.stop();
  assert.equal(calls.headerMarks, 1, `passes in 300 ms: ${calls.headerMarks}`);
  assert.equal(left(), 12, 'nothing written, nothing cleared');
});

test('header writer: a large file being written gets its META object every few seconds, not every pass', async () => {
  // Two files, each marked again after every pass (being written): a small one and one of 5,000
  // chunks (at 0.4 ms per chunk: every 2 s at most).
  const small = id(1);
  const large = id(2);
  const inode = (file: Uint8Array, chunks: number) => ({
    id: file,
    type: 'FILE',
    size: chunks * 4,
    nlink: 1,
    chunks: Array.from({ length: chunks }, (_, i) => ({
      id: id(9),
      offset: i * 4,
      size: 4,
      hash: new Uint8Array(0),
    })),
    xattrs: [],
    inlineData: new Uint8Array(0),
    parent: id(3),
    name: 'f',
  });
  let queued = 0;
  const reads: number[] = [];
  const state = {
    headerMarks: async () => [
      { id: small, queued: ++queued },
      { id: large, queued: ++queued },
    ],
    servers: async () => [{ uuid: id(200), online: true, power: 'ON' }],
    backends: async () => [{ uuid: id(201), serverUuid: id(200), tags: [] }],
    chains: async () => undefined,
    inode: async (file: Uint8Array) => {
      reads.push(file[0]!);
      return file[0] === 1 ? inode(small, 3) : inode(large, 5000);
    },
    deletedInode: async () => undefined,
    names: async () => [],
  } as unknown as MetadataStateMachine;
  const written: number[] = [];
  const io = {
    propose: async () => ({ code: 'OK' as const, message: '', releasedObjects: [] }),
    putMeta: async (_backend: Uint8Array, objects: ReadonlyArray<{ header: { id?: Uint8Array } }>) => {
      for (const object of objects) written.push(object.header.id![0]!);
      return objects.length;
    },
  };
  let now = 1_000_000;
  const writer = new HeaderWriter({ state, io: io as never, nowMs: () => now });
  const pass = async () => {
    written.length = 0;
    reads.length = 0;
    await writer.pass();
    return { written: [...written].sort(), reads: [...reads].sort() };
  };
  assert.deepEqual(await pass(), { written: [1, 2], reads: [1, 2] }, 'the first pass writes both');
  for (const step of [500, 500, 500]) {
    now += step;
    assert.deepEqual(
      await pass(),
      { written: [1], reads: [1] },
      `${now - 1_000_000} ms: the large file waits, unread`,
    );
  }
  now += 600; // 2,100 ms after its write: due
  assert.deepEqual(await pass(), { written: [1, 2], reads: [1, 2] });
});
