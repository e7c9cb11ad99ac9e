/**
 * Object ids: 128-bit (16 bytes), random (UUID v4 layout) unless given.
 *
 * File-name-safe encoding: 32 lowercase hexadecimal digits. Hex is legal on every filesystem,
 * survives case-insensitive ones, and never contains '/' or NUL. An object's path in a backend is
 * `${root}/${hex[0:2]}/${hex[2:4]}/${hex[4:]}` (256 x 256 fan-out, 28-character file names).
 */
import { randomUUID } from 'node:crypto';
import { InvalidArgumentError } from '../common/errors.ts';

export const OBJECT_ID_BYTES = 16;
const hexPattern = /^[0-9a-f]{32}$/;

export type ObjectId = Uint8Array;

export function newObjectId(): ObjectId {
  return parseObjectId(randomUUID().replaceAll('-', ''));
}

export function objectIdToHex(id: ObjectId): string {
  if (id.length !== OBJECT_ID_BYTES) {
    throw new InvalidArgumentError(`object id must be ${OBJECT_ID_BYTES} bytes, got ${id.length}`);
  }
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
}

export function parseObjectId(hex: string): ObjectId {
  const normalized = hex.toLowerCase().replaceAll('-', '');
  if (!hexPattern.test(normalized)) {
    throw new InvalidArgumentError(`not an object id (32 hex digits): ${JSON.stringify(hex)}`);
  }
  return new Uint8Array(Buffer.from(normalized, 'hex'));
}

/** Relative path of an object inside a backend root: 'ab/cd/ef01…'. */
export function objectRelativePath(id: ObjectId): string {
  const hex = objectIdToHex(id);
  return `${hex.slice(0, 2)}/${hex.slice(2, 4)}/${hex.slice(4)}`;
}

/** The 256 first-level fan-out directories of a backend ('00' … 'ff'). */
export function fanOutDirectories(): string[] {
  return Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));
}

/** Inverse of objectRelativePath for the three path components, or undefined if they are not one. */
export function objectIdFromPathParts(first: string, second: string, rest: string): ObjectId | undefined {
  const hex = `${first}${second}${rest}`;
  if (first.length !== 2 || second.length !== 2 || !hexPattern.test(hex)) return undefined;
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

export function objectIdsEqual(a: ObjectId, b: ObjectId): boolean {
  return Buffer.compare(a, b) === 0;
}
