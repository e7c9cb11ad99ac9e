/** Shared test helpers. */
import { closeSync, mkdtempSync, openSync, readdirSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { blake3 } from '@noble/hashes/blake3.js';
import { headerCodec, parseSlotPrefix, SLOT_PREFIX_BYTES } from '../node/store/format.ts';

/** A fresh temporary directory, removed when the test ends. */
export function tempDirectory(t: TestContext, prefix = 'zhsm-test-'): string {
  const path = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(path, { recursive: true, force: true }));
  return path;
}

/**
 * The BLAKE3 content hash of `bytes` (node/store/content-hash.ts: multihash 1e 20 + digest),
 * computed with an independent implementation (@noble/hashes) as the reference.
 */
export function blake3ContentHash(bytes: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0x1e, 0x20]), blake3(bytes)]);
}

/** Deterministic pseudo-random bytes (xorshift32) so failures replay. */
export function patternBytes(length: number, seed: number): Buffer {
  const buffer = Buffer.allocUnsafe(length);
  let state = seed >>> 0 || 0x9e3779b9;
  let i = 0;
  for (; i + 4 <= length; i += 4) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    buffer.writeUInt32LE(state >>> 0, i);
  }
  for (; i < length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    buffer[i] = state & 0xff;
  }
  return buffer;
}

export async function collect(iterable: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const part of iterable) parts.push(part);
  return Buffer.concat(parts);
}

/** A new backend in a fresh temporary directory, closed when the test ends. */
export async function createTestBackend(
  t: TestContext,
  cell = 'test',
): Promise<import('../node/store/backend.ts').Backend> {
  const { Backend } = await import('../node/store/backend.ts');
  const backend = await Backend.create(tempDirectory(t), { cell });
  t.after(() => backend.close());
  return backend;
}

/**
 * The DATA object files of a backend directory (paths ab/cd/<rest of the id>), read from disk
 * while its server runs: META objects (inode headers, node/recovery/) are left out. A file whose
 * first header slot cannot be read counts as DATA (tests corrupt objects on purpose).
 */
export function dataObjects(root: string): string[] {
  const found: string[] = [];
  const hexByte = /^[0-9a-f]{2}$/;
  for (const a of readdirSync(root).filter((name) => hexByte.test(name)))
    for (const b of readdirSync(join(root, a)).filter((name) => hexByte.test(name)))
      for (const leaf of readdirSync(join(root, a, b))) {
        const path = join(root, a, b, leaf);
        let fd: number | undefined;
        try {
          fd = openSync(path, 'r');
          const prefixBytes = Buffer.alloc(SLOT_PREFIX_BYTES);
          readSync(fd, prefixBytes, 0, SLOT_PREFIX_BYTES, 0);
          const prefix = parseSlotPrefix(prefixBytes);
          if (prefix !== undefined) {
            const header = Buffer.alloc(prefix.headerBytes);
            readSync(fd, header, 0, prefix.headerBytes, SLOT_PREFIX_BYTES);
            if (headerCodec.decode(header).mainType === 'META') continue;
          }
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted meanwhile
        } finally {
          if (fd !== undefined) closeSync(fd);
        }
        found.push(path);
      }
  return found.sort();
}
