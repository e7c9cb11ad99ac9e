import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto';
import fc from 'fast-check';
import { Uint8ArrayList } from 'uint8arraylist';
import { noiseCrypto } from '../../node/net/noise-crypto.ts';

/** The list type of the noise package's signatures (its own copy of `uint8arraylist`). */
type NoiseList = Exclude<Parameters<typeof noiseCrypto.chaCha20Poly1305Encrypt>[0], Uint8Array>;
const bytes = (data: { subarray(): Uint8Array }) => Buffer.from(data.subarray());

/** A list of the bytes cut at `cuts` (as the noise decoder hands over messages spanning reads). */
function split(data: Uint8Array, cuts: number[]): NoiseList {
  const list = new Uint8ArrayList();
  let at = 0;
  for (const cut of [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b)) {
    list.append(data.subarray(at, cut));
    at = cut;
  }
  list.append(data.subarray(at));
  return list as unknown as NoiseList;
}

const nonceOf = (n: number) => {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(n), true);
  return nonce;
};

describe('noise crypto (cached key objects)', () => {
  it('encrypts exactly as the package does and each side opens the other', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 70_000 }),
        fc.integer({ min: 0, max: 32 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.array(fc.nat(), { maxLength: 4 }),
        (length, adLength, n, cuts) => {
          const k = new Uint8Array(randomBytes(32));
          const plaintext = new Uint8Array(randomBytes(length));
          const ad = new Uint8Array(randomBytes(adLength));
          const nonce = nonceOf(n);
          const ours = bytes(noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k));
          const theirs = bytes(defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k));
          assert.deepEqual(ours, theirs);
          // A plaintext given as a list encrypts the same.
          assert.deepEqual(
            bytes(noiseCrypto.chaCha20Poly1305Encrypt(split(plaintext, cuts), nonce, ad, k)),
            theirs,
          );
          for (const sealed of [new Uint8Array(theirs), split(new Uint8Array(theirs), cuts)]) {
            assert.deepEqual(
              bytes(noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, k)),
              Buffer.from(plaintext),
            );
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('rejects a changed byte, a wrong nonce and a wrong key', () => {
    const k = new Uint8Array(randomBytes(32));
    const plaintext = new Uint8Array(randomBytes(65_519));
    const sealed = new Uint8Array(
      bytes(noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonceOf(7), new Uint8Array(0), k)),
    );
    const flipped = sealed.slice();
    flipped[1000]! ^= 1;
    const ad = new Uint8Array(0);
    assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(flipped, nonceOf(7), ad, k));
    const tag = sealed.slice();
    tag[tag.length - 1]! ^= 0x80;
    assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(tag, nonceOf(7), ad, k));
    assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonceOf(8), ad, k));
    assert.throws(() =>
      noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonceOf(7), ad, new Uint8Array(randomBytes(32))),
    );
    assert.deepEqual(
      bytes(noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonceOf(7), ad, k)),
      Buffer.from(plaintext),
    );
  });

  it('never encrypts with a stale key when the key array changes in place', () => {
    const k = new Uint8Array(randomBytes(32));
    const plaintext = new Uint8Array(randomBytes(4096));
    const ad = new Uint8Array(0);
    noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonceOf(1), ad, k);
    k.set(randomBytes(32));
    assert.deepEqual(
      bytes(noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonceOf(1), ad, k)),
      bytes(defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonceOf(1), ad, k)),
    );
  });
});
