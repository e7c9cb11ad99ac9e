/**
 * Content hashes (node/store/content-hash.ts): BLAKE3 for new bodies, checked against an independent
 * implementation; sha256 hashes of objects written before BLAKE3 stay accepted and verified in their
 * own algorithm (copies keep it).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { Backend } from '../../node/store/backend.ts';
import {
  CONTENT_HASH_BYTES_MAX,
  checkContentHash,
  contentHashAlgorithmOf,
  contentHashOf,
  createContentHasher,
  matchesContentHash,
} from '../../node/store/content-hash.ts';
import { newObjectId } from '../../node/store/object-id.ts';
import { blake3ContentHash, collect, patternBytes, tempDirectory } from '../helpers.ts';

const MiB = 1024 * 1024;
const run = promisify(execFile);
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest();

test('BLAKE3 content hashes: the published empty-input digest, as a multihash', () => {
  const hash = contentHashOf(new Uint8Array(0));
  assert.equal(hash.length, CONTENT_HASH_BYTES_MAX);
  assert.equal(
    Buffer.from(hash).toString('hex'),
    '1e20af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
  );
  assert.equal(contentHashAlgorithmOf(hash), 'BLAKE3');
});

test('BLAKE3 in pieces matches an independent implementation, for any body and any cut', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 70_000 }),
      fc.array(fc.integer({ min: 0, max: 70_000 }), { maxLength: 6 }),
      (body, cuts) => {
        const expected = blake3ContentHash(body);
        // The native binding, and the pure-JS fallback of platforms without it.
        for (const implementation of ['native', 'js'] as const) {
          const hasher = createContentHasher('BLAKE3', implementation);
          let start = 0;
          for (const cut of [...cuts.map((c) => Math.min(c, body.length))].sort((a, b) => a - b)) {
            hasher.update(body.subarray(start, cut));
            start = cut;
          }
          hasher.update(body.subarray(start));
          assert.deepEqual(Buffer.from(hasher.digest()), expected, implementation);
        }
        assert.deepEqual(Buffer.from(contentHashOf(body)), expected);
        assert.ok(matchesContentHash(body, expected));
      },
    ),
    { numRuns: 200 },
  );
});

test('sha256 content hashes (objects written before BLAKE3) are still recognised and checked', () => {
  const body = patternBytes(10_000, 3);
  const legacy = sha256(body);
  assert.equal(contentHashAlgorithmOf(legacy), 'SHA256');
  assert.deepEqual(Buffer.from(contentHashOf(body, 'SHA256')), legacy);
  assert.ok(matchesContentHash(body, legacy));
  const damaged = Buffer.from(body);
  damaged[5000] = (damaged[5000] ?? 0) ^ 1;
  assert.equal(matchesContentHash(damaged, legacy), false);
  assert.equal(matchesContentHash(damaged, blake3ContentHash(body)), false);
});

test('a value of any other form is not a content hash: a clear error', () => {
  const blake = blake3ContentHash(Buffer.from('x'));
  const wrongCode = Buffer.from(blake);
  wrongCode[0] = 0x12;
  const wrongLength = Buffer.from(blake);
  wrongLength[1] = 0x21;
  for (const bad of [new Uint8Array(0), new Uint8Array(31), new Uint8Array(33), wrongCode, wrongLength]) {
    assert.equal(contentHashAlgorithmOf(bad), undefined);
    assert.throws(() => checkContentHash(bad), { code: 'INVALID_ARGUMENT', message: /content hash must be/ });
  }
});

test('backend: new objects get BLAKE3; a sha256 stated at ingest keeps the object in sha256', async (t) => {
  const backend = await Backend.create(tempDirectory(t), { cell: 'test' });
  t.after(() => backend.close());
  // Small (inline hashing) and large (the worker thread hashes large sha256 bodies).
  for (const size of [100_000, 9 * MiB + 5]) {
    const body = patternBytes(size, size);
    const fresh = newObjectId();
    const stored = await backend.ingest({ id: fresh }, body);
    assert.equal(stored.hashAlgorithm, 'BLAKE3');
    assert.deepEqual(Buffer.from(stored.contentHash), blake3ContentHash(body));
    assert.deepEqual(await collect(backend.read(fresh, { verify: 'full' })), body);

    const copy = newObjectId();
    const legacy = await backend.ingest({ id: copy, contentHash: sha256(body), bodySize: size }, body);
    assert.equal(legacy.hashAlgorithm, 'SHA256');
    assert.deepEqual(Buffer.from(legacy.contentHash), sha256(body));
    assert.deepEqual(await collect(backend.read(copy, { verify: 'full' })), body);
    // A header update that outgrows the header slots rewrites the object: same hash, same algorithm.
    const big = { name: 'user.big', value: new Uint8Array(20_000).fill(7) };
    await backend.updateHeader(copy, (header) => ({ ...header, xattrs: [big] }));
    const rewritten = await backend.head(copy);
    assert.equal(rewritten.xattrs.length, 1);
    assert.equal(rewritten.hashAlgorithm, 'SHA256');
    assert.deepEqual(Buffer.from(rewritten.contentHash), sha256(body));
    assert.deepEqual(await collect(backend.read(copy, { verify: 'full' })), body);

    // The wrong body for either form is refused.
    const other = patternBytes(size, size + 1);
    await assert.rejects(backend.ingest({ id: newObjectId(), contentHash: sha256(body) }, other), {
      code: 'HASH_MISMATCH',
    });
    await assert.rejects(backend.ingest({ id: newObjectId(), contentHash: blake3ContentHash(body) }, other), {
      code: 'HASH_MISMATCH',
    });
  }
  await assert.rejects(
    backend.ingest({ id: newObjectId(), contentHash: new Uint8Array(33) }, Buffer.from('x')),
    {
      code: 'INVALID_ARGUMENT',
    },
  );
});

test('without the native BLAKE3: new objects get sha256 hashes, BLAKE3 ones are still verified', {
  timeout: 60_000,
}, async (t) => {
  const root = tempDirectory(t, 'zhsm-blake3-js-');
  const blakeBody = patternBytes(300_000, 11);
  // A BLAKE3 object written with the native hasher, in this process.
  const backend = await Backend.create(root, { cell: 'fallback' });
  const blakeId = newObjectId();
  await backend.ingest({ id: blakeId, contentHash: blake3ContentHash(blakeBody) }, blakeBody);
  await backend.close();
  // A process as on a platform without the binding (ZHSM_BLAKE3=js): it writes sha256, and reads
  // (fully verified) and accepts BLAKE3 with the pure-JS implementation.
  const script = `
    const { Backend } = await import(${JSON.stringify(new URL('../../node/store/backend.ts', import.meta.url).href)});
    const hash = await import(${JSON.stringify(new URL('../../node/store/content-hash.ts', import.meta.url).href)});
    const backend = await Backend.open(${JSON.stringify(root)}, { cell: 'fallback' });
    const id = new Uint8Array(16).fill(7);
    const body = new Uint8Array(200_000).fill(3);
    const written = await backend.ingest({ id }, body);
    const read = await backend.readAll(Uint8Array.from(Buffer.from(${JSON.stringify(Buffer.from(blakeId).toString('hex'))}, 'hex')), 'full');
    const copy = new Uint8Array(16).fill(8);
    const copied = await backend.ingest({ id: copy, contentHash: hash.contentHashOf(read, 'BLAKE3') }, read);
    await backend.close();
    console.log(JSON.stringify({
      implementation: hash.BLAKE3_IMPLEMENTATION,
      current: hash.CONTENT_HASH_CURRENT,
      written: written.hashAlgorithm,
      writtenHash: Buffer.from(written.contentHash).toString('hex'),
      readBytes: read.length,
      copied: copied.hashAlgorithm,
    }));
  `;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, ZHSM_BLAKE3: 'js' },
    timeout: 50_000,
  });
  const result = JSON.parse(stdout) as Record<string, unknown>;
  assert.equal(result.implementation, 'js');
  assert.equal(result.current, 'SHA256');
  assert.equal(result.written, 'SHA256');
  assert.equal(result.writtenHash, sha256(new Uint8Array(200_000).fill(3)).toString('hex'));
  assert.equal(result.readBytes, blakeBody.length);
  assert.equal(result.copied, 'BLAKE3');
});
