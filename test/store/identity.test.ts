import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Backend, IDENTITY_FILE } from '../../node/store/backend.ts';
import { newObjectId, objectIdToHex, objectRelativePath, parseObjectId } from '../../node/store/object-id.ts';
import { tempDirectory } from '../helpers.ts';

test('a backend has a UUID and an identity file; reopening keeps it', async (t) => {
  const root = tempDirectory(t);
  const created = await Backend.create(root, { cell: 'alpha' });
  assert.match(created.uuidString, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(readdirSync(root).includes(IDENTITY_FILE));
  // The first fan-out level is there from the start, empty: an object's first ingest creates
  // only its second-level directory.
  const firstLevel = readdirSync(root).filter((name) => /^[0-9a-f]{2}$/.test(name));
  assert.equal(firstLevel.length, 256);
  assert.ok(firstLevel.every((name) => readdirSync(join(root, name)).length === 0));
  const id = newObjectId();
  await created.ingest({ id }, new Uint8Array(10));
  assert.equal(readdirSync(root).length, 258, 'identity, tmp and the 256 first-level directories');
  assert.deepEqual(readdirSync(join(root, objectRelativePath(id), '..')), [objectRelativePath(id).slice(6)]);
  const opened = await Backend.open(root, { cell: 'alpha' });
  assert.equal(opened.uuidString, created.uuidString);
  assert.deepEqual(await Backend.identify(root), { uuid: created.uuidString, cell: 'alpha' });
  const space = await opened.space();
  assert.ok(space.totalBytes > 0 && space.availableBytes <= space.totalBytes);
});

test('opening a directory that is not a backend, or of another cell, is a clear error', async (t) => {
  const root = tempDirectory(t);
  await assert.rejects(Backend.open(join(root, 'missing'), { cell: 'a' }), { code: 'NOT_A_BACKEND' });
  await assert.rejects(Backend.open(root, { cell: 'a' }), { code: 'NOT_A_BACKEND' });
  writeFileSync(join(root, IDENTITY_FILE), 'garbage that is not protobuf \u00ff\u00ff\u00ff');
  await assert.rejects(Backend.open(root, { cell: 'a' }), { code: 'NOT_A_BACKEND' });
  const other = join(root, 'other');
  await Backend.create(other, { cell: 'beta' });
  await assert.rejects(Backend.open(other, { cell: 'alpha' }), { code: 'WRONG_CELL' });
  await assert.rejects(Backend.create(other, { cell: 'beta' }), { code: 'ALREADY_EXISTS' });
  const busy = join(root, 'busy');
  mkdirSync(busy);
  writeFileSync(join(busy, 'data'), 'x');
  await assert.rejects(Backend.create(busy, { cell: 'beta' }), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(Backend.create(join(root, 'x'), { cell: '' }), { code: 'INVALID_ARGUMENT' });
});

test('temp leftovers are removed when a backend is opened', async (t) => {
  const root = tempDirectory(t);
  await Backend.create(root, { cell: 'a' });
  writeFileSync(join(root, 'tmp', 'deadbeef.123.tmp'), Buffer.alloc(10_000));
  mkdirSync(join(root, 'tmp', 'dir-left-behind'));
  await Backend.open(root, { cell: 'a' });
  assert.deepEqual(readdirSync(join(root, 'tmp')), []);
});

test('object ids: hex encoding, path layout, bad input', () => {
  const id = parseObjectId('00112233-4455-6677-8899-AABBCCDDEEFF');
  assert.equal(objectIdToHex(id), '00112233445566778899aabbccddeeff');
  assert.equal(objectRelativePath(id), '00/11/2233445566778899aabbccddeeff');
  assert.equal(objectIdToHex(newObjectId()).length, 32);
  assert.throws(() => parseObjectId('xyz'), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => parseObjectId('../../etc/passwd'), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => objectIdToHex(new Uint8Array(3)), { code: 'INVALID_ARGUMENT' });
});
