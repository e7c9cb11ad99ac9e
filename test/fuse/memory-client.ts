/**
 * An in-memory FsClient: the test double behind the FUSE mount until the cell client replaces it.
 * POSIX semantics for names, links, renames, sparse files and xattrs; failures are ZhsmErrors with
 * the codes the real client uses. Permission checks are the kernel's (default_permissions): the
 * path-based API carries no caller except for ownership of new objects.
 */
import type {
  Attributes,
  Caller,
  FileHandle,
  FileType,
  FsClient,
  FsStatistics,
  OpenMode,
  OpenOptions,
} from '../../node/client/api.ts';
import { fileTypeBits, fileTypeOfMode } from '../../node/client/api.ts';
import {
  AlreadyExistsError,
  BackendFullError,
  ClosedError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ZhsmError,
} from '../../node/common/errors.ts';

const chunkBytes = 65536;
const permissionBits = 0o7777;
const setGidBit = 0o2000;

const typeBits = fileTypeBits;
const typeOfMode = fileTypeOfMode;

interface Node {
  readonly ino: number;
  readonly type: FileType;
  permissions: number;
  uid: number;
  gid: number;
  readonly rdev: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Names pointing at this node (files; directories count their own way). */
  links: number;
  /** No name left (open handles may still use it): its space no longer counts. */
  orphan: boolean;
  readonly xattrs: Map<string, Uint8Array>;
  size: number;
  readonly chunks: Map<number, Uint8Array>;
  readonly children: Map<string, Node>;
  target: string;
}

export interface MemoryFsClientOptions {
  readonly totalBytes?: number;
  readonly filesMax?: number;
  readonly now?: () => number;
  /** Owner of the root directory. */
  readonly rootOwner?: Caller;
}

export class MemoryFsClient implements FsClient {
  readonly #now: () => number;
  readonly #totalBytes: number;
  readonly #filesMax: number;
  readonly #root: Node;
  #nextIno = 1;
  #nodeCount = 0;
  #storedChunks = 0;

  constructor(options: MemoryFsClientOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#totalBytes = options.totalBytes ?? 2 ** 40;
    this.#filesMax = options.filesMax ?? 1_000_000;
    this.#root = this.#newNode('directory', 0o755, options.rootOwner ?? { uid: 0, gid: 0 }, 0, '');
  }

  #newNode(type: FileType, permissions: number, caller: Caller, rdev: number, target: string): Node {
    if (this.#nodeCount >= this.#filesMax) throw new BackendFullError('no free inodes');
    const now = this.#now();
    this.#nodeCount++;
    return {
      ino: this.#nextIno++,
      type,
      permissions: permissions & permissionBits,
      uid: caller.uid,
      gid: caller.gid,
      rdev,
      atimeMs: now,
      mtimeMs: now,
      ctimeMs: now,
      links: 0,
      orphan: false,
      xattrs: new Map(),
      size: type === 'symlink' ? Buffer.byteLength(target) : 0,
      chunks: new Map(),
      children: new Map(),
      target,
    };
  }

