/**
 * The on-disk format of one object file (format version 1).
 *
 * ```
 * offset 0            slot A  (slotBytes)   header slot: prefix + ObjectHeader (protobuf)
 * offset slotBytes    slot B  (slotBytes)   second header slot (crash-safe header updates)
 * offset 2*slotBytes  body    (bodySize)    the object's bytes; zero 4 KiB blocks are holes
 * after the body      trailer               'ZHST', u32 length, u32 crc32 of the table, BlockTable
 * ```
 * Bodies of at most HEADER_BLOCKS_MAX blocks have no trailer: their block checksums are in the
 * header (`block_checksums`), and the file is extended to the body's end.
 *
 * A slot's prefix (28 bytes, little-endian): magic 'ZHSO', u16 format version, u16 slot index,
 * u32 sequence, u32 header length, u32 slot bytes, u32 reserved, u32 crc32 over the prefix's first
 * 24 bytes and the header bytes. The valid slot with the higher sequence is current; an update writes
 * the other slot, so a torn update leaves the previous header intact. slotBytes is 4096 * 2^k, so
 * slot B can be found even when slot A is unreadable, and the body starts 4 KiB-aligned (holes in
 * the body are filesystem holes).
 *
 * The trailer holds a checksum (the header's algorithm) per `block_size` bytes of the body, so ranged reads verify exactly the
 * blocks they touch; the header's content hash (content-hash.ts, of the whole body) is verified at ingest and
 * by full reads (scrub).
 */
import { crc32 } from 'node:zlib';
import { codec } from '../../proto/index.ts';
import { CorruptObjectError, UnsupportedFormatError } from '../common/errors.ts';

export const FORMAT_VERSION = 1;
export const SLOT_MAGIC = 0x4f53485a; // 'ZHSO' little-endian
export const TRAILER_MAGIC = 0x5453485a; // 'ZHST'
export const SLOT_PREFIX_BYTES = 28;
export const TRAILER_PREFIX_BYTES = 12;
export const PAGE_BYTES = 4096;
export const SLOT_BYTES_MIN = PAGE_BYTES;
/** Largest header slot: bounds the header (chunk lists of huge files) and the slot-B search. */
export const SLOT_BYTES_MAX = 64 * 1024 * 1024;
/** Bytes per checksummed body block. */
export const BLOCK_BYTES = 64 * 1024;
/** Bodies of at most this many blocks keep their block checksums in the header (no trailer). */
export const HEADER_BLOCKS_MAX = 16;

export type MainType = 'MAIN_TYPE_UNSPECIFIED' | 'META' | 'DATA';
export type SubType = 'SUB_TYPE_UNSPECIFIED' | 'FILE' | 'DIR' | 'SPECIAL';
export type SpecialKind =
  | 'SPECIAL_KIND_UNSPECIFIED'
  | 'SYMLINK'
  | 'CHAR_DEVICE'
  | 'BLOCK_DEVICE'
  | 'FIFO'
  | 'SOCKET';
export type DataLayout = 'DATA_LAYOUT_UNSPECIFIED' | 'INLINE' | 'CHUNKS';
export type HashAlgorithm = 'HASH_ALGORITHM_UNSPECIFIED' | 'SHA256' | 'BLAKE3';
/** The checksum of body blocks (proto BlockChecksum; node/store/checksum.ts). */
export type BlockChecksumAlgorithm = 'BLOCK_CHECKSUM_XXH32' | 'BLOCK_CHECKSUM_XXH64_LOW32';

export interface ChunkRef {
  id: Uint8Array;
  offset: number;
  size: number;
  hash: Uint8Array;
}

export interface Xattr {
  name: string;
  value: Uint8Array;
}

export interface ObjectFlags {
  outdated: boolean;
  hot: boolean;
  fragmentsMeta: boolean;
  /** META: a tombstone (the inode was deleted at ctime). */
  deleted?: boolean;
}

