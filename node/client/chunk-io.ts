/**
 * A chunk read from a backend of this process (the local cell's, or a daemon's own storage
 * role): the same checks as a read from a storage server (node/storage/client.ts), without the
 * network.
 */
import { HashMismatchError } from '../common/errors.ts';
import { checkReadTarget } from '../storage/client.ts';
import type { Backend } from '../store/backend.ts';
import { matchesContentHash } from '../store/content-hash.ts';

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

/**
 * Bytes [offset, offset + length) of object `id` (fewer where the object ends), verified by the
 * backend's block checksums, and against `expectedHash` (if given and not empty: none is known for
 * a trimmed chunk) when the range is the whole object. With `into` (at least `length` bytes) the
 * bytes are copied there and the filled part of it is returned.
 */
export async function readStoredChunk(
  backend: Backend,
  id: Uint8Array,
  offset: number,
  length: number,
  expectedHash?: Uint8Array,
  into?: Uint8Array,
): Promise<Uint8Array> {
  checkReadTarget(into, length);
  const parts: Uint8Array[] = [];
  let received = 0;
  for await (const part of backend.read(id, { offset, length })) {
    if (into === undefined) parts.push(part);
    else into.set(part, received);
    received += part.byteLength;
  }
  const bytes =
    into !== undefined ? into.subarray(0, received) : parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  if (expectedHash !== undefined && expectedHash.length > 0 && !matchesContentHash(bytes, expectedHash))
    throw new HashMismatchError(`chunk ${hex(id)} does not match its content hash`, {
      backend: hex(backend.uuid),
    });
  return bytes;
}
