/** The state machine's side of placement: stored chains, the mover's queue and copy changes. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseChains } from '../../node/hsm/chains.ts';
import { MemoryKv } from '../../node/metadata/kv.ts';
import { Harness, id, sha256 } from '../metadata/harness.ts';

const backendA = id();
const backendB = id();

async function fileWithChunk(h: Harness, name: string) {
  const created = await h.createFile(h.rootId, name);
  const chunk = { id: id(), offset: 0, size: 10, hash: sha256(name) };
  const committed = await h.run({
    commitWrite: { id: created.inode!.id, size: 10, chunks: [chunk], mtimeMs: 5, storedOn: [backendA] },
  });
  assert.equal(committed.code, 'OK');
  return { inode: committed.inode!, chunk };
}

test('chains are stored versioned, validated, and replaced only from the expected version', async () => {
  const h = await Harness.create();
  assert.equal(await h.machine.chains(), undefined);
  const chains = parseChains('copies 3\nchain main\n  use tag:ssd if size < 1M\n  use any\n');
  assert.equal((await h.run({ setChains: { chains: { ...chains, version: 0, updatedMs: 0 } } })).code, 'OK');
  const stored = (await h.machine.chains())!;
  assert.equal(stored.version, 1);
  assert.equal(stored.copies, 3);
  assert.deepEqual(stored.rows, chains.rows);
  const stale = await h.run({
    setChains: { chains: { ...chains, version: 0, updatedMs: 0 }, checkVersion: true, expectedVersion: 0 },
  });
  assert.equal(stale.code, 'STALE');
  const cycle = await h.run({
    setChains: {
      chains: {
        copies: 1,
        version: 0,
        updatedMs: 0,
        rows: [
          {
            chain: 'a',
            action: 'jump',
            destination: 'b',
            attribute: 'size',
            operator: '>',
            value: '1',
            strict: false,
          },
          {
            chain: 'a',
            action: 'use',
            destination: 'any',
            attribute: '',
            operator: '',
            value: '',
            strict: false,
          },
          {
            chain: 'b',
            action: 'jump',
            destination: 'a',
            attribute: '',
            operator: '',
            value: '',
            strict: false,
          },
        ],
      },
    },
  });
  assert.equal(cycle.code, 'INVALID_ARGUMENT');
  assert.match(cycle.message, /jump cycle/);
  assert.equal((await h.machine.chains())!.version, 1, 'a refused apply changes nothing');
});

test('writes, renames and truncates queue files for the mover; done entries go unless queued again', async () => {
  const h = await Harness.create();
  const { inode } = await fileWithChunk(h, 'f');
  let queue = await h.machine.queuedFiles(10);
  assert.equal(queue.length, 1);
  assert.equal(Buffer.compare(queue[0]!.id, inode.id), 0);
  const first = queue[0]!.queued;
  // Queued again by a rename: the done entry of the older number leaves it queued.
  await h.run({ rename: { parent: h.rootId, name: 'f', newParent: h.rootId, newName: 'g' } });
  assert.equal((await h.run({ placementDone: { files: [{ id: inode.id, queued: first }] } })).code, 'OK');
  queue = await h.machine.queuedFiles(10);
  assert.equal(queue.length, 1, 'still queued: renamed after the mover looked');
  await h.run({ placementDone: { files: [{ id: inode.id, queued: queue[0]!.queued }] } });
  assert.equal((await h.machine.queuedFiles(10)).length, 0);
  await h.run({ setAttributes: { id: inode.id, attributes: { size: 3 } } });
  assert.equal((await h.machine.queuedFiles(10)).length, 1);
  // chmod does not move data.
  await h.run({
    placementDone: { files: (await h.machine.queuedFiles(10)).map((f) => ({ id: f.id, queued: f.queued })) },
  });
  await h.run({ setAttributes: { id: inode.id, attributes: { mode: 0o600 } } });
  assert.equal((await h.machine.queuedFiles(10)).length, 0);
});

test('placeCopy keeps one current copy, and refuses copies of released objects', async () => {
  const h = await Harness.create(new MemoryKv());
  const { inode, chunk } = await fileWithChunk(h, 'f');
  const at = async (backend: Uint8Array) =>
    (await h.machine.locations(chunk.id)).find((l) => Buffer.compare(l.backend, backend) === 0)?.location;
  // A new target, then current there.
  const target = { outdated: false, current: false, target: true, mtimeMs: 5 };
  assert.equal(
    (await h.run({ placeCopy: { object: chunk.id, backend: backendB, location: target } })).code,
    'OK',
  );
  assert.deepEqual(await at(backendB), target);
  // The only current copy (A) can be neither removed nor dropped to target-only.
  const removeA = await h.run({ placeCopy: { object: chunk.id, backend: backendA, remove: true } });
  assert.equal(removeA.code, 'NOT_PERMITTED');
  const dropA = await h.run({
    placeCopy: { object: chunk.id, backend: backendA, location: { ...target, target: true } },
  });
  assert.equal(dropA.code, 'NOT_PERMITTED');
  const current = { outdated: false, current: true, target: true, mtimeMs: 5 };
  assert.equal(
    (await h.run({ placeCopy: { object: chunk.id, backend: backendB, location: current } })).code,
    'OK',
  );
  assert.equal(
    (await h.run({ placeCopy: { object: chunk.id, backend: backendA, remove: true } })).code,
    'OK',
  );
  assert.equal(await at(backendA), undefined);
  assert.deepEqual(await at(backendB), current);
  // Released (the file is deleted): its copies are garbage, the mover may not record one.
  await h.run({ unlink: { parent: h.rootId, name: 'f', directory: false } });
  assert.equal(await h.machine.inode(inode.id), undefined);
  const late = await h.run({ placeCopy: { object: chunk.id, backend: backendA, location: current } });
  assert.equal(late.code, 'NOT_FOUND');
  assert.deepEqual(await h.machine.locations(chunk.id), []);
});

test('reportBadCopy marks a damaged copy outdated, counts a skip, queues the file; never the only copy', async () => {
  const h = await Harness.create();
  const { inode, chunk } = await fileWithChunk(h, 'f');
  await h.run({
    placementDone: { files: (await h.machine.queuedFiles(10)).map((f) => ({ id: f.id, queued: f.queued })) },
  });
  const report = (backend: Uint8Array, object = chunk.id) =>
    h.run({ reportBadCopy: { inode: inode.id, object, backend, reason: 'CORRUPT_OBJECT: block 3' } });
  // The only current copy is not marked bad.
  assert.equal((await report(backendA)).code, 'NOT_PERMITTED');
  const current = { outdated: false, current: true, target: true, mtimeMs: 5 };
  await h.run({ placeCopy: { object: chunk.id, backend: backendB, location: current } });
  assert.equal((await report(backendA)).code, 'OK');
  const bad = (await h.machine.locations(chunk.id)).find((l) => Buffer.compare(l.backend, backendA) === 0)!;
  assert.deepEqual(bad.location, { outdated: true, current: false, target: true, mtimeMs: 5 });
  assert.equal((await h.machine.inode(inode.id))!.skipCount, 1);
  assert.equal((await h.machine.queuedFiles(10)).length, 1, 'queued for the repair');
  // Reported again (another reader): no second skip. B cannot be marked now: A is not current.
  assert.equal((await report(backendA)).code, 'OK');
  assert.equal((await h.machine.inode(inode.id))!.skipCount, 1);
  assert.equal((await report(backendB)).code, 'NOT_PERMITTED');
  // A chunk the file does not have (rewritten since) is NOT_FOUND.
  assert.equal((await report(backendB, id())).code, 'NOT_FOUND');
});
