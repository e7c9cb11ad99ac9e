/**
 * A simulated disk behind the RaftStorage interface. Each save/compact is one journal record
 * (length, CRC-32, binary payload); writes are queued and complete one at a time after a
 * simulated fsync latency. A crash resolves the write in flight as completed, lost or torn (a
 * partial, scrambled record whose checksum fails at load and is cut off); queued writes that had
 * not started are lost. Only writes whose promise had not resolved can be lost: resolved writes
 * are durable (synced). Records older than the last one can no longer tear, so they are kept
 * folded into a materialized state; the last record is encoded and read back at every load and
 * checked against what was written, and records are checked the same way before they are
 * written (all of a disk's first ones, then a sample: see recordCheckInterval). */
import { crc32 } from 'node:zlib';
import type { Entry, HardState, NodeId, RaftStorage, Snapshot } from '../consensus/types.ts';
import type { Prng } from './prng.ts';

export interface DiskFaults {
  readonly writeUsMin: number;
  readonly writeUsMax: number;
  /** At a crash, probability that the write in flight is lost entirely. */
  readonly crashLoseChance: number;
  /** At a crash, probability that the write in flight is torn (partially written). */
  readonly crashTearChance: number;
}

export const DEFAULT_DISK_FAULTS: DiskFaults = {
  writeUsMin: 200,
  writeUsMax: 2_000,
  crashLoseChance: 0.4,
  crashTearChance: 0.3,
};

export interface DurableState {
  readonly hardState: HardState;
  readonly snapshot: Snapshot | undefined;
  /** Entries after the snapshot, contiguous. */
  readonly entries: readonly Entry[];
}

interface MutableState {
  hardState: HardState;
  snapshot: Snapshot | undefined;
  entries: Entry[];
}

export type CrashOutcome = 'idle' | 'completed' | 'lost' | 'torn';

/** Every this many writes (and all of the first ones) a record is encoded and read back before it is written. */
export const recordCheckInterval = 16;
/** Writes queued behind the one in flight. */
export const queuedWritesMax = 1024;
const recordHeaderBytes = 8;

type Update =
  | {
      readonly kind: 'save';
      readonly hardState?: HardState;
      readonly entries: readonly Entry[];
      readonly snapshot?: Snapshot;
    }
  | { readonly kind: 'compact'; readonly snapshot: Snapshot };

interface PendingWrite {
  readonly update: Update;
  readonly resolve: () => void;
}

export interface SimDiskOptions {
  readonly node: NodeId;
  readonly rng: Prng;
  readonly faults: DiskFaults;
  /** Run `fn` after `delayUs` of virtual time (the simulation's event queue). */
  readonly schedule: (delayUs: number, fn: () => void) => void;
  /** Called right after a promise of this disk resolved, so the driver can drain microtasks. */
  readonly onResolve: () => void;
}

export const EMPTY_HARD_STATE: HardState = { term: 0, votedFor: 0, commitIndex: 0 };

export class SimDisk implements RaftStorage {
  readonly node: NodeId;
  readonly #options: SimDiskOptions;
  /** The last record's bytes as they are on the platter (possibly torn), and what was written. */
  #lastRecord: { readonly torn: Uint8Array } | { readonly update: Update } | undefined;
  /** Scratch space for encoding records (one per disk: no shared state between nodes). */
  readonly #writer = new Writer();
  /** Everything durable (including the last record when it is intact). */
  readonly #durable: MutableState = { hardState: EMPTY_HARD_STATE, snapshot: undefined, entries: [] };
  readonly #queue: PendingWrite[] = [];
  #inFlight = false;
  #open = true;
  /** Increments at each crash: completions scheduled before it are ignored. */
  #epoch = 0;
  tornRecordsRepaired = 0;
  writesLost = 0;
  #writes = 0;

  constructor(options: SimDiskOptions) {
    this.node = options.node;
    this.#options = options;
  }

  /** What survives a crash right now (read-only view; do not mutate). */
  get durable(): DurableState {
    return this.#durable;
  }

