import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { call, callStream } from '../../node/net/rpc.ts';
import { StorageClient } from '../../node/storage/client.ts';
import {
  serveStorage,
  storageHead,
  storageRead,
  storageWrite,
  storeMetaObjects,
} from '../../node/storage/service.ts';
import type { Backend } from '../../node/store/backend.ts';
import { contentHashOf, createContentHasher } from '../../node/store/content-hash.ts';
import { emptyHeader, type ObjectHeader } from '../../node/store/format.ts';
import { blake3ContentHash, createTestBackend, patternBytes } from '../helpers.ts';
import { cell, mebibyte, newKey, startHost } from '../net/_helpers.ts';

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const sha256 = (bytes: Uint8Array) => new Uint8Array(createHash('sha256').update(bytes).digest());
const newId = () => new Uint8Array(randomBytes(16));

/** A client host and a storage server host (members), the server serving `backendCount` backends. */
async function setup(t: TestContext, backendCount = 1, options: { writesMax?: number } = {}) {
  const clientKey = await newKey();
  const serverKey = await newKey();
  const members = cell(clientKey, serverKey);
  const clientHost = await startHost(t, clientKey, members.isMember);
  const serverHost = await startHost(t, serverKey, members.isMember);
  const backends: Backend[] = [];
  for (let i = 0; i < backendCount; i += 1) backends.push(await createTestBackend(t));
  const byUuid = new Map(backends.map((backend) => [hex(backend.uuid), backend]));
  const service = await serveStorage(serverHost, { backends: () => byUuid, ...options });
  t.after(() => service.stop());
  return {
    service,
    clientHost,
    serverHost,
    backends,
    backend: backends[0]!,
    storage: new StorageClient(clientHost),
    peer: serverHost.multiaddrs()[0]!,
  };
}

/** Every regular file under a backend's root except its identity file. */
function filesIn(root: string): string[] {
  const found: string[] = [];
  const walk = (directory: string) => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      const path = join(directory, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path !== join(root, 'zhsm-backend.id')) found.push(path);
    }
  };
  walk(root);
  return found;
}

async function eventually(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A small deterministic PRNG for the random ranges. */
function random(seed: number) {
  let state = seed >>> 0 || 1;
  return (limit: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % limit;
  };
}

async function* pieces(bytes: Uint8Array, pieceBytes: number): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < bytes.byteLength; offset += pieceBytes) {
    yield bytes.subarray(offset, offset + pieceBytes);
  }
}

