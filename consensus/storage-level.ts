/**
 * RaftStorage on LevelDB (`level` / classic-level): the controllers' durable term, vote, log and
 * snapshot. Every write is ONE batch with `{ sync: true }`, so a save() is atomic and durable
 * when it resolves, with one exception: a save that only moves the commit index (term and vote
 * unchanged, no entries, no snapshot) is written without the sync. Raft's commit index is
 * volatile state (a restarted node learns it again from the leader; entries applied beyond a
 * commit index lost in a crash are committed, and the state machine skips what it has applied),
 * and LevelDB's log is sequential: the next synced write makes it durable too. One fsync per
 * proposal instead of two.
 *
 * Keys (binary):
 *   'h'                      -> HardState      (proto zhsm.consensus.HardState)
 *   's'                      -> Snapshot       (proto zhsm.consensus.Snapshot)
 *   'e' + uint64 big-endian  -> Entry          (proto zhsm.consensus.Entry)
 * Fixed-width big-endian indexes make entries iterate in index order; compaction deletes the
 * prefix in the same batch that writes the snapshot.
 *
 * Single writer: the stored entry range is tracked in memory after open(); do not share one
 * database directory between two instances.
 */
import { Level } from 'level';
import { assert, ClosedError, CorruptObjectError, IoError } from '../node/common/errors.ts';
import {
  decodeEntry,
  decodeHardState,
  decodeSnapshot,
  encodeEntry,
  encodeHardState,
  encodeSnapshot,
} from './codec.ts';
import { checkStoredState, EMPTY_HARD_STATE } from './storage-memory.ts';
import type { Entry, HardState, RaftStorage, Snapshot } from './types.ts';

const HARD_STATE_KEY = Uint8Array.of(0x68); // 'h'
const SNAPSHOT_KEY = Uint8Array.of(0x73); // 's'
const ENTRY_PREFIX = 0x65; // 'e'
const ENTRY_KEY_BYTES = 9;

export function entryKey(index: number): Uint8Array {
  assert(Number.isSafeInteger(index) && index >= 0, `invalid entry index ${index}`);
  const key = new Uint8Array(ENTRY_KEY_BYTES);
  key[0] = ENTRY_PREFIX;
  new DataView(key.buffer).setBigUint64(1, BigInt(index), false);
  return key;
}

function indexOfEntryKey(key: Uint8Array): number {
  if (key.length !== ENTRY_KEY_BYTES || key[0] !== ENTRY_PREFIX) {
    throw new CorruptObjectError('raft storage: malformed entry key', {});
  }
  return Number(new DataView(key.buffer, key.byteOffset, key.byteLength).getBigUint64(1, false));
}

type SaveUpdate = { hardState?: HardState; entries: readonly Entry[]; snapshot?: Snapshot };

type BatchOperation = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };

export class LevelRaftStorage implements RaftStorage {
  private readonly db: Level<Uint8Array, Uint8Array>;
  /** Index/term of the stored snapshot (0/0 = none) and the last stored entry index. */
  private snapshotIndex = 0;
  private lastIndex = 0;
  private closed = false;
  private tail: Promise<void> = Promise.resolve();
  /** Term and vote as last written (a hard state that changes only the commit index needs no sync). */
  private stored: { term: number; votedFor: number } = { term: 0, votedFor: 0 };

  private constructor(db: Level<Uint8Array, Uint8Array>) {
    this.db = db;
  }

  /** Open (creating if missing) the raft database at `location`. */
  static async open(location: string): Promise<LevelRaftStorage> {
    const db = new Level<Uint8Array, Uint8Array>(location, { keyEncoding: 'view', valueEncoding: 'view' });
    try {
      await db.open();
    } catch (error) {
      throw new IoError(`cannot open raft storage at ${location}`, { location }, { cause: error });
    }
    const storage = new LevelRaftStorage(db);
    const state = await storage.load();
    storage.snapshotIndex = state.snapshot?.meta.index ?? 0;
    storage.lastIndex = storage.snapshotIndex + state.entries.length;
    storage.stored = { term: state.hardState.term, votedFor: state.hardState.votedFor };
    return storage;
  }

