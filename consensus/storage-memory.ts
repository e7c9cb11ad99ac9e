/**
 * In-memory RaftStorage: the simulator's and the tests' disk. The persisted state is plain data
 * (`exportState()` / `new MemoryRaftStorage(state)`), so a simulator can clone it at any point to
 * model a crash that loses writes not yet synced: keep the clone from the last sync, throw the
 * storage away at the crash, restart from the clone.
 */
import { assert, ClosedError } from '../node/common/errors.ts';
import type { Entry, HardState, RaftStorage, Snapshot } from './types.ts';

export interface MemoryRaftState {
  hardState: HardState;
  snapshot?: Snapshot;
  /** Contiguous entries after the snapshot. */
  entries: Entry[];
}

export const EMPTY_HARD_STATE: HardState = { term: 0, votedFor: 0, commitIndex: 0 };

function cloneState(state: MemoryRaftState): MemoryRaftState {
  // Entries, snapshots and hard states are immutable values: a shallow copy of the list suffices.
  const copy: MemoryRaftState = { hardState: { ...state.hardState }, entries: [...state.entries] };
  if (state.snapshot !== undefined) copy.snapshot = state.snapshot;
  return copy;
}

/** Check the invariants of a stored log (after every write and on load). */
export function checkStoredState(state: MemoryRaftState): void {
  const base = state.snapshot?.meta.index ?? 0;
  let previousTerm = state.snapshot?.meta.term ?? 0;
  state.entries.forEach((entry, i) => {
    assert(entry.index === base + 1 + i, `stored entries not contiguous at ${entry.index}`);
    assert(entry.term >= previousTerm, `stored entry terms decrease at ${entry.index}`);
    previousTerm = entry.term;
  });
  assert(state.hardState.term >= previousTerm, 'stored hard state term below the last entry term');
}

/**
 * Apply one save() to a state (shared by both storage implementations' semantics, see
 * RaftStorage.save): snapshot replaces everything, then entries replace the suffix, then hard state.
 */
export function applySave(
  state: MemoryRaftState,
  update: { hardState?: HardState; entries: readonly Entry[]; snapshot?: Snapshot },
): MemoryRaftState {
  const next = cloneState(state);
  if (update.snapshot !== undefined) {
    next.snapshot = update.snapshot;
    next.entries = [];
  }
  const first = update.entries[0];
  if (first !== undefined) {
    const base = next.snapshot?.meta.index ?? 0;
    assert(first.index > base, `entries at ${first.index} overlap the snapshot at ${base}`);
    assert(first.index <= base + next.entries.length + 1, `entries at ${first.index} leave a gap in the log`);
    next.entries = next.entries.slice(0, first.index - base - 1).concat(update.entries);
  }
  if (update.hardState !== undefined) next.hardState = { ...update.hardState };
  checkStoredState(next);
  return next;
}

export function applyCompact(state: MemoryRaftState, snapshot: Snapshot): MemoryRaftState {
  const base = state.snapshot?.meta.index ?? 0;
  const index = snapshot.meta.index;
  if (index <= base) return state;
  const last = base + state.entries.length;
  assert(index <= last, `compact at ${index} beyond the last stored entry ${last}`);
  const entry = state.entries[index - base - 1]!;
  assert(entry.term === snapshot.meta.term, `compact: snapshot term differs from the entry at ${index}`);
  const next: MemoryRaftState = {
    hardState: { ...state.hardState },
    snapshot,
    entries: state.entries.slice(index - base),
  };
  checkStoredState(next);
  return next;
}

export class MemoryRaftStorage implements RaftStorage {
  private state: MemoryRaftState;
  private closed = false;

  constructor(initial?: MemoryRaftState) {
    this.state =
      initial === undefined ? { hardState: { ...EMPTY_HARD_STATE }, entries: [] } : cloneState(initial);
    checkStoredState(this.state);
  }

  /** A copy of everything persisted so far (plain data; safe to keep across a simulated crash). */
  exportState(): MemoryRaftState {
    return cloneState(this.state);
  }

  async load(): Promise<{ hardState: HardState; snapshot?: Snapshot; entries: Entry[] }> {
    this.checkOpen();
    return cloneState(this.state);
  }

  async save(update: {
    hardState?: HardState;
    entries: readonly Entry[];
    snapshot?: Snapshot;
  }): Promise<void> {
    this.checkOpen();
    this.state = applySave(this.state, update);
  }

  async compact(snapshot: Snapshot): Promise<void> {
    this.checkOpen();
    this.state = applyCompact(this.state, snapshot);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError('raft storage is closed', {});
  }
}
