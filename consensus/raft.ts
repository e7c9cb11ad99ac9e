/**
 * The consensus core of zhsm: lowest-id Raft as a pure state machine (etcd-io/raft style).
 *
 * No clock reads, no randomness (election jitter comes from config.randomInt), no awaits, no I/O.
 * Inputs: tick(), step(message), propose*(), transferLeadership(), readIndex(), campaign().
 * Outputs: ready() hands out what to persist (hardState, entries, snapshot; synced, BEFORE the
 * messages of the same Ready are sent), what to send and what is committed; advance(ready)
 * acknowledges it. Call ready()/advance() strictly alternately; step/tick/propose may be called
 * in between.
 *
 * Roles are step/tick handler pairs (follower, learner, preCandidate, candidate, leader);
 * illegal transitions throw (AssertionError: a programmer error).
 *
 * Protocol summary:
 * - Raft terms, RequestVote, AppendEntries with fast backtracking (conflictIndex/conflictTerm),
 *   commit by majority only for entries of the leader's term (a new leader appends a noop).
 * - Pre-vote (a partitioned or restarted node cannot bump the term of a healthy cell) and
 *   check-quorum (a leader that hears from no majority within an election timeout steps down;
 *   a node that heard from a leader within the election timeout ignores (pre)votes — the
 *   leader lease — unless the RequestVote has transfer=true).
 * - Lowest id: among voters whose log is up to date, the lowest id ends up leader.
 *   (a) Election timeouts are staggered by rank: timeout = electionTicks + 1 + rank * stagger +
 *       randomInt(stagger), stagger = max(1, electionTicks / 5), rank = number of voters with a
 *       lower id, not counting the current leader (which is presumably the one that died). With
 *       the k lowest ids dead an election starts within electionTicks + 1 + (k + 1) * stagger
 *       ticks: linear in k. Raft's up-to-date check always dominates (a stale low id loses its
 *       pre-vote and the next rank wins).
 *   (b) A leader whose lowest-id responsive voter v < self has been caught up (within
 *       CATCH_UP_GAP_ENTRIES_MAX) and responsive for LOWEST_ID_HANDOFF_ELECTIONS election
 *       timeouts transfers leadership to v (hysteresis: no flapping; one handoff). The transfer
 *       target first runs a pre-vote round with transfer=true, so a target reachable only by a
 *       minority never bumps the term; a failed handoff to v doubles v's required streak.
 *   (c) Manual mode (pinnedLeader != NO_NODE): only the pinned node campaigns and voters grant
 *       votes only to it; a leader transfers to the pinned node once it is caught up. If the
 *       pinned node is down or stale there is no new leader: that is what manual means.
 * - Snapshots: compact() after the application snapshotted; a follower whose needed prefix is
 *   gone receives InstallSnapshot (the whole snapshot in one message).
 * - Membership: single-server changes (addLearner / promote / remove) via config entries that
 *   take effect when appended; one pending change at a time and only after the leader committed
 *   an entry of its term; promote is refused until the learner is within
 *   CATCH_UP_GAP_ENTRIES_MAX of the leader's last index. Learners receive the log, never vote
 *   and never campaign. A leader that removes itself keeps leading until the removal commits,
 *   then steps down.
 * - Leadership transfer: catch the target up, then TimeoutNow; proposals are refused with
 *   'transferring'; aborted after an election timeout.
 * - Linearizable reads by ReadIndex (no clock-based lease): the leader records its commit index,
 *   confirms leadership with a heartbeat round carrying readContext, then emits a ReadState
 *   (serve once applied >= index). A leader that has not committed an entry of its term defers
 *   reads until it has. readIndex() on a non-leader returns false and yields nothing: the driver
 *   retries at the leader. Pending reads are dropped when leadership is lost (the driver times
 *   out and retries).
 *
 * Every queue has a named maximum (see the exported *_MAX constants).
 */
import { AssertionError, assert } from '../node/common/errors.ts';
import { RaftLog } from './log.ts';
import {
  applyConfigChange,
  configChangeProblem,
  decodeConfigRecord,
  encodeConfigRecord,
  membershipEquals,
  quorumSize,
  sortedMembership,
  validateMembership,
} from './membership.ts';
import {
  type ConfigChange,
  type Entry,
  type EntryType,
  type HardState,
  type Membership,
  type Message,
  NO_NODE,
  type NodeId,
  type ProposeResult,
  type RaftConfig,
  type RaftFaults,
  type RaftInitialState,
  type RaftNode,
  type RaftStatus,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SnapshotMeta,
  type SoftState,
} from './types.ts';

/** Promote / lowest-id handoff: a follower counts as caught up within this many entries of the leader. */
export const CATCH_UP_GAP_ENTRIES_MAX = 16;
/** A leader refuses proposals ('overloaded') beyond this many uncommitted entries. */
export const UNCOMMITTED_ENTRIES_MAX = 10_000;
/** Outgoing messages queued between two ready() calls; beyond this they are dropped (Raft tolerates loss). */
export const MESSAGES_QUEUED_MAX = 10_000;
/** Read requests pending on a leader (waiting for a heartbeat round or the first commit). */
export const READ_REQUESTS_PENDING_MAX = 1_024;
/** Committed entries handed out per Ready (the rest come in the next one). */
export const COMMITTED_ENTRIES_PER_READY_MAX = 1_024;
/** Lowest-id hysteresis: election timeouts a lower-id follower must be caught up before a handoff. */
export const LOWEST_ID_HANDOFF_ELECTIONS = 2;
/** Replicate state: appends unacknowledged for this many heartbeat intervals count as lost. */
export const APPEND_LOST_HEARTBEATS = 2;
/** Cap on the exponential backoff of failed handoffs to one node (2^this). */
export const HANDOFF_BACKOFF_EXPONENT_MAX = 5;

/** Defaults like etcd: 1 tick = 100 ms, heartbeat 1 tick, election timeout 10 ticks (1 s). */
export function defaultRaftConfig(id: NodeId, randomInt: (bound: number) => number): RaftConfig {
  return {
    id,
    heartbeatTicks: 1,
    electionTicks: 10,
    preVote: true,
    checkQuorum: true,
    lowestIdLeader: true,
    pinnedLeader: NO_NODE,
    maxEntriesPerMessage: 64,
    maxInflightAppends: 16,
    randomInt,
  };
}

export function createRaft(config: RaftConfig, initial: RaftInitialState): RaftNode {
  return new RaftCore(config, initial);
}

type ProgressState = 'probe' | 'replicate' | 'snapshot';

interface Progress {
  match: number;
  next: number;
  state: ProgressState;
  /** probe: an append is outstanding (paused until a response or the next heartbeat). */
  probeSent: boolean;
  /** replicate: last index of every un-acknowledged append, oldest first (<= maxInflightAppends). */
  inflight: number[];
  /** snapshot: index of the snapshot sent and ticks since it was sent. */
  pendingSnapshotIndex: number;
  snapshotElapsed: number;
  /** leaderTicks when we last heard from it (check-quorum, lowest-id responsiveness). */
  lastHeardTick: number;
  /** leaderTicks when match last advanced (or replication (re)started): detects lost appends. */
  lastProgressTick: number;
  /** Highest commit index this follower can have learned from what we sent. */
  commitSent: number;
  /** Consecutive leader ticks it was caught up and responsive (lowest-id hysteresis). */
  healthyTicks: number;
  /** TimeoutNow already sent for the current transfer. */
  timeoutNowSent: boolean;
}

