/**
 * META objects: every inode of the cell is also stored on the backends as an object of its own
 * (id = the inode id, main type META) whose header carries the namespace fields (parent, name,
 * owner, mode, times, size, chunk list, xattrs) and whose body is the inline content (small
 * files) — enough to rebuild the metadata from the backends alone (`zhsm rebuild`).
 *
 * Pure conversions between the metadata's Inode and the object header, and the order of two
 * headers of one inode.
 */
import type { Inode, NodeType } from '../metadata/records.ts';
import { BLOCK_CHECKSUM_CURRENT } from '../store/checksum.ts';
import { CONTENT_HASH_CURRENT } from '../store/content-hash.ts';
import type { ObjectHeader, SpecialKind, SubType } from '../store/format.ts';

const EMPTY = new Uint8Array(0);

/** st_mode file-type bits. */
const S_IF: Record<NodeType, number> = {
  NODE_TYPE_UNSPECIFIED: 0,
  FILE: 0o100000,
  DIRECTORY: 0o040000,
  SYMLINK: 0o120000,
  CHAR_DEVICE: 0o020000,
  BLOCK_DEVICE: 0o060000,
  FIFO: 0o010000,
  SOCKET: 0o140000,
};

const SPECIAL_KINDS: Partial<Record<NodeType, SpecialKind>> = {
  SYMLINK: 'SYMLINK',
  CHAR_DEVICE: 'CHAR_DEVICE',
  BLOCK_DEVICE: 'BLOCK_DEVICE',
  FIFO: 'FIFO',
  SOCKET: 'SOCKET',
};

function subTypeOf(type: NodeType): SubType {
  if (type === 'FILE') return 'FILE';
  if (type === 'DIRECTORY') return 'DIR';
  return 'SPECIAL';
}

/** The node type a META header describes; undefined when the header is not a valid META one. */
export function nodeTypeOf(header: Pick<ObjectHeader, 'mainType' | 'subType' | 'specialKind'>) {
  if (header.mainType !== 'META') return undefined;
  if (header.subType === 'FILE') return 'FILE' as const;
  if (header.subType === 'DIR') return 'DIRECTORY' as const;
  if (header.subType !== 'SPECIAL') return undefined;
  const kind = header.specialKind;
  if (
    kind === 'SYMLINK' ||
    kind === 'CHAR_DEVICE' ||
    kind === 'BLOCK_DEVICE' ||
    kind === 'FIFO' ||
    kind === 'SOCKET'
  )
    return kind;
  return undefined;
}

/**
 * The META object of an inode as of the change at log index `changeIndex`; `deleted`: its
 * tombstone (the inode as it was when deleted, flagged; no body).
 */
export function metaObjectOf(
  inode: Inode,
  changeIndex: number,
  deleted = false,
  names: ReadonlyArray<{ parent: Uint8Array; name: string }> = [],
): { header: ObjectHeader; body: Uint8Array } {
  const body = inode.type === 'FILE' && !deleted ? inode.inlineData : EMPTY;
  const header: ObjectHeader = {
    id: inode.id,
    mainType: 'META',
    subType: subTypeOf(inode.type),
    specialKind: SPECIAL_KINDS[inode.type] ?? 'SPECIAL_KIND_UNSPECIFIED',
    layout: inode.chunks.length > 0 ? 'CHUNKS' : 'INLINE',
    chunks: inode.chunks.map((chunk) => ({
      id: chunk.id,
      offset: chunk.offset,
      size: chunk.size,
      hash: chunk.hash,
    })),
    xattrs: inode.xattrs.map((xattr) => ({ name: xattr.name, value: xattr.value })),
    flags: { outdated: false, hot: false, fragmentsMeta: false, deleted },
    refcount: 1,
    mtimeMs: inode.mtimeMs,
    hashAlgorithm: CONTENT_HASH_CURRENT,
    contentHash: EMPTY,
    bodySize: body.length,
    blockSize: 0,
    blockChecksum: BLOCK_CHECKSUM_CURRENT,
    parent: inode.parent,
    name: inode.name,
    uid: inode.uid,
    gid: inode.gid,
    mode: S_IF[inode.type] | (inode.mode & 0o7777),
    atimeMs: inode.atimeMs,
    ctimeMs: inode.ctimeMs,
    version: inode.version,
    fileSize: inode.size,
    rdev: inode.rdev,
    nlink: inode.nlink,
    blockChecksums: [],
    changeIndex,
    contentHistory: [...(inode.contentHistory ?? [])],
    symlinkTarget: inode.type === 'SYMLINK' ? inode.symlinkTarget : EMPTY,
    // Hard links: every name but the one in `parent` and `name`.
    links: names
      .filter((link) => Buffer.compare(link.parent, inode.parent) !== 0 || link.name !== inode.name)
      .map((link) => ({ parent: link.parent, name: link.name })),
  };
  return { header, body };
}

