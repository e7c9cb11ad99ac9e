/**
 * The contract of the consensus core (lowest-id Raft). The core (`consensus/raft.ts`) is a pure
 * state machine: no clock reads, randomness, awaits or I/O. Inputs: `tick()`, `step(message)`,
 * proposals. Outputs: `ready()` hands out what to persist, what to send and what is committed;
 * `advance(ready)` acknowledges that the application persisted / sent / applied it.
 * Persist `hardState`, `entries` and `snapshot` of a Ready (synced) BEFORE sending its messages.
 *
 * The same core is driven by the daemon (libp2p + LevelDB) and by the simulator (`sim/`).
 */

/** Controller id: a small positive integer assigned in join order (the first controller is 1). */
export type NodeId = number;
/** 0 means "none" wherever a NodeId may be absent (votedFor, leader). */
export const NO_NODE: NodeId = 0;

export type EntryType = 'normal' | 'noop' | 'config';

export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly type: EntryType;
  /**
   * normal: the application command; config: a ConfigRecord (the change and the resulting
   * membership, see consensus/membership.ts encodeConfigRecord); noop: empty.
   * Entries are immutable values and may be shared between nodes in one process.
   */
  readonly data: Uint8Array;
}

export interface Membership {
  /** Voting controllers. */
  readonly voters: readonly NodeId[];
  /** Non-voting controllers that receive the log and catch up before they may vote. */
  readonly learners: readonly NodeId[];
}

export type ConfigChange =
  | { readonly kind: 'addLearner'; readonly node: NodeId }
  | { readonly kind: 'promote'; readonly node: NodeId }
  | { readonly kind: 'remove'; readonly node: NodeId };

export interface HardState {
  readonly term: number;
  readonly votedFor: NodeId;
  readonly commitIndex: number;
}

export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
  readonly membership: Membership;
}

export interface Snapshot {
  readonly meta: SnapshotMeta;
  /** The application state machine's serialized state at meta.index. */
  readonly data: Uint8Array;
}

interface MessageBase {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
}

export type Message =
  | (MessageBase & {
      readonly type: 'RequestVote';
      readonly lastLogIndex: number;
      readonly lastLogTerm: number;
      /** Pre-vote round: the term is the one the candidate would use; nobody changes state. */
      readonly preVote: boolean;
      /**
       * Sent after TimeoutNow (the target's pre-vote round and its election): voters ignore their
       * leader lease.
       */
      readonly transfer: boolean;
    })
  | (MessageBase & {
      readonly type: 'RequestVoteResponse';
      readonly granted: boolean;
      readonly preVote: boolean;
    })
  | (MessageBase & {
      readonly type: 'AppendEntries';
      readonly prevLogIndex: number;
      readonly prevLogTerm: number;
      readonly entries: readonly Entry[];
      readonly leaderCommit: number;
      /** Echoed back; used for read-index confirmation rounds. 0 = none. */
      readonly readContext: number;
    })
  | (MessageBase & {
      readonly type: 'AppendEntriesResponse';
      readonly success: boolean;
      /** On success: the highest index known to match the leader's log. */
      readonly matchIndex: number;
      /** On failure (fast backtracking): the follower's hint where to retry. */
      readonly conflictIndex: number;
      readonly conflictTerm: number;
      readonly readContext: number;
    })
  | (MessageBase & { readonly type: 'InstallSnapshot'; readonly snapshot: Snapshot })
  | (MessageBase & { readonly type: 'InstallSnapshotResponse'; readonly matchIndex: number })
  | (MessageBase & { readonly type: 'TimeoutNow' });

export type MessageType = Message['type'];

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader' | 'learner';

export interface ReadState {
  /** The caller's request id, as passed to readIndex(). */
  readonly requestId: number;
  /** Serve the read once the local state machine has applied this index. */
  readonly index: number;
}

export interface SoftState {
  readonly leader: NodeId;
  readonly role: Role;
}