interface PendingRead {
  readonly requestId: number;
  readonly index: number;
  readonly context: number;
  readonly acks: Set<NodeId>;
}

interface ConfigAt {
  readonly index: number;
  readonly membership: Membership;
}

interface RoleHandlers {
  tick(): void;
  step(message: Message): void;
}

const NO_FAULTS: RaftFaults = {};

function descending(a: number, b: number): number {
  return b - a;
}

function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

class RaftCore implements RaftNode {
  readonly id: NodeId;
  private readonly config: RaftConfig;
  private readonly faults: RaftFaults;

  private term: number;
  private votedFor: NodeId;
  private leader: NodeId = NO_NODE;
  private role: Role = 'follower';
  private readonly log: RaftLog;

  private baseMembership: Membership;
  /** The latest config entry's membership, else baseMembership (cached: read on every message). */
  private currentMembership: Membership;
  private readonly matchScratch: number[] = [];
  private configs: ConfigAt[] = [];
  private pinnedLeader: NodeId;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private votes = new Map<NodeId, boolean>();
  /** Follower running a transfer pre-vote after TimeoutNow (undefined = none). */
  private transferVotes: Map<NodeId, boolean> | undefined;
  private transferVoteElapsed = 0;

  // Leader state.
  private progress = new Map<NodeId, Progress>();
  private leaderTicks = 0;
  private transferee: NodeId = NO_NODE;
  private transferElapsed = 0;
  private pendingReads: PendingRead[] = [];
  private deferredReads: number[] = [];
  private readContextSequence = 0;
  /** A read confirmation round is due: ready() broadcasts it (so concurrent reads share one). */
  private readRoundQueued = false;

  // Lowest-id handoff bookkeeping (survives role changes; not persisted).
  private handoffTarget: NodeId = NO_NODE;
  private readonly handoffFailures = new Map<NodeId, number>();

  // Output queues.
  private messages: Message[] = [];
  private readStates: ReadState[] = [];
  private pendingSnapshot: Snapshot | undefined;
  private latestSnapshot: Snapshot | undefined;
  private droppedMessageCount = 0;

  private persistedHardState: HardState;
  /** The real hard state handed out by the outstanding ready() (differs from it under forgetVote). */
  private readyHardState: HardState | undefined;
  private reportedSoftState: SoftState;
  private readyOutstanding = false;

  private readonly handlers: Readonly<Record<Role, RoleHandlers>>;

  constructor(config: RaftConfig, initial: RaftInitialState) {
    assert(Number.isInteger(config.id) && config.id > 0, `invalid node id ${config.id}`);
    assert(
      Number.isInteger(config.heartbeatTicks) && config.heartbeatTicks >= 1,
      'heartbeatTicks must be >= 1',
    );
    assert(
      Number.isInteger(config.electionTicks) && config.electionTicks > config.heartbeatTicks,
      'electionTicks must be an integer > heartbeatTicks',
    );
    assert(
      Number.isInteger(config.maxEntriesPerMessage) && config.maxEntriesPerMessage >= 1,
      'maxEntriesPerMessage must be >= 1',
    );
    assert(
      Number.isInteger(config.maxInflightAppends) && config.maxInflightAppends >= 1,
      'maxInflightAppends must be >= 1',
    );
    assert(typeof config.randomInt === 'function', 'randomInt must be a function');
    this.id = config.id;
    this.config = config;
    this.faults = config.faults ?? NO_FAULTS;
    this.pinnedLeader = config.pinnedLeader;

    const hardState = initial.hardState;
    assert(isNonNegativeInteger(hardState.term), 'invalid hard state term');
    assert(isNonNegativeInteger(hardState.votedFor), 'invalid hard state vote');
    assert(isNonNegativeInteger(hardState.commitIndex), 'invalid hard state commit index');
    this.term = hardState.term;
    this.votedFor = hardState.votedFor;

    const snapshotOrMeta = initial.snapshot;
    let snapshotData: Snapshot | undefined;
    let snapshot: { meta: SnapshotMeta } | undefined;
    if (snapshotOrMeta !== undefined && 'meta' in snapshotOrMeta) {
      snapshotData = snapshotOrMeta;
      snapshot = snapshotOrMeta;
    } else if (snapshotOrMeta !== undefined) {
      snapshot = { meta: snapshotOrMeta };
    }
    validateMembership(initial.initialMembership);
    this.baseMembership = sortedMembership(
      initial.initialMembership.voters,
      initial.initialMembership.learners,
    );
    if (snapshot !== undefined) {
      validateMembership(snapshot.meta.membership);
      this.baseMembership = sortedMembership(
        snapshot.meta.membership.voters,
        snapshot.meta.membership.learners,
      );
      this.latestSnapshot = snapshotData;
    }
    this.currentMembership = this.baseMembership;
    this.log = new RaftLog({
      snapshotIndex: snapshot?.meta.index ?? 0,
      snapshotTerm: snapshot?.meta.term ?? 0,
      entries: initial.entries,
      committed: hardState.commitIndex,
      applied: initial.applied ?? 0,
    });
    assert(this.log.lastTerm() <= this.term, 'log has an entry of a term above the hard state term');
    for (const entry of initial.entries) this.recordConfigEntry(entry);

    this.persistedHardState = { term: this.term, votedFor: this.votedFor, commitIndex: this.log.committed };
    this.role = this.isLearner() ? 'learner' : 'follower';
    this.reportedSoftState = { leader: NO_NODE, role: this.role };
    this.handlers = {
      follower: { tick: () => this.tickElection(), step: (m) => this.stepFollower(m) },
      learner: { tick: () => this.tickElection(), step: (m) => this.stepFollower(m) },
      preCandidate: { tick: () => this.tickElection(), step: (m) => this.stepCandidate(m) },
      candidate: { tick: () => this.tickElection(), step: (m) => this.stepCandidate(m) },
      leader: { tick: () => this.tickLeader(), step: (m) => this.stepLeader(m) },
    };
    this.resetRandomizedElectionTimeout();
  }

  // ---------------------------------------------------------------------------------------------
  // Membership helpers

  private membership(): Membership {
    return this.currentMembership;
  }

  /** Call after every change of configs or baseMembership. */
  private refreshMembership(): void {
    const last = this.configs[this.configs.length - 1];
    this.currentMembership = last === undefined ? this.baseMembership : last.membership;
  }

  private membershipAt(index: number): Membership {
    for (let i = this.configs.length - 1; i >= 0; i--) {
      const config = this.configs[i]!;
      if (config.index <= index) return config.membership;
    }
    return this.baseMembership;
  }

  private isVoter(node: NodeId = this.id): boolean {
    return this.membership().voters.includes(node);
  }

  private isLearner(node: NodeId = this.id): boolean {
    return this.membership().learners.includes(node);
  }

  /** May this node start an election? */
  private promotable(): boolean {
    return this.isVoter() && (this.pinnedLeader === NO_NODE || this.pinnedLeader === this.id);
  }

  private recordConfigEntry(entry: Entry): boolean {
    if (entry.type !== 'config') return false;
    const record = decodeConfigRecord(entry.data);
    this.configs.push({ index: entry.index, membership: record.membership });
    this.refreshMembership();
    return true;
  }

  private configChangePending(): boolean {
    const last = this.configs[this.configs.length - 1];
    return last !== undefined && last.index > this.log.committed;
  }

