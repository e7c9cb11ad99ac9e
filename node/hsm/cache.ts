/**
 * The controllers' cache of hot files, run by the primary: copies of frequently opened files on a
 * backend tagged `cache` (a backend of a controller node, which is a storage server for it), so
 * that they are read while the servers holding them sleep, and the server holding the rest of a
 * folder is woken while its cached files are being read (pre-wake).
 *
 * - Every open for reading reaches the primary as a proposal (`open`): `noteOpen` queues it; the
 *   admission and eviction rules are node/hsm/cache-policy.ts's (admit on the k-th open within a
 *   window, LRU by bytes, at most 90 % of the cache backend's capacity). Files with the xattr
 *   `user.zhsm.hot` are admitted on their first open.
 * - Admitting copies every chunk of the file from an awake current copy to the cache backend
 *   (verified ingest), recorded as a current copy that is not a target (`placeCopy`): readers
 *   see it as one more copy, and try copies on awake servers first. Caching never wakes a server.
 * - Coherence: chunks are immutable; a write makes new chunks and releases the old ones, and the
 *   state machine drops every location of a released object (the cached one too), whose bytes
 *   are deleted on every server. A cached file opened at a newer version is cached again.
 * - Evicting drops the record (refused by the state machine only if it were the last current
 *   copy, which it is not for a cached copy), then deletes the object on the cache backend.
 * - A new primary starts with an empty cache: the mover drops cache copies no cache tracks.
 * - Pre-wake: an open of a cached file whose own copies all sleep wakes, for the uncached files
 *   of the same folder, the server holding most of them (reason "pre-wake ...", in the power log).
 */
import { type Logger, silentLogger } from '../common/log.ts';
import type { Inode, ServerRecord } from '../metadata/records.ts';
import { CachePolicy } from './cache-policy.ts';
import { CACHE_TAG } from './chains.ts';
import { backendFacts, type MoverIo, type MoverState } from './mover.ts';

const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
const fromHex = (text: string) => new Uint8Array(Buffer.from(text, 'hex'));

/** The cache may fill this share of its backend's capacity. */
const CACHE_SHARE = 0.9;
/** Folder entries a pre-wake looks at, at most. */
const PREWAKE_ENTRIES_MAX = 512;
/** A server is pre-woken at most this often. */
const PREWAKE_INTERVAL_MS = 30_000;
export const HOT_XATTR = 'user.zhsm.hot';

export interface CacheOptions {
  readonly state: MoverState;
  readonly io: MoverIo;
  /** Wake a server (the power manager); absent: no pre-wake. */
  readonly wake?: (server: Uint8Array, reason: string) => Promise<unknown>;
  readonly logger?: Logger;
  /** Admit a file on this open within `windowMs` (default 2; 1: every opened file). */
  readonly admitAfterOpens?: number;
  readonly windowMs?: number;
  /**
   * Every cache event (metrics: node/daemon/metrics.ts): an open of a cached file ('hit') or of
   * one that is not cached ('miss'), a file admitted, a file evicted.
   */
  readonly onEvent?: (event: CacheEvent) => void;
}

export type CacheEvent = 'hit' | 'miss' | 'admit' | 'evict';

export interface CacheStatus {
  active: boolean;
  backend: string;
  maxBytes: number;
  bytes: number;
  files: number;
  hits: number;
  misses: number;
  admissions: number;
  evictions: number;
  prewakes: number;
  lastError: string;
}

interface Cached {
  backend: Uint8Array;
  chunks: Uint8Array[];
}

export class ControllerCache {
  readonly #state: MoverState;
  readonly #io: MoverIo;
  readonly #wake: CacheOptions['wake'];
  readonly #log: Logger;
  readonly #admitAfterOpens: number;
  readonly #windowMs: number;
  readonly #onEvent: (event: CacheEvent) => void;
  #policy: CachePolicy | undefined;
  #backend: Uint8Array | undefined;
  readonly #cached = new Map<string, Cached>();
  /** Cached chunk objects (hex) -> how many cached files hold them. */
  readonly #objects = new Map<string, number>();
  readonly #queue: string[] = [];
  readonly #evictions: Cached[] = [];
  #working: Promise<void> | undefined;
  #active = false;
  #prewakes = 0;
  #lastError = '';
  readonly #prewoken = new Map<string, number>();

