/**
 * The in-memory view of the replicated log inside the pure core: a snapshot base (index/term)
 * followed by contiguous entries. Tracks which entries are stable (persisted by the driver),
 * committed and applied. No I/O: the driver persists what `Ready.entries` hands out.
 */
import { assert } from '../node/common/errors.ts';
import type { Entry } from './types.ts';

export class RaftLog {
  /** Index/term of the last entry covered by the snapshot (0/0 = no snapshot). */
  snapshotIndex: number;
  snapshotTerm: number;
  /** entries[i].index === snapshotIndex + 1 + i */
  private entries: Entry[];
  /** Highest index the driver has persisted (Ready acknowledged by advance()). */
  stableIndex: number;
  committed: number;
  applied: number;

  constructor(init: {
    snapshotIndex: number;
    snapshotTerm: number;
    entries: readonly Entry[];
    committed: number;
    applied: number;
  }) {
    this.snapshotIndex = init.snapshotIndex;
    this.snapshotTerm = init.snapshotTerm;
    this.entries = [...init.entries];
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i]!;
      assert(
        entry.index === init.snapshotIndex + 1 + i,
        `log entries must be contiguous (at ${entry.index})`,
      );
      const previousTerm = i === 0 ? init.snapshotTerm : this.entries[i - 1]!.term;
      assert(entry.term >= previousTerm, `log terms must not decrease (at ${entry.index})`);
    }
    this.stableIndex = this.lastIndex();
    assert(init.committed <= this.lastIndex(), 'commit index beyond the last log entry');
    this.committed = Math.max(init.committed, init.snapshotIndex);
    this.applied = Math.max(Math.min(init.applied, this.committed), init.snapshotIndex);
  }

  firstIndex(): number {
    return this.snapshotIndex + 1;
  }

  lastIndex(): number {
    return this.snapshotIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length === 0 ? this.snapshotTerm : this.entries[this.entries.length - 1]!.term;
  }

  /** Term of the entry at index, or undefined if it is compacted away or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    if (index < this.snapshotIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapshotIndex - 1]!.term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.snapshotIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapshotIndex - 1];
  }

  /** Entries in [from, to] (inclusive), at most `max` of them. `from` must not be compacted. */
  slice(from: number, to: number, max = Number.POSITIVE_INFINITY): Entry[] {
    assert(from > this.snapshotIndex, `slice from ${from} is compacted (snapshot at ${this.snapshotIndex})`);
    const last = Math.min(to, this.lastIndex(), from + max - 1);
    if (last < from) return [];
    return this.entries.slice(from - this.snapshotIndex - 1, last - this.snapshotIndex);
  }

  /** Raft §5.4.1: is a log ending at (lastTerm, lastIndex) at least as up to date as ours? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    if (lastTerm !== ourTerm) return lastTerm > ourTerm;
    return lastIndex >= this.lastIndex();
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Append entries that directly follow the last index (leader path). */
  append(entries: readonly Entry[]): void {
    for (const entry of entries) {
      assert(entry.index === this.lastIndex() + 1, `append at ${entry.index} after ${this.lastIndex()}`);
      assert(entry.term >= this.lastTerm(), `append term ${entry.term} below last term ${this.lastTerm()}`);
      this.entries.push(entry);
    }
  }

  /** Drop every entry at index >= from (follower conflict). */
  truncateFrom(from: number): void {
    assert(from > this.snapshotIndex, `cannot truncate into the snapshot (${from} <= ${this.snapshotIndex})`);
    if (from > this.lastIndex()) return;
    this.entries.length = from - this.snapshotIndex - 1;
    this.stableIndex = Math.min(this.stableIndex, from - 1);
  }

  /** First index of the run of entries whose term equals the term at `index` (binary search: terms never decrease). */
  firstIndexOfTermAt(index: number): number {
    const term = this.term(index);
    assert(term !== undefined, `no entry at ${index}`);
    if (index === this.snapshotIndex) return index;
    let low = this.snapshotIndex + 1;
    let high = index;
    while (low < high) {
      const middle = Math.floor((low + high) / 2);
      if (this.term(middle)! < term) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** Last index whose entry has exactly `term`, or 0 if none is in the (uncompacted) log. */
  lastIndexOfTerm(term: number): number {
    // Binary search for the last index with a term <= `term`.
    let low = this.snapshotIndex;
    let high = this.lastIndex();
    if (this.term(low)! > term) return 0;
    while (low < high) {
      const middle = Math.ceil((low + high) / 2);
      if (this.term(middle)! <= term) low = middle;
      else high = middle - 1;
    }
    if (this.term(low) !== term) return 0;
    return low === 0 ? 0 : low;
  }

  /** The driver persisted entries up to index (if the entry there still has `term`). */
  stableTo(index: number, term: number): void {
    if (this.term(index) === term && index > this.stableIndex) this.stableIndex = index;
  }

  unstableEntries(): Entry[] {
    if (this.stableIndex >= this.lastIndex()) return [];
    return this.slice(Math.max(this.stableIndex, this.snapshotIndex) + 1, this.lastIndex());
  }

  /** Discard the prefix up to index (log compaction after the application snapshotted). */
  compactTo(index: number): void {
    const term = this.term(index);
    assert(term !== undefined, `compact index ${index} not in the log`);
    this.entries = this.entries.slice(index - this.snapshotIndex);
    this.snapshotIndex = index;
    this.snapshotTerm = term;
  }

  /** Replace the whole log with a snapshot base (InstallSnapshot that does not match our log). */
  restore(index: number, term: number): void {
    this.entries = [];
    this.snapshotIndex = index;
    this.snapshotTerm = term;
    this.committed = index;
    this.stableIndex = index;
  }
}
