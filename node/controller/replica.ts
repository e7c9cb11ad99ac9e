/**
 * A controller replica: the consensus core (consensus/raft.ts) driven with real persistence and a
 * transport, applying committed commands to the metadata state machine.
 *
 * The ready loop (one at a time): persist hardState/entries/snapshot (synced) -> send messages ->
 * restore a received snapshot -> apply committed entries (one batch, not synced: the log is the
 * truth) -> resolve the proposals and reads they complete -> advance. Proposals resolve when the entry at their index
 * is applied with their term; an entry of another term at that index means the proposal was lost
 * (a new primary replaced it) and it fails with NOT_LEADER, which callers retry.
 *
 * The transport is an interface: the daemon passes libp2p, tests an in-process one.
 */

import { createRaft, defaultRaftConfig } from '../../consensus/raft.ts';
import type {
  HardState,
  Membership,
  Message,
  NodeId,
  RaftConfig,
  RaftNode,
  RaftStatus,
  RaftStorage,
  Ready,
  SoftState,
} from '../../consensus/types.ts';
import { type Clock, systemClock, type TimerHandle } from '../common/clock.ts';
import { assert, ClosedError, NotLeaderError, TimeoutError } from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import type { KvStore } from '../metadata/kv.ts';
import { type Command, commandCodec, type Result } from '../metadata/records.ts';
import { MetadataStateMachine } from '../metadata/state-machine.ts';

/** Delivers consensus messages between controllers, addressed by controller id. */
export interface ReplicaTransport {
  send(message: Message): void;
  /** Register the receiver of messages addressed to this replica. */
  listen(receive: (message: Message) => void): void;
}

export interface ReplicaOptions {
  readonly id: NodeId;
  readonly storage: RaftStorage;
  readonly kv: KvStore;
  readonly transport: ReplicaTransport;
  /** Membership of a brand-new cell (ignored once the log or a snapshot has one). */
  readonly initialMembership: Membership;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Milliseconds per consensus tick (default 100: heartbeat 100 ms, election timeout 1 s). */
  readonly tickMs?: number;
  readonly raft?: Partial<Omit<RaftConfig, 'id' | 'randomInt'>>;
  /** Take a state machine snapshot and compact the log after this many applied entries. */
  readonly snapshotEveryEntries?: number;
  /** Source of election jitter (default Math.random). */
  readonly randomInt?: (bound: number) => number;
  /**
   * Called with every new hard state (term, vote, commit index; after it was persisted) and soft
   * state (role, leader) of this replica, e.g. to count elections (node/daemon/metrics.ts).
   */
  readonly onStateChange?: (change: { hardState?: HardState; softState?: SoftState }) => void;
}

/** Proposals waiting for their entry to be applied, at most. */
export const PROPOSALS_PENDING_MAX = 20_000;
/** A proposal or read that sees no progress for this long fails with TIMEOUT. */
export const REQUEST_TIMEOUT_MS = 10_000;

interface PendingProposal {
  readonly term: number;
  readonly resolve: (result: Result) => void;
  readonly reject: (error: Error) => void;
  readonly timer: TimerHandle;
}

interface PendingRead {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  readonly timer: TimerHandle;
  index?: number;
}

export class ControllerReplica {
  readonly id: NodeId;
  readonly machine: MetadataStateMachine;
  readonly #raft: RaftNode;
  readonly #storage: RaftStorage;
  readonly #transport: ReplicaTransport;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #tickMs: number;
  readonly #snapshotEveryEntries: number;
  readonly #proposals = new Map<number, PendingProposal>();
  readonly #reads = new Map<number, PendingRead>();
  #nextReadId = 1;
  #tickTimer: TimerHandle | undefined;
  #processing: Promise<void> | undefined;
  #running = false;
  #again = false;
  #stopped = false;
  #failure: unknown;
  #lastSnapshotIndex = 0;
  #leaderListeners: Array<(leader: NodeId) => void> = [];
  #appliedListeners: Array<(appliedIndex: number) => void> = [];
  readonly #onStateChange: ReplicaOptions['onStateChange'];

  private constructor(
    options: ReplicaOptions,
    raft: RaftNode,
    machine: MetadataStateMachine,
    snapshotIndex: number,
  ) {
    this.id = options.id;
    this.machine = machine;
    this.#raft = raft;
    this.#storage = options.storage;
    this.#transport = options.transport;
    this.#clock = options.clock ?? systemClock;
    this.#log = (options.logger ?? silentLogger()).child({ controller: options.id });
    this.#tickMs = options.tickMs ?? 100;
    this.#snapshotEveryEntries = options.snapshotEveryEntries ?? 10_000;
    this.#lastSnapshotIndex = snapshotIndex;
    this.#onStateChange = options.onStateChange;
  }

