/** Shared test helpers. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

/** A fresh temporary directory, removed when the test ends. */
export function tempDirectory(t: TestContext, prefix = 'zhsm-test-'): string {
  const path = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(path, { recursive: true, force: true }));
  return path;
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