  #components(path: string): string[] {
    if (!path.startsWith('/')) throw new InvalidArgumentError(`not an absolute path: ${path}`);
    return path.split('/').filter((part) => part.length > 0);
  }

  #lookup(path: string): Node {
    let node = this.#root;
    for (const name of this.#components(path)) {
      if (node.type !== 'directory') throw new ZhsmError('NOT_A_DIRECTORY', `not a directory in ${path}`);
      const child = node.children.get(name);
      if (child === undefined) throw new NotFoundError(`no such file: ${path}`, { path });
      node = child;
    }
    return node;
  }

  /** The directory that holds the last component, and that component. */
  #parent(path: string): { directory: Node; name: string } {
    const parts = this.#components(path);
    const name = parts.pop();
    if (name === undefined) throw new InvalidArgumentError('the root has no parent');
    const directory = this.#lookup(`/${parts.join('/')}`);
    if (directory.type !== 'directory') throw new ZhsmError('NOT_A_DIRECTORY', `not a directory: ${path}`);
    return { directory, name };
  }

  #attributes(node: Node): Attributes {
    let nlink = node.links;
    if (node.type === 'directory') {
      nlink = 2;
      for (const child of node.children.values()) if (child.type === 'directory') nlink++;
    }
    return {
      ino: node.ino,
      type: node.type,
      mode: typeBits[node.type] | node.permissions,
      uid: node.uid,
      gid: node.gid,
      size: node.size,
      blocks: node.type === 'file' ? node.chunks.size * (chunkBytes / 512) : 0,
      nlink,
      rdev: node.rdev,
      atimeMs: node.atimeMs,
      mtimeMs: node.mtimeMs,
      ctimeMs: node.ctimeMs,
    };
  }

  #touchDirectory(directory: Node): void {
    const now = this.#now();
    directory.mtimeMs = now;
    directory.ctimeMs = now;
  }

  /** Adds a new node under its parent, with setgid-directory inheritance. */
  #insert(path: string, make: (caller: Caller, inherit: number) => Node, caller: Caller): Node {
    const { directory, name } = this.#parent(path);
    if (directory.children.has(name)) throw new AlreadyExistsError(`exists: ${path}`, { path });
    const inherited = (directory.permissions & setGidBit) !== 0;
    const node = make(
      inherited ? { uid: caller.uid, gid: directory.gid } : caller,
      inherited ? setGidBit : 0,
    );
    node.links = 1;
    directory.children.set(name, node);
    this.#touchDirectory(directory);
    return node;
  }

  #release(node: Node): void {
    if (node.links > 0 || node.type === 'directory') return;
    this.#nodeCount--;
    this.#storedChunks -= node.chunks.size;
    node.orphan = true;
  }

  // ---- file data

  #read(node: Node, offset: number, length: number): Uint8Array {
    if (offset >= node.size || length <= 0) return new Uint8Array(0);
    const end = Math.min(node.size, offset + length);
    const out = Buffer.alloc(end - offset);
    let position = offset;
    while (position < end) {
      const index = Math.floor(position / chunkBytes);
      const within = position - index * chunkBytes;
      const take = Math.min(chunkBytes - within, end - position);
      const chunk = node.chunks.get(index);
      if (chunk !== undefined) out.set(chunk.subarray(within, within + take), position - offset);
      position += take;
    }
    return out;
  }

  #write(node: Node, offset: number, data: Uint8Array): number {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidArgumentError(`bad offset ${offset}`);
    let done = 0;
    while (done < data.length) {
      const position = offset + done;
      const index = Math.floor(position / chunkBytes);
      const within = position - index * chunkBytes;
      const take = Math.min(chunkBytes - within, data.length - done);
      let chunk = node.chunks.get(index);
      if (chunk === undefined) {
        if ((this.#storedChunks + 1) * chunkBytes > this.#totalBytes)
          throw new BackendFullError('no space left');
        chunk = new Uint8Array(chunkBytes);
        node.chunks.set(index, chunk);
        if (!node.orphan) this.#storedChunks++;
      }
      chunk.set(data.subarray(done, done + take), within);
      done += take;
    }
    node.size = Math.max(node.size, offset + data.length);
    const now = this.#now();
    node.mtimeMs = now;
    node.ctimeMs = now;
    return data.length;
  }

  #truncate(node: Node, size: number): void {
    if (node.type === 'directory') throw new ZhsmError('IS_A_DIRECTORY', 'is a directory');
    if (node.type !== 'file') throw new InvalidArgumentError('not a regular file');
    if (!Number.isSafeInteger(size) || size < 0) throw new InvalidArgumentError(`bad size ${size}`);
    for (const index of [...node.chunks.keys()]) {
      if (index * chunkBytes >= size) {
        node.chunks.delete(index);
        if (!node.orphan) this.#storedChunks--;
      }
    }
    const last = node.chunks.get(Math.floor(size / chunkBytes));
    if (last !== undefined) last.fill(0, size % chunkBytes);
    node.size = size;
    const now = this.#now();
    node.mtimeMs = now;
    node.ctimeMs = now;
  }

  #handle(path: string, node: Node, mode: OpenMode): FileHandle {
    let closed = false;
    const check = () => {
      if (closed) throw new ClosedError('handle is closed');
    };
    const client = this;
    return {
      path,
      async read(offset, length) {
        check();
        node.atimeMs = client.#now();
        return client.#read(node, offset, length);
      },
      async write(offset, data) {
        check();
        if (mode === 'read') throw new PermissionDeniedError('handle is read-only');
        return client.#write(node, mode === 'append' ? node.size : offset, data);
      },
      async truncate(size) {
        check();
        if (mode === 'read') throw new PermissionDeniedError('handle is read-only');
        client.#truncate(node, size);
      },
      async flush() {
        check();
      },
      async fsync() {
        check();
      },
      async attributes() {
        check();
        return client.#attributes(node);
      },
      async close() {
        check();
        closed = true;
      },
    };
  }

  // ---- FsClient

  async getattr(path: string): Promise<Attributes> {
    return this.#attributes(this.#lookup(path));
  }

  async readdir(path: string): Promise<string[]> {
    const node = this.#lookup(path);
    if (node.type !== 'directory') throw new ZhsmError('NOT_A_DIRECTORY', `not a directory: ${path}`);
    return [...node.children.keys()];
  }

  async mkdir(path: string, mode: number, caller: Caller): Promise<Attributes> {
    const node = this.#insert(
      path,
      (owner, inherit) => this.#newNode('directory', (mode & permissionBits) | inherit, owner, 0, ''),
      caller,
    );
    return this.#attributes(node);
  }

  async create(
    path: string,
    mode: number,
    caller: Caller,
    options: OpenOptions & { exclusive?: boolean },
  ): Promise<FileHandle> {
    const { directory, name } = this.#parent(path);
    const existing = directory.children.get(name);
    if (existing !== undefined) {
      if (options.exclusive === true) throw new AlreadyExistsError(`exists: ${path}`, { path });
      return this.open(path, options);
    }
    const node = this.#insert(path, (owner) => this.#newNode('file', mode, owner, 0, ''), caller);
    return this.#handle(path, node, options.mode);
  }

  async open(path: string, options: OpenOptions): Promise<FileHandle> {
    const node = this.#lookup(path);
    if (node.type === 'directory' && options.mode !== 'read') {
      throw new ZhsmError('IS_A_DIRECTORY', `is a directory: ${path}`);
    }
    if (options.truncate === true && node.type === 'file') this.#truncate(node, 0);
    return this.#handle(path, node, options.mode);
  }

  async mknod(path: string, mode: number, rdev: number, caller: Caller): Promise<Attributes> {
    const type = typeOfMode(mode);
    if (type === 'directory' || type === 'symlink')
      throw new InvalidArgumentError('mknod of a directory or symlink');
    const node = this.#insert(path, (owner) => this.#newNode(type, mode, owner, rdev, ''), caller);
    return this.#attributes(node);
  }

  async unlink(path: string): Promise<void> {
    const { directory, name } = this.#parent(path);
    const node = directory.children.get(name);
    if (node === undefined) throw new NotFoundError(`no such file: ${path}`, { path });
    if (node.type === 'directory') throw new ZhsmError('IS_A_DIRECTORY', `is a directory: ${path}`);
    directory.children.delete(name);
    node.links--;
    node.ctimeMs = this.#now();
    this.#touchDirectory(directory);
    this.#release(node);
  }

  async rmdir(path: string): Promise<void> {
    const { directory, name } = this.#parent(path);
    const node = directory.children.get(name);
    if (node === undefined) throw new NotFoundError(`no such directory: ${path}`, { path });
    if (node.type !== 'directory') throw new ZhsmError('NOT_A_DIRECTORY', `not a directory: ${path}`);
    if (node.children.size > 0) throw new ZhsmError('NOT_EMPTY', `directory not empty: ${path}`);
    directory.children.delete(name);
    this.#nodeCount--;
    this.#touchDirectory(directory);
  }

  async rename(from: string, to: string, options: { noReplace?: boolean } = {}): Promise<void> {
    const source = this.#parent(from);
    const node = source.directory.children.get(source.name);
    if (node === undefined) throw new NotFoundError(`no such file: ${from}`, { path: from });
    const target = this.#parent(to);
    const fromParts = this.#components(from);
    const toParts = this.#components(to);
    if (toParts.length > fromParts.length && fromParts.every((part, i) => toParts[i] === part)) {
      throw new InvalidArgumentError(`cannot move ${from} into itself`);
    }
    const existing = target.directory.children.get(target.name);
    if (existing === node) return;
    if (existing !== undefined) {
      if (options.noReplace === true) throw new AlreadyExistsError(`exists: ${to}`, { path: to });
      if (node.type === 'directory') {
        if (existing.type !== 'directory') throw new ZhsmError('NOT_A_DIRECTORY', `not a directory: ${to}`);
        if (existing.children.size > 0) throw new ZhsmError('NOT_EMPTY', `directory not empty: ${to}`);
        this.#nodeCount--;
      } else {
        if (existing.type === 'directory') throw new ZhsmError('IS_A_DIRECTORY', `is a directory: ${to}`);
        existing.links--;
        existing.ctimeMs = this.#now();
        this.#release(existing);
      }
    }
    source.directory.children.delete(source.name);
    target.directory.children.set(target.name, node);
    node.ctimeMs = this.#now();
    this.#touchDirectory(source.directory);
    this.#touchDirectory(target.directory);
  }

  async symlink(target: string, path: string, caller: Caller): Promise<Attributes> {
    const node = this.#insert(path, (owner) => this.#newNode('symlink', 0o777, owner, 0, target), caller);
    return this.#attributes(node);
  }

  async readlink(path: string): Promise<string> {
    const node = this.#lookup(path);
    if (node.type !== 'symlink') throw new InvalidArgumentError(`not a symlink: ${path}`);
    return node.target;
  }

  async link(existing: string, path: string): Promise<Attributes> {
    const node = this.#lookup(existing);
    if (node.type === 'directory') throw new PermissionDeniedError(`hard link to a directory: ${existing}`);
    const { directory, name } = this.#parent(path);
    if (directory.children.has(name)) throw new AlreadyExistsError(`exists: ${path}`, { path });
    directory.children.set(name, node);
    node.links++;
    node.ctimeMs = this.#now();
    this.#touchDirectory(directory);
    return this.#attributes(node);
  }

  async chmod(path: string, mode: number): Promise<void> {
    const node = this.#lookup(path);
    node.permissions = mode & permissionBits;
    node.ctimeMs = this.#now();
  }

  async chown(path: string, uid: number, gid: number): Promise<void> {
    const node = this.#lookup(path);
    node.uid = uid;
    node.gid = gid;
    node.ctimeMs = this.#now();
  }

  async utimens(path: string, atimeMs: number | undefined, mtimeMs: number | undefined): Promise<void> {
    const node = this.#lookup(path);
    if (atimeMs !== undefined) node.atimeMs = atimeMs;
    if (mtimeMs !== undefined) node.mtimeMs = mtimeMs;
    node.ctimeMs = this.#now();
  }

  async truncate(path: string, size: number): Promise<void> {
    this.#truncate(this.#lookup(path), size);
  }

  async statfs(): Promise<FsStatistics> {
    const freeBytes = Math.max(0, this.#totalBytes - this.#storedChunks * chunkBytes);
    return {
      totalBytes: this.#totalBytes,
      freeBytes,
      availableBytes: freeBytes,
      files: this.#filesMax,
      filesFree: this.#filesMax - this.#nodeCount,
      nameBytesMax: 255,
      blockBytes: 4096,
    };
  }

  async getxattr(path: string, name: string): Promise<Uint8Array> {
    const value = this.#lookup(path).xattrs.get(name);
    if (value === undefined) throw new NotFoundError(`no attribute ${name}`, { path, attribute: name });
    return value;
  }

  async setxattr(
    path: string,
    name: string,
    value: Uint8Array,
    flags: { create?: boolean; replace?: boolean },
  ): Promise<void> {
    const node = this.#lookup(path);
    const exists = node.xattrs.has(name);
    if (flags.create === true && exists) throw new AlreadyExistsError(`attribute exists: ${name}`, { path });
    if (flags.replace === true && !exists) {
      throw new NotFoundError(`no attribute ${name}`, { path, attribute: name });
    }
    node.xattrs.set(name, Uint8Array.from(value));
    node.ctimeMs = this.#now();
  }

  async listxattr(path: string): Promise<string[]> {
    return [...this.#lookup(path).xattrs.keys()];
  }

  async removexattr(path: string, name: string): Promise<void> {
    const node = this.#lookup(path);
    if (!node.xattrs.delete(name)) throw new NotFoundError(`no attribute ${name}`, { path, attribute: name });
    node.ctimeMs = this.#now();
  }
}