  private onMembershipChanged(): void {
    const membership = this.membership();
    if (this.role === 'leader') {
      const members = new Set([...membership.voters, ...membership.learners]);
      for (const node of members) {
        if (node !== this.id && !this.progress.has(node)) this.progress.set(node, this.newProgress());
      }
      for (const node of [...this.progress.keys()]) {
        if (!members.has(node)) this.progress.delete(node);
      }
      if (this.transferee !== NO_NODE && !membership.voters.includes(this.transferee)) this.abortTransfer();
      this.maybeCommit();
      return;
    }
    if (this.role === 'follower' || this.role === 'learner') {
      this.role = this.isLearner() ? 'learner' : 'follower';
    } else if (!this.isVoter()) {
      // A (pre)candidate whose promotion was truncated away.
      this.becomeFollower(this.term, this.leader);
    }
    this.resetRandomizedElectionTimeout();
  }

  // ---------------------------------------------------------------------------------------------
  // Role transitions (illegal ones throw)

  private becomeFollower(term: number, leader: NodeId): void {
    assert(term >= this.term, `term must not go backwards (${term} < ${this.term})`);
    const wasLeader = this.role === 'leader';
    if (term !== this.term) {
      this.term = term;
      this.votedFor = NO_NODE;
    }
    this.role = this.isLearner() ? 'learner' : 'follower';
    this.setLeader(leader);
    this.electionElapsed = 0;
    this.votes = new Map();
    this.transferVotes = undefined;
    if (wasLeader) this.clearLeaderState();
    this.resetRandomizedElectionTimeout();
  }

  private becomePreCandidate(): void {
    this.assertRole(['follower', 'preCandidate', 'candidate'], 'preCandidate');
    assert(this.promotable(), 'a non-promotable node cannot become preCandidate');
    this.role = 'preCandidate';
    this.setLeader(NO_NODE);
    this.votes = new Map();
    this.transferVotes = undefined;
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
  }

  private becomeCandidate(): void {
    this.assertRole(['follower', 'preCandidate', 'candidate'], 'candidate');
    assert(this.isVoter(), 'a non-voter cannot become candidate');
    this.role = 'candidate';
    this.term += 1;
    this.votedFor = this.id;
    this.setLeader(NO_NODE);
    this.votes = new Map();
    this.transferVotes = undefined;
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
  }

  private becomeLeader(): void {
    this.assertRole(['candidate'], 'leader');
    this.role = 'leader';
    this.setLeader(this.id);
    this.votes = new Map();
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.leaderTicks = 0;
    this.transferee = NO_NODE;
    this.transferElapsed = 0;
    this.progress = new Map();
    const membership = this.membership();
    for (const node of [...membership.voters, ...membership.learners]) {
      if (node !== this.id) this.progress.set(node, this.newProgress());
    }
    if (this.handoffTarget !== NO_NODE) {
      // We lead again although we handed off to handoffTarget: that handoff failed.
      const failures = this.handoffFailures.get(this.handoffTarget) ?? 0;
      this.handoffFailures.set(this.handoffTarget, failures + 1);
      this.handoffTarget = NO_NODE;
    }
    // Raft §8: commit a noop of the new term so earlier entries commit and reads can be served.
    this.appendEntry('noop', new Uint8Array(0));
    this.broadcastAppend(true);
  }

  private assertRole(allowed: readonly Role[], target: Role): void {
    if (!allowed.includes(this.role)) {
      throw new AssertionError(`illegal transition ${this.role} -> ${target} (node ${this.id})`);
    }
  }

  private setLeader(leader: NodeId): void {
    if (leader === this.leader) return;
    this.leader = leader;
    if (leader !== NO_NODE && leader === this.handoffTarget) {
      this.handoffFailures.delete(leader);
      this.handoffTarget = NO_NODE;
    }
  }

  private clearLeaderState(): void {
    this.progress = new Map();
    this.transferee = NO_NODE;
    this.transferElapsed = 0;
    this.pendingReads = [];
    this.deferredReads = [];
    this.readRoundQueued = false;
  }

  private newProgress(): Progress {
    return {
      match: 0,
      next: this.log.lastIndex() + 1,
      state: 'probe',
      probeSent: false,
      inflight: [],
      pendingSnapshotIndex: 0,
      snapshotElapsed: 0,
      lastHeardTick: 0,
      lastProgressTick: 0,
      commitSent: 0,
      healthyTicks: 0,
      timeoutNowSent: false,
    };
  }

  private resetRandomizedElectionTimeout(): void {
    const election = this.config.electionTicks;
    const stagger = Math.max(1, Math.floor(election / 5));
    if (this.pinnedLeader !== NO_NODE) {
      this.randomizedElectionTimeout = election + 1 + this.draw(stagger);
    } else if (this.config.lowestIdLeader) {
      const rank = this.membership().voters.filter((node) => node < this.id && node !== this.leader).length;
      this.randomizedElectionTimeout = election + 1 + rank * stagger + this.draw(stagger);
    } else {
      this.randomizedElectionTimeout = election + this.draw(election);
    }
  }

  private draw(bound: number): number {
    const value = this.config.randomInt(bound);
    assert(Number.isInteger(value) && value >= 0 && value < bound, `randomInt(${bound}) returned ${value}`);
    return value;
  }

  // ---------------------------------------------------------------------------------------------
  // Public API

  tick(): void {
    this.handlers[this.role].tick();
  }

  step(message: Message): void {
    if (!this.isWellFormed(message)) return;
    if (message.to !== this.id || message.from === this.id) return;
    if (message.term > this.term) {
      if (message.type === 'RequestVote') {
        const inLease =
          this.config.checkQuorum &&
          this.leader !== NO_NODE &&
          this.electionElapsed < this.config.electionTicks;
        // Leader lease: a node that hears from a live leader ignores (pre)votes (not transfers).
        if (inLease && !message.transfer) return;
      }
      if (message.type === 'RequestVote' && message.preVote) {
        // A pre-vote never changes our term.
      } else if (message.type === 'RequestVoteResponse' && message.preVote && message.granted) {
        // A granted pre-vote echoes the future term; handled by the (pre)candidate.
      } else {
        const fromLeader =
          message.type === 'AppendEntries' ||
          message.type === 'InstallSnapshot' ||
          message.type === 'TimeoutNow';
        this.becomeFollower(message.term, fromLeader ? message.from : NO_NODE);
      }
    } else if (message.term < this.term) {
      if ((this.config.checkQuorum || this.config.preVote) && message.type === 'AppendEntries') {
        // Tell a stale leader (e.g. one that was partitioned) about the newer term.
        this.send({
          type: 'AppendEntriesResponse',
          from: this.id,
          to: message.from,
          term: this.term,
          success: false,
          matchIndex: 0,
          conflictIndex: 0,
          conflictTerm: 0,
          readContext: 0,
        });
      } else if (message.type === 'RequestVote' && message.preVote) {
        this.send({
          type: 'RequestVoteResponse',
          from: this.id,
          to: message.from,
          term: this.term,
          granted: false,
          preVote: true,
        });
      }
      return;
    }
    if (message.type === 'RequestVote') {
      this.handleVoteRequest(message);
      return;
    }
    this.handlers[this.role].step(message);
  }

  propose(data: Uint8Array): ProposeResult {
    assert(data instanceof Uint8Array, 'proposal data must be a Uint8Array');
    const refusal = this.proposalRefusal();
    if (refusal !== undefined) return refusal;
    const entry = this.appendEntry('normal', data);
    this.broadcastAppend(false);
    return { ok: true, index: entry.index, term: entry.term };
  }

