/** Conversions from the client's records to the integer arrays fuse-native's C layer reads. */
import type { Attributes, FsStatistics } from '../node/client/api.ts';

const uint32Max = 0xffff_ffff;
const twoTo32 = 4294967296;

/** st_blksize reported for every object: one FUSE request (big_writes caps requests at 128 KiB). */
export const preferredIoBytes = 131072;

function setUint64(ints: Uint32Array, index: number, value: number): void {
  const clamped = Math.max(0, Math.floor(value));
  ints[index] = clamped % twoTo32;
  ints[index + 1] = Math.floor(clamped / twoTo32);
}

/**
 * fuse-native's stat layout: mode, uid, gid, size(2), dev, nlink, ino, rdev, blksize, blocks(2),
 * atime(2), mtime(2), ctime(2) — times in ms since the epoch (times before 1970 read as 0), ino
 * truncated to 32 bits.
 */
export function statArray(attributes: Attributes): Uint32Array {
  const ints = new Uint32Array(18);
  ints[0] = attributes.mode;
  ints[1] = attributes.uid;
  ints[2] = attributes.gid;
  setUint64(ints, 3, attributes.size);
  ints[5] = 0;
  ints[6] = Math.min(attributes.nlink, uint32Max);
  ints[7] = attributes.ino % twoTo32;
  ints[8] = attributes.rdev;
  ints[9] = preferredIoBytes;
  setUint64(ints, 10, attributes.blocks);
  setUint64(ints, 12, attributes.atimeMs);
  setUint64(ints, 14, attributes.mtimeMs);
  setUint64(ints, 16, attributes.ctimeMs);
  return ints;
}

/**
 * statvfs: bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax. The C
 * layer takes 32-bit counts, so the fragment size grows (by powers of two) until the capacity fits.
 */
export function statfsArray(statistics: FsStatistics): Uint32Array {
  let fragmentBytes = Math.max(512, statistics.blockBytes);
  while (statistics.totalBytes / fragmentBytes > uint32Max) fragmentBytes *= 2;
  const blocks = (bytes: number) => Math.min(uint32Max, Math.floor(Math.max(0, bytes) / fragmentBytes));
  const count = (value: number) => Math.min(uint32Max, Math.max(0, Math.floor(value)));
  const ints = new Uint32Array(11);
  ints[0] = Math.max(fragmentBytes, preferredIoBytes);
  ints[1] = fragmentBytes;
  ints[2] = blocks(statistics.totalBytes);
  ints[3] = blocks(statistics.freeBytes);
  ints[4] = blocks(statistics.availableBytes);
  ints[5] = count(statistics.files);
  ints[6] = count(statistics.filesFree);
  ints[7] = count(statistics.filesFree);
  ints[8] = 0;
  ints[9] = 0;
  ints[10] = statistics.nameBytesMax;
  return ints;
}
