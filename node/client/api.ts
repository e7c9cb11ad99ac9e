/**
 * The client API of a cell: what the FUSE mount (fuse/) and the CLI use. Path-based, like
 * fuse-native. Every failure is a ZhsmError with a stable code; `errnoOf()` (node/common/errors.ts)
 * maps it to the errno the kernel gets.
 *
 * Implementations: the cell client (node/client/cell-client.ts: metadata through the primary
 * controller, data peer to peer with the storage servers), and test doubles.
 */

export type FileType = 'file' | 'directory' | 'symlink' | 'charDevice' | 'blockDevice' | 'fifo' | 'socket';

/** The st_mode file-type bits of each FileType. */
export const fileTypeBits: Readonly<Record<FileType, number>> = {
  file: 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  charDevice: 0o020000,
  blockDevice: 0o060000,
  fifo: 0o010000,
  socket: 0o140000,
};

/** The FileType of an st_mode (regular file when the type bits are unknown or absent). */
export function fileTypeOfMode(mode: number): FileType {
  const bits = mode & 0o170000;
  for (const [type, value] of Object.entries(fileTypeBits)) if (value === bits) return type as FileType;
  return 'file';
}

/** Who performs an operation (for ownership of new files and permission checks). */
export interface Caller {
  readonly uid: number;
  readonly gid: number;
}

export interface Attributes {
  /** A stable inode number derived from the object id (for use_ino). */
  readonly ino: number;
  readonly type: FileType;
  /** st_mode: file type bits | permission bits. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** 512-byte blocks actually stored. */
  readonly blocks: number;
  readonly nlink: number;
  readonly rdev: number;
  readonly atimeMs: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

export interface FsStatistics {
  readonly totalBytes: number;
  readonly freeBytes: number;
  readonly availableBytes: number;
  readonly files: number;
  readonly filesFree: number;
  readonly nameBytesMax: number;
  readonly blockBytes: number;
}

export type OpenMode = 'read' | 'write' | 'readWrite' | 'append';

export interface OpenOptions {
  readonly mode: OpenMode;
  /** O_TRUNC */
  readonly truncate?: boolean;
}

/** An open file: holds an open token (renewed in the background) until closed. */
export interface FileHandle {
  readonly path: string;
  /**
   * Up to `length` bytes at `offset` (fewer at the end of the file). With `into` (at least
   * `length` bytes) they are read into it, and the result is the filled part of it.
   */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /**
   * Writes at `offset` (ignored for append handles: they write at the end). Returns bytes written.
   * `data` is the caller's again once the promise settles (the mount reuses it): keep a copy.
   */
  write(offset: number, data: Uint8Array): Promise<number>;
  truncate(size: number): Promise<void>;
  /** Make written data visible to other clients (commit to the cell). */
  flush(): Promise<void>;
  /** flush() and wait until the data is durable on the storage servers. */
  fsync(): Promise<void>;
  attributes(): Promise<Attributes>;
  /** flush() and release the token. */
  close(): Promise<void>;
}

export interface FsClient {
  getattr(path: string): Promise<Attributes>;
  /** Names in the directory (without . and ..). */
  readdir(path: string): Promise<string[]>;
  mkdir(path: string, mode: number, caller: Caller): Promise<Attributes>;
  /** Create and open a regular file; `exclusive` fails with ALREADY_EXISTS if it exists. */
  create(
    path: string,
    mode: number,
    caller: Caller,
    options: OpenOptions & { exclusive?: boolean },
  ): Promise<FileHandle>;
  open(path: string, options: OpenOptions): Promise<FileHandle>;
  mknod(path: string, mode: number, rdev: number, caller: Caller): Promise<Attributes>;
  unlink(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  /** Atomic; replaces an existing target (unless noReplace) as POSIX rename does. */
  rename(from: string, to: string, options?: { noReplace?: boolean }): Promise<void>;
  symlink(target: string, path: string, caller: Caller): Promise<Attributes>;
  readlink(path: string): Promise<string>;
  link(existing: string, path: string): Promise<Attributes>;
  chmod(path: string, mode: number): Promise<void>;
  chown(path: string, uid: number, gid: number): Promise<void>;
  /** Times in milliseconds; undefined leaves a time unchanged. */
  utimens(path: string, atimeMs: number | undefined, mtimeMs: number | undefined): Promise<void>;
  truncate(path: string, size: number): Promise<void>;
  statfs(): Promise<FsStatistics>;
  getxattr(path: string, name: string): Promise<Uint8Array>;
  setxattr(
    path: string,
    name: string,
    value: Uint8Array,
    flags: { create?: boolean; replace?: boolean },
  ): Promise<void>;
  listxattr(path: string): Promise<string[]>;
  removexattr(path: string, name: string): Promise<void>;
}
