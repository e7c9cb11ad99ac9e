/**
 * The controller's object cache policy, pure: which objects to admit, which to evict (LRU by
 * bytes) and when a cached copy is stale. No I/O and no clock reads (every call takes `nowMs`):
 * the simulator (sim/hsm/) runs it as is, and the controller's on-disk cache can keep its files
 * in step with it through `onEvict` (delete the evicted object's file).
 *
 * - Admission: an object is admitted on its `admitAfterReads`-th read within `windowMs` (1: on
 *   every read; 0: never, the cache is off). Reads of objects not (yet) cached are remembered in
 *   a bounded history (LRU by count), so one-off scans of cold data do not push hot data out.
 * - Eviction: LRU by bytes (`maxBytes`); objects larger than `maxObjectBytes` are never admitted.
 * - Coherence: an entry remembers the version (e.g. mtime in ms or the inode version) it holds;
 *   a lookup with a newer version drops it (and counts an invalidation), `invalidate(id)` drops it
 *   outright (a write, a truncate, a delete).
 */
import { LRUCache } from 'lru-cache';

export interface CachePolicyConfig {
  /** Bytes the cache may hold (0: no cache). */
  readonly maxBytes: number;
  /** Admit on this read of an object within `windowMs` (1: always; 0: never). */
  readonly admitAfterReads: number;
  /** The window reads are counted in for admission. */
  readonly windowMs: number;
  /** Larger objects are never admitted (default: a quarter of `maxBytes`). */
  readonly maxObjectBytes?: number;
  /** Objects whose reads are remembered for admission (default 100 000). */
  readonly historyMax?: number;
}

export interface CacheEntry {
  readonly id: string;
  readonly size: number;
  readonly version: number;
}

export interface CacheStats {
  hits: number;
  misses: number;
  admissions: number;
  evictions: number;
  invalidations: number;
}

export type CacheLookup = 'hit' | 'miss' | 'stale';

export class CachePolicy {
  readonly config: CachePolicyConfig;
  readonly stats: CacheStats = { hits: 0, misses: 0, admissions: 0, evictions: 0, invalidations: 0 };
  readonly #entries: LRUCache<string, CacheEntry> | undefined;
  /** Read times (oldest first) of objects not cached, for admission. */
  readonly #history: LRUCache<string, number[]>;
  readonly #onEvict: ((entry: CacheEntry) => void) | undefined;

  constructor(config: CachePolicyConfig, onEvict?: (entry: CacheEntry) => void) {
    if (!(config.maxBytes >= 0) || !Number.isFinite(config.maxBytes))
      throw new RangeError(`cache size must be >= 0 bytes, got ${config.maxBytes}`);
    if (!Number.isInteger(config.admitAfterReads) || config.admitAfterReads < 0)
      throw new RangeError(`admitAfterReads must be an integer >= 0, got ${config.admitAfterReads}`);
    this.config = config;
    this.#onEvict = onEvict;
    this.#entries =
      config.maxBytes > 0 && config.admitAfterReads > 0
        ? new LRUCache<string, CacheEntry>({
            maxSize: config.maxBytes,
            sizeCalculation: (entry) => Math.max(1, entry.size),
            dispose: (entry, _key, reason) => {
              if (reason === 'evict') this.stats.evictions++;
              if (reason === 'evict' || reason === 'delete') this.#onEvict?.(entry);
            },
          })
        : undefined;
    this.#history = new LRUCache<string, number[]>({ max: Math.max(1, config.historyMax ?? 100_000) });
  }

  get enabled(): boolean {
    return this.#entries !== undefined;
  }

  get maxObjectBytes(): number {
    return this.config.maxObjectBytes ?? Math.floor(this.config.maxBytes / 4);
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#entries?.calculatedSize ?? 0;
  }

  get count(): number {
    return this.#entries?.size ?? 0;
  }

  /** Whether `id` is cached at `version` (no recency update, no counting). */
  holds(id: string, version: number): boolean {
    return this.#entries?.peek(id)?.version === version;
  }

  /**
   * A read of `id` at `version`: 'hit' serves it from the cache (and makes it most recent),
   * 'stale' means the cache held an older version (dropped now), 'miss' that it is not cached.
   */
  lookup(id: string, version: number): CacheLookup {
    const entry = this.#entries?.get(id);
    if (entry === undefined) {
      this.stats.misses++;
      return 'miss';
    }
    if (entry.version === version) {
      this.stats.hits++;
      return 'hit';
    }
    this.stats.misses++;
    this.stats.invalidations++;
    this.#entries!.delete(id);
    return 'stale';
  }

  /**
   * A read of `id` served from a storage server: admit it when the admission rule says so.
   * Returns whether the object is cached now.
   */
  noteRead(entry: CacheEntry, nowMs: number): boolean {
    const entries = this.#entries;
    if (entries === undefined || entry.size > this.maxObjectBytes) return false;
    if (entries.peek(entry.id)?.version === entry.version) return true;
    const k = this.config.admitAfterReads;
    let admit = k <= 1;
    if (!admit) {
      const since = nowMs - this.config.windowMs;
      const reads = (this.#history.get(entry.id) ?? []).filter((t) => t > since);
      reads.push(nowMs);
      admit = reads.length >= k;
      if (admit) this.#history.delete(entry.id);
      else this.#history.set(entry.id, reads.slice(-k));
    }
    if (!admit) return false;
    entries.set(entry.id, entry);
    this.stats.admissions++;
    return true;
  }

  /** Drop `id` (a write, truncate or delete made the cached bytes stale). */
  invalidate(id: string): boolean {
    this.#history.delete(id);
    if (this.#entries?.has(id) !== true) return false;
    this.stats.invalidations++;
    this.#entries.delete(id);
    return true;
  }

  /** Drop `id` if it is cached at another version than `version`. */
  invalidateIfStale(id: string, version: number): boolean {
    const entry = this.#entries?.peek(id);
    if (entry === undefined || entry.version === version) return false;
    return this.invalidate(id);
  }

  /** Cached ids, most recently used first. */
  ids(): string[] {
    return this.#entries === undefined ? [] : [...this.#entries.keys()];
  }
}
