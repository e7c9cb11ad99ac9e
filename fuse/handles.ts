/** The mount's file-descriptor table: fuse `fh` numbers -> open client handles. */
import type { FileHandle, OpenMode } from '../node/client/api.ts';
import { MountErrno, MountError } from './errno.ts';
import type { ReadAhead } from './read-ahead.ts';

export interface OpenFile {
  readonly fd: number;
  /** The path at open time (a later rename does not update it). */
  readonly path: string;
  readonly mode: OpenMode;
  readonly openedAtMs: number;
  /** The client handle; absent for files of the virtual folder. */
  readonly handle?: FileHandle;
  /** Contents of a virtual file, fixed at open. */
  readonly content?: Uint8Array;
  /** Sequential read-ahead over `handle` (read-only opens). */
  readonly readAhead?: ReadAhead;
}

export class OpenFileTable {
  readonly #files = new Map<number, OpenFile>();
  readonly #openFilesMax: number;
  #nextFd = 1;

  constructor(options: { openFilesMax: number }) {
    this.#openFilesMax = options.openFilesMax;
  }

  get size(): number {
    return this.#files.size;
  }

  /** Checks there is room before the caller opens a client handle it would otherwise leak. */
  reserve(): void {
    if (this.#files.size >= this.#openFilesMax) {
      throw new MountError(MountErrno.EMFILE, `open files limit ${this.#openFilesMax} reached`);
    }
  }

  add(entry: Omit<OpenFile, 'fd'>): number {
    this.reserve();
    // fh 0 means "no handle" to fuse-native; fds stay below 2^31 (the C layer passes int32).
    while (this.#files.has(this.#nextFd) || this.#nextFd === 0)
      this.#nextFd = (this.#nextFd + 1) % 0x7fff_ffff;
    const fd = this.#nextFd;
    this.#nextFd = (this.#nextFd + 1) % 0x7fff_ffff;
    this.#files.set(fd, { ...entry, fd });
    return fd;
  }

  get(fd: number): OpenFile {
    const file = this.#files.get(fd);
    if (file === undefined) throw new MountError(MountErrno.EBADF, `no open file ${fd}`);
    return file;
  }

  /** Removes and returns the entry (undefined if it was not open). */
  remove(fd: number): OpenFile | undefined {
    const file = this.#files.get(fd);
    this.#files.delete(fd);
    return file;
  }

  entries(): OpenFile[] {
    return [...this.#files.values()];
  }
}