export interface Ready {
  /** Present when term, vote or commit index changed: persist (synced) before sending. */
  readonly hardState?: HardState;
  /** Entries to append to stable storage; any stored entries at >= entries[0].index are replaced. */
  readonly entries: readonly Entry[];
  /** A snapshot received from the leader: persist it, then restore the state machine from it. */
  readonly snapshot?: Snapshot;
  /** Send after persisting the above. */
  readonly messages: readonly Message[];
  /** Committed entries to apply to the state machine, in order. */
  readonly committedEntries: readonly Entry[];
  /** Linearizable reads that are ready (see readIndex). */
  readonly readStates: readonly ReadState[];
  /** Present when leader or role changed. */
  readonly softState?: SoftState;
}

export interface RaftConfig {
  readonly id: NodeId;
  /** Ticks between heartbeats (default 1 tick = 100 ms). */
  readonly heartbeatTicks: number;
  /** Base election timeout in ticks (default 10 = 1 s). */
  readonly electionTicks: number;
  /** Pre-vote (default true). */
  readonly preVote: boolean;
  /** Check-quorum: a leader that hears from no majority within an election timeout steps down (default true). */
  readonly checkQuorum: boolean;
  /** Give leadership to the lowest-id up-to-date voter (default true). */
  readonly lowestIdLeader: boolean;
  /** Manual mode: only this node may become leader (NO_NODE = election as usual). */
  readonly pinnedLeader: NodeId;
  /** Maximum entries per AppendEntries message. */
  readonly maxEntriesPerMessage: number;
  /** Maximum un-acknowledged AppendEntries per follower. */
  readonly maxInflightAppends: number;
  /**
   * Deterministic jitter source injected by the driver: returns an integer in [0, bound).
   * The core never draws randomness itself; the daemon passes a seeded or crypto source,
   * the simulator its seeded PRNG.
   */
  readonly randomInt: (bound: number) => number;
  /**
   * TEST ONLY: deliberately broken variants, so the simulator's checkers can be shown to catch
   * real bugs. Never set in production. All default to false.
   * - skipUpToDateCheck: grant (pre)votes without Raft's log up-to-date check (§5.4.1).
   * - commitOldTermByCount: a leader commits entries of older terms by counting replicas
   *   (the Figure 8 bug).
   * - forgetVote: Ready.hardState carries votedFor = NO_NODE, so a restarted node may vote twice
   *   in one term.
   * With any fault on, the core's own "never truncate a committed entry" assertion is relaxed so
   * the violation shows up in the checkers instead of as a crash.
   */
  readonly faults?: RaftFaults;
}

/** TEST ONLY: see RaftConfig.faults. */
export interface RaftFaults {
  readonly skipUpToDateCheck?: boolean;
  readonly commitOldTermByCount?: boolean;
  readonly forgetVote?: boolean;
}

/** What the core is started from (what RaftStorage.load() returned). */
export interface RaftInitialState {
  readonly hardState: HardState;
  /**
   * The latest snapshot. Pass the whole Snapshot (with data): a leader needs the data to send
   * InstallSnapshot to a lagging follower after a restart. A bare SnapshotMeta is still accepted
   * for compatibility, but then the node cannot send InstallSnapshot until the application calls
   * compact() again (a follower that needs the compacted prefix waits until then).
   */
  readonly snapshot?: Snapshot | SnapshotMeta;
  /** Entries after the snapshot, contiguous. */
  readonly entries: readonly Entry[];
  /** Membership when there is no snapshot and no config entry yet (a brand-new cell). */
  readonly initialMembership: Membership;
  /**
   * Highest index already applied by a durable state machine (default: the snapshot index, i.e.
   * committed entries after the snapshot are handed out again in committedEntries).
   */
  readonly applied?: number;
}

/** Persistence of term, vote, log and snapshot. Writes are synced before they resolve. */
export interface RaftStorage {
  load(): Promise<{ hardState: HardState; snapshot?: Snapshot; entries: Entry[] }>;
  /**
   * Persist a Ready's hardState/entries/snapshot atomically (one synced batch). Order of effect:
   * a snapshot replaces the stored snapshot AND drops every stored entry; then entries are written
   * (dropping stored entries at >= entries[0].index); then the hard state.
   */
  save(update: { hardState?: HardState; entries: readonly Entry[]; snapshot?: Snapshot }): Promise<void>;
  /** Replace the log prefix up to snapshot.meta.index with the snapshot (log compaction). */
  compact(snapshot: Snapshot): Promise<void>;
  close(): Promise<void>;
}

