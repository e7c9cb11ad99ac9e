/**
 * The small filesystem interface the storage layer uses. `nodeFileSystem` is the real one
 * (node:fs/promises); the simulator supplies one that can lose unsynced writes and tear the last.
 */

import type { BigIntStats, Dirent, StatsFs } from 'node:fs';
import * as fsp from 'node:fs/promises';

export interface FileStat {
  readonly size: number;
  /** 512-byte blocks allocated (sparse files have fewer than size/512). */
  readonly blocks: number;
  readonly mtimeMs: number;
  readonly isFile: boolean;
  readonly isDirectory: boolean;
}

export interface FileHandleLike {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  truncate(length: number): Promise<void>;
  sync(): Promise<void>;
  /** Set access and modification time, in milliseconds since the epoch. */
  setTimes(atimeMs: number, mtimeMs: number): Promise<void>;
  stat(): Promise<FileStat>;
  close(): Promise<void>;
}

export interface FsSpace {
  readonly totalBytes: number;
  readonly freeBytes: number;
  readonly availableBytes: number;
}

export interface FileSystem {
  /** flags as for fs.open: 'r', 'r+', 'wx', ... */
  open(path: string, flags: string, mode?: number): Promise<FileHandleLike>;
  readFile(path: string): Promise<Uint8Array>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Create a directory and its parents; returns the first directory created, if any. */
  mkdirp(path: string): Promise<string | undefined>;
  readdir(path: string): Promise<Array<{ name: string; isDirectory: boolean; isFile: boolean }>>;
  rmrf(path: string): Promise<void>;
  stat(path: string): Promise<FileStat>;
  statfs(path: string): Promise<FsSpace>;
  /** fsync a directory so that a rename or create inside it is durable. */
  syncDirectory(path: string): Promise<void>;
}

function toFileStat(stats: BigIntStats | import('node:fs').Stats): FileStat {
  return {
    size: Number(stats.size),
    blocks: Number(stats.blocks),
    mtimeMs: Number(stats.mtimeMs),
    isFile: stats.isFile(),
    isDirectory: stats.isDirectory(),
  };
}

class NodeFileHandle implements FileHandleLike {
  readonly #handle: fsp.FileHandle;
  constructor(handle: fsp.FileHandle) {
    this.#handle = handle;
  }
  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.#handle.read(buffer, offset, length, position)).bytesRead;
  }
  async write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.#handle.write(buffer, offset, length, position)).bytesWritten;
  }
  truncate(length: number): Promise<void> {
    return this.#handle.truncate(length);
  }
  sync(): Promise<void> {
    return this.#handle.sync();
  }
  setTimes(atimeMs: number, mtimeMs: number): Promise<void> {
    return this.#handle.utimes(atimeMs / 1000, mtimeMs / 1000);
  }
  async stat(): Promise<FileStat> {
    return toFileStat(await this.#handle.stat());
  }
  close(): Promise<void> {
    return this.#handle.close();
  }
}

export const nodeFileSystem: FileSystem = {
  async open(path, flags, mode) {
    return new NodeFileHandle(await fsp.open(path, flags, mode));
  },
  readFile: (path) => fsp.readFile(path),
  rename: (from, to) => fsp.rename(from, to),
  unlink: (path) => fsp.unlink(path),
  // Explicit mode: a process serving a FUSE mount runs with umask 0.
  mkdirp: (path) => fsp.mkdir(path, { recursive: true, mode: 0o755 }),
  async readdir(path) {
    const entries: Dirent[] = await fsp.readdir(path, { withFileTypes: true });
    return entries.map((entry) => ({
      name: entry.name,
      isDirectory: entry.isDirectory(),
      isFile: entry.isFile(),
    }));
  },
  rmrf: (path) => fsp.rm(path, { recursive: true, force: true }),
  async stat(path) {
    return toFileStat(await fsp.stat(path));
  },
  async statfs(path) {
    const s: StatsFs = await fsp.statfs(path);
    return {
      totalBytes: s.blocks * s.bsize,
      freeBytes: s.bfree * s.bsize,
      availableBytes: s.bavail * s.bsize,
    };
  },
  async syncDirectory(path) {
    const handle = await fsp.open(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
};
