/**
 * Content hashes: the end-to-end check of an object body (chunk), from the writer of a file through
 * every copy to each reader. A content hash names its algorithm by its form, so the values travel
 * opaquely (metadata chunk lists, object headers, storage requests) and equal bytes always mean the
 * same algorithm and the same body:
 * - BLAKE3, what everything written now gets: 34 bytes, a multihash (code 0x1e = blake3, length
 *   0x20, then the 32-byte BLAKE3-256 digest);
 * - SHA256, objects and chunk lists written before BLAKE3, and new ones on a platform without the
 *   native BLAKE3 (see NativeBlake3): the bare 32-byte sha256 digest.
 *
 * Why BLAKE3: on these machines sha256 (OpenSSL, SHA-NI) hashes bodies coming from memory at
 * about 0.7 GB/s, BLAKE3 (native, @napi-rs/blake-hash, AVX-512) at about 3.7 GB/s; a large ingest
 * spent more time hashing than writing.
 */
import { createHash } from 'node:crypto';
import type { Blake3Hasher } from '@napi-rs/blake-hash';
import { blake3 as blake3Js } from '@noble/hashes/blake3.js';
import { InvalidArgumentError } from '../common/errors.ts';

export type ContentHashAlgorithm = 'SHA256' | 'BLAKE3';

/**
 * The native BLAKE3, or undefined on a platform @napi-rs/blake-hash has no binary for (or with
 * ZHSM_BLAKE3=js, for tests). Without it a node writes sha256 content hashes (OpenSSL, at full
 * speed) and still verifies BLAKE3 ones, with @noble/hashes (pure JS, about 46 MB/s here: slow,
 * but every object stays readable).
 */
const NativeBlake3: (new () => Blake3Hasher) | undefined = await (async () => {
  if (process.env.ZHSM_BLAKE3 === 'js') return undefined;
  try {
    return (await import('@napi-rs/blake-hash')).Blake3Hasher;
  } catch {
    return undefined;
  }
})();

/** Where this process's BLAKE3 comes from (the daemon logs it at start). */
export const BLAKE3_IMPLEMENTATION: 'native' | 'js' = NativeBlake3 === undefined ? 'js' : 'native';

/** The algorithm of new content hashes: BLAKE3 where it is native, else sha256. */
export const CONTENT_HASH_CURRENT: ContentHashAlgorithm = NativeBlake3 === undefined ? 'SHA256' : 'BLAKE3';
/** Multihash code of BLAKE3 (https://github.com/multiformats/multicodec), then the digest length. */
const BLAKE3_PREFIX = [0x1e, 0x20] as const;
const DIGEST_BYTES = 32;
/** The longest content hash (for sizing headers). */
export const CONTENT_HASH_BYTES_MAX = DIGEST_BYTES + BLAKE3_PREFIX.length;

/** The algorithm of a content hash, or undefined if `hash` is not one. */
export function contentHashAlgorithmOf(hash: Uint8Array): ContentHashAlgorithm | undefined {
  if (hash.length === DIGEST_BYTES) return 'SHA256';
  if (hash.length === DIGEST_BYTES + 2 && hash[0] === BLAKE3_PREFIX[0] && hash[1] === BLAKE3_PREFIX[1])
    return 'BLAKE3';
  return undefined;
}

/** `hash` if it is a content hash; else an InvalidArgumentError naming `what` (and `context`). */
export function checkContentHash(
  hash: Uint8Array,
  what = 'content hash',
  context?: Record<string, unknown>,
): Uint8Array {
  if (contentHashAlgorithmOf(hash) === undefined) {
    throw new InvalidArgumentError(
      `${what} must be a sha256 digest (32 bytes) or a BLAKE3 multihash (34 bytes, 1e 20 ...); got ${hash.length} bytes`,
      context,
    );
  }
  return hash;
}

/**
 * `hash` if it is a content hash or empty; else an InvalidArgumentError. Empty means no hash is
 * known for the body: a chunk cut short by a truncate keeps its longer stored object, and its
 * recorded hash (of the old length) is cleared. Copies of such a chunk are hashed where they land
 * (the header records it); the bytes are checked on the way by the source's block checksums.
 */
export function checkOptionalContentHash(hash: Uint8Array, what = 'content hash'): Uint8Array {
  return hash.length === 0 ? hash : checkContentHash(hash, what);
}

/** Incremental content hash of a body that arrives in pieces. */
export interface ContentHasher {
  readonly algorithm: ContentHashAlgorithm;
  update(chunk: Uint8Array): void;
  /** The content hash (in the algorithm's form above); call once. */
  digest(): Uint8Array;
}

class Blake3ContentHasher implements ContentHasher {
  readonly algorithm = 'BLAKE3';
  readonly #update: (chunk: Uint8Array) => void;
  readonly #digest: () => Uint8Array;

  constructor(implementation: 'native' | 'js') {
    if (implementation === 'native') {
      if (NativeBlake3 === undefined) throw new Error('no native BLAKE3 on this platform');
      const state = new NativeBlake3();
      // The binding takes Buffers: a view of the same bytes, no copy.
      this.#update = (chunk) =>
        state.update(
          Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength),
        );
      this.#digest = () => state.digestBuffer();
    } else {
      const state = blake3Js.create();
      this.#update = (chunk) => state.update(chunk);
      this.#digest = () => state.digest();
    }
  }

  update(chunk: Uint8Array): void {
    if (chunk.length > 0) this.#update(chunk);
  }

  digest(): Uint8Array {
    const out = new Uint8Array(CONTENT_HASH_BYTES_MAX);
    out.set(BLAKE3_PREFIX, 0);
    out.set(this.#digest(), BLAKE3_PREFIX.length);
    return out;
  }
}

class Sha256ContentHasher implements ContentHasher {
  readonly algorithm = 'SHA256';
  readonly #state = createHash('sha256');

  update(chunk: Uint8Array): void {
    this.#state.update(chunk);
  }

  digest(): Uint8Array {
    return new Uint8Array(this.#state.digest());
  }
}

/**
 * A hasher of `algorithm`. `blake3` picks the BLAKE3 implementation (tests); by default the native
 * one where there is one.
 */
export function createContentHasher(
  algorithm: ContentHashAlgorithm = CONTENT_HASH_CURRENT,
  blake3: 'native' | 'js' = BLAKE3_IMPLEMENTATION,
): ContentHasher {
  return algorithm === 'BLAKE3' ? new Blake3ContentHasher(blake3) : new Sha256ContentHasher();
}

/** A hasher of the algorithm `expected` is in (to check a body against it). */
export function hasherFor(expected: Uint8Array): ContentHasher {
  return createContentHasher(contentHashAlgorithmOf(checkContentHash(expected, 'expected hash'))!);
}

/** The content hash of `bytes`. */
export function contentHashOf(
  bytes: Uint8Array,
  algorithm: ContentHashAlgorithm = CONTENT_HASH_CURRENT,
): Uint8Array {
  const hasher = createContentHasher(algorithm);
  hasher.update(bytes);
  return hasher.digest();
}

/** Whether `bytes` hash to `expected` (in `expected`'s algorithm). */
export function matchesContentHash(bytes: Uint8Array, expected: Uint8Array): boolean {
  const hasher = hasherFor(expected);
  hasher.update(bytes);
  return Buffer.compare(hasher.digest(), expected) === 0;
}