  static async start(options: ReplicaOptions): Promise<ControllerReplica> {
    const stored = await options.storage.load();
    const machine = await MetadataStateMachine.open(options.kv);
    if (stored.snapshot !== undefined && machine.appliedIndex < stored.snapshot.meta.index) {
      // The state machine is behind the log's snapshot (e.g. its database was lost): restore.
      await machine.restore(stored.snapshot.data);
    }
    const randomInt = options.randomInt ?? ((bound: number) => Math.floor(Math.random() * bound));
    const config: RaftConfig = { ...defaultRaftConfig(options.id, randomInt), ...options.raft };
    const raft = createRaft(config, {
      hardState: stored.hardState,
      snapshot: stored.snapshot,
      entries: stored.entries,
      initialMembership: options.initialMembership,
      applied: machine.appliedIndex,
    });
    const replica = new ControllerReplica(options, raft, machine, stored.snapshot?.meta.index ?? 0);
    options.transport.listen((message) => replica.#receive(message));
    replica.#scheduleTick();
    replica.#kick();
    return replica;
  }

  status(): RaftStatus {
    return this.#raft.status();
  }

  get isLeader(): boolean {
    return this.#raft.status().role === 'leader';
  }

  get leader(): NodeId {
    return this.#raft.status().leader;
  }

  /** Called with the new leader id whenever it changes (0: unknown). */
  onLeaderChange(listener: (leader: NodeId) => void): void {
    this.#leaderListeners.push(listener);
  }

  /** Called after each batch of committed entries (or a snapshot) is applied here. */
  onApplied(listener: (appliedIndex: number) => void): void {
    this.#appliedListeners.push(listener);
  }

  /** Propose a metadata command (leader only); resolves with its result once applied here. */
  propose(command: Omit<Command, 'timeMs'>): Promise<Result> {
    this.#checkRunning();
    if (this.#proposals.size >= PROPOSALS_PENDING_MAX) {
      return Promise.reject(new NotLeaderError('too many proposals pending; retry', { retryable: true }));
    }
    const data = commandCodec.encode({ ...command, timeMs: this.#clock.nowMs() });
    const proposed = this.#raft.propose(data);
    if (!proposed.ok) {
      return Promise.reject(
        new NotLeaderError(`not the primary (${proposed.reason})`, {
          leader: proposed.leader,
          reason: proposed.reason,
        }),
      );
    }
    const promise = new Promise<Result>((resolve, reject) => {
      const timer = this.#clock.setTimer(REQUEST_TIMEOUT_MS, () => {
        this.#proposals.delete(proposed.index);
        reject(new TimeoutError(`proposal at index ${proposed.index} not applied in time`));
      });
      this.#proposals.set(proposed.index, { term: proposed.term, resolve, reject, timer });
    });
    this.#kick();
    return promise;
  }

  /**
   * A linearizable read barrier (ReadIndex): resolves when this replica's state machine reflects
   * every write committed before the call. Leader only; NOT_LEADER elsewhere.
   */
  readBarrier(): Promise<void> {
    this.#checkRunning();
    const requestId = this.#nextReadId++;
    if (!this.#raft.readIndex(requestId)) {
      return Promise.reject(new NotLeaderError('not the primary', { leader: this.#raft.status().leader }));
    }
    const promise = new Promise<void>((resolve, reject) => {
      const timer = this.#clock.setTimer(REQUEST_TIMEOUT_MS, () => {
        this.#reads.delete(requestId);
        reject(new TimeoutError('read barrier timed out'));
      });
      this.#reads.set(requestId, { resolve, reject, timer });
    });
    this.#kick();
    return promise;
  }

  transferLeadership(to: NodeId): boolean {
    const started = this.#raft.transferLeadership(to);
    this.#kick();
    return started;
  }

  proposeConfigChange(change: Parameters<RaftNode['proposeConfigChange']>[0]) {
    const result = this.#raft.proposeConfigChange(change);
    this.#kick();
    return result;
  }

  setPinnedLeader(node: NodeId): void {
    this.#raft.setPinnedLeader(node);
    this.#kick();
  }

  /** Stop ticking and processing; pending requests fail with CLOSED. Storage stays open. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#tickTimer?.cancel();
    await this.#processing?.catch(() => {});
    const closed = new ClosedError('controller replica stopped');
    for (const [, proposal] of this.#proposals) {
      proposal.timer.cancel();
      proposal.reject(closed);
    }
    this.#proposals.clear();
    for (const [, read] of this.#reads) {
      read.timer.cancel();
      read.reject(closed);
    }
    this.#reads.clear();
  }

  #checkRunning(): void {
    if (this.#stopped) throw new ClosedError('controller replica stopped');
    if (this.#failure !== undefined) throw this.#failure;
  }

  #receive(message: Message): void {
    if (this.#stopped || message.to !== this.id) return;
    this.#raft.step(message);
    this.#kick();
  }

  #scheduleTick(): void {
    if (this.#stopped) return;
    this.#tickTimer = this.#clock.setTimer(this.#tickMs, () => {
      if (this.#stopped) return;
      this.#raft.tick();
      this.#kick();
      this.#scheduleTick();
    });
  }

  /** Run the ready loop: at most one runs; a kick while it runs makes it look again. */
  #kick(): void {
    if (this.#stopped || this.#failure !== undefined) return;
    this.#again = true;
    if (this.#running) return;
    this.#running = true;
    this.#processing = (async () => {
      // One microtask later: commands proposed together (a batch, concurrent callers in one
      // task) go into one Ready, so one log write.
      await undefined;
      try {
        while (this.#again && !this.#stopped) {
          this.#again = false;
          while (this.#raft.hasReady() && !this.#stopped) await this.#handle(this.#raft.ready());
        }
      } catch (error) {
        // Persistence failed: this replica cannot safely continue (a programmer or disk error).
        this.#failure = error;
        this.#log.error({ err: error }, 'controller replica failed; stopping');
        void this.stop();
      } finally {
        this.#running = false;
      }
    })();
  }

  async #handle(ready: Ready): Promise<void> {
    if (ready.hardState !== undefined || ready.entries.length > 0 || ready.snapshot !== undefined) {
      await this.#storage.save({
        hardState: ready.hardState,
        entries: ready.entries,
        snapshot: ready.snapshot,
      });
    }
    if (
      this.#onStateChange !== undefined &&
      (ready.hardState !== undefined || ready.softState !== undefined)
    ) {
      try {
        this.#onStateChange({
          ...(ready.hardState === undefined ? {} : { hardState: ready.hardState }),
          ...(ready.softState === undefined ? {} : { softState: ready.softState }),
        });
      } catch (error) {
        this.#log.warn({ err: error }, 'state change observer failed');
      }
    }
    for (const message of ready.messages) this.#transport.send(message);
    if (ready.snapshot !== undefined) {
      await this.machine.restore(ready.snapshot.data);
      this.#lastSnapshotIndex = ready.snapshot.meta.index;
      this.#failProposalsUpTo(ready.snapshot.meta.index);
    }
    if (ready.committedEntries.length > 0) {
      const toApply = ready.committedEntries.filter((entry) => entry.index > this.machine.appliedIndex);
      const results = await this.machine.apply(
        toApply.map((entry) => ({
          index: entry.index,
          data: entry.type === 'normal' ? entry.data : new Uint8Array(0),
        })),
        // Not synced: the log (synced) is the truth. After a crash the state machine's applied
        // index may be behind, and the entries after it are applied again from the log; a
        // compaction persists a snapshot first (synced), and start() restores it if the state
        // machine is behind it. One fsync per ready cycle less on every controller.
        { sync: false },
      );
      toApply.forEach((entry, i) => {
        const proposal = this.#proposals.get(entry.index);
        if (proposal === undefined) return;
        this.#proposals.delete(entry.index);
        proposal.timer.cancel();
        if (entry.term === proposal.term) proposal.resolve(results[i]!);
        else
          proposal.reject(
            new NotLeaderError('the proposal was replaced by a new primary; retry', { index: entry.index }),
          );
      });
    }
    if (ready.committedEntries.length > 0 || ready.snapshot !== undefined) {
      for (const listener of this.#appliedListeners) listener(this.machine.appliedIndex);
    }
    for (const state of ready.readStates) {
      const read = this.#reads.get(state.requestId);
      if (read !== undefined) read.index = state.index;
    }
    this.#resolveReads();
    if (ready.softState !== undefined) {
      for (const listener of this.#leaderListeners) listener(ready.softState.leader);
      if (ready.softState.role !== 'leader') this.#failReadsNotLeader();
    }
    this.#raft.advance(ready);
    await this.#maybeSnapshot();
  }

  #resolveReads(): void {
    for (const [requestId, read] of this.#reads) {
      if (read.index !== undefined && this.machine.appliedIndex >= read.index) {
        this.#reads.delete(requestId);
        read.timer.cancel();
        read.resolve();
      }
    }
  }

  #failReadsNotLeader(): void {
    for (const [requestId, read] of this.#reads) {
      if (read.index !== undefined) continue;
      this.#reads.delete(requestId);
      read.timer.cancel();
      read.reject(
        new NotLeaderError('lost leadership during a read', { leader: this.#raft.status().leader }),
      );
    }
  }

  #failProposalsUpTo(index: number): void {
    for (const [proposalIndex, proposal] of this.#proposals) {
      if (proposalIndex > index) continue;
      this.#proposals.delete(proposalIndex);
      proposal.timer.cancel();
      proposal.reject(new NotLeaderError('the proposal was overtaken by a snapshot; retry'));
    }
  }

  async #maybeSnapshot(): Promise<void> {
    const applied = this.machine.appliedIndex;
    if (applied - this.#lastSnapshotIndex < this.#snapshotEveryEntries) return;
    // A snapshot from the leader stepped in meanwhile (restored with the next Ready): the log
    // below it is gone, so there is nothing to compact here (found by the simulator, seed 953).
    if (this.#raft.status().snapshotIndex >= applied) return;
    const snapshot = { meta: this.#raft.snapshotMeta(applied), data: await this.machine.snapshot() };
    assert(snapshot.meta.index === applied, 'snapshot index mismatch');
    await this.#storage.compact(snapshot);
    this.#raft.compact(snapshot);
    this.#lastSnapshotIndex = applied;
    this.#log.info({ index: applied, bytes: snapshot.data.length }, 'log compacted');
  }
}
