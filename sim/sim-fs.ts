/**
 * A simulated filesystem (the simulator's implementation of node/common/fs.ts FileSystem).
 *
 * It keeps two states: what processes see (`current`) and what survives a power cut (`durable`).
 * `sync()` on a file makes its data, size and times durable; `syncDirectory()` makes a directory's
 * entries durable. `powerCut()` stops the world: every operation in flight and after it never
 * completes. `recover()` then returns a new filesystem built from the durable state plus, chosen
 * by a seeded PRNG, an arbitrary subset of the changes that were not synced — at page granularity
 * for file data (a torn write), per entry for directories. That is more adversarial than ext4 or
 * XFS, so a protocol correct here (fsync before rename, directory fsync before acknowledging) is
 * correct there.
 */
import type { FileHandleLike, FileStat, FileSystem, FsSpace } from '../node/common/fs.ts';

const PAGE = 4096;

interface FileInode {
  readonly kind: 'file';
  readonly id: number;
  /** Pages of data by page index; a missing page is a hole. */
  pages: Map<number, Uint8Array>;
  size: number;
  mtimeMs: number;
}

interface DirectoryInode {
  readonly kind: 'dir';
  readonly id: number;
  entries: Map<string, number>;
}

type Inode = FileInode | DirectoryInode;

interface State {
  inodes: Map<number, Inode>;
}

function systemError(code: string, message: string): NodeJS.ErrnoException {
  const error = new Error(`${code}: ${message}`) as NodeJS.ErrnoException;
  error.code = code;
  return error;
}

function cloneInode(inode: Inode): Inode {
  if (inode.kind === 'dir') return { kind: 'dir', id: inode.id, entries: new Map(inode.entries) };
  return {
    kind: 'file',
    id: inode.id,
    pages: new Map(inode.pages),
    size: inode.size,
    mtimeMs: inode.mtimeMs,
  };
}

function cloneState(state: State): State {
  return { inodes: new Map([...state.inodes].map(([id, inode]) => [id, cloneInode(inode)])) };
}

const ROOT = 1;

export interface SimFileSystemOptions {
  /** Capacity in bytes for statfs and ENOSPC. */
  readonly capacityBytes?: number;
  /** Integer in [0, bound): the simulator's seeded PRNG. */
  readonly randomInt: (bound: number) => number;
}

export class SimFileSystem implements FileSystem {
  #current: State;
  #durable: State;
  #nextInode: number;
  #dead = false;
  #operations = 0;
  #deadWaiters: Array<() => void> = [];
  /** Power is cut when this many operations have started (Infinity: never). */
  cutAfterOperations = Number.POSITIVE_INFINITY;
  readonly #options: SimFileSystemOptions;

  constructor(options: SimFileSystemOptions, state?: { current: State; nextInode: number }) {
    this.#options = options;
    if (state === undefined) {
      const root: DirectoryInode = { kind: 'dir', id: ROOT, entries: new Map() };
      this.#current = { inodes: new Map([[ROOT, root]]) };
      this.#nextInode = ROOT + 1;
    } else {
      this.#current = state.current;
      this.#nextInode = state.nextInode;
    }
    this.#durable = cloneState(this.#current);
  }

  get operations(): number {
    return this.#operations;
  }

  get dead(): boolean {
    return this.#dead;
  }