/**
 * The inode a META header describes (its parent and name as the header has them; nlink and
 * entries are recounted by the restore). Throws on a header that is not a valid META one.
 */
export function inodeOfMeta(header: ObjectHeader, body: Uint8Array): Inode {
  const type = nodeTypeOf(header);
  if (type === undefined) throw new Error('not a valid META header');
  if (header.id.length !== 16 || header.parent.length !== 16)
    throw new Error('META header without a valid id or parent');
  return {
    id: header.id,
    type,
    mode: header.mode & 0o7777,
    uid: header.uid,
    gid: header.gid,
    size: type === 'SYMLINK' ? header.symlinkTarget.length : header.fileSize,
    atimeMs: header.atimeMs,
    mtimeMs: header.mtimeMs,
    ctimeMs: header.ctimeMs,
    nlink: type === 'DIRECTORY' ? 2 : 1,
    rdev: header.rdev,
    symlinkTarget: type === 'SYMLINK' ? header.symlinkTarget : EMPTY,
    xattrs: header.xattrs.map((xattr) => ({ name: xattr.name, value: xattr.value })),
    inlineData: type === 'FILE' && header.chunks.length === 0 ? body : EMPTY,
    chunks: header.chunks.map((chunk) => ({
      id: chunk.id,
      offset: chunk.offset,
      size: chunk.size,
      hash: chunk.hash,
    })),
    version: header.version,
    latestAcceptedMtimeMs: header.mtimeMs,
    skipCount: 0,
    parent: header.parent,
    name: header.name,
    entries: 0,
    contentHistory: [...header.contentHistory],
  };
}

/**
 * Order of two headers of one inode: > 0 when `a` describes the newer change. The newest change
 * wins (ctime: every change sets it, users cannot), then the newest content (mtime), then the
 * later log index (two changes in one millisecond of one cell history).
 */
export function compareChanges(
  a: Pick<ObjectHeader, 'ctimeMs' | 'mtimeMs' | 'changeIndex'>,
  b: Pick<ObjectHeader, 'ctimeMs' | 'mtimeMs' | 'changeIndex'>,
): number {
  return a.ctimeMs - b.ctimeMs || a.mtimeMs - b.mtimeMs || a.changeIndex - b.changeIndex;
}

/**
 * Which of two versions of one inode (from META headers) a rebuild keeps: > 0 when `a` wins.
 * - The same content version (same mtime): the later change (ctime, then log index) wins — an
 *   attribute change, a rename.
 * - One replaced the other in the normal course (the other's mtime is in its content history):
 *   the descendant wins, whatever the mtimes say (cp -p and rsync -a set mtimes back).
 * - Otherwise the two were changed apart (a split brain, or a version older than the history
 *   remembers): the newest content (mtime) wins, then the later change.
 */
export function compareVersions(
  a: Pick<ObjectHeader, 'ctimeMs' | 'mtimeMs' | 'changeIndex' | 'contentHistory'>,
  b: Pick<ObjectHeader, 'ctimeMs' | 'mtimeMs' | 'changeIndex' | 'contentHistory'>,
): number {
  if (a.mtimeMs === b.mtimeMs) return a.ctimeMs - b.ctimeMs || a.changeIndex - b.changeIndex;
  if (a.contentHistory.includes(b.mtimeMs)) return 1;
  if (b.contentHistory.includes(a.mtimeMs)) return -1;
  return a.mtimeMs - b.mtimeMs || a.ctimeMs - b.ctimeMs || a.changeIndex - b.changeIndex;
}

/** Whether two versions of a file have the same content (same chunks, or same inline bytes). */
export function sameContent(a: Inode, b: Inode): boolean {
  if (a.size !== b.size || a.chunks.length !== b.chunks.length) return false;
  for (let index = 0; index < a.chunks.length; index++) {
    const x = a.chunks[index]!;
    const y = b.chunks[index]!;
    if (x.offset !== y.offset || x.size !== y.size || Buffer.compare(x.hash, y.hash) !== 0) return false;
  }
  return (
    Buffer.compare(a.inlineData, b.inlineData) === 0 && Buffer.compare(a.symlinkTarget, b.symlinkTarget) === 0
  );
}

/**
 * Whether `loser` is a version `winner` replaced in the normal course (its content mtime is in
 * the winner's content history): a stale copy, not a split-brain conflict. A version older than
 * the history remembers (CONTENT_HISTORY_MAX) counts as a conflict: kept, never dropped.
 */
export function superseded(winner: Inode, loser: Inode): boolean {
  return loser.mtimeMs === winner.mtimeMs || (winner.contentHistory ?? []).includes(loser.mtimeMs);
}