export interface RaftStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly leader: NodeId;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly lastIndex: number;
  readonly lastTerm: number;
  readonly membership: Membership;
  /** Leader only: per follower, the highest index known replicated. */
  readonly progress: ReadonlyMap<NodeId, { readonly matchIndex: number; readonly nextIndex: number }>;
  /** Leader only: a leadership transfer in progress, or NO_NODE. */
  readonly transferee: NodeId;
  /** The pinned leader in manual mode, or NO_NODE. */
  readonly pinnedLeader: NodeId;
  /** Index/term of the latest snapshot (0/0 = none). */
  readonly snapshotIndex: number;
  readonly snapshotTerm: number;
}

export type ProposeResult =
  | { readonly ok: true; readonly index: number; readonly term: number }
  | { readonly ok: false; readonly reason: ProposeRefusal; readonly leader: NodeId };

/**
 * notLeader: retry at `leader` (NO_NODE = unknown). transferring: a leadership transfer is in
 * progress (retry shortly). configChangePending: another config change is not committed yet, or
 * the new leader has not committed its first entry. invalidConfigChange: the change does not
 * apply to the current membership (e.g. promote of a non-learner). learnerBehind: promote refused
 * until the learner is within CATCH_UP_GAP_ENTRIES_MAX of the leader's last index. overloaded:
 * too many uncommitted entries (UNCOMMITTED_ENTRIES_MAX).
 */
export type ProposeRefusal =
  | 'notLeader'
  | 'transferring'
  | 'configChangePending'
  | 'invalidConfigChange'
  | 'learnerBehind'
  | 'overloaded';

/**
 * The pure consensus core. Created by `createRaft(config, initialState)` in consensus/raft.ts.
 * Every method is synchronous and deterministic given the same inputs and randomInt results.
 */
export interface RaftNode {
  readonly id: NodeId;
  /** Advance logical time by one tick (the driver calls this every heartbeat interval / heartbeatTicks). */
  tick(): void;
  /** Deliver a message from another controller. Messages for another node or stale ones are dropped. */
  step(message: Message): void;
  /** Leader only: append an application command. */
  propose(data: Uint8Array): ProposeResult;
  /** Leader only: membership change (one at a time; takes effect when appended, Raft single-server change). */
  proposeConfigChange(change: ConfigChange): ProposeResult;
  /**
   * Leader only: hand leadership to `to` (catch it up first, then TimeoutNow). Returns false if
   * refused (not leader, `to` is self or not a voter, or not the pinned node in manual mode).
   */
  transferLeadership(to: NodeId): boolean;
  /**
   * Ask for a linearizable read; a ReadState with this requestId appears in a later Ready.
   * Returns false (and no ReadState will come) on a non-leader or when too many reads are
   * pending: the driver retries at the leader. Pending reads are dropped if leadership is lost.
   */
  readIndex(requestId: number): boolean;
  /**
   * Start an election now (as if the election timeout elapsed; pre-vote first when enabled).
   * Ignored on a leader, a non-voter, or a node that is not the pinned leader in manual mode.
   */
  campaign(): void;
  /** The SnapshotMeta (term, membership) for an application snapshot at index (<= applied). */
  snapshotMeta(index: number): SnapshotMeta;
  /** True when ready() has something. */
  hasReady(): boolean;
  /** What to persist, send and apply. Call advance() with it once done. */
  ready(): Ready;
  advance(ready: Ready): void;
  /** The application took a snapshot at snapshot.meta.index (<= applied): compact the log. */
  compact(snapshot: Snapshot): void;
  /** Manual mode: pin the leader (NO_NODE returns to elections). */
  setPinnedLeader(node: NodeId): void;
  status(): RaftStatus;
}
