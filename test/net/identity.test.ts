import assert from 'node:assert/strict';
import { chmodSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createHost } from '../../node/net/host.ts';
import {
  decodeIdentityFile,
  encodeIdentityFile,
  identityFileName,
  loadOrCreateIdentity,
} from '../../node/net/identity.ts';
import { tempDirectory } from '../helpers.ts';

test('identity: created once with mode 0600, then loaded with the same peer id', async (t) => {
  const directory = join(tempDirectory(t), 'data');
  const first = await loadOrCreateIdentity(directory);
  assert.equal(first.created, true);
  assert.equal(first.privateKey.type, 'Ed25519');
  assert.equal(statSync(first.path).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(directory), [identityFileName], 'no temporary file is left behind');
  const second = await loadOrCreateIdentity(directory);
  assert.equal(second.created, false);
  assert.equal(second.peerId, first.peerId);
  assert.ok(second.privateKey.equals(first.privateKey));
});

test('identity: concurrent creators agree on one key', async (t) => {
  const directory = tempDirectory(t);
  const results = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateIdentity(directory)));
  assert.equal(new Set(results.map((result) => result.peerId)).size, 1);
  assert.equal(results.filter((result) => result.created).length, 1);
});

test('identity: a damaged key file is a typed error, never a new identity', async (t) => {
  const directory = tempDirectory(t);
  const { path } = await loadOrCreateIdentity(directory);
  const good = readFileSync(path);
  const cases: Array<[string, Uint8Array, string]> = [
    ['empty', new Uint8Array(0), 'CORRUPT_OBJECT'],
    ['truncated', good.subarray(0, good.byteLength - 7), 'CORRUPT_OBJECT'],
    ['garbage', Buffer.from('this is not a key at all, just some text\n'), 'CORRUPT_OBJECT'],
    ['oversize', Buffer.alloc(10_000, 1), 'CORRUPT_OBJECT'],
  ];
  for (let bit = 0; bit < good.byteLength * 8; bit += 37) {
    const flipped = Buffer.from(good);
    flipped[bit >> 3]! ^= 1 << (bit & 7);
    cases.push([`bit ${bit} flipped`, flipped, '']);
  }
  for (const [name, bytes, code] of cases) {
    writeFileSync(path, bytes, { mode: 0o600 });
    await assert.rejects(loadOrCreateIdentity(directory), (error: { code?: string }) => {
      if (code === '') assert.ok(['CORRUPT_OBJECT', 'UNSUPPORTED_FORMAT'].includes(error.code ?? ''), name);
      else assert.equal(error.code, code, name);
      return true;
    });
  }
  writeFileSync(path, good);
  assert.ok((await loadOrCreateIdentity(directory)).created === false, 'the good file loads again');
});

test('identity: a key readable by others is refused; an unknown format version is named', async (t) => {
  const directory = tempDirectory(t);
  const { path, privateKey } = await loadOrCreateIdentity(directory);
  chmodSync(path, 0o644);
  await assert.rejects(loadOrCreateIdentity(directory), { code: 'PERMISSION_DENIED' });
  chmodSync(path, 0o600);
  const bytes = encodeIdentityFile(privateKey);
  assert.ok(decodeIdentityFile(bytes, path).equals(privateKey));
  // Field 2 (format_version) = 9: a record from a future version.
  const future = Buffer.from(bytes);
  const index = future.indexOf(Buffer.from([0x10, 0x01]));
  future[index + 1] = 9;
  assert.throws(() => decodeIdentityFile(future, path), { code: 'UNSUPPORTED_FORMAT' });
});

test('identity: a host started from the stored key keeps its peer id across restarts', async (t) => {
  const directory = tempDirectory(t);
  const peerIds: string[] = [];
  for (let start = 0; start < 2; start += 1) {
    const identity = await loadOrCreateIdentity(directory);
    const host = await createHost({ privateKey: identity.privateKey, isMember: () => true });
    try {
      assert.equal(host.peerId.toString(), identity.peerId);
      assert.ok(host.multiaddrs()[0]!.toString().endsWith(`/p2p/${identity.peerId}`));
      peerIds.push(host.peerId.toString());
    } finally {
      await host.stop();
    }
  }
  assert.equal(peerIds[0], peerIds[1]);
  await assert.rejects(
    createHost({
      privateKey: (await loadOrCreateIdentity(directory)).privateKey,
      isMember: () => true,
      listen: ['not an address'],
    }),
    { code: 'INVALID_ARGUMENT' },
  );
});
