/**
 * Open handles on a backend's object directories, for the fsync that makes a rename or an unlink
 * in them durable. An ingest takes a lease on its directory's handle when it starts, so the open
 * runs alongside the temp file's writes instead of after the rename; a lease keeps the handle open
 * even when the cache evicts it (it is closed when the last lease ends).
 */
import { LRUCache } from 'lru-cache';
import type { FileHandleLike, FileSystem } from '../common/fs.ts';

export interface DirectoryLease {
  /** fsync the directory. */
  sync(): Promise<void>;
  /** End the lease (once; later calls do nothing). */
  release(): void;
}

interface Entry {
  readonly handle: Promise<FileHandleLike>;
  users: number;
  /** Out of the cache: closed when no lease uses it any more. */
  evicted: boolean;
  closed?: Promise<void>;
}

function closeEntry(entry: Entry): Promise<void> {
  entry.closed ??= entry.handle.then(
    (handle) => handle.close(),
    () => {},
  );
  return entry.closed.catch(() => {});
}

export class DirectoryHandles {
  readonly #fs: FileSystem;
  readonly #idle: LRUCache<string, Entry>;

  /** Keeps at most `max` handles open besides those leased. */
  constructor(fs: FileSystem, max: number) {
    this.#fs = fs;
    this.#idle = new LRUCache<string, Entry>({
      max,
      dispose: (entry) => {
        // A leased entry is closed by its last release.
        entry.evicted = true;
        if (entry.users === 0) void closeEntry(entry);
      },
    });
  }

  /** A lease on the directory's handle; rejects (and leases nothing) if it cannot be opened. */
  async acquire(path: string): Promise<DirectoryLease> {
    let entry = this.#idle.get(path);
    if (entry === undefined) {
      const created: Entry = { handle: this.#fs.open(path, 'r'), users: 0, evicted: false };
      created.handle.catch(() => {
        if (this.#idle.peek(path) === created) this.#idle.delete(path);
      });
      this.#idle.set(path, created);
      entry = created;
    }
    const leased = entry;
    leased.users += 1;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      leased.users -= 1;
      if (leased.users === 0 && leased.evicted) void closeEntry(leased);
    };
    let handle: FileHandleLike;
    try {
      handle = await leased.handle;
    } catch (error) {
      release();
      throw error;
    }
    return { sync: () => handle.sync(), release };
  }

  /** fsync a directory (a lease for the one call). */
  async sync(path: string): Promise<void> {
    const lease = await this.acquire(path);
    try {
      await lease.sync();
    } finally {
      lease.release();
    }
  }

  /** Close every handle not leased now; leased ones close when their lease ends. */
  async close(): Promise<void> {
    const idle = [...this.#idle.values()];
    this.#idle.clear();
    await Promise.all(idle.filter((entry) => entry.users === 0).map(closeEntry));
  }
}