/** The object header (proto/object.proto ObjectHeader), all fields present after decode. */
export interface ObjectHeader {
  id: Uint8Array;
  mainType: MainType;
  subType: SubType;
  specialKind: SpecialKind;
  layout: DataLayout;
  chunks: ChunkRef[];
  xattrs: Xattr[];
  flags: ObjectFlags;
  refcount: number;
  mtimeMs: number;
  hashAlgorithm: HashAlgorithm;
  contentHash: Uint8Array;
  bodySize: number;
  blockSize: number;
  parent: Uint8Array;
  name: string;
  uid: number;
  gid: number;
  mode: number;
  atimeMs: number;
  ctimeMs: number;
  version: number;
  fileSize: number;
  rdev: number;
  nlink: number;
  /** Block checksums of small bodies (at most HEADER_BLOCKS_MAX blocks); empty otherwise. */
  blockChecksums: number[];
  /** The algorithm of the block checksums (here and in the trailer). */
  blockChecksum: BlockChecksumAlgorithm;
  /** META: the log index of the change this header describes (node/recovery/). */
  changeIndex: number;
  /** META: mtimes of the content versions this one replaced, newest first (at most 16). */
  contentHistory: number[];
  /** META SYMLINK: the link's target. */
  symlinkTarget: Uint8Array;
  /** META of a file with hard links: its other names. */
  links: Array<{ parent: Uint8Array; name: string }>;
}

export interface BackendIdentity {
  magic: string;
  formatVersion: number;
  backendUuid: Uint8Array;
  cell: string;
  createdMs: number;
}

interface BlockTable {
  blockSize: number;
  checksums: number[];
}

export const headerCodec = codec<ObjectHeader>('zhsm.object.ObjectHeader');
export const identityCodec = codec<BackendIdentity>('zhsm.object.BackendIdentity');
const blockTableCodec = codec<BlockTable>('zhsm.object.BlockTable');

/** A header with every field at its default; callers override what they know. */
export function emptyHeader(): ObjectHeader {
  return {
    id: new Uint8Array(0),
    mainType: 'MAIN_TYPE_UNSPECIFIED',
    subType: 'SUB_TYPE_UNSPECIFIED',
    specialKind: 'SPECIAL_KIND_UNSPECIFIED',
    layout: 'DATA_LAYOUT_UNSPECIFIED',
    chunks: [],
    xattrs: [],
    flags: { outdated: false, hot: false, fragmentsMeta: false },
    refcount: 1,
    mtimeMs: 0,
    hashAlgorithm: 'SHA256',
    contentHash: new Uint8Array(0),
    bodySize: 0,
    blockSize: BLOCK_BYTES,
    parent: new Uint8Array(0),
    name: '',
    uid: 0,
    gid: 0,
    mode: 0,
    atimeMs: 0,
    ctimeMs: 0,
    version: 0,
    fileSize: 0,
    rdev: 0,
    nlink: 0,
    blockChecksums: [],
    blockChecksum: 'BLOCK_CHECKSUM_XXH32',
    changeIndex: 0,
    contentHistory: [],
    symlinkTarget: new Uint8Array(0),
    links: [],
  };
}

/** Slot size for a header of `headerBytes`: room for the header to grow by half, power-of-two pages. */
export function slotBytesFor(headerBytes: number): number {
  const needed = SLOT_PREFIX_BYTES + headerBytes + Math.max(1024, headerBytes >> 1);
  let slotBytes = SLOT_BYTES_MIN;
  while (slotBytes < needed) slotBytes *= 2;
  return slotBytes;
}