// Content hashes of both forms: BLAKE3 (what writers send now) and sha256 (chunks written before).
for (const algorithm of ['BLAKE3', 'SHA256'] as const) {
  test(`storage (${algorithm} content hash): write, head, read back whole and in random ranges`, {
    timeout: 60_000,
  }, async (t) => {
    const hashOf = (bytes: Uint8Array) => contentHashOf(bytes, algorithm);
    const { storage, peer, backend } = await setup(t);
    const body = patternBytes(5 * mebibyte + 12_345, 7);
    const hash = hashOf(body);
    const id = newId();
    const mtimeMs = 1_700_000_000_123;
    const written = await storage.write(peer, backend.uuid, id, body, body.byteLength, hash, { mtimeMs });
    assert.deepEqual(written, { size: body.byteLength, mtimeMs });
    // Durable and on the backend itself.
    assert.equal((await backend.head(id)).bodySize, body.byteLength);

    const head = await storage.head(peer, backend.uuid, id);
    assert.equal(head.size, body.byteLength);
    assert.deepEqual(head.contentHash, hash);
    assert.equal(head.mtimeMs, mtimeMs);
    assert.equal(head.mainType, 'DATA');

    const whole = await storage.read(peer, backend.uuid, id, 0, body.byteLength, { expectedHash: hash });
    assert.ok(Buffer.from(whole).equals(body), 'whole object reads back');

    const next = random(42);
    for (let round = 0; round < 25; round += 1) {
      const offset = next(body.byteLength);
      const length = next(Math.min(body.byteLength - offset, 3 * mebibyte) + 1);
      const range = await storage.read(peer, backend.uuid, id, offset, length);
      assert.equal(range.byteLength, length, `range ${offset}+${length} length`);
      assert.ok(
        Buffer.from(range).equals(body.subarray(offset, offset + length)),
        `range ${offset}+${length}`,
      );
    }
    // Fewer bytes only at the end of the object; nothing at its very end; an error beyond it.
    const tail = await storage.read(peer, backend.uuid, id, body.byteLength - 10, 1000);
    assert.ok(Buffer.from(tail).equals(body.subarray(body.byteLength - 10)));
    assert.equal((await storage.read(peer, backend.uuid, id, body.byteLength, 100)).byteLength, 0);
    await assert.rejects(storage.read(peer, backend.uuid, id, body.byteLength + 1, 1), {
      code: 'INVALID_ARGUMENT',
    });
    // Streamed read in pieces.
    let streamed = 0;
    const digest = createContentHasher(algorithm);
    for await (const piece of storage.readStream(peer, backend.uuid, id, 0, body.byteLength)) {
      streamed += piece.byteLength;
      digest.update(piece);
    }
    assert.equal(streamed, body.byteLength);
    assert.deepEqual(digest.digest(), hash);
    // A wrong expected hash for a whole-object read is caught by the client.
    await assert.rejects(
      storage.read(peer, backend.uuid, id, 0, body.byteLength, { expectedHash: new Uint8Array(32) }),
      { code: 'HASH_MISMATCH' },
    );

    // A streamed upload in odd pieces; an empty object; replacing an object.
    const streamedId = newId();
    await storage.write(peer, backend.uuid, streamedId, pieces(body, 777_777), body.byteLength, hash);
    assert.ok((await backend.readAll(streamedId)).equals(body));
    const emptyId = newId();
    await storage.write(peer, backend.uuid, emptyId, new Uint8Array(0), 0, hashOf(new Uint8Array(0)));
    assert.equal((await storage.read(peer, backend.uuid, emptyId, 0, 10)).byteLength, 0);
    const replacement = patternBytes(1000, 9);
    await storage.write(peer, backend.uuid, id, replacement, 1000, hashOf(replacement));
    assert.ok(Buffer.from(await storage.read(peer, backend.uuid, id, 0, 5000)).equals(replacement));

    // No hash known (a trimmed chunk's copy): stored, hashed on arrival, the size still checked.
    const unhashedId = newId();
    await storage.write(peer, backend.uuid, unhashedId, replacement, 1000, new Uint8Array(0));
    assert.deepEqual(
      (await storage.head(peer, backend.uuid, unhashedId)).contentHash,
      new Uint8Array(blake3ContentHash(replacement)),
    );
    await assert.rejects(
      storage.write(
        peer,
        backend.uuid,
        newId(),
        pieces(replacement.subarray(0, 999), 400),
        1000,
        new Uint8Array(0),
      ),
      { code: 'SIZE_MISMATCH' },
    );
  });
}

test('storage: wrong hash or size is refused with a typed error and stores nothing', {
  timeout: 60_000,
}, async (t) => {
  const { storage, peer, backend } = await setup(t);
  const body = patternBytes(3 * mebibyte + 5, 11);
  const hash = sha256(body);
  const id = newId();
  const wrongHash = sha256(Buffer.from('something else'));
  await assert.rejects(storage.write(peer, backend.uuid, id, body, body.byteLength, wrongHash), {
    code: 'HASH_MISMATCH',
  });
  // A body shorter or longer than announced (streamed, so the server is the one to notice).
  await assert.rejects(
    storage.write(
      peer,
      backend.uuid,
      id,
      pieces(body.subarray(0, body.byteLength - 1), mebibyte),
      body.byteLength,
      hash,
    ),
    { code: 'SIZE_MISMATCH' },
  );
  await assert.rejects(
    storage.write(peer, backend.uuid, id, pieces(body, mebibyte), body.byteLength - 1, hash),
    { code: 'SIZE_MISMATCH' },
  );
  // A buffer whose length is not the size is refused before anything is sent.
  await assert.rejects(storage.write(peer, backend.uuid, id, body, body.byteLength + 1, hash), {
    code: 'SIZE_MISMATCH',
  });
  await assert.rejects(storage.head(peer, backend.uuid, id), { code: 'NOT_FOUND' });
  await assert.rejects(storage.read(peer, backend.uuid, id, 0, 1), { code: 'NOT_FOUND' });
  await eventually(() => filesIn(backend.root).length === 0, 'no object and no temp file');
  // The service still works.
  await storage.write(peer, backend.uuid, id, body, body.byteLength, hash);
  assert.equal((await storage.head(peer, backend.uuid, id)).size, body.byteLength);
});