  async load(): Promise<{ hardState: HardState; snapshot?: Snapshot; entries: Entry[] }> {
    this.checkOpen();
    const hardStateBytes = await this.db.get(HARD_STATE_KEY);
    const snapshotBytes = await this.db.get(SNAPSHOT_KEY);
    const hardState =
      hardStateBytes === undefined ? { ...EMPTY_HARD_STATE } : decodeHardState(hardStateBytes);
    const snapshot = snapshotBytes === undefined ? undefined : decodeSnapshot(snapshotBytes);
    const entries: Entry[] = [];
    for await (const [key, value] of this.db.iterator({
      gte: entryKey(0),
      lte: entryKey(Number.MAX_SAFE_INTEGER),
    })) {
      const index = indexOfEntryKey(key);
      const entry = decodeEntry(value);
      if (entry.index !== index) {
        throw new CorruptObjectError(`raft storage: entry key ${index} holds entry ${entry.index}`, {
          index,
        });
      }
      entries.push(entry);
    }
    const state = { hardState, entries, ...(snapshot === undefined ? {} : { snapshot }) };
    try {
      checkStoredState(state);
    } catch (error) {
      throw new CorruptObjectError(`raft storage: ${(error as Error).message}`, {}, { cause: error });
    }
    return state;
  }

  async save(update: SaveUpdate): Promise<void> {
    return this.serialized(() => this.saveNow(update));
  }

  private async saveNow(update: SaveUpdate): Promise<void> {
    this.checkOpen();
    const operations: BatchOperation[] = [];
    let snapshotIndex = this.snapshotIndex;
    let lastIndex = this.lastIndex;
    if (update.snapshot !== undefined) {
      operations.push({ type: 'put', key: SNAPSHOT_KEY, value: encodeSnapshot(update.snapshot) });
      for (let index = snapshotIndex + 1; index <= lastIndex; index++)
        operations.push({ type: 'del', key: entryKey(index) });
      snapshotIndex = update.snapshot.meta.index;
      lastIndex = snapshotIndex;
    }
    const first = update.entries[0];
    if (first !== undefined) {
      assert(
        first.index > snapshotIndex,
        `entries at ${first.index} overlap the snapshot at ${snapshotIndex}`,
      );
      assert(first.index <= lastIndex + 1, `entries at ${first.index} leave a gap after ${lastIndex}`);
      update.entries.forEach((entry, i) => {
        assert(entry.index === first.index + i, 'entries to save must be contiguous');
      });
      const newLast = first.index + update.entries.length - 1;
      for (let index = newLast + 1; index <= lastIndex; index++)
        operations.push({ type: 'del', key: entryKey(index) });
      for (const entry of update.entries) {
        operations.push({ type: 'put', key: entryKey(entry.index), value: encodeEntry(entry) });
      }
      lastIndex = newLast;
    }
    const hardState = update.hardState;
    if (hardState !== undefined) {
      operations.push({ type: 'put', key: HARD_STATE_KEY, value: encodeHardState(hardState) });
    }
    if (operations.length === 0) return;
    const commitOnly =
      update.snapshot === undefined &&
      first === undefined &&
      hardState !== undefined &&
      hardState.term === this.stored.term &&
      hardState.votedFor === this.stored.votedFor;
    await this.write(operations, { sync: !commitOnly });
    if (hardState !== undefined) this.stored = { term: hardState.term, votedFor: hardState.votedFor };
    this.snapshotIndex = snapshotIndex;
    this.lastIndex = lastIndex;
  }

  async compact(snapshot: Snapshot): Promise<void> {
    return this.serialized(() => this.compactNow(snapshot));
  }

  private async compactNow(snapshot: Snapshot): Promise<void> {
    this.checkOpen();
    const index = snapshot.meta.index;
    if (index <= this.snapshotIndex) return;
    assert(index <= this.lastIndex, `compact at ${index} beyond the last stored entry ${this.lastIndex}`);
    const stored = await this.db.get(entryKey(index));
    assert(stored !== undefined, `compact: no stored entry at ${index}`);
    assert(
      decodeEntry(stored).term === snapshot.meta.term,
      `compact: snapshot term differs from the entry at ${index}`,
    );
    const operations: BatchOperation[] = [
      { type: 'put', key: SNAPSHOT_KEY, value: encodeSnapshot(snapshot) },
    ];
    for (let i = this.snapshotIndex + 1; i <= index; i++) operations.push({ type: 'del', key: entryKey(i) });
    await this.write(operations);
    this.snapshotIndex = index;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    await this.db.close();
  }

  /** Writes run one at a time: each computes its batch from the stored range the previous one left. */
  private serialized(write: () => Promise<void>): Promise<void> {
    const result = this.tail.then(write);
    this.tail = result.catch(() => {});
    return result;
  }

  private async write(
    operations: BatchOperation[],
    options: { sync: boolean } = { sync: true },
  ): Promise<void> {
    try {
      await this.db.batch(operations, options);
    } catch (error) {
      throw new IoError('raft storage: synced batch write failed', {}, { cause: error });
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError('raft storage is closed', {});
  }
}