export function encodeSlot(options: {
  header: Uint8Array;
  slotIndex: 0 | 1;
  sequence: number;
  slotBytes: number;
}): Uint8Array {
  const { header, slotIndex, sequence, slotBytes } = options;
  const buffer = Buffer.alloc(SLOT_PREFIX_BYTES + header.length);
  buffer.writeUInt32LE(SLOT_MAGIC, 0);
  buffer.writeUInt16LE(FORMAT_VERSION, 4);
  buffer.writeUInt16LE(slotIndex, 6);
  buffer.writeUInt32LE(sequence >>> 0, 8);
  buffer.writeUInt32LE(header.length, 12);
  buffer.writeUInt32LE(slotBytes, 16);
  buffer.writeUInt32LE(0, 20);
  buffer.set(header, SLOT_PREFIX_BYTES);
  buffer.writeUInt32LE(crc32(header, crc32(buffer.subarray(0, 24))), 24);
  return buffer;
}

export interface SlotPrefix {
  readonly formatVersion: number;
  readonly slotIndex: number;
  readonly sequence: number;
  readonly headerBytes: number;
  readonly slotBytes: number;
  readonly crc: number;
}

/** Parse a slot prefix; undefined when the magic is absent (unwritten or torn slot). */
export function parseSlotPrefix(prefix: Uint8Array): SlotPrefix | undefined {
  if (prefix.length < SLOT_PREFIX_BYTES) return undefined;
  const view = Buffer.from(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  if (view.readUInt32LE(0) !== SLOT_MAGIC) return undefined;
  return {
    formatVersion: view.readUInt16LE(4),
    slotIndex: view.readUInt16LE(6),
    sequence: view.readUInt32LE(8),
    headerBytes: view.readUInt32LE(12),
    slotBytes: view.readUInt32LE(16),
    crc: view.readUInt32LE(24),
  };
}

export function slotChecksumMatches(
  prefixBytes: Uint8Array,
  headerBytes: Uint8Array,
  expected: number,
): boolean {
  return crc32(headerBytes, crc32(prefixBytes.subarray(0, 24))) === expected;
}

export function isPlausibleSlotBytes(slotBytes: number): boolean {
  return (
    slotBytes >= SLOT_BYTES_MIN &&
    slotBytes <= SLOT_BYTES_MAX &&
    Number.isInteger(Math.log2(slotBytes / SLOT_BYTES_MIN))
  );
}

export function checkFormatVersion(version: number, context: Record<string, unknown>): void {
  if (version !== FORMAT_VERSION) {
    throw new UnsupportedFormatError(
      `object format version ${version} is not supported (this build reads ${FORMAT_VERSION})`,
      context,
    );
  }
}

export function encodeTrailer(blockSize: number, checksums: number[]): Uint8Array {
  const table = blockTableCodec.encode({ blockSize, checksums });
  const buffer = Buffer.alloc(TRAILER_PREFIX_BYTES + table.length);
  buffer.writeUInt32LE(TRAILER_MAGIC, 0);
  buffer.writeUInt32LE(table.length, 4);
  buffer.writeUInt32LE(crc32(table), 8);
  buffer.set(table, TRAILER_PREFIX_BYTES);
  return buffer;
}

/** Bytes the trailer of a body of `bodySize` takes (for size checks). */
export function trailerBytesMax(bodySize: number, blockSize: number): number {
  const blocks = Math.ceil(bodySize / blockSize);
  return TRAILER_PREFIX_BYTES + 16 + blocks * 4;
}

export function decodeTrailer(
  bytes: Uint8Array,
  context: Record<string, unknown>,
): { blockSize: number; checksums: number[] } {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.length < TRAILER_PREFIX_BYTES || view.readUInt32LE(0) !== TRAILER_MAGIC) {
    throw new CorruptObjectError('object trailer is missing or damaged (object truncated?)', context);
  }
  const length = view.readUInt32LE(4);
  if (view.length < TRAILER_PREFIX_BYTES + length) {
    throw new CorruptObjectError('object trailer is truncated', context);
  }
  const table = view.subarray(TRAILER_PREFIX_BYTES, TRAILER_PREFIX_BYTES + length);
  if (crc32(table) !== view.readUInt32LE(8)) {
    throw new CorruptObjectError('object trailer checksum mismatch', context);
  }
  const decoded = blockTableCodec.decode(table);
  return { blockSize: decoded.blockSize, checksums: decoded.checksums };
}