  constructor(options: CacheOptions) {
    this.#state = options.state;
    this.#io = options.io;
    this.#wake = options.wake;
    this.#log = (options.logger ?? silentLogger()).child({ module: 'cache' });
    this.#admitAfterOpens = options.admitAfterOpens ?? 2;
    this.#windowMs = options.windowMs ?? 60 * 60_000;
    this.#onEvent = options.onEvent ?? (() => {});
  }

  /** This controller became primary: start empty. */
  start(): void {
    if (this.#active) return;
    this.#active = true;
    this.#policy = undefined;
    this.#cached.clear();
    this.#objects.clear();
  }

  async stop(): Promise<void> {
    this.#active = false;
    this.#queue.length = 0;
    await this.#working;
  }

  /** Whether this cache tracks the copy of `object` on `backend` (hex); the mover keeps those. */
  tracks(object: string, backend: string): boolean {
    if (this.#backend === undefined || hex(this.#backend) !== backend) return false;
    return (this.#objects.get(object) ?? 0) > 0;
  }

  /** Record a chunk as cached (the mover asks `tracks` for every copy it looks at: no scan). */
  #track(cached: Cached, chunk: Uint8Array): void {
    cached.chunks.push(chunk);
    this.#objects.set(hex(chunk), (this.#objects.get(hex(chunk)) ?? 0) + 1);
  }

  /** Forget a cached file's chunks (its copies are dropped by the caller). */
  #untrack(cached: Cached): void {
    for (const chunk of cached.chunks) {
      const left = (this.#objects.get(hex(chunk)) ?? 1) - 1;
      if (left > 0) this.#objects.set(hex(chunk), left);
      else this.#objects.delete(hex(chunk));
    }
  }

  /** A client opened a file for reading (the primary got its `open` proposal). */
  noteOpen(id: Uint8Array): void {
    if (!this.#active || this.#queue.length > 10_000) return;
    this.#queue.push(hex(id));
    this.#working ??= this.#work().finally(() => {
      this.#working = undefined;
    });
  }

  status(): CacheStatus {
    const stats = this.#policy?.stats;
    return {
      active: this.#active,
      backend: this.#backend === undefined ? '' : hex(this.#backend),
      maxBytes: this.#policy?.config.maxBytes ?? 0,
      bytes: this.#policy?.bytes ?? 0,
      files: this.#cached.size,
      hits: stats?.hits ?? 0,
      misses: stats?.misses ?? 0,
      admissions: stats?.admissions ?? 0,
      evictions: stats?.evictions ?? 0,
      prewakes: this.#prewakes,
      lastError: this.#lastError,
    };
  }

  async #work(): Promise<void> {
    for (;;) {
      const next = this.#queue.shift();
      if (next === undefined || !this.#active) return;
      try {
        await this.#opened(fromHex(next));
      } catch (error) {
        this.#lastError = (error as Error).message;
        this.#log.warn({ file: next, err: error }, 'cache step failed');
      }
      await this.#evictQueued();
    }
  }

  /** The cache backend (most free space among awake ones) and the policy sized for it. */
  async #setUp(): Promise<{ policy: CachePolicy; backend: Uint8Array; servers: ServerRecord[] } | undefined> {
    const [backends, servers] = await Promise.all([this.#state.backends(), this.#state.servers()]);
    const facts = backendFacts(backends, servers);
    const awake = new Set(facts.filter((fact) => fact.awake).map((fact) => fact.uuid));
    const candidates = backends
      .filter((backend) => backend.tags.includes(CACHE_TAG) && awake.has(hex(backend.uuid)))
      .sort((a, b) => b.freeBytes - a.freeBytes);
    const chosen =
      candidates.find((backend) => this.#backend !== undefined && hex(backend.uuid) === hex(this.#backend)) ??
      candidates[0];
    if (chosen === undefined) return undefined;
    const maxBytes = Math.floor(chosen.capacityBytes * CACHE_SHARE);
    if (
      this.#policy === undefined ||
      this.#backend === undefined ||
      hex(this.#backend) !== hex(chosen.uuid)
    ) {
      // A new cache backend (or the first): whatever an old one held is dropped.
      for (const cached of this.#cached.values()) this.#evictions.push(cached);
      this.#cached.clear();
      this.#objects.clear();
      this.#backend = chosen.uuid;
      this.#policy = new CachePolicy(
        { maxBytes, admitAfterReads: this.#admitAfterOpens, windowMs: this.#windowMs },
        (entry) => {
          const cached = this.#cached.get(entry.id);
          if (cached === undefined) return;
          this.#cached.delete(entry.id);
          this.#untrack(cached);
          this.#evictions.push(cached);
          this.#onEvent('evict');
        },
      );
    }
    return { policy: this.#policy, backend: chosen.uuid, servers };
  }

  async #opened(id: Uint8Array): Promise<void> {
    const inode = await this.#state.inode(id);
    if (inode === undefined || inode.type !== 'FILE' || inode.chunks.length === 0) return;
    const setUp = await this.#setUp();
    if (setUp === undefined) return;
    const { policy, backend, servers } = setUp;
    const key = hex(id);
    const lookup = policy.lookup(key, inode.version);
    this.#onEvent(lookup === 'hit' ? 'hit' : 'miss');
    if (lookup === 'hit') {
      await this.#prewake(inode, servers);
      return;
    }
    const hot = inode.xattrs.some((xattr) => xattr.name === HOT_XATTR);
    const admitted = hot
      ? policy.noteRead({ id: key, size: inode.size, version: inode.version }, this.#io.nowMs()) ||
        this.#admitHot(policy, key, inode)
      : policy.noteRead({ id: key, size: inode.size, version: inode.version }, this.#io.nowMs());
    if (!admitted) return;
    this.#onEvent('admit');
    try {
      await this.#fill(inode, backend);
    } catch (error) {
      policy.invalidate(key);
      throw error;
    }
  }

  /** The hot flag admits on the first open (the policy's history is skipped). */
  #admitHot(policy: CachePolicy, key: string, inode: Inode): boolean {
    for (let i = 0; i < this.#admitAfterOpens; i++)
      if (policy.noteRead({ id: key, size: inode.size, version: inode.version }, this.#io.nowMs()))
        return true;
    return false;
  }

  /** Copy every chunk of an admitted file to the cache backend. */
  async #fill(inode: Inode, backend: Uint8Array): Promise<void> {
    const [backends, servers] = await Promise.all([this.#state.backends(), this.#state.servers()]);
    const awake = new Set(
      backendFacts(backends, servers)
        .filter((fact) => fact.awake)
        .map((fact) => fact.uuid),
    );
    const cached: Cached = { backend, chunks: [] };
    this.#cached.set(hex(inode.id), cached);
    for (const chunk of inode.chunks) {
      const locations = await this.#state.locations(chunk.id);
      if (locations.some((l) => hex(l.backend) === hex(backend))) {
        this.#track(cached, chunk.id);
        continue;
      }
      const source = locations.find(
        (l) => l.location.current && !l.location.outdated && awake.has(hex(l.backend)),
      );
      // Caching never wakes a server: a file without an awake copy is cached on a later open.
      if (source === undefined) throw new Error(`no awake copy of a chunk of ${hex(inode.id)} to cache`);
      const bytes = await this.#io.readChunk(source.backend, chunk.id, chunk.size, chunk.hash);
      await this.#io.writeChunk(backend, chunk.id, bytes, chunk.hash);
      const result = await this.#io.propose({
        placeCopy: {
          object: chunk.id,
          backend,
          location: { outdated: false, current: true, target: false, mtimeMs: inode.mtimeMs },
        },
      });
      if (result.code !== 'OK') {
        await this.#io.deleteChunk(backend, chunk.id).catch(() => {});
        throw new Error(`cannot record the cached copy: ${result.message}`);
      }
      this.#track(cached, chunk.id);
    }
  }

  async #evictQueued(): Promise<void> {
    for (;;) {
      const cached = this.#evictions.shift();
      if (cached === undefined) return;
      for (const chunk of cached.chunks) {
        const result = await this.#io.propose({
          placeCopy: { object: chunk, backend: cached.backend, remove: true },
        });
        if (result.code !== 'OK' && result.code !== 'NOT_FOUND') {
          this.#log.warn({ object: hex(chunk), message: result.message }, 'cannot drop a cached copy');
          continue;
        }
        await this.#io.deleteChunk(cached.backend, chunk).catch((error: unknown) => {
          this.#log.warn({ object: hex(chunk), err: error }, 'cannot delete a cached copy');
        });
      }
    }
  }

  /**
   * A cached file is being read: if its own copies all sleep, wake the server that holds most of
   * the folder's uncached files, so that they do not wait when the reader gets to them.
   */
  async #prewake(inode: Inode, servers: ServerRecord[]): Promise<void> {
    if (this.#wake === undefined || inode.parent.length === 0) return;
    const backends = await this.#state.backends();
    const facts = backendFacts(backends, servers);
    const awake = new Set(facts.filter((fact) => fact.awake).map((fact) => fact.uuid));
    const serverOf = new Map(facts.map((fact) => [fact.uuid, fact.server]));
    const cacheBackend = this.#backend === undefined ? '' : hex(this.#backend);
    const ownCopies = await Promise.all(inode.chunks.map((chunk) => this.#state.locations(chunk.id)));
    const ownAwake = ownCopies.some((copies) =>
      copies.some((copy) => hex(copy.backend) !== cacheBackend && awake.has(hex(copy.backend))),
    );
    if (ownAwake) return;
    const votes = new Map<string, number>();
    let after: string | undefined;
    let seen = 0;
    while (seen < PREWAKE_ENTRIES_MAX) {
      const entries = await this.#state.readdir(inode.parent, { after, limit: 128 });
      if (entries.length === 0) break;
      after = entries.at(-1)!.name;
      for (const entry of entries) {
        seen += 1;
        if (this.#cached.has(hex(entry.id))) continue;
        const sibling = await this.#state.inode(entry.id);
        if (sibling === undefined || sibling.type !== 'FILE' || sibling.chunks.length === 0) continue;
        const copies = await this.#state.locations(sibling.chunks[0]!.id);
        const current = copies.filter((copy) => copy.location.current && !copy.location.outdated);
        if (current.some((copy) => awake.has(hex(copy.backend)))) continue;
        for (const copy of current) {
          const server = serverOf.get(hex(copy.backend));
          if (server !== undefined) votes.set(server, (votes.get(server) ?? 0) + 1);
        }
      }
    }
    const best = [...votes].sort((a, b) => b[1] - a[1])[0];
    if (best === undefined) return;
    const now = this.#io.nowMs();
    if (now - (this.#prewoken.get(best[0]) ?? 0) < PREWAKE_INTERVAL_MS) return;
    this.#prewoken.set(best[0], now);
    this.#prewakes += 1;
    const name = servers.find((server) => hex(server.uuid) === best[0])?.name ?? best[0].slice(0, 8);
    this.#log.info({ server: name, folder: hex(inode.parent), files: best[1] }, 'pre-wake');
    void this.#wake(
      fromHex(best[0]),
      `pre-wake: ${best[1]} file(s) of a folder being read from the cache`,
    ).catch((error: unknown) => this.#log.warn({ server: name, err: error }, 'pre-wake failed'));
  }
}