  async load(): Promise<{ hardState: HardState; snapshot?: Snapshot; entries: Entry[] }> {
    this.#open = true;
    const last = this.#lastRecord;
    if (last !== undefined) {
      if ('torn' in last) {
        if (decodeRecord(last.torn) !== undefined)
          throw new Error(`disk ${this.node}: a torn record decodes`);
        // A torn tail: cut it off.
        this.#lastRecord = undefined;
        this.tornRecordsRepaired++;
      } else {
        // Read the last record back and check it against what was written.
        const decoded = decodeRecord(encodeRecord(last.update, this.#writer));
        if (decoded === undefined || canonicalUpdate(decoded) !== canonicalUpdate(last.update)) {
          throw new Error(`disk ${this.node}: the last record reads back differently than it was written`);
        }
      }
    }
    const state = this.#durable;
    const result: { hardState: HardState; snapshot?: Snapshot; entries: Entry[] } = {
      hardState: state.hardState,
      entries: state.entries.slice(),
    };
    if (state.snapshot !== undefined) result.snapshot = state.snapshot;
    return result;
  }

  save(update: { hardState?: HardState; entries: readonly Entry[]; snapshot?: Snapshot }): Promise<void> {
    const record: Update = { kind: 'save', entries: update.entries.slice() };
    if (update.hardState !== undefined) Object.assign(record, { hardState: update.hardState });
    if (update.snapshot !== undefined) Object.assign(record, { snapshot: update.snapshot });
    return this.#enqueue(record);
  }

  compact(snapshot: Snapshot): Promise<void> {
    return this.#enqueue({ kind: 'compact', snapshot });
  }

  async close(): Promise<void> {
    this.#open = false;
  }

  /** Power loss: resolve the write in flight as completed, lost or torn; drop queued writes. */
  crash(): CrashOutcome {
    this.#epoch++;
    const inFlight = this.#inFlight ? this.#queue[0] : undefined;
    this.writesLost += this.#queue.length - (inFlight === undefined ? 0 : 1);
    this.#queue.length = 0;
    this.#inFlight = false;
    this.#open = false;
    if (inFlight === undefined) return 'idle';
    const faults = this.#options.faults;
    const roll = this.#options.rng.float();
    if (roll < faults.crashLoseChance) {
      this.writesLost++;
      return 'lost';
    }
    const bytes = encodeRecord(inFlight.update, this.#writer);
    if (roll < faults.crashLoseChance + faults.crashTearChance) {
      this.writesLost++;
      const keep = this.#options.rng.range(1, bytes.length - 1);
      const torn = bytes.slice(0, keep);
      // Also scramble a byte of the part that made it, like a sector written half-way.
      const at = this.#options.rng.int(torn.length);
      torn[at] = (torn[at]! ^ (1 + this.#options.rng.int(255))) & 0xff;
      this.#lastRecord = { torn };
      return 'torn';
    }
    this.#commit(inFlight.update, bytes);
    return 'completed';
  }

  #enqueue(update: Update): Promise<void> {
    if (!this.#open) return new Promise<void>(() => {}); // a crashed process: never completes
    if (this.#queue.length > queuedWritesMax)
      throw new Error(`disk ${this.node}: write queue over its limit`);
    return new Promise<void>((resolve) => {
      this.#queue.push({ update, resolve });
      if (!this.#inFlight) this.#startNext();
    });
  }

  #startNext(): void {
    const next = this.#queue[0];
    if (next === undefined) return;
    this.#inFlight = true;
    const epoch = this.#epoch;
    const faults = this.#options.faults;
    const delayUs = this.#options.rng.range(faults.writeUsMin, faults.writeUsMax);
    this.#options.schedule(delayUs, () => {
      if (epoch !== this.#epoch) return;
      const done = this.#queue.shift()!;
      this.#inFlight = false;
      this.#commit(done.update, undefined);
      done.resolve();
      this.#options.onResolve();
      this.#startNext();
    });
  }

  /**
   * A write reaches the platter. The record is checked before it is written (encoded, then
   * decoded and compared) for the first records of every disk and then every
   * recordCheckInterval-th one: the check costs as much as the rest of the write path.
   */
  #commit(update: Update, bytes: Uint8Array | undefined): void {
    this.#writes++;
    if (
      bytes !== undefined ||
      this.#writes <= recordCheckInterval ||
      this.#writes % recordCheckInterval === 0
    ) {
      const decoded = decodeRecord(bytes ?? encodeRecord(update, this.#writer));
      if (decoded === undefined || canonicalUpdate(decoded) !== canonicalUpdate(update)) {
        throw new Error(`disk ${this.node}: record does not read back before it is written`);
      }
    }
    applyUpdate(this.#durable, update);
    this.#lastRecord = { update };
  }
}

function applyUpdate(state: MutableState, update: Update): void {
  switch (update.kind) {
    case 'compact': {
      const meta = update.snapshot.meta;
      const snapshotIndex = state.snapshot?.meta.index ?? 0;
      if (meta.index <= snapshotIndex) return;
      const lastIndex = lastIndexOf(state);
      if (meta.index > lastIndex) throw new Error(`compact beyond the log: ${meta.index} > ${lastIndex}`);
      const at = state.entries[meta.index - snapshotIndex - 1]!;
      if (at.term !== meta.term)
        throw new Error(`compact at ${meta.index}: term ${meta.term} but log has ${at.term}`);
      state.entries.splice(0, meta.index - snapshotIndex);
      state.snapshot = update.snapshot;
      return;
    }
    case 'save': {
      // A snapshot from the leader replaces the stored snapshot and drops every stored entry.
      if (update.snapshot !== undefined) {
        state.snapshot = update.snapshot;
        state.entries.length = 0;
      }
      if (update.entries.length > 0) appendEntries(state, update.entries);
      if (update.hardState !== undefined) state.hardState = update.hardState;
      return;
    }
  }
}

function appendEntries(state: MutableState, entries: readonly Entry[]): void {
  const snapshotIndex = state.snapshot?.meta.index ?? 0;
  const first = entries[0]!.index;
  for (let i = 1; i < entries.length; i++) {
    if (entries[i]!.index !== first + i)
      throw new Error(`save: entries not contiguous at ${entries[i]!.index}`);
  }
  if (first <= snapshotIndex)
    throw new Error(`save: entry ${first} at or below the snapshot ${snapshotIndex}`);
  const lastIndex = lastIndexOf(state);
  if (first > lastIndex + 1) throw new Error(`save: gap, first entry ${first} after last index ${lastIndex}`);
  state.entries.length = first - snapshotIndex - 1;
  for (const entry of entries) state.entries.push(entry);
}

function lastIndexOf(state: MutableState): number {
  return (state.snapshot?.meta.index ?? 0) + state.entries.length;
}

// --- record codec: [u32 payload length][u32 crc32 of payload][payload] ---
// payload: u8 kind (1 save, 2 compact); save: u8 flags (1 hardState, 2 snapshot), [hardState],
// [snapshot], u32 entry count, entries; compact: snapshot. Numbers are f64 (safe integers),
// byte strings are u32 length + bytes.

const KIND_SAVE = 1;
const KIND_COMPACT = 2;
const FLAG_HARD_STATE = 1;
const FLAG_SNAPSHOT = 2;
const ENTRY_TYPES: readonly Entry['type'][] = ['normal', 'noop', 'config'];

class Writer {
  #bytes = new Uint8Array(4096);
  #view = new DataView(this.#bytes.buffer);
  length = recordHeaderBytes;

  reset(): void {
    this.length = recordHeaderBytes;
  }

  #reserve(extra: number): void {
    if (this.length + extra <= this.#bytes.length) return;
    let size = this.#bytes.length * 2;
    while (size < this.length + extra) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#bytes.subarray(0, this.length));
    this.#bytes = next;
    this.#view = new DataView(next.buffer);
  }

  u8(value: number): void {
    this.#reserve(1);
    this.#view.setUint8(this.length, value);
    this.length += 1;
  }

  u32(value: number): void {
    this.#reserve(4);
    this.#view.setUint32(this.length, value);
    this.length += 4;
  }

  number(value: number): void {
    if (!Number.isSafeInteger(value)) throw new RangeError(`record field is not a safe integer: ${value}`);
    this.#reserve(8);
    this.#view.setFloat64(this.length, value);
    this.length += 8;
  }

  bytes(value: Uint8Array): void {
    this.u32(value.length);
    this.#reserve(value.length);
    this.#bytes.set(value, this.length);
    this.length += value.length;
  }

  /** Fill in the header; the record is valid until the next reset (a view, not a copy). */
  finish(): Uint8Array {
    const out = this.#bytes.subarray(0, this.length);
    const payload = out.subarray(recordHeaderBytes);
    this.#view.setUint32(0, payload.length);
    this.#view.setUint32(4, crc32(payload));
    return out;
  }
}

class Reader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #at: number;

  constructor(bytes: Uint8Array, at: number) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#at = at;
  }

  #need(count: number): void {
    if (this.#at + count > this.#bytes.length) throw new RangeError('record truncated');
  }

  u8(): number {
    this.#need(1);
    return this.#view.getUint8(this.#at++);
  }

  u32(): number {
    this.#need(4);
    const value = this.#view.getUint32(this.#at);
    this.#at += 4;
    return value;
  }

  number(): number {
    this.#need(8);
    const value = this.#view.getFloat64(this.#at);
    this.#at += 8;
    if (!Number.isSafeInteger(value)) throw new RangeError('record number is not a safe integer');
    return value;
  }

  bytes(): Uint8Array {
    const length = this.u32();
    this.#need(length);
    const out = this.#bytes.slice(this.#at, this.#at + length);
    this.#at += length;
    return out;
  }

  get done(): boolean {
    return this.#at === this.#bytes.length;
  }
}

function writeSnapshot(writer: Writer, snapshot: Snapshot): void {
  writer.number(snapshot.meta.index);
  writer.number(snapshot.meta.term);
  writer.u32(snapshot.meta.membership.voters.length);
  for (const id of snapshot.meta.membership.voters) writer.number(id);
  writer.u32(snapshot.meta.membership.learners.length);
  for (const id of snapshot.meta.membership.learners) writer.number(id);
  writer.bytes(snapshot.data);
}

function readSnapshot(reader: Reader): Snapshot {
  const index = reader.number();
  const term = reader.number();
  const voters: number[] = [];
  for (let i = reader.u32(); i > 0; i--) voters.push(reader.number());
  const learners: number[] = [];
  for (let i = reader.u32(); i > 0; i--) learners.push(reader.number());
  return { meta: { index, term, membership: { voters, learners } }, data: reader.bytes() };
}

/** Encode into the writer's buffer (reused; copy the result to keep it). */
function encodeRecord(update: Update, writer: Writer = new Writer()): Uint8Array {
  writer.reset();
  if (update.kind === 'compact') {
    writer.u8(KIND_COMPACT);
    writeSnapshot(writer, update.snapshot);
    return writer.finish();
  }
  writer.u8(KIND_SAVE);
  writer.u8(
    (update.hardState === undefined ? 0 : FLAG_HARD_STATE) |
      (update.snapshot === undefined ? 0 : FLAG_SNAPSHOT),
  );
  if (update.hardState !== undefined) {
    writer.number(update.hardState.term);
    writer.number(update.hardState.votedFor);
    writer.number(update.hardState.commitIndex);
  }
  if (update.snapshot !== undefined) writeSnapshot(writer, update.snapshot);
  writer.u32(update.entries.length);
  for (const entry of update.entries) {
    writer.number(entry.index);
    writer.number(entry.term);
    const type = ENTRY_TYPES.indexOf(entry.type);
    if (type < 0) throw new RangeError(`unknown entry type ${entry.type}`);
    writer.u8(type);
    writer.bytes(entry.data);
  }
  return writer.finish();
}

/** undefined when the record is torn or corrupt (length, checksum or structure). */
function decodeRecord(bytes: Uint8Array): Update | undefined {
  if (bytes.length < recordHeaderBytes) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint32(0);
  if (length !== bytes.length - recordHeaderBytes) return undefined;
  if (crc32(bytes.subarray(recordHeaderBytes)) !== view.getUint32(4)) return undefined;
  try {
    const reader = new Reader(bytes, recordHeaderBytes);
    const kind = reader.u8();
    let update: Update;
    if (kind === KIND_COMPACT) {
      update = { kind: 'compact', snapshot: readSnapshot(reader) };
    } else if (kind === KIND_SAVE) {
      const flags = reader.u8();
      const record: { kind: 'save'; hardState?: HardState; snapshot?: Snapshot; entries: Entry[] } = {
        kind: 'save',
        entries: [],
      };
      if ((flags & FLAG_HARD_STATE) !== 0) {
        record.hardState = { term: reader.number(), votedFor: reader.number(), commitIndex: reader.number() };
      }
      if ((flags & FLAG_SNAPSHOT) !== 0) record.snapshot = readSnapshot(reader);
      for (let i = reader.u32(); i > 0; i--) {
        const index = reader.number();
        const term = reader.number();
        const type = ENTRY_TYPES[reader.u8()];
        if (type === undefined) return undefined;
        record.entries.push({ index, term, type, data: reader.bytes() });
      }
      update = record;
    } else {
      return undefined;
    }
    return reader.done ? update : undefined;
  } catch {
    return undefined;
  }
}

/** A canonical text form of a record, for comparing what was read with what was written. */
function canonicalUpdate(update: Update): string {
  const snapshot = (value: Snapshot | undefined) =>
    value === undefined
      ? null
      : [
          value.meta.index,
          value.meta.term,
          value.meta.membership.voters,
          value.meta.membership.learners,
          Buffer.from(value.data).toString('base64'),
        ];
  if (update.kind === 'compact') return JSON.stringify(['compact', snapshot(update.snapshot)]);
  return JSON.stringify([
    'save',
    update.hardState === undefined
      ? null
      : [update.hardState.term, update.hardState.votedFor, update.hardState.commitIndex],
    snapshot(update.snapshot),
    update.entries.map((entry) => [
      entry.index,
      entry.term,
      entry.type,
      Buffer.from(entry.data).toString('base64'),
    ]),
  ]);
}
