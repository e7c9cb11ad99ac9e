/**
 * The ordered key-value store under the metadata state machine: LevelDB on a controller
 * (`LevelKv`), a sorted in-memory map in tests and the simulator (`MemoryKv`). Keys are strings
 * ordered by their UTF-8 bytes (LevelDB's order) in both.
 */
import { Level } from 'level';
import { IoError } from '../common/errors.ts';

export type KvOperation =
  | { readonly type: 'put'; readonly key: string; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: string };

export interface KvRange {
  readonly gte: string;
  readonly lt: string;
  readonly limit?: number;
}

export interface KvStore {
  get(key: string): Promise<Uint8Array | undefined>;
  /** Apply operations atomically; `sync` makes them durable before resolving. */
  write(operations: readonly KvOperation[], options?: { sync?: boolean }): Promise<void>;
  /** Entries with gte <= key < lt in key order. */
  range(range: KvRange): AsyncIterable<readonly [string, Uint8Array]>;
  close(): Promise<void>;
}

function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export class MemoryKv implements KvStore {
  readonly #values = new Map<string, Uint8Array>();
  #sorted: string[] = [];

  async get(key: string): Promise<Uint8Array | undefined> {
    return this.#values.get(key);
  }

  async write(operations: readonly KvOperation[]): Promise<void> {
    for (const operation of operations) {
      const exists = this.#values.has(operation.key);
      if (operation.type === 'put') {
        this.#values.set(operation.key, operation.value);
        if (!exists) this.#sorted.splice(this.#lowerBound(operation.key), 0, operation.key);
      } else if (exists) {
        this.#values.delete(operation.key);
        this.#sorted.splice(this.#lowerBound(operation.key), 1);
      }
    }
  }

  async *range(range: KvRange): AsyncIterable<readonly [string, Uint8Array]> {
    let count = 0;
    for (let i = this.#lowerBound(range.gte); i < this.#sorted.length; i++) {
      const key = this.#sorted[i]!;
      if (compareKeys(key, range.lt) >= 0) break;
      if (range.limit !== undefined && count >= range.limit) break;
      const value = this.#values.get(key);
      if (value === undefined) continue;
      count++;
      yield [key, value];
    }
  }

  async close(): Promise<void> {}

  #lowerBound(key: string): number {
    let low = 0;
    let high = this.#sorted.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compareKeys(this.#sorted[middle]!, key) < 0) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}

export class LevelKv implements KvStore {
  readonly #db: Level<string, Uint8Array>;

  private constructor(db: Level<string, Uint8Array>) {
    this.#db = db;
  }

  static async open(location: string): Promise<LevelKv> {
    const db = new Level<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' });
    try {
      await db.open();
    } catch (error) {
      throw new IoError(`cannot open metadata database at ${location}`, { location }, { cause: error });
    }
    return new LevelKv(db);
  }

  /**
   * A synchronous LevelDB read (served from the memtable or block cache in microseconds): the
   * state machine applies commands one after another, and an asynchronous get per read (a thread
   * pool round trip each) made the apply loop wait more than it worked (2.8k -> see the notes in
   * docs/ARCHITECTURE.md, "Metadata").
   */
  async get(key: string): Promise<Uint8Array | undefined> {
    return this.#db.getSync(key) ?? undefined;
  }

  async write(operations: readonly KvOperation[], options: { sync?: boolean } = {}): Promise<void> {
    if (operations.length === 0) return;
    await this.#db.batch(
      operations.map((operation) =>
        operation.type === 'put'
          ? { type: 'put' as const, key: operation.key, value: operation.value }
          : { type: 'del' as const, key: operation.key },
      ),
      { sync: options.sync ?? false },
    );
  }

  async *range(range: KvRange): AsyncIterable<readonly [string, Uint8Array]> {
    // Entries come from LevelDB's thread in batches of up to this many bytes: the default (16 KiB)
    // made a scan of 98 chunk segments of 18 KB (a 100 GiB file's list) 98 round trips.
    const iterator = this.#db.iterator({
      gte: range.gte,
      lt: range.lt,
      limit: range.limit ?? -1,
      highWaterMarkBytes: 1024 * 1024,
    });
    try {
      for await (const [key, value] of iterator) yield [key, value] as const;
    } finally {
      await iterator.close();
    }
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}