test('storage: unknown backends and malformed fields are typed errors; the service keeps serving', {
  timeout: 60_000,
}, async (t) => {
  const { storage, peer, backend, clientHost } = await setup(t);
  const unknown = newId();
  const id = newId();
  const body = patternBytes(1000, 3);
  const hash = sha256(body);
  await assert.rejects(storage.write(peer, unknown, id, body, 1000, hash), { code: 'NOT_FOUND' });
  await assert.rejects(storage.read(peer, unknown, id, 0, 10), { code: 'NOT_FOUND' });
  await assert.rejects(storage.head(peer, unknown, id), { code: 'NOT_FOUND' });
  await assert.rejects(storage.delete(peer, [id], unknown), { code: 'NOT_FOUND' });
  // The client checks lengths before calling...
  await assert.rejects(storage.write(peer, backend.uuid, id.subarray(0, 15), body, 1000, hash), {
    code: 'INVALID_ARGUMENT',
  });
  await assert.rejects(storage.head(peer, backend.uuid.subarray(1), id), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(storage.write(peer, backend.uuid, id, body, 1000, hash.subarray(0, 31)), {
    code: 'INVALID_ARGUMENT',
  });
  // ...and so does the server, for callers that do not.
  const bad = async (request: Record<string, unknown>) => {
    const stream = await callStream(
      clientHost,
      peer,
      storageWrite,
      { backend: backend.uuid, id, size: 1000, contentHash: hash, mtimeMs: 0, ...request },
      { upload: [body] },
    );
    return stream.response();
  };
  await assert.rejects(bad({ id: new Uint8Array(17) }), { code: 'INVALID_ARGUMENT', message: /object id/ });
  await assert.rejects(bad({ backend: new Uint8Array(0) }), { code: 'INVALID_ARGUMENT', message: /backend/ });
  await assert.rejects(bad({ contentHash: new Uint8Array(20) }), {
    code: 'INVALID_ARGUMENT',
    message: /hash/,
  });
  await assert.rejects(
    call(clientHost, peer, storageHead, { backend: backend.uuid, id: new Uint8Array(3) }),
    {
      code: 'INVALID_ARGUMENT',
    },
  );
  const badRead = await callStream(clientHost, peer, storageRead, {
    backend: backend.uuid,
    id: new Uint8Array(0),
    offset: 0,
    length: 1,
  });
  await assert.rejects(badRead.response(), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(storage.delete(peer, [new Uint8Array(8)]), { code: 'INVALID_ARGUMENT' });
  // Nothing was stored; valid calls still work.
  assert.deepEqual(filesIn(backend.root), []);
  await storage.write(peer, backend.uuid, id, body, 1000, hash);
  assert.ok(Buffer.from(await storage.read(peer, backend.uuid, id, 0, 1000)).equals(body));
});

test('storage: delete from one backend or from all, missing objects are fine', {
  timeout: 60_000,
}, async (t) => {
  const { storage, peer, backends } = await setup(t, 2);
  const [first, second] = backends as [Backend, Backend];
  const body = patternBytes(4096, 5);
  const hash = sha256(body);
  const ids = [newId(), newId(), newId()];
  for (const id of ids) {
    await storage.write(peer, first.uuid, id, body, body.byteLength, hash);
    await storage.write(peer, second.uuid, id, body, body.byteLength, hash);
  }
  // One backend: ids[0] and a missing id.
  assert.equal(await storage.delete(peer, [ids[0]!, newId()], first.uuid), 1);
  await assert.rejects(storage.head(peer, first.uuid, ids[0]!), { code: 'NOT_FOUND' });
  assert.equal((await storage.head(peer, second.uuid, ids[0]!)).size, body.byteLength);
  // Every backend.
  assert.equal(await storage.delete(peer, ids), 5);
  for (const id of ids) {
    await assert.rejects(storage.head(peer, first.uuid, id), { code: 'NOT_FOUND' });
    await assert.rejects(storage.head(peer, second.uuid, id), { code: 'NOT_FOUND' });
  }
  assert.equal(await storage.delete(peer, ids), 0);
  assert.equal(await storage.delete(peer, []), 0);
  assert.deepEqual(filesIn(first.root), []);
  assert.deepEqual(filesIn(second.root), []);
});

test('storage: space lists every backend, with object counts on request', { timeout: 60_000 }, async (t) => {
  const { storage, peer, backends } = await setup(t, 2);
  const body = patternBytes(10_000, 1);
  await storage.write(peer, backends[1]!.uuid, newId(), body, body.byteLength, sha256(body));
  await storage.write(peer, backends[1]!.uuid, newId(), body, body.byteLength, sha256(body));
  const space = await storage.space(peer);
  assert.equal(space.length, 2);
  for (const backend of backends) {
    const entry = space.find((item) => hex(item.backend) === hex(backend.uuid));
    assert.ok(entry !== undefined);
    assert.equal(entry.path, backend.root);
    assert.ok(entry.capacityBytes > 0);
    assert.ok(entry.freeBytes > 0 && entry.freeBytes <= entry.capacityBytes);
    assert.equal(entry.objects, undefined);
  }
  const counted = await storage.space(peer, { countObjects: true });
  const objects = new Map(counted.map((item) => [hex(item.backend), item.objects]));
  assert.equal(objects.get(hex(backends[0]!.uuid)), 0);
  assert.equal(objects.get(hex(backends[1]!.uuid)), 2);
});

test('storage: a peer that is not a member is refused', { timeout: 60_000 }, async (t) => {
  const { serverHost, backend, peer } = await setup(t);
  const stranger = await newKey();
  const strangerHost = await startHost(t, stranger, () => true);
  const storage = new StorageClient(strangerHost);
  const body = patternBytes(2 * mebibyte, 2);
  const id = newId();
  await assert.rejects(storage.write(peer, backend.uuid, id, body, body.byteLength, sha256(body)), {
    code: 'PERMISSION_DENIED',
  });
  await assert.rejects(storage.head(peer, backend.uuid, id), { code: 'PERMISSION_DENIED' });
  await assert.rejects(storage.space(peer), { code: 'PERMISSION_DENIED' });
  assert.ok(serverHost.counters.refusedStreams >= 3);
  assert.deepEqual(filesIn(backend.root), []);
});

test('storage: an upload aborted midway leaves no object and no temp file', {
  timeout: 60_000,
}, async (t) => {
  const { storage, peer, backend } = await setup(t);
  const size = 16 * mebibyte;
  const id = newId();
  const controller = new AbortController();
  let sent = 0;
  async function* slowBody(): AsyncGenerator<Uint8Array> {
    for (const piece of [patternBytes(mebibyte, 1), patternBytes(mebibyte, 2)]) {
      sent += piece.byteLength;
      yield piece;
    }
    // Stall with a partial upload, until aborted.
    await new Promise((resolve) => setTimeout(resolve, 30_000).unref());
  }
  const writing = storage.write(peer, backend.uuid, id, slowBody(), size, new Uint8Array(32), {
    signal: controller.signal,
  });
  writing.catch(() => {});
  // Wait until the server has started the ingest (its temp file exists).
  await eventually(() => readdirSync(join(backend.root, 'tmp')).length > 0, 'the ingest to start');
  assert.equal(sent, 2 * mebibyte);
  const abortedAt = Date.now();
  controller.abort(new Error('user gave up'));
  await assert.rejects(writing, /user gave up/);
  assert.ok(Date.now() - abortedAt < 5000, 'the write fails promptly although its body source stalls');
  await eventually(() => filesIn(backend.root).length === 0, 'the temp file to be removed');
  await assert.rejects(backend.head(id), { code: 'NOT_FOUND' });
  // A new write of the same id works.
  const body = patternBytes(mebibyte, 4);
  await storage.write(peer, backend.uuid, id, body, body.byteLength, sha256(body));
  assert.ok((await backend.readAll(id)).equals(body));
});

test('storage: many concurrent writes (more than the server runs at once) all land', {
  timeout: 120_000,
}, async (t) => {
  const { storage, peer, backend } = await setup(t);
  const count = 40;
  const bodies = Array.from({ length: count }, (_, i) => patternBytes(mebibyte + i * 1001, 100 + i));
  const ids = bodies.map(() => newId());
  await Promise.all(
    bodies.map((body, i) => storage.write(peer, backend.uuid, ids[i]!, body, body.byteLength, sha256(body))),
  );
  await Promise.all(
    bodies.map(async (body, i) => {
      const read = await storage.read(peer, backend.uuid, ids[i]!, 0, body.byteLength);
      assert.ok(Buffer.from(read).equals(body), `object ${i}`);
    }),
  );
  assert.equal(readdirSync(join(backend.root, 'tmp')).length, 0);
});

test('storage: coalesce re-chunks an upload into whole pieces without losing bytes', async () => {
  const { coalesce } = await import('../../node/storage/service.ts');
  const body = patternBytes(10 * 4096 + 123, 8);
  async function* odd(): AsyncGenerator<Uint8Array> {
    const sizes = [1, 4095, 4097, 0, 7000, 3, 20_000];
    let offset = 0;
    for (let i = 0; offset < body.byteLength; i += 1) {
      const size = sizes[i % sizes.length]!;
      yield body.subarray(offset, offset + size);
      offset += size;
    }
  }
  const pieces: Uint8Array[] = [];
  for await (const piece of coalesce(odd(), body.byteLength, 8192)) pieces.push(piece);
  assert.ok(Buffer.concat(pieces).equals(body));
  assert.ok(pieces.slice(0, -1).every((piece) => piece.byteLength === 8192));
  assert.equal(pieces.at(-1)!.byteLength, body.byteLength % 8192);
  // More bytes than announced still come through (the backend refuses them).
  const extra: Uint8Array[] = [];
  for await (const piece of coalesce(odd(), 100, 8192)) extra.push(piece);
  assert.ok(Buffer.concat(extra).equals(body));
  // Nothing in, nothing out.
  const none: Uint8Array[] = [];
  for await (const piece of coalesce((async function* () {})(), 0)) none.push(piece);
  assert.deepEqual(none, []);
});

test('storage: a write waiting for a slot can be abandoned; the slot passes on', {
  timeout: 60_000,
}, async (t) => {
  const { storage, peer, backend } = await setup(t, 1, { writesMax: 1 });
  // The first write holds the only slot while its body stalls.
  let release: (() => void) | undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const first = patternBytes(2 * mebibyte, 21);
  async function* stalled(): AsyncGenerator<Uint8Array> {
    yield first.subarray(0, mebibyte);
    await gate;
    yield first.subarray(mebibyte);
  }
  const firstId = newId();
  const firstWrite = storage.write(peer, backend.uuid, firstId, stalled(), first.byteLength, sha256(first));
  await eventually(() => readdirSync(join(backend.root, 'tmp')).length === 1, 'the first ingest to start');
  // The second waits for the slot; abandon it.
  const second = patternBytes(mebibyte, 22);
  const controller = new AbortController();
  const secondWrite = storage.write(peer, backend.uuid, newId(), second, second.byteLength, sha256(second), {
    signal: controller.signal,
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  controller.abort(new Error('no longer needed'));
  await assert.rejects(secondWrite, /no longer needed/);
  // A third one queues behind the first and runs when it finishes.
  const thirdId = newId();
  const thirdWrite = storage.write(peer, backend.uuid, thirdId, second, second.byteLength, sha256(second));
  release!();
  await firstWrite;
  await thirdWrite;
  assert.ok((await backend.readAll(firstId)).equals(first));
  assert.ok((await backend.readAll(thirdId)).equals(second));
  await eventually(() => readdirSync(join(backend.root, 'tmp')).length === 0, 'no temp files');
  assert.equal(filesIn(backend.root).length, 2);
});

test('storage: after stop() the methods are no longer served', { timeout: 60_000 }, async (t) => {
  const { storage, peer, backend, service } = await setup(t);
  assert.equal((await storage.space(peer)).length, 1);
  await service.stop();
  await assert.rejects(storage.space(peer, { timeoutMs: 5000 }), { code: 'IO_ERROR' });
  await assert.rejects(storage.head(peer, backend.uuid, newId(), { timeoutMs: 5000 }), { code: 'IO_ERROR' });
});

test('storage: fetch copies an object from another backend server to server, checked by its sha256', async (t) => {
  const { storage, peer, backend } = await setup(t);
  // The "other server": a backend the service reads through its fetch callback, as the node does.
  const source = await createTestBackend(t);
  const sourceKey = hex(source.uuid);
  const clientKey = await newKey();
  const serverKey = await newKey();
  const members = cell(clientKey, serverKey);
  const client = new StorageClient(await startHost(t, clientKey, members.isMember));
  const serverHost = await startHost(t, serverKey, members.isMember);
  const target = await createTestBackend(t);
  const fetched: string[] = [];
  const service = await serveStorage(serverHost, {
    backends: () => new Map([[hex(target.uuid), target]]),
    fetch: (from, id, size) => {
      fetched.push(hex(from));
      if (hex(from) !== sourceKey) throw new Error('unknown source');
      return source.read(id, { offset: 0, length: size });
    },
  });
  t.after(() => service.stop());
  const bytes = patternBytes(3 * mebibyte + 17, 5);
  const id = newId();
  await source.ingest(
    { id, mainType: 'DATA', layout: 'INLINE', bodySize: bytes.length, contentHash: sha256(bytes) },
    bytes,
  );
  const to = serverHost.multiaddrs()[0]!;
  const done = await client.fetch(to, target.uuid, id, bytes.length, sha256(bytes), source.uuid);
  assert.equal(done.size, bytes.length);
  assert.deepEqual(fetched, [sourceKey]);
  assert.equal(
    Buffer.compare(Buffer.from(await client.read(to, target.uuid, id, 0, bytes.length)), Buffer.from(bytes)),
    0,
  );
  // A wrong hash stores nothing; a source on the server itself and a server without fetch refuse.
  const other = newId();
  await source.ingest(
    { id: other, mainType: 'DATA', layout: 'INLINE', bodySize: bytes.length, contentHash: sha256(bytes) },
    bytes,
  );
  await assert.rejects(
    client.fetch(to, target.uuid, other, bytes.length, sha256(new Uint8Array(1)), source.uuid),
    {
      code: 'HASH_MISMATCH',
    },
  );
  await assert.rejects(client.read(to, target.uuid, other, 0, 1), { code: 'NOT_FOUND' });
  await assert.rejects(client.fetch(to, target.uuid, other, bytes.length, sha256(bytes), target.uuid), {
    code: 'INVALID_ARGUMENT',
  });
  await assert.rejects(storage.fetch(peer, backend.uuid, other, bytes.length, sha256(bytes), source.uuid), {
    code: 'UNAVAILABLE',
  });
});

test('storage/meta stores a batch of META objects side by side, keeps the newer of two, reads them back', async (t) => {
  const { storage, peer, backend } = await setup(t);
  const metaHeader = (id: Uint8Array, ctimeMs: number, changeIndex: number): ObjectHeader => ({
    ...emptyHeader(),
    id,
    mainType: 'META',
    subType: 'FILE',
    ctimeMs,
    changeIndex,
  });
  const ids = Array.from({ length: 100 }, newId);
  const objects = ids.map((id, i) => ({ header: metaHeader(id, 1000 + i, 5), body: patternBytes(i, i) }));
  assert.equal(await storage.putMeta(peer, backend.uuid, objects), 100);
  for (const [i, id] of ids.entries()) {
    const header = await backend.head(id);
    assert.equal(header.mainType, 'META');
    assert.equal(header.ctimeMs, 1000 + i);
    assert.equal(header.bodySize, i);
  }
  // Half older (not written), half newer (written): the stored count says which.
  const again = ids.map((id, i) => ({
    header: metaHeader(id, 1000 + i, i % 2 === 0 ? 4 : 6),
    body: new Uint8Array(0),
  }));
  assert.equal(await storage.putMeta(peer, backend.uuid, again), 50);
  for (const [i, id] of ids.entries())
    assert.equal((await backend.head(id)).changeIndex, i % 2 === 0 ? 5 : 6);
});

test('storeMetaObjects: a failing object rejects the batch after the writes in flight, the others stay whole', async (t) => {
  const backend = await createTestBackend(t);
  const ids = Array.from({ length: 40 }, newId);
  const objects = ids.map((id, i) => ({
    header: { ...emptyHeader(), id, mainType: 'META' as const, subType: 'FILE' as const, ctimeMs: 1 },
    body: patternBytes(100, i),
  }));
  // A chunk's header among them: the store refuses it (putMeta stores META objects only).
  objects[7] = { ...objects[7]!, header: { ...objects[7]!.header, mainType: 'DATA' as never } };
  await assert.rejects(storeMetaObjects(backend, objects), /META objects only/);
  // Whatever was written is whole; nothing is left in the temp folder.
  for (const id of ids) {
    const header = await backend.head(id).catch(() => undefined);
    if (header !== undefined) assert.equal(header.bodySize, 100);
  }
  assert.deepEqual(
    filesIn(backend.root).filter((path) => path.endsWith('.tmp')),
    [],
  );
});