  proposeConfigChange(change: ConfigChange): ProposeResult {
    const refusal = this.proposalRefusal();
    if (refusal !== undefined) return refusal;
    if (this.log.term(this.log.committed) !== this.term || this.configChangePending()) {
      return { ok: false, reason: 'configChangePending', leader: this.leader };
    }
    const current = this.membership();
    if (configChangeProblem(current, change) !== undefined) {
      return { ok: false, reason: 'invalidConfigChange', leader: this.leader };
    }
    if (change.kind === 'promote') {
      const progress = this.progress.get(change.node);
      if (progress === undefined || progress.match + CATCH_UP_GAP_ENTRIES_MAX < this.log.lastIndex()) {
        return { ok: false, reason: 'learnerBehind', leader: this.leader };
      }
    }
    const membership = applyConfigChange(current, change);
    const entry = this.appendEntry('config', encodeConfigRecord({ change, membership }));
    this.broadcastAppend(false);
    return { ok: true, index: entry.index, term: entry.term };
  }

  transferLeadership(to: NodeId): boolean {
    if (this.role !== 'leader') return false;
    if (to === this.id || !this.isVoter(to)) return false;
    if (this.pinnedLeader !== NO_NODE && to !== this.pinnedLeader) return false;
    if (this.transferee === to) return true;
    if (this.transferee !== NO_NODE) this.abortTransfer();
    const progress = this.progress.get(to);
    assert(progress !== undefined, `no progress for voter ${to}`);
    this.transferee = to;
    this.transferElapsed = 0;
    progress.timeoutNowSent = false;
    if (progress.match === this.log.lastIndex()) {
      this.sendTimeoutNow(to, progress);
    } else {
      // Catch the target up actively (appends in flight to it may have been lost).
      if (progress.state === 'replicate') this.becomeProbe(progress, progress.match + 1);
      this.sendAppend(to, false);
    }
    return true;
  }

  readIndex(requestId: number): boolean {
    assert(Number.isSafeInteger(requestId), 'requestId must be a safe integer');
    if (this.role !== 'leader') return false;
    if (this.pendingReads.length + this.deferredReads.length >= READ_REQUESTS_PENDING_MAX) return false;
    if (this.log.term(this.log.committed) !== this.term) {
      this.deferredReads.push(requestId);
      return true;
    }
    this.startReads([requestId]);
    return true;
  }

  campaign(): void {
    if (this.role === 'leader' || !this.promotable()) return;
    this.startCampaign(false);
  }

  hasReady(): boolean {
    if (this.readRoundQueued) return true;
    if (this.messages.length > 0 || this.readStates.length > 0 || this.pendingSnapshot !== undefined)
      return true;
    if (this.log.stableIndex < this.log.lastIndex()) return true;
    if (this.hardStateChanged() || this.softStateChanged()) return true;
    return this.log.committed > Math.max(this.log.applied, this.log.snapshotIndex);
  }

  ready(): Ready {
    assert(!this.readyOutstanding, 'ready() called again before advance()');
    this.readyOutstanding = true;
    if (this.readRoundQueued) {
      this.readRoundQueued = false;
      if (this.role === 'leader') this.broadcastHeartbeat();
    }
    const applyFrom = Math.max(this.log.applied, this.log.snapshotIndex) + 1;
    const committedEntries =
      this.log.committed >= applyFrom
        ? this.log.slice(applyFrom, this.log.committed, COMMITTED_ENTRIES_PER_READY_MAX)
        : [];
    const ready: {
      -readonly [K in keyof Ready]: Ready[K];
    } = {
      entries: this.log.unstableEntries(),
      messages: this.messages,
      committedEntries,
      readStates: this.readStates,
    };
    if (this.hardStateChanged()) {
      ready.hardState = this.hardStateToPersist();
      this.readyHardState = { term: this.term, votedFor: this.votedFor, commitIndex: this.log.committed };
    }
    if (this.softStateChanged()) ready.softState = { leader: this.leader, role: this.role };
    if (this.pendingSnapshot !== undefined) ready.snapshot = this.pendingSnapshot;
    this.messages = [];
    this.readStates = [];
    return ready;
  }

  advance(ready: Ready): void {
    assert(this.readyOutstanding, 'advance() without a ready()');
    this.readyOutstanding = false;
    if (ready.hardState !== undefined && this.readyHardState !== undefined) {
      this.persistedHardState = this.readyHardState;
      this.readyHardState = undefined;
    }
    if (ready.softState !== undefined) this.reportedSoftState = ready.softState;
    if (ready.snapshot !== undefined) {
      if (this.pendingSnapshot === ready.snapshot) this.pendingSnapshot = undefined;
      this.log.applied = Math.max(this.log.applied, ready.snapshot.meta.index);
    }
    const lastEntry = ready.entries[ready.entries.length - 1];
    if (lastEntry !== undefined) this.log.stableTo(lastEntry.index, lastEntry.term);
    const lastCommitted = ready.committedEntries[ready.committedEntries.length - 1];
    if (lastCommitted !== undefined) {
      assert(lastCommitted.index <= this.log.committed, 'applied beyond the commit index');
      this.log.applied = Math.max(this.log.applied, lastCommitted.index);
    }
  }

  compact(snapshot: Snapshot): void {
    const index = snapshot.meta.index;
    assert(index <= this.log.applied, `compact at ${index} beyond applied ${this.log.applied}`);
    if (index <= this.log.snapshotIndex) return;
    assert(this.log.term(index) === snapshot.meta.term, `snapshot term mismatch at ${index}`);
    assert(
      membershipEquals(snapshot.meta.membership, this.membershipAt(index)),
      `snapshot membership differs from the membership at ${index}`,
    );
    this.baseMembership = this.membershipAt(index);
    this.configs = this.configs.filter((config) => config.index > index);
    this.refreshMembership();
    this.log.compactTo(index);
    this.latestSnapshot = snapshot;
  }

  snapshotMeta(index: number): SnapshotMeta {
    assert(index <= this.log.applied, `snapshot at ${index} beyond applied ${this.log.applied}`);
    const term = this.log.term(index);
    assert(term !== undefined, `no term known at ${index}`);
    return { index, term, membership: this.membershipAt(index) };
  }

  setPinnedLeader(node: NodeId): void {
    assert(Number.isInteger(node) && node >= 0, `invalid pinned leader ${node}`);
    this.pinnedLeader = node;
    if (
      this.role === 'leader' &&
      this.transferee !== NO_NODE &&
      node !== NO_NODE &&
      this.transferee !== node
    ) {
      this.abortTransfer();
    }
    this.resetRandomizedElectionTimeout();
  }