  /** Stop the world now. */
  powerCut(): void {
    this.#dead = true;
    for (const wake of this.#deadWaiters.splice(0)) wake();
  }

  /** Resolves when the power is cut. */
  whenDead(): Promise<void> {
    if (this.#dead) return Promise.resolve();
    return new Promise((resolve) => this.#deadWaiters.push(resolve));
  }

  /**
   * The filesystem as found after the power cut: durable state plus a random subset of what was
   * not synced (pages of file data, directory entries, sizes).
   */
  recover(): SimFileSystem {
    const random = this.#options.randomInt;
    const recovered = cloneState(this.#durable);
    for (const [id, inode] of this.#current.inodes) {
      const durable = recovered.inodes.get(id);
      if (inode.kind === 'file') {
        const target: FileInode =
          durable?.kind === 'file'
            ? durable
            : { kind: 'file', id, pages: new Map(), size: 0, mtimeMs: inode.mtimeMs };
        for (const [page, data] of inode.pages) {
          if (target.pages.get(page) !== data && random(2) === 0) target.pages.set(page, data);
        }
        if (target.size !== inode.size && random(2) === 0) target.size = inode.size;
        if (random(2) === 0) target.mtimeMs = inode.mtimeMs;
        recovered.inodes.set(id, target);
      } else {
        const target: DirectoryInode =
          durable?.kind === 'dir' ? durable : { kind: 'dir', id, entries: new Map() };
        const names = new Set([...inode.entries.keys(), ...target.entries.keys()]);
        for (const name of names) {
          if (inode.entries.get(name) === target.entries.get(name) || random(2) === 1) continue;
          const now = inode.entries.get(name);
          if (now === undefined) target.entries.delete(name);
          else target.entries.set(name, now);
        }
        recovered.inodes.set(id, target);
      }
    }
    // Entries that point to inodes that never became durable still exist (their data may be
    // empty): that is what a real filesystem shows after a crash, too.
    return new SimFileSystem(this.#options, { current: recovered, nextInode: this.#nextInode });
  }

  async #step(): Promise<void> {
    this.#operations++;
    if (this.#operations > this.cutAfterOperations) this.powerCut();
    if (this.#dead) await new Promise<never>(() => {});
    // Let other tasks interleave, as real I/O does.
    await Promise.resolve();
    if (this.#dead) await new Promise<never>(() => {});
  }

  #split(path: string): string[] {
    if (!path.startsWith('/')) throw systemError('EINVAL', `relative path ${path}`);
    const parts: string[] = [];
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue;
      if (part === '..') parts.pop();
      else parts.push(part);
    }
    return parts;
  }

  #lookup(path: string): Inode | undefined {
    let inode: Inode | undefined = this.#current.inodes.get(ROOT);
    for (const part of this.#split(path)) {
      if (inode?.kind !== 'dir') return undefined;
      const next = inode.entries.get(part);
      inode = next === undefined ? undefined : this.#current.inodes.get(next);
    }
    return inode;
  }

  #parent(path: string): { dir: DirectoryInode; name: string } {
    const parts = this.#split(path);
    const name = parts.pop();
    if (name === undefined) throw systemError('EINVAL', `no name in ${path}`);
    const dir = this.#lookup(`/${parts.join('/')}`);
    if (dir === undefined) throw systemError('ENOENT', path);
    if (dir.kind !== 'dir') throw systemError('ENOTDIR', path);
    return { dir, name };
  }

  #usedBytes(): number {
    let pages = 0;
    for (const inode of this.#current.inodes.values()) if (inode.kind === 'file') pages += inode.pages.size;
    return pages * PAGE;
  }

  #stat(inode: Inode): FileStat {
    if (inode.kind === 'dir') return { size: PAGE, blocks: 8, mtimeMs: 0, isFile: false, isDirectory: true };
    return {
      size: inode.size,
      blocks: inode.pages.size * 8,
      mtimeMs: inode.mtimeMs,
      isFile: true,
      isDirectory: false,
    };
  }

  async open(path: string, flags: string, _mode?: number): Promise<FileHandleLike> {
    await this.#step();
    let inode = this.#lookup(path);
    const create = flags.startsWith('w') || flags.startsWith('a');
    if (inode !== undefined && flags.includes('x')) throw systemError('EEXIST', path);
    if (inode === undefined) {
      if (!create) throw systemError('ENOENT', path);
      const { dir, name } = this.#parent(path);
      inode = { kind: 'file', id: this.#nextInode++, pages: new Map(), size: 0, mtimeMs: 0 };
      this.#current.inodes.set(inode.id, inode);
      dir.entries.set(name, inode.id);
    } else if (inode.kind === 'file' && flags.startsWith('w')) {
      inode.pages = new Map();
      inode.size = 0;
    }
    return this.#handle(inode.id, flags !== 'r');
  }

  #handle(id: number, writable: boolean): FileHandleLike {
    const fs = this;
    const file = (): FileInode => {
      const inode = fs.#current.inodes.get(id);
      if (inode?.kind !== 'file') throw systemError('EISDIR', `inode ${id}`);
      return inode;
    };
    return {
      async read(buffer, offset, length, position) {
        await fs.#step();
        const inode = fs.#current.inodes.get(id);
        if (inode?.kind !== 'file') return 0;
        const end = Math.min(inode.size, position + length);
        for (let at = position; at < end; ) {
          const page = Math.floor(at / PAGE);
          const within = at - page * PAGE;
          const take = Math.min(PAGE - within, end - at);
          const data = inode.pages.get(page);
          if (data === undefined) buffer.fill(0, offset + (at - position), offset + (at - position) + take);
          else buffer.set(data.subarray(within, within + take), offset + (at - position));
          at += take;
        }
        return Math.max(0, end - position);
      },
      async write(buffer, offset, length, position) {
        await fs.#step();
        if (!writable) throw systemError('EBADF', 'read-only handle');
        const inode = file();
        const capacity = fs.#options.capacityBytes;
        for (let at = position; at < position + length; ) {
          const page = Math.floor(at / PAGE);
          const within = at - page * PAGE;
          const take = Math.min(PAGE - within, position + length - at);
          const old = inode.pages.get(page);
          if (old === undefined && capacity !== undefined && fs.#usedBytes() + PAGE > capacity)
            throw systemError('ENOSPC', 'no space left');
          // Pages are replaced, never mutated: recover() compares identities.
          const data = new Uint8Array(PAGE);
          if (old !== undefined) data.set(old);
          data.set(buffer.subarray(offset + (at - position), offset + (at - position) + take), within);
          inode.pages.set(page, data);
          at += take;
        }
        inode.size = Math.max(inode.size, position + length);
        return length;
      },
      async truncate(length) {
        await fs.#step();
        const inode = file();
        for (const page of [...inode.pages.keys()]) if (page * PAGE >= length) inode.pages.delete(page);
        inode.size = length;
      },
      async sync() {
        await fs.#step();
        const inode = fs.#current.inodes.get(id);
        if (inode !== undefined) fs.#durable.inodes.set(id, cloneInode(inode));
      },
      async setTimes(_atimeMs, mtimeMs) {
        await fs.#step();
        file().mtimeMs = mtimeMs;
      },
      async stat() {
        await fs.#step();
        const inode = fs.#current.inodes.get(id);
        if (inode === undefined) throw systemError('ENOENT', `inode ${id}`);
        return fs.#stat(inode);
      },
      async close() {
        await fs.#step();
      },
    };
  }

  async readFile(path: string): Promise<Uint8Array> {
    const handle = await this.open(path, 'r');
    const stat = await handle.stat();
    const buffer = new Uint8Array(stat.size);
    await handle.read(buffer, 0, stat.size, 0);
    await handle.close();
    return buffer;
  }

  async rename(from: string, to: string): Promise<void> {
    await this.#step();
    const source = this.#parent(from);
    const id = source.dir.entries.get(source.name);
    if (id === undefined) throw systemError('ENOENT', from);
    const target = this.#parent(to);
    const existing = target.dir.entries.get(target.name);
    if (existing !== undefined && this.#current.inodes.get(existing)?.kind === 'dir')
      throw systemError('EISDIR', to);
    source.dir.entries.delete(source.name);
    target.dir.entries.set(target.name, id);
  }

  async unlink(path: string): Promise<void> {
    await this.#step();
    const { dir, name } = this.#parent(path);
    const id = dir.entries.get(name);
    if (id === undefined) throw systemError('ENOENT', path);
    if (this.#current.inodes.get(id)?.kind === 'dir') throw systemError('EISDIR', path);
    dir.entries.delete(name);
  }

  async mkdirp(path: string): Promise<string | undefined> {
    await this.#step();
    let first: string | undefined;
    let dir = this.#current.inodes.get(ROOT) as DirectoryInode;
    let walked = '';
    for (const part of this.#split(path)) {
      walked += `/${part}`;
      const next = dir.entries.get(part);
      if (next === undefined) {
        const created: DirectoryInode = { kind: 'dir', id: this.#nextInode++, entries: new Map() };
        this.#current.inodes.set(created.id, created);
        dir.entries.set(part, created.id);
        first ??= walked;
        dir = created;
      } else {
        const inode = this.#current.inodes.get(next);
        if (inode?.kind !== 'dir') throw systemError('ENOTDIR', walked);
        dir = inode;
      }
    }
    return first;
  }

  async readdir(path: string): Promise<Array<{ name: string; isDirectory: boolean; isFile: boolean }>> {
    await this.#step();
    const dir = this.#lookup(path);
    if (dir === undefined) throw systemError('ENOENT', path);
    if (dir.kind !== 'dir') throw systemError('ENOTDIR', path);
    return [...dir.entries].map(([name, id]) => {
      const inode = this.#current.inodes.get(id);
      return { name, isDirectory: inode?.kind === 'dir', isFile: inode?.kind === 'file' };
    });
  }

  async rmrf(path: string): Promise<void> {
    await this.#step();
    const { dir, name } = this.#parent(path);
    dir.entries.delete(name);
  }

  async stat(path: string): Promise<FileStat> {
    await this.#step();
    const inode = this.#lookup(path);
    if (inode === undefined) throw systemError('ENOENT', path);
    return this.#stat(inode);
  }

  async statfs(_path: string): Promise<FsSpace> {
    await this.#step();
    const total = this.#options.capacityBytes ?? 2 ** 50;
    const free = Math.max(0, total - this.#usedBytes());
    return { totalBytes: total, freeBytes: free, availableBytes: free };
  }

  async syncDirectory(path: string): Promise<void> {
    await this.#step();
    const dir = this.#lookup(path);
    if (dir === undefined) throw systemError('ENOENT', path);
    if (dir.kind !== 'dir') throw systemError('ENOTDIR', path);
    const durable = this.#durable.inodes.get(dir.id);
    if (durable?.kind === 'dir') durable.entries = new Map(dir.entries);
    else this.#durable.inodes.set(dir.id, cloneInode(dir));
  }
}
