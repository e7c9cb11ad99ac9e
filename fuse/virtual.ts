/**
 * The hidden read-only folder `/.zhsm/` the mount serves itself: `tokens`, `servers`, `status`.
 * Contents come from a provider (the daemon plugs in the cell's real data); a file's contents are
 * fixed when it is opened. Every change in there fails with EROFS.
 */
import type { Attributes } from '../node/client/api.ts';
import { MountErrno, MountError } from './errno.ts';

export const virtualFolderPath = '/.zhsm';
export const virtualFileNames = ['tokens', 'servers', 'status'] as const;
export type VirtualFileName = (typeof virtualFileNames)[number];

/** Returns the current text of one virtual file. */
export type VirtualFileProvider = (name: VirtualFileName) => Promise<string | Uint8Array>;

const directoryMode = 0o040555;
const fileMode = 0o100444;
/** Fixed inode numbers far from the client's (which derive from object ids). */
const virtualInoBase = 0xfff0_0000;
/** Contents fetched for getattr are reused by an open within this window (one `cat`). */
const snapshotReuseMs = 1000;

export function isVirtualPath(path: string | null): boolean {
  return path === virtualFolderPath || (path?.startsWith(`${virtualFolderPath}/`) ?? false);
}

export function readOnlyError(path: string): MountError {
  return new MountError(MountErrno.EROFS, `${path} is read-only`);
}

interface Snapshot {
  readonly content: Uint8Array;
  readonly fetchedAtMs: number;
  readonly changedAtMs: number;
}

export class VirtualFolder {
  readonly #provider: VirtualFileProvider;
  readonly #now: () => number;
  readonly #snapshots = new Map<VirtualFileName, Snapshot>();
  readonly #createdAtMs: number;

  constructor(options: { provider: VirtualFileProvider; now: () => number }) {
    this.#provider = options.provider;
    this.#now = options.now;
    this.#createdAtMs = options.now();
  }

  #name(path: string): VirtualFileName {
    const name = path.slice(virtualFolderPath.length + 1);
    if (!(virtualFileNames as readonly string[]).includes(name)) {
      throw new MountError(MountErrno.ENOENT, `no virtual file ${path}`);
    }
    return name as VirtualFileName;
  }

  async #fetch(name: VirtualFileName): Promise<Snapshot> {
    const raw = await this.#provider(name);
    const content = typeof raw === 'string' ? Buffer.from(raw) : raw;
    const previous = this.#snapshots.get(name);
    const now = this.#now();
    const unchanged = previous !== undefined && Buffer.compare(previous.content, content) === 0;
    const snapshot = { content, fetchedAtMs: now, changedAtMs: unchanged ? previous.changedAtMs : now };
    this.#snapshots.set(name, snapshot);
    return snapshot;
  }

  async #current(name: VirtualFileName): Promise<Snapshot> {
    const snapshot = this.#snapshots.get(name);
    if (snapshot !== undefined && this.#now() - snapshot.fetchedAtMs <= snapshotReuseMs) return snapshot;
    return this.#fetch(name);
  }

  async attributes(path: string): Promise<Attributes> {
    const base = { uid: 0, gid: 0, rdev: 0, atimeMs: this.#createdAtMs };
    if (path === virtualFolderPath) {
      return {
        ...base,
        ino: virtualInoBase,
        type: 'directory',
        mode: directoryMode,
        size: 0,
        blocks: 0,
        nlink: 2,
        mtimeMs: this.#createdAtMs,
        ctimeMs: this.#createdAtMs,
      };
    }
    const name = this.#name(path);
    const snapshot = await this.#fetch(name);
    return {
      ...base,
      ino: virtualInoBase + 1 + virtualFileNames.indexOf(name),
      type: 'file',
      mode: fileMode,
      size: snapshot.content.length,
      blocks: Math.ceil(snapshot.content.length / 512),
      nlink: 1,
      mtimeMs: snapshot.changedAtMs,
      ctimeMs: snapshot.changedAtMs,
    };
  }

  readdir(path: string): string[] {
    if (path !== virtualFolderPath) throw new MountError(MountErrno.ENOTDIR, `${path} is not a directory`);
    return [...virtualFileNames];
  }

  /** Contents for an open: reuses what getattr fetched just before, so size and data agree. */
  async open(path: string): Promise<Uint8Array> {
    if (path === virtualFolderPath) throw new MountError(MountErrno.EISDIR, `${path} is a directory`);
    return (await this.#current(this.#name(path))).content;
  }
}