  status(): RaftStatus {
    const progress = new Map<NodeId, { matchIndex: number; nextIndex: number }>();
    if (this.role === 'leader') {
      progress.set(this.id, { matchIndex: this.log.lastIndex(), nextIndex: this.log.lastIndex() + 1 });
      for (const [node, pr] of this.progress)
        progress.set(node, { matchIndex: pr.match, nextIndex: pr.next });
    }
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      leader: this.leader,
      commitIndex: this.log.committed,
      appliedIndex: this.log.applied,
      lastIndex: this.log.lastIndex(),
      lastTerm: this.log.lastTerm(),
      membership: this.membership(),
      progress,
      transferee: this.transferee,
      pinnedLeader: this.pinnedLeader,
      snapshotIndex: this.log.snapshotIndex,
      snapshotTerm: this.log.snapshotTerm,
    };
  }

  /** Messages dropped because the outgoing queue was full (MESSAGES_QUEUED_MAX). */
  droppedMessages(): number {
    return this.droppedMessageCount;
  }

  // ---------------------------------------------------------------------------------------------
  // Ready helpers

  private hardStateToPersist(): HardState {
    return {
      term: this.term,
      votedFor: this.faults.forgetVote ? NO_NODE : this.votedFor,
      commitIndex: this.log.committed,
    };
  }

  private hardStateChanged(): boolean {
    const persisted = this.persistedHardState;
    return (
      persisted.term !== this.term ||
      persisted.votedFor !== this.votedFor ||
      persisted.commitIndex !== this.log.committed
    );
  }

  private softStateChanged(): boolean {
    return this.reportedSoftState.leader !== this.leader || this.reportedSoftState.role !== this.role;
  }

  private send(message: Message): void {
    assert(message.to !== this.id, 'a node never sends to itself');
    if (this.messages.length >= MESSAGES_QUEUED_MAX) {
      this.droppedMessageCount++;
      return;
    }
    this.messages.push(message);
  }

  /**
   * Messages come from the network: a malformed one is dropped (an operating error), never
   * allowed to trip an assertion (which would crash the node).
   */
  private isWellFormed(message: Message): boolean {
    if (typeof message !== 'object' || message === null) return false;
    if (!isNonNegativeInteger(message.term) || !isNonNegativeInteger(message.to)) return false;
    if (!isNonNegativeInteger(message.from) || message.from === NO_NODE) return false;
    switch (message.type) {
      case 'RequestVote':
        return isNonNegativeInteger(message.lastLogIndex) && isNonNegativeInteger(message.lastLogTerm);
      case 'RequestVoteResponse':
        return typeof message.granted === 'boolean';
      case 'AppendEntries': {
        if (!isNonNegativeInteger(message.prevLogIndex) || !isNonNegativeInteger(message.prevLogTerm))
          return false;
        if (!isNonNegativeInteger(message.leaderCommit) || !isNonNegativeInteger(message.readContext))
          return false;
        if (!Array.isArray(message.entries)) return false;
        let previousTerm = message.prevLogTerm;
        for (let i = 0; i < message.entries.length; i++) {
          const entry = message.entries[i]!;
          if (entry.index !== message.prevLogIndex + 1 + i) return false;
          if (!isNonNegativeInteger(entry.term) || entry.term < previousTerm || entry.term > message.term)
            return false;
          if (!(entry.data instanceof Uint8Array)) return false;
          if (entry.type === 'config') {
            try {
              decodeConfigRecord(entry.data);
            } catch {
              return false;
            }
          } else if (entry.type !== 'normal' && entry.type !== 'noop') {
            return false;
          }
          previousTerm = entry.term;
        }
        return true;
      }
      case 'AppendEntriesResponse':
        return (
          isNonNegativeInteger(message.matchIndex) &&
          isNonNegativeInteger(message.conflictIndex) &&
          isNonNegativeInteger(message.conflictTerm) &&
          isNonNegativeInteger(message.readContext)
        );
      case 'InstallSnapshot': {
        const meta = message.snapshot?.meta;
        if (meta === undefined || !isNonNegativeInteger(meta.index) || !isNonNegativeInteger(meta.term))
          return false;
        if (meta.term > message.term || !(message.snapshot.data instanceof Uint8Array)) return false;
        try {
          validateMembership(meta.membership);
        } catch {
          return false;
        }
        return true;
      }
      case 'InstallSnapshotResponse':
        return isNonNegativeInteger(message.matchIndex);
      case 'TimeoutNow':
        return true;
      default:
        return false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Elections

  private tickElection(): void {
    this.electionElapsed++;
    if (this.transferVotes !== undefined) {
      this.transferVoteElapsed++;
      if (this.transferVoteElapsed >= this.config.electionTicks) this.transferVotes = undefined;
    }
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.startCampaign(false);
    }
  }

  private startCampaign(transfer: boolean): void {
    if (this.config.preVote && !transfer) this.startPreVote();
    else this.startElection(transfer);
  }

  private startPreVote(): void {
    this.becomePreCandidate();
    this.votes.set(this.id, true);
    if (this.tally().granted >= quorumSize(this.membership().voters.length)) {
      this.startElection(false);
      return;
    }
    this.sendVoteRequests(this.term + 1, true, false);
  }

  private startElection(transfer: boolean): void {
    this.becomeCandidate();
    this.votes.set(this.id, true);
    if (this.tally().granted >= quorumSize(this.membership().voters.length)) {
      this.becomeLeader();
      return;
    }
    this.sendVoteRequests(this.term, false, transfer);
  }

  private sendVoteRequests(term: number, preVote: boolean, transfer: boolean): void {
    for (const voter of this.membership().voters) {
      if (voter === this.id) continue;
      this.send({
        type: 'RequestVote',
        from: this.id,
        to: voter,
        term,
        lastLogIndex: this.log.lastIndex(),
        lastLogTerm: this.log.lastTerm(),
        preVote,
        transfer,
      });
    }
  }

  private tally(votes: Map<NodeId, boolean> = this.votes): { granted: number; rejected: number } {
    let granted = 0;
    let rejected = 0;
    for (const voter of this.membership().voters) {
      const vote = votes.get(voter);
      if (vote === true) granted++;
      if (vote === false) rejected++;
    }
    return { granted, rejected };
  }

  private handleVoteRequest(message: Extract<Message, { type: 'RequestVote' }>): void {
    // Learners and removed nodes never vote.
    if (!this.isVoter()) return;
    const canVote =
      this.votedFor === message.from ||
      (this.votedFor === NO_NODE && this.leader === NO_NODE) ||
      (message.preVote && message.term > this.term);
    const upToDate =
      this.faults.skipUpToDateCheck === true ||
      this.log.isUpToDate(message.lastLogIndex, message.lastLogTerm);
    const pinnedAllows = this.pinnedLeader === NO_NODE || message.from === this.pinnedLeader;
    const granted = canVote && upToDate && pinnedAllows;
    this.send({
      type: 'RequestVoteResponse',
      from: this.id,
      to: message.from,
      term: granted && message.preVote ? message.term : this.term,
      granted,
      preVote: message.preVote,
    });
    if (granted && !message.preVote) {
      this.electionElapsed = 0;
      this.votedFor = message.from;
    }
  }

  private stepCandidate(message: Message): void {
    switch (message.type) {
      case 'AppendEntries':
        this.becomeFollower(this.term, message.from);
        this.handleAppendEntries(message);
        return;
      case 'InstallSnapshot':
        this.becomeFollower(this.term, message.from);
        this.handleInstallSnapshot(message);
        return;
      case 'RequestVoteResponse': {
        const preCandidate = this.role === 'preCandidate';
        if (message.preVote !== preCandidate) return;
        if (preCandidate && message.granted && message.term !== this.term + 1) return;
        if (!this.isVoter(message.from)) return;
        this.votes.set(message.from, message.granted);
        const { granted, rejected } = this.tally();
        const voterCount = this.membership().voters.length;
        const quorum = quorumSize(voterCount);
        if (granted >= quorum) {
          if (preCandidate) this.startElection(false);
          else this.becomeLeader();
        } else if (voterCount - rejected < quorum) {
          this.becomeFollower(this.term, NO_NODE);
        }
        return;
      }
      default:
        // TimeoutNow and responses addressed to a former leader role are ignored.
        return;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Follower

  private stepFollower(message: Message): void {
    switch (message.type) {
      case 'AppendEntries':
        this.handleAppendEntries(message);
        return;
      case 'InstallSnapshot':
        this.handleInstallSnapshot(message);
        return;
      case 'TimeoutNow':
        this.handleTimeoutNow(message);
        return;
      case 'RequestVoteResponse':
        this.handleTransferVoteResponse(message);
        return;
      default:
        return;
    }
  }

  private heardFromLeader(leader: NodeId): void {
    this.electionElapsed = 0;
    if (this.leader !== leader) {
      this.setLeader(leader);
      this.resetRandomizedElectionTimeout();
    }
  }

  private handleAppendEntries(message: Extract<Message, { type: 'AppendEntries' }>): void {
    this.heardFromLeader(message.from);
    const respond = (success: boolean, matchIndex: number, conflictIndex: number, conflictTerm: number) =>
      this.send({
        type: 'AppendEntriesResponse',
        from: this.id,
        to: message.from,
        term: this.term,
        success,
        matchIndex,
        conflictIndex,
        conflictTerm,
        readContext: message.readContext,
      });
    let prevIndex = message.prevLogIndex;
    let prevTerm = message.prevLogTerm;
    let entries = message.entries;
    if (prevIndex < this.log.snapshotIndex) {
      // Our snapshot covers a committed prefix: it matches the leader's log.
      const skip = this.log.snapshotIndex - prevIndex;
      if (entries.length <= skip) {
        respond(true, this.log.committed, 0, 0);
        return;
      }
      entries = entries.slice(skip);
      prevIndex = this.log.snapshotIndex;
      prevTerm = this.log.snapshotTerm;
    }
    if (prevIndex > this.log.lastIndex()) {
      respond(false, 0, this.log.lastIndex() + 1, 0);
      return;
    }
    const ourPrevTerm = this.log.term(prevIndex)!;
    if (ourPrevTerm !== prevTerm) {
      const conflictIndex = Math.max(this.log.firstIndexOfTermAt(prevIndex), this.log.committed + 1);
      respond(false, 0, conflictIndex, ourPrevTerm);
      return;
    }
    let membershipChanged = false;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      assert(entry.index === prevIndex + 1 + i, 'AppendEntries entries must be contiguous');
      if (entry.index <= this.log.lastIndex()) {
        if (this.log.term(entry.index) === entry.term) continue;
        if (!this.hasFaults()) {
          assert(entry.index > this.log.committed, `leader overwrites committed entry ${entry.index}`);
        }
        if (entry.index <= this.log.committed) {
          // Only reachable with a test fault: keep going so the checkers see the damage.
          this.log.committed = entry.index - 1;
        }
        this.log.truncateFrom(entry.index);
        const before = this.configs.length;
        this.configs = this.configs.filter((config) => config.index < entry.index);
        this.refreshMembership();
        membershipChanged ||= this.configs.length !== before;
      }
      for (const appended of entries.slice(i)) {
        this.log.append([appended]);
        membershipChanged = this.recordConfigEntry(appended) || membershipChanged;
      }
      break;
    }
    if (membershipChanged) this.onMembershipChanged();
    const lastNewIndex = prevIndex + entries.length;
    this.commitTo(Math.min(message.leaderCommit, lastNewIndex));
    respond(true, lastNewIndex, 0, 0);
  }

  private handleInstallSnapshot(message: Extract<Message, { type: 'InstallSnapshot' }>): void {
    this.heardFromLeader(message.from);
    const snapshot = message.snapshot;
    const meta = snapshot.meta;
    let matchIndex: number;
    if (meta.index <= this.log.committed) {
      matchIndex = this.log.committed;
    } else if (this.log.matchTerm(meta.index, meta.term)) {
      // Our log already contains the snapshot's last entry: just fast-forward the commit index.
      this.commitTo(meta.index);
      matchIndex = meta.index;
    } else {
      validateMembership(meta.membership);
      this.log.restore(meta.index, meta.term);
      this.baseMembership = sortedMembership(meta.membership.voters, meta.membership.learners);
      this.configs = [];
      this.refreshMembership();
      this.pendingSnapshot = snapshot;
      this.latestSnapshot = snapshot;
      this.onMembershipChanged();
      matchIndex = meta.index;
    }
    this.send({
      type: 'InstallSnapshotResponse',
      from: this.id,
      to: message.from,
      term: this.term,
      matchIndex,
    });
  }

  private handleTimeoutNow(message: Extract<Message, { type: 'TimeoutNow' }>): void {
    if (!this.promotable()) return;
    this.heardFromLeader(message.from);
    if (!this.config.preVote) {
      this.startElection(true);
      return;
    }
    // Transfer pre-vote: stay a follower, make sure a quorum would elect us before bumping the term.
    this.transferVotes = new Map([[this.id, true]]);
    this.transferVoteElapsed = 0;
    if (this.tally(this.transferVotes).granted >= quorumSize(this.membership().voters.length)) {
      this.transferVotes = undefined;
      this.startElection(true);
      return;
    }
    for (const voter of this.membership().voters) {
      if (voter === this.id) continue;
      this.send({
        type: 'RequestVote',
        from: this.id,
        to: voter,
        term: this.term + 1,
        lastLogIndex: this.log.lastIndex(),
        lastLogTerm: this.log.lastTerm(),
        preVote: true,
        transfer: true,
      });
    }
  }

  private handleTransferVoteResponse(message: Extract<Message, { type: 'RequestVoteResponse' }>): void {
    const votes = this.transferVotes;
    if (votes === undefined || !message.preVote || !this.isVoter(message.from)) return;
    if (message.granted && message.term !== this.term + 1) return;
    votes.set(message.from, message.granted);
    const { granted, rejected } = this.tally(votes);
    const voterCount = this.membership().voters.length;
    const quorum = quorumSize(voterCount);
    if (granted >= quorum) {
      this.transferVotes = undefined;
      if (this.promotable()) this.startElection(true);
    } else if (voterCount - rejected < quorum) {
      this.transferVotes = undefined;
    }
  }

  private commitTo(index: number): void {
    if (index <= this.log.committed) return;
    assert(index <= this.log.lastIndex(), `commit ${index} beyond last index ${this.log.lastIndex()}`);
    this.log.committed = index;
  }

  private hasFaults(): boolean {
    return (
      this.faults.skipUpToDateCheck === true ||
      this.faults.commitOldTermByCount === true ||
      this.faults.forgetVote === true
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Leader

  private tickLeader(): void {
    const election = this.config.electionTicks;
    this.leaderTicks++;
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= election) this.electionElapsed = 0;
    if (this.config.checkQuorum && !this.quorumActive()) {
      // Nobody of a majority answered within the last election timeout: step down.
      this.becomeFollower(this.term, NO_NODE);
      return;
    }
    if (this.transferee !== NO_NODE) {
      this.transferElapsed++;
      if (this.transferElapsed >= election) this.abortTransfer();
    }
    for (const [node, progress] of this.progress) {
      if (progress.state === 'snapshot') {
        progress.snapshotElapsed++;
        if (progress.snapshotElapsed >= election) this.becomeProbe(progress, progress.match + 1);
      }
      const responsive = this.leaderTicks - progress.lastHeardTick <= 2 * this.config.heartbeatTicks;
      const caughtUp = progress.match + CATCH_UP_GAP_ENTRIES_MAX >= this.log.lastIndex();
      progress.healthyTicks = responsive && caughtUp && this.isVoter(node) ? progress.healthyTicks + 1 : 0;
    }
    this.maybeHandOff();
    if (this.heartbeatElapsed >= this.config.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      for (const progress of this.progress.values()) {
        if (progress.state === 'probe') progress.probeSent = false;
        if (progress.state === 'replicate' && progress.inflight.length >= this.config.maxInflightAppends) {
          // Appends may have been lost: free one slot per heartbeat so replication resumes.
          progress.inflight.shift();
        }
      }
      this.broadcastHeartbeat();
    }
  }

  /** Did a majority of voters (counting ourselves) answer within the last election timeout? */
  private quorumActive(): boolean {
    let active = 0;
    for (const voter of this.membership().voters) {
      const progress = this.progress.get(voter);
      if (voter === this.id) active++;
      else if (
        progress !== undefined &&
        this.leaderTicks - progress.lastHeardTick < this.config.electionTicks
      )
        active++;
    }
    return active >= quorumSize(this.membership().voters.length);
  }

  /** Lowest-id rule (b) and manual mode (c): hand leadership to the right node once it is ready. */
  private maybeHandOff(): void {
    if (this.transferee !== NO_NODE) return;
    if (this.log.term(this.log.committed) !== this.term) return;
    if (this.pinnedLeader !== NO_NODE) {
      if (this.pinnedLeader === this.id) return;
      const pinned = this.progress.get(this.pinnedLeader);
      const pinnedFailures = Math.min(
        this.handoffFailures.get(this.pinnedLeader) ?? 0,
        HANDOFF_BACKOFF_EXPONENT_MAX,
      );
      const pinnedRequired = pinnedFailures === 0 ? 1 : this.config.electionTicks * 2 ** pinnedFailures;
      if (pinned !== undefined && pinned.healthyTicks >= pinnedRequired) {
        pinned.healthyTicks = 0;
        this.handoffTarget = this.pinnedLeader;
        this.transferLeadership(this.pinnedLeader);
      }
      return;
    }
    if (!this.config.lowestIdLeader) return;
    const responsiveLower = [...this.progress.entries()]
      .filter(([node, progress]) => node < this.id && this.isVoter(node) && this.isResponsive(progress))
      .sort(([a], [b]) => a - b)[0];
    if (responsiveLower === undefined) return;
    const [target, progress] = responsiveLower;
    const failures = Math.min(this.handoffFailures.get(target) ?? 0, HANDOFF_BACKOFF_EXPONENT_MAX);
    const required = LOWEST_ID_HANDOFF_ELECTIONS * this.config.electionTicks * 2 ** failures;
    if (progress.healthyTicks < required) return;
    progress.healthyTicks = 0;
    this.handoffTarget = target;
    this.transferLeadership(target);
  }

  private isResponsive(progress: Progress): boolean {
    return this.leaderTicks - progress.lastHeardTick <= 2 * this.config.heartbeatTicks;
  }

  private abortTransfer(): void {
    const transferee = this.transferee;
    this.transferee = NO_NODE;
    this.transferElapsed = 0;
    const progress = this.progress.get(transferee);
    if (progress !== undefined) {
      progress.timeoutNowSent = false;
      progress.healthyTicks = 0;
    }
    if (transferee !== NO_NODE && transferee === this.handoffTarget) {
      this.handoffFailures.set(transferee, (this.handoffFailures.get(transferee) ?? 0) + 1);
      this.handoffTarget = NO_NODE;
    }
  }

  private proposalRefusal(): ProposeResult | undefined {
    if (this.role !== 'leader') return { ok: false, reason: 'notLeader', leader: this.leader };
    if (this.transferee !== NO_NODE) return { ok: false, reason: 'transferring', leader: this.leader };
    if (this.log.lastIndex() - this.log.committed >= UNCOMMITTED_ENTRIES_MAX) {
      return { ok: false, reason: 'overloaded', leader: this.leader };
    }
    return undefined;
  }

  private appendEntry(type: EntryType, data: Uint8Array): Entry {
    const entry: Entry = { term: this.term, index: this.log.lastIndex() + 1, type, data };
    this.log.append([entry]);
    if (this.recordConfigEntry(entry)) this.onMembershipChanged();
    // With other voters, the leader's own append cannot move the quorum index (it is the maximum).
    else if (this.membership().voters.length <= 1) this.maybeCommit();
    return entry;
  }

  private stepLeader(message: Message): void {
    switch (message.type) {
      case 'AppendEntriesResponse':
        this.handleAppendResponse(message);
        return;
      case 'InstallSnapshotResponse':
        this.handleSnapshotResponse(message);
        return;
      default:
        // Same-term AppendEntries/InstallSnapshot/TimeoutNow from another leader cannot happen in a
        // correct cell (one leader per term); ignore them. Vote responses are stale.
        return;
    }
  }

  private heardFrom(progress: Progress): void {
    progress.lastHeardTick = this.leaderTicks;
  }

  private handleAppendResponse(message: Extract<Message, { type: 'AppendEntriesResponse' }>): void {
    const progress = this.progress.get(message.from);
    if (progress === undefined) return;
    this.heardFrom(progress);
    if (message.readContext > 0) this.acknowledgeRead(message.from, message.readContext);
    if (!message.success) {
      this.handleAppendRejection(progress, message);
      return;
    }
    if (message.matchIndex > this.log.lastIndex()) return; // Nonsense; ignore.
    if (message.matchIndex > progress.match) {
      progress.match = message.matchIndex;
      progress.lastProgressTick = this.leaderTicks;
      progress.next = Math.max(progress.next, progress.match + 1);
      if (progress.state === 'probe') this.becomeReplicate(progress);
      else if (progress.state === 'replicate') {
        while (progress.inflight.length > 0 && progress.inflight[0]! <= progress.match)
          progress.inflight.shift();
      } else if (progress.match >= progress.pendingSnapshotIndex) {
        this.becomeProbe(progress, progress.match + 1);
      }
      if (this.maybeCommit()) this.broadcastAppend(true);
      else this.sendAppend(message.from, progress.commitSent < Math.min(this.log.committed, progress.match));
      if (this.transferee === message.from && progress.match === this.log.lastIndex()) {
        this.sendTimeoutNow(message.from, progress);
      }
    } else {
      // A heartbeat response or a duplicate: the follower is alive, let a probe go again.
      if (progress.state === 'probe') progress.probeSent = false;
      if (
        progress.state === 'replicate' &&
        progress.next - 1 > progress.match &&
        this.leaderTicks - progress.lastProgressTick >= APPEND_LOST_HEARTBEATS * this.config.heartbeatTicks
      ) {
        // Appends outstanding but no acknowledgement for a while: assume they were lost, probe again.
        this.becomeProbe(progress, progress.match + 1);
      }
      if (progress.match < this.log.lastIndex()) this.sendAppend(message.from, false);
    }
  }

  private handleAppendRejection(
    progress: Progress,
    message: Extract<Message, { type: 'AppendEntriesResponse' }>,
  ): void {
    if (message.conflictIndex <= progress.match) {
      // Stale (we already know a longer match); the follower is alive though.
      if (progress.state === 'probe') progress.probeSent = false;
      return;
    }
    let next = message.conflictIndex;
    if (message.conflictTerm > 0) {
      const last = this.log.lastIndexOfTerm(message.conflictTerm);
      if (last > 0) next = Math.min(last + 1, message.conflictIndex);
    }
    next = Math.max(next, progress.match + 1);
    if (next >= progress.next && progress.state !== 'probe') return;
    this.becomeProbe(progress, Math.min(next, progress.next));
    this.sendAppend(message.from, false);
  }

  private handleSnapshotResponse(message: Extract<Message, { type: 'InstallSnapshotResponse' }>): void {
    const progress = this.progress.get(message.from);
    if (progress === undefined) return;
    this.heardFrom(progress);
    if (message.matchIndex > progress.match && message.matchIndex <= this.log.lastIndex()) {
      progress.match = message.matchIndex;
    }
    this.becomeProbe(progress, progress.match + 1);
    if (this.maybeCommit()) this.broadcastAppend(true);
    else this.sendAppend(message.from, false);
  }

  private becomeProbe(progress: Progress, next: number): void {
    progress.state = 'probe';
    progress.next = Math.max(next, progress.match + 1);
    progress.probeSent = false;
    progress.inflight = [];
    progress.pendingSnapshotIndex = 0;
  }

  private becomeReplicate(progress: Progress): void {
    progress.state = 'replicate';
    progress.lastProgressTick = this.leaderTicks;
    progress.next = progress.match + 1;
    progress.probeSent = false;
    progress.inflight = [];
  }

  private isPaused(progress: Progress): boolean {
    switch (progress.state) {
      case 'probe':
        return progress.probeSent;
      case 'replicate':
        return progress.inflight.length >= this.config.maxInflightAppends;
      case 'snapshot':
        return true;
    }
  }

  private broadcastAppend(sendIfEmpty: boolean): void {
    for (const node of this.progress.keys()) this.sendAppend(node, sendIfEmpty);
  }

  private sendAppend(to: NodeId, sendIfEmpty: boolean): void {
    const progress = this.progress.get(to);
    if (progress === undefined || this.isPaused(progress)) return;
    const prevLogIndex = progress.next - 1;
    const prevLogTerm = this.log.term(prevLogIndex);
    if (prevLogTerm === undefined) {
      this.sendSnapshot(to, progress);
      return;
    }
    const entries = this.log.slice(progress.next, this.log.lastIndex(), this.config.maxEntriesPerMessage);
    if (entries.length === 0 && !sendIfEmpty) return;
    const lastNewIndex = prevLogIndex + entries.length;
    progress.commitSent = Math.max(progress.commitSent, Math.min(this.log.committed, lastNewIndex));
    this.send({
      type: 'AppendEntries',
      from: this.id,
      to,
      term: this.term,
      prevLogIndex,
      prevLogTerm,
      entries,
      leaderCommit: this.log.committed,
      readContext: 0,
    });
    const last = entries[entries.length - 1];
    if (progress.state === 'replicate' && last !== undefined) {
      progress.next = last.index + 1;
      progress.inflight.push(last.index);
    } else if (progress.state === 'probe') {
      progress.probeSent = true;
    }
  }

  private sendSnapshot(to: NodeId, progress: Progress): void {
    const snapshot = this.latestSnapshot;
    if (snapshot === undefined) {
      // Started from a bare SnapshotMeta: no data to send until the application compacts again.
      progress.probeSent = true;
      return;
    }
    assert(snapshot.meta.index === this.log.snapshotIndex, 'latest snapshot does not match the log base');
    progress.state = 'snapshot';
    progress.pendingSnapshotIndex = snapshot.meta.index;
    progress.snapshotElapsed = 0;
    progress.inflight = [];
    this.send({ type: 'InstallSnapshot', from: this.id, to, term: this.term, snapshot });
  }

  private sendTimeoutNow(to: NodeId, progress: Progress): void {
    if (progress.timeoutNowSent) return;
    progress.timeoutNowSent = true;
    this.send({ type: 'TimeoutNow', from: this.id, to, term: this.term });
  }

  private broadcastHeartbeat(): void {
    const lastRead = this.pendingReads[this.pendingReads.length - 1];
    const readContext = lastRead === undefined ? 0 : lastRead.context;
    for (const [to, progress] of this.progress) {
      const knownTerm = this.log.term(progress.match);
      const prevLogIndex = knownTerm === undefined ? 0 : progress.match;
      progress.commitSent = Math.max(progress.commitSent, Math.min(this.log.committed, prevLogIndex));
      this.send({
        type: 'AppendEntries',
        from: this.id,
        to,
        term: this.term,
        prevLogIndex,
        prevLogTerm: knownTerm ?? 0,
        entries: [],
        leaderCommit: this.log.committed,
        readContext,
      });
    }
  }

  /** Commit the highest index replicated on a majority of voters, if it is of the current term. */
  private maybeCommit(): boolean {
    if (this.role !== 'leader') return false;
    const voters = this.membership().voters;
    if (voters.length === 0) return false;
    const matches = this.matchScratch;
    matches.length = 0;
    for (const voter of voters) {
      matches.push(voter === this.id ? this.log.lastIndex() : (this.progress.get(voter)?.match ?? 0));
    }
    matches.sort(descending);
    const quorumIndex = matches[quorumSize(voters.length) - 1]!;
    if (quorumIndex <= this.log.committed) return false;
    if (this.log.term(quorumIndex) !== this.term && this.faults.commitOldTermByCount !== true) return false;
    this.commitTo(quorumIndex);
    this.afterLeaderCommit();
    return true;
  }

  private afterLeaderCommit(): void {
    if (this.deferredReads.length > 0 && this.log.term(this.log.committed) === this.term) {
      const deferred = this.deferredReads;
      this.deferredReads = [];
      this.startReads(deferred);
    }
    if (!this.membershipAt(this.log.committed).voters.includes(this.id) && !this.configChangePending()) {
      // We removed ourselves and the removal is committed: step down.
      this.becomeFollower(this.term, NO_NODE);
    }
  }

  private startReads(requestIds: readonly number[]): void {
    const voters = this.membership().voters;
    if (voters.length === 1 && voters[0] === this.id) {
      for (const requestId of requestIds) this.readStates.push({ requestId, index: this.log.committed });
      return;
    }
    // Reads arriving before the next ready() share one confirmation round (sent by ready()).
    if (!this.readRoundQueued) {
      this.readContextSequence++;
      this.readRoundQueued = true;
    }
    const context = this.readContextSequence;
    for (const requestId of requestIds) {
      this.pendingReads.push({ requestId, index: this.log.committed, context, acks: new Set([this.id]) });
    }
  }

  private acknowledgeRead(from: NodeId, context: number): void {
    const position = this.pendingReads.findIndex((read) => read.context === context);
    if (position < 0) return;
    const voters = this.membership().voters;
    if (!voters.includes(from)) return;
    const read = this.pendingReads[position]!;
    read.acks.add(from);
    const acks = voters.filter((voter) => read.acks.has(voter)).length;
    if (acks < quorumSize(voters.length)) return;
    // Leadership confirmed at this round: every earlier read is confirmed too.
    let released = position;
    while (released + 1 < this.pendingReads.length && this.pendingReads[released + 1]!.context === context)
      released++;
    for (const done of this.pendingReads.splice(0, released + 1)) {
      this.readStates.push({ requestId: done.requestId, index: done.index });
    }
  }
}
