/**
 * Ingest starts the temp file's open and the object directory's preparation alongside the body's
 * writes: many ingests at once, and ingests that fail at each step, must leave every object whole,
 * no temp file, and no descriptor open.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Backend, TEMP_DIRECTORY } from '../../node/store/backend.ts';
import { newObjectId } from '../../node/store/object-id.ts';
import { blake3ContentHash, collect, patternBytes, tempDirectory } from '../helpers.ts';

const openDescriptors = () => readdirSync('/proc/self/fd').length;

test('hundreds of concurrent ingests into new directories all land whole', async (t) => {
  const root = tempDirectory(t);
  const backend = await Backend.create(root, { cell: 'pipeline' });
  const before = openDescriptors();
  // 400 objects over far more directories than the handle cache holds; pairs share a directory
  // (the second ingest waits for the first one's mkdir and parent fsyncs).
  const ids = Array.from({ length: 200 }, () => newObjectId()).flatMap((id) => {
    const sibling = newObjectId();
    sibling.set(id.subarray(0, 2), 0);
    return [id, sibling];
  });
  const bodies = ids.map((_, index) => patternBytes(1 + ((index * 977) % 20_000), index + 1));
  await Promise.all(ids.map((id, index) => backend.ingest({ id }, bodies[index]!)));
  for (const [index, id] of ids.entries()) {
    assert.ok(bodies[index]!.equals(await collect(backend.read(id))), `object ${index} reads back`);
    assert.ok(Buffer.from((await backend.head(id)).contentHash).equals(blake3ContentHash(bodies[index]!)));
  }
  assert.deepEqual(readdirSync(join(root, TEMP_DIRECTORY)), []);
  await backend.close();
  assert.equal(openDescriptors(), before, 'no descriptor left open');
});

test('ingests that fail at each step leave no temp file and no open descriptor', async (t) => {
  const root = tempDirectory(t);
  const backend = await Backend.create(root, { cell: 'pipeline' });
  // Warm up what opens descriptors once per process (hash threads, the cache of the first handles).
  await backend.ingest({ id: newObjectId() }, patternBytes(5000, 1));
  await backend.close();
  const reopened = await Backend.open(root, { cell: 'pipeline' });
  const before = openDescriptors();
  const body = patternBytes(9000, 7);
  const failures: Array<[string, () => Promise<unknown>, RegExp]> = [
    [
      'hash mismatch',
      () =>
        reopened.ingest({ id: newObjectId(), contentHash: blake3ContentHash(Buffer.from('other')) }, body),
      /hash mismatch/,
    ],
    [
      'short body',
      () => reopened.ingest({ id: newObjectId(), bodySize: body.length + 1 }, body),
      /announced/,
    ],
    [
      'long stream',
      () =>
        reopened.ingest(
          { id: newObjectId(), bodySize: 10 },
          (async function* () {
            yield body;
          })(),
        ),
      /longer than/,
    ],
    [
      'producer fails before the open ends',
      () =>
        reopened.ingest(
          { id: newObjectId() },
          // biome-ignore lint/correctness/useYield: fails before its first piece
          (async function* () {
            throw new Error('producer broke');
          })(),
        ),
      /producer broke/,
    ],
    [
      'producer fails midway',
      () =>
        reopened.ingest(
          { id: newObjectId() },
          (async function* () {
            yield body;
            await new Promise((resolve) => setTimeout(resolve, 5));
            throw new Error('producer broke later');
          })(),
        ),
      /producer broke later/,
    ],
  ];
  for (let round = 0; round < 5; round++) {
    for (const [what, ingest, expected] of failures) {
      await assert.rejects(ingest(), expected, what);
    }
  }
  assert.deepEqual(readdirSync(join(root, TEMP_DIRECTORY)), []);
  await reopened.close();
  assert.equal(openDescriptors(), before, 'no descriptor left open');
});
