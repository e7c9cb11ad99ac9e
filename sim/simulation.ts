/**
 * The deterministic discrete-event simulation of a controller cell. It drives the real
 * consensus core (`createRaft`) through the same loop the daemon uses: tick/step, then for each
 * Ready persist hardState/entries/snapshot through RaftStorage (a SimDisk), send the messages
 * over the SimNetwork, apply committed entries to the KV state machine, serve read states, and
 * advance. Everything random comes from one seed; virtual time only moves when the next event
 * is popped, so a seed replays a run exactly.
 */
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { createRaft, defaultRaftConfig } from '../consensus/raft.ts';
import type {
  ConfigChange,
  Entry,
  HardState,
  Membership,
  Message,
  NodeId,
  ProposeResult,
  RaftConfig,
  RaftNode,
  Ready,
  Role,
  Snapshot,
} from '../consensus/types.ts';
import { hashEntry, SafetyChecker, ShadowLog, SimViolation } from './checkers.ts';
import { type CrashOutcome, type DiskFaults, EMPTY_HARD_STATE, SimDisk } from './disk.ts';
import { EventQueue } from './event-queue.ts';
import { History } from './history.ts';
import { decodeCommand, encodeCommand, KvStore } from './kv.ts';
import type { KvInput } from './linearizability.ts';
import { type NetworkFaults, SimNetwork } from './network.ts';
import { Prng } from './prng.ts';
import { Trace } from './trace.ts';

/** Test-only switches of the core that break it on purpose (checker validation). */
export interface CoreFaults {
  readonly skipUpToDateCheck?: boolean;
  readonly commitOldTermByCount?: boolean;
  readonly forgetVote?: boolean;
}

export interface SimParams {
  /** Initial voters are 1..nodes. */
  readonly nodes: number;
  /** Virtual duration of one tick (the core's heartbeat unit). */
  readonly tickUs: number;
  readonly heartbeatTicks: number;
  readonly electionTicks: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly lowestIdLeader: boolean;
  /** The core's flow control (defaults: the core's own). */
  readonly maxEntriesPerMessage?: number;
  readonly maxInflightAppends?: number;
  /** Per-node tick rate skew, uniform in [-driftPpmMax, +driftPpmMax]. */
  readonly driftPpmMax: number;
  readonly network: NetworkFaults;
  readonly disk: DiskFaults;
  /** Take a snapshot every this many applied entries (0 = never). */
  readonly snapshotEveryEntries: number;
  readonly clients: number;
  readonly keys: number;
  readonly clientThinkUsMax: number;
  /** A client retries its operation elsewhere after this long without an answer. */
  readonly clientTimeoutUs: number;
  /** Client <-> controller one-way delay, uniform in [0, clientDelayUsMax]. */
  readonly clientDelayUsMax: number;
}

export const DEFAULT_PARAMS: SimParams = {
  nodes: 5,
  tickUs: 100_000,
  heartbeatTicks: 1,
  electionTicks: 10,
  preVote: true,
  checkQuorum: true,
  lowestIdLeader: true,
  driftPpmMax: 1_000,
  network: {
    delayUsMin: 500,
    delayUsMax: 5_000,
    reorderChance: 0,
    reorderUsMax: 0,
    dropChance: 0,
    duplicateChance: 0,
  },
  disk: { writeUsMin: 200, writeUsMax: 2_000, crashLoseChance: 0.4, crashTearChance: 0.3 },
  snapshotEveryEntries: 0,
  clients: 3,
  keys: 4,
  clientThinkUsMax: 150_000,
  clientTimeoutUs: 1_000_000,
  clientDelayUsMax: 2_000,
};

/** Limits of one run. */
export const eventsMax = 20_000_000;
/** Microtask turns to wait for due storage continuations before falling back to a macrotask. */
export const continuationSpinsMax = 64;
/** Attempts of one client operation before the run is declared stuck. */
export const clientAttemptsMax = 10_000;
export const eventQueueSizeMax = 1_000_000;

type ClientReply =
  | { readonly kind: 'ok'; readonly output: string | undefined }
  | { readonly kind: 'redirect'; readonly leader: NodeId }
  | { readonly kind: 'failed' };

interface ClientRequest {
  readonly client: number;
  readonly historyId: number;
  readonly input: KvInput;
  readonly commandId: number;
}

interface SimNode {
  readonly id: NodeId;
  readonly disk: SimDisk;
  readonly rng: Prng;
  readonly driftPpm: number;
  /** What the node boots with when its log holds no membership yet. */
  readonly initialMembership: Membership;
  up: boolean;
  /** Increments at every crash and restart; callbacks of an old life are ignored. */
  life: number;
  raft: RaftNode | undefined;
  /** A save of the current Ready is in flight (or the node is loading). */
  busy: boolean;
  kv: KvStore;
  applied: number;
  role: Role;
  leader: NodeId;
  /** The term this node leads, 0 when not leader. */
  leaderTerm: number;
  hardState: HardState;
  /** The last hardState seen durable on this node's disk (survives crashes). */
  durableHardState: HardState;
  readonly log: ShadowLog;
  proposals: Map<
    number,
    { readonly term: number; readonly data: Uint8Array; readonly request: ClientRequest }
  >;
  reads: Map<number, ClientRequest>;
  readsWaiting: { readonly index: number; readonly request: ClientRequest }[];
  restarts: number;
}

interface SimClient {
  readonly id: number;
  readonly rng: Prng;
  target: NodeId;
  /** History id of the operation in flight. */
  pending: number | undefined;
  /** Attempts of the pending operation so far. */
  attempt: number;
  commands: number;
}

export interface SimOptions {
  readonly seed: number;
  readonly params: SimParams;
  readonly coreFaults?: CoreFaults;
  /**
   * Checks to leave out, to show that the other checkers also catch a bug (checker validation);
   * only 'unpersisted-send' can be disabled.
   */
  readonly disabledChecks?: readonly 'unpersisted-send'[];
  readonly trace?: boolean;
  readonly traceLinesMax?: number;
  /** First trace lines (the seed and the parameters), recorded before anything happens. */
  readonly header?: readonly string[];
}

export class Simulation {
  readonly seed: number;
  readonly params: SimParams;
  readonly trace: Trace;
  readonly checker: SafetyChecker;
  readonly history = new History();
  readonly network: SimNetwork;
  readonly nodes = new Map<NodeId, SimNode>();
  readonly #queue = new EventQueue<() => void>({ sizeMax: eventQueueSizeMax });
  readonly #rng: Prng;
  readonly #clientRng: Prng;
  readonly #coreFaults: CoreFaults | undefined;
  readonly #checkPersistBeforeSend: boolean;
  readonly #clients: SimClient[] = [];
  readonly #initialMembership: Membership;
  #now = 0;
  #events = 0;
  /**
   * Storage promises resolved whose continuation has not run yet. Every storage call of the
   * driver registers exactly one continuation, which decrements this first thing.
   */
  #continuationsDue = 0;
  #failure: unknown;
  #clientsRunning = false;
  #readRequests = 0;
  #failoverStartUs: number | undefined;
  /** The lost leader's term: only a leader of a newer term ends the failover. */
  #failoverTerm = 0;
  readonly failoversUs: number[] = [];
  /** (index) -> prefix hash of snapshots taken, to give restored logs their base. */
  readonly #snapshotPrefixes = new Map<number, number>();
  /** Leaders seen, in order (node, term, time). */
  readonly leaderChanges: { readonly node: NodeId; readonly term: number; readonly atUs: number }[] = [];

  constructor(options: SimOptions) {
    this.seed = options.seed;
    this.params = options.params;
    this.#coreFaults = options.coreFaults;
    this.#checkPersistBeforeSend = !(options.disabledChecks ?? []).includes('unpersisted-send');
    this.#rng = new Prng(options.seed);
    this.trace = new Trace({ keepLines: options.trace ?? false, linesMax: options.traceLinesMax ?? 200_000 });
    this.checker = new SafetyChecker({ now: () => this.#now });
    for (const line of options.header ?? []) this.log(line);
    const ids = Array.from({ length: options.params.nodes }, (_, i) => i + 1);
    this.#initialMembership = { voters: ids, learners: [] };
    this.network = new SimNetwork({
      nodes: ids,
      faults: options.params.network,
      rng: this.#rng.fork('network'),
    });
    this.#clientRng = this.#rng.fork('clients');
    for (const id of ids) this.#createNode(id, this.#initialMembership);
    for (const id of ids) this.restart(id);
    for (let i = 0; i < options.params.clients; i++) {
      this.#clients.push({
        id: i + 1,
        rng: this.#clientRng.fork(`client-${i + 1}`),
        target: 1,
        pending: undefined,
        attempt: 0,
        commands: 0,
      });
    }
  }

  get nowUs(): number {
    return this.#now;
  }

  get events(): number {
    return this.#events;
  }

  /** A scenario's own random stream. */
  fork(label: string): Prng {
    return this.#rng.fork(label);
  }

  log(line: string): void {
    this.trace.record(this.#now, line);
  }

  // --- running ---

  async runFor(durationUs: number): Promise<void> {
    await this.runUntil(this.#now + durationUs);
  }

  async runUntil(timeUs: number): Promise<void> {
    await this.#run(timeUs, undefined);
  }

  /** Run until `predicate` holds (checked after every event) or `timeoutUs` passes. */
  async waitFor(predicate: () => boolean, timeoutUs: number): Promise<boolean> {
    if (predicate()) return true;
    return this.#run(this.#now + timeoutUs, predicate);
  }

  async #run(untilUs: number, predicate: (() => boolean) | undefined): Promise<boolean> {
    for (;;) {
      // Let promise continuations (storage completions) run at the virtual time they resolved.
      await this.#drainContinuations();
      if (this.#failure !== undefined) throw this.#failure;
      if (predicate?.()) return true;
      const next = this.#queue.peekTimeUs();
      if (next === undefined || next > untilUs) break;
      const event = this.#queue.pop()!;
      this.#now = event.timeUs;
      if (++this.#events > eventsMax) throw new Error(`run over its limit of ${eventsMax} events`);
      this.#guard(event.payload);
    }
    this.#now = Math.max(this.#now, untilUs);
    return false;
  }

  async #drainContinuations(): Promise<void> {
    let spins = 0;
    while (this.#continuationsDue > 0) {
      if (++spins <= continuationSpinsMax) await null;
      else await nextMacrotask();
      if (spins > continuationSpinsMax + 10)
        throw new Error(`${this.#continuationsDue} storage continuations never ran`);
    }
  }

  /** Register the continuation of a storage promise (and count a resolution that is due now). */
  #continue<T>(promise: Promise<T>, fn: (value: T) => void): void {
    promise.then(
      (value) => {
        this.#continuationsDue--;
        this.#guard(() => fn(value));
      },
      (error: unknown) => {
        this.#continuationsDue--;
        this.#failure ??= error;
      },
    );
  }

  #schedule(delayUs: number, fn: () => void): void {
    this.#queue.push(this.#now + Math.max(0, Math.round(delayUs)), fn);
  }

  /** Scenario hook: run fn at a virtual time offset. */
  at(delayUs: number, fn: () => void): void {
    this.#schedule(delayUs, fn);
  }

  #guard(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#failure ??= error instanceof SimViolation ? error : this.#coreError(error);
    }
  }

  #coreError(error: unknown): SimViolation {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const violation = new SimViolation('core-error', message, this.#now);
    if (error instanceof Error && error.stack !== undefined)
      violation.stack = `${violation.stack}\ncaused by ${error.stack}`;
    return violation;
  }

  // --- nodes ---

  #createNode(id: NodeId, initialMembership: Membership): SimNode {
    if (this.nodes.has(id)) throw new Error(`node ${id} exists`);
    const rng = this.#rng.fork(`node-${id}`);
    const driftPpm =
      this.params.driftPpmMax === 0 ? 0 : rng.range(-this.params.driftPpmMax, this.params.driftPpmMax);
    const node: SimNode = {
      id,
      rng,
      driftPpm,
      initialMembership,
      disk: new SimDisk({
        node: id,
        rng: rng.fork('disk'),
        faults: this.params.disk,
        schedule: (delayUs, fn) => this.#schedule(delayUs, fn),
        onResolve: () => {
          this.#continuationsDue++;
        },
      }),
      up: false,
      life: 0,
      raft: undefined,
      busy: false,
      kv: new KvStore(),
      applied: 0,
      role: 'follower',
      leader: 0,
      leaderTerm: 0,
      hardState: EMPTY_HARD_STATE,
      durableHardState: EMPTY_HARD_STATE,
      log: new ShadowLog(),
      proposals: new Map(),
      reads: new Map(),
      readsWaiting: [],
      restarts: 0,
    };
    this.nodes.set(id, node);
    return node;
  }

  node(id: NodeId): SimNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new RangeError(`no node ${id}`);
    return node;
  }

  /** A brand-new controller process (membership change): starts with an empty membership. */
  addNode(id: NodeId): void {
    this.#createNode(id, { voters: [], learners: [] });
    this.network.addNode(id);
    this.log(`add n${id}`);
    this.#start(this.node(id));
  }

  raftConfig(id: NodeId, rng: Prng): RaftConfig {
    const base = defaultRaftConfig(id, (bound) => rng.int(bound));
    const params = this.params;
    const config: RaftConfig & { faults?: CoreFaults } = {
      ...base,
      heartbeatTicks: params.heartbeatTicks,
      electionTicks: params.electionTicks,
      preVote: params.preVote,
      checkQuorum: params.checkQuorum,
      lowestIdLeader: params.lowestIdLeader,
      ...(params.maxEntriesPerMessage === undefined
        ? {}
        : { maxEntriesPerMessage: params.maxEntriesPerMessage }),
      ...(params.maxInflightAppends === undefined ? {} : { maxInflightAppends: params.maxInflightAppends }),
    };
    if (this.#coreFaults !== undefined) config.faults = this.#coreFaults;
    return config;
  }

  crash(id: NodeId): CrashOutcome {
    const node = this.node(id);
    if (!node.up) return 'idle';
    node.up = false;
    node.life++;
    node.raft = undefined;
    node.busy = false;
    node.role = 'follower';
    node.leader = 0;
    node.leaderTerm = 0;
    node.proposals = new Map();
    node.reads = new Map();
    node.readsWaiting = [];
    const outcome = node.disk.crash();
    this.log(`crash n${id} disk=${outcome}`);
    return outcome;
  }

  restart(id: NodeId): void {
    const node = this.node(id);
    if (node.up) return;
    this.#start(node);
  }

  #start(node: SimNode): void {
    node.up = true;
    node.life++;
    node.restarts++;
    node.busy = true;
    const life = node.life;
    this.log(`start n${node.id}`);
    // load() resolves at once (the disk is in memory): its continuation is due right away.
    this.#continuationsDue++;
    this.#continue(node.disk.load(), (stored) => {
      if (node.life !== life) return;
      this.#boot(node, stored);
    });
  }

  #boot(node: SimNode, stored: { hardState: HardState; snapshot?: Snapshot; entries: Entry[] }): void {
    const initial = {
      hardState: stored.hardState,
      entries: stored.entries,
      initialMembership: node.initialMembership,
      ...(stored.snapshot === undefined ? {} : { snapshot: stored.snapshot }),
    };
    // Across restarts, the persisted term/vote/commit never go backwards.
    this.checker.hardState(node.id, node.durableHardState, stored.hardState, 'restart');
    node.durableHardState = stored.hardState;
    node.hardState = stored.hardState;
    node.log.reset();
    node.applied = 0;
    node.kv = new KvStore();
    if (stored.snapshot !== undefined) {
      const meta = stored.snapshot.meta;
      node.log.installSnapshot(meta.index, meta.term, this.#snapshotPrefix(meta.index));
      node.kv = KvStore.deserialize(stored.snapshot.data);
      node.applied = meta.index;
    }
    if (stored.entries.length > 0) this.#appendShadow(node, stored.entries);
    node.raft = createRaft(this.raftConfig(node.id, node.rng), initial);
    node.busy = false;
    // Each process's ticker starts at its own phase (processes do not tick in lockstep).
    this.#scheduleTick(node, node.life, node.rng.range(1, this.params.tickUs));
    this.#pump(node);
  }

  #snapshotPrefix(index: number): number {
    const prefix = this.#snapshotPrefixes.get(index) ?? this.checker.committedPrefixAt(index);
    if (prefix === undefined) throw new Error(`snapshot at ${index} of unknown origin`);
    return prefix;
  }

  #scheduleTick(node: SimNode, life: number, delayUs?: number): void {
    const intervalUs = Math.round(this.params.tickUs * (1 + node.driftPpm / 1_000_000));
    this.#schedule(delayUs ?? intervalUs, () => {
      if (node.life !== life || !node.up) return;
      node.raft!.tick();
      this.#pump(node);
      this.#scheduleTick(node, life);
    });
  }

  // --- the Ready loop (the same steps the daemon takes) ---

  #pump(node: SimNode): void {
    for (;;) {
      const raft = node.raft;
      if (!node.up || node.busy || raft === undefined || !raft.hasReady()) return;
      const ready = raft.ready();
      this.#observeReady(node, ready);
      const persist =
        ready.hardState !== undefined || ready.entries.length > 0 || ready.snapshot !== undefined;
      if (!persist) {
        this.#finishReady(node, raft, ready);
        continue;
      }
      node.busy = true;
      const life = node.life;
      const update: { hardState?: HardState; entries: readonly Entry[]; snapshot?: Snapshot } = {
        entries: ready.entries,
      };
      if (ready.hardState !== undefined) update.hardState = ready.hardState;
      if (ready.snapshot !== undefined) update.snapshot = ready.snapshot;
      this.#continue(node.disk.save(update), () => {
        if (node.life !== life) return;
        node.busy = false;
        const durable = node.disk.durable.hardState;
        this.checker.hardState(node.id, node.durableHardState, durable, 'durable');
        node.durableHardState = durable;
        this.#finishReady(node, raft, ready);
        this.#pump(node);
      });
      return;
    }
  }

  #observeReady(node: SimNode, ready: Ready): void {
    const checker = this.checker;
    if (ready.snapshot !== undefined) {
      const meta = ready.snapshot.meta;
      node.log.installSnapshot(meta.index, meta.term, this.#snapshotPrefix(meta.index));
      this.log(`n${node.id} snapshot i${meta.index} t${meta.term}`);
    }
    if (ready.softState !== undefined) {
      const { role, leader } = ready.softState;
      if (role !== node.role || leader !== node.leader) this.log(`n${node.id} ${role} leader=${leader}`);
      node.role = role;
      node.leader = leader;
      if (role === 'leader') {
        const term = node.raft!.status().term;
        if (node.leaderTerm !== term) {
          node.leaderTerm = term;
          checker.leaderElected(node.id, term);
          checker.leaderLog(node.id, term, node.log);
          this.leaderChanges.push({ node: node.id, term, atUs: this.#now });
        }
      } else {
        node.leaderTerm = 0;
      }
    }
    if (ready.entries.length > 0) {
      const cut = this.#appendShadow(node, ready.entries);
      if (cut > 0 && node.role === 'leader') {
        checker.fail(
          'leader-append-only',
          `leader ${node.id} of term ${node.leaderTerm} cut ${cut} entries of its log`,
        );
      }
    }
    if (ready.hardState !== undefined) {
      const next = ready.hardState;
      checker.hardState(node.id, node.hardState, next, 'ready');
      if (next.term !== node.hardState.term || next.votedFor !== node.hardState.votedFor) {
        this.log(`n${node.id} hs t${next.term} v${next.votedFor} c${next.commitIndex}`);
      }
      node.hardState = next;
      if (next.commitIndex > node.log.lastIndex) {
        checker.fail(
          'contract',
          `node ${node.id} commit ${next.commitIndex} beyond its log ${node.log.lastIndex}`,
        );
      }
    }
  }

  /** After the Ready is durable: its commit index is what the node acts on. */
  #observeCommit(node: SimNode, hardState: HardState): void {
    const prefix = node.log.prefixAt(hardState.commitIndex);
    if (hardState.commitIndex > 0 && prefix !== undefined)
      this.checker.committed(node.id, hardState.commitIndex, prefix);
    if (node.leaderTerm !== 0 && node.log.termAt(hardState.commitIndex) === node.leaderTerm)
      this.#leaderCommitted(node);
  }

  #appendShadow(node: SimNode, entries: readonly Entry[]): number {
    let cut: number;
    try {
      cut = node.log.append(entries);
    } catch (error) {
      this.checker.fail('contract', `node ${node.id}: ${(error as Error).message}`);
    }
    for (const entry of entries) {
      this.checker.logEntry(node.id, entry.index, entry.term, node.log.prefixAt(entry.index)!);
    }
    return cut;
  }

  #leaderCommitted(node: SimNode): void {
    if (this.#failoverStartUs === undefined || node.leaderTerm <= this.#failoverTerm) return;
    const elapsed = this.#now - this.#failoverStartUs;
    this.#failoverStartUs = undefined;
    this.failoversUs.push(elapsed);
    this.log(`failover ${elapsed}us to n${node.id}`);
  }

  /**
   * Start a failover measurement (call it before crashing or cutting off the leader): it ends
   * when a leader of a newer term than the current leader's commits an entry of its term.
   */
  markFailoverStart(): void {
    this.#failoverStartUs = this.#now;
    this.#failoverTerm = this.leaders()[0]?.term ?? this.maxTerm();
  }

  get failoverPending(): boolean {
    return this.#failoverStartUs !== undefined;
  }

  #finishReady(node: SimNode, raft: RaftNode, ready: Ready): void {
    if (ready.hardState !== undefined) this.#observeCommit(node, ready.hardState);
    for (const message of ready.messages) this.#send(node, message);
    if (ready.snapshot !== undefined) {
      node.kv = KvStore.deserialize(ready.snapshot.data);
      node.applied = ready.snapshot.meta.index;
      for (const index of node.proposals.keys()) if (index <= node.applied) node.proposals.delete(index);
    }
    for (const entry of ready.committedEntries) this.#apply(node, entry);
    for (const readState of ready.readStates) {
      const request = node.reads.get(readState.requestId);
      if (request === undefined) continue;
      node.reads.delete(readState.requestId);
      node.readsWaiting.push({ index: readState.index, request });
    }
    this.#serveReads(node);
    raft.advance(ready);
    this.#maybeCompact(node);
  }

  #send(node: SimNode, message: Message): void {
    const checker = this.checker;
    if (message.from !== node.id)
      checker.fail('contract', `node ${node.id} sends a message from ${message.from}`);
    const durable = node.disk.durable.hardState;
    const preVote =
      (message.type === 'RequestVote' || message.type === 'RequestVoteResponse') && message.preVote;
    const persistChecked = this.#checkPersistBeforeSend;
    if (persistChecked && !preVote && message.term > durable.term) {
      checker.fail(
        'unpersisted-send',
        `node ${node.id} sends ${message.type} of term ${message.term}, persisted ${durable.term}`,
      );
    }
    if (message.type === 'RequestVoteResponse' && message.granted && !message.preVote) {
      if (persistChecked && (durable.term !== message.term || durable.votedFor !== message.to)) {
        checker.fail(
          'unpersisted-send',
          `node ${node.id} grants its vote to ${message.to} in term ${message.term}, persisted t${durable.term} v${durable.votedFor}`,
        );
      }
      checker.voteGranted(node.id, message.term, message.to);
    }
    if (
      message.type === 'AppendEntries' ||
      message.type === 'InstallSnapshot' ||
      message.type === 'TimeoutNow'
    ) {
      checker.leaderElected(node.id, message.term);
    }
    const target = this.nodes.get(message.to);
    if (target === undefined || message.to === node.id) return;
    const delays = this.network.plan(message.from, message.to);
    for (const delayUs of delays) {
      this.#schedule(delayUs, () => this.#deliver(message));
    }
  }

  #deliver(message: Message): void {
    const target = this.nodes.get(message.to)!;
    if (!this.network.connected(message.from, message.to) || !target.up || target.raft === undefined) {
      return;
    }
    this.trace.recordNumbers(this.#now, messageNumbers(message), () => describeMessage(message));
    target.raft.step(message);
    this.#pump(target);
  }

  #apply(node: SimNode, entry: Entry): void {
    if (entry.index !== node.applied + 1) {
      this.checker.fail('contract', `node ${node.id} applies ${entry.index} after ${node.applied}`);
    }
    const hash = hashEntry(entry);
    this.checker.applied(node.id, entry.index, hash, node.log.prefixAt(entry.index));
    if (entry.type === 'normal') node.kv.apply(decodeCommand(entry.data));
    node.applied = entry.index;
    const proposal = node.proposals.get(entry.index);
    if (proposal === undefined) return;
    node.proposals.delete(entry.index);
    if (entry.term === proposal.term && sameBytes(entry.data, proposal.data)) {
      this.checker.acknowledge(entry.index, hash);
      this.#reply(node, proposal.request, { kind: 'ok', output: undefined });
    } else {
      // Another entry took the proposal's place: this attempt failed; the client retries.
      this.#reply(node, proposal.request, { kind: 'failed' });
    }
  }

  #serveReads(node: SimNode): void {
    if (node.readsWaiting.length === 0) return;
    const still: { readonly index: number; readonly request: ClientRequest }[] = [];
    for (const waiting of node.readsWaiting) {
      if (waiting.index <= node.applied) {
        this.#reply(node, waiting.request, { kind: 'ok', output: node.kv.get(waiting.request.input.key) });
      } else {
        still.push(waiting);
      }
    }
    node.readsWaiting = still;
  }

  #maybeCompact(node: SimNode): void {
    const every = this.params.snapshotEveryEntries;
    if (every === 0 || node.raft === undefined) return;
    if (node.applied - node.log.baseIndex < every) return;
    const prefix = node.log.prefixAt(node.applied);
    if (prefix === undefined) return;
    // The core may already hold a newer snapshot from the leader (stepped in while this Ready
    // was being persisted, handed out in the next Ready): nothing to compact then. Without this
    // guard snapshotMeta() throws "no term known" (snapshot-catch-up seed 953).
    if (node.raft.status().snapshotIndex >= node.applied) return;
    const meta = node.raft.snapshotMeta(node.applied);
    if (meta.index !== node.applied || meta.term !== node.log.termAt(node.applied)) {
      this.checker.fail(
        'contract',
        `node ${node.id} snapshotMeta(${node.applied}) = ${meta.index}/${meta.term}`,
      );
    }
    const snapshot: Snapshot = { meta, data: node.kv.serialize() };
    this.#snapshotPrefixes.set(node.applied, prefix);
    node.raft.compact(snapshot);
    node.log.compactTo(node.applied);
    this.log(`n${node.id} compact i${node.applied}`);
    this.#continue(node.disk.compact(snapshot), () => {});
  }

  // --- direct access for scenarios ---

  raft(id: NodeId): RaftNode | undefined {
    return this.node(id).raft;
  }

  /** Process a node's Readies after a scenario called its core directly. */
  pump(id: NodeId): void {
    this.#pump(this.node(id));
  }

  /** Propose an application command on a node, as an application would. */
  propose(id: NodeId, data: Uint8Array): ProposeResult | undefined {
    const node = this.node(id);
    if (!node.up || node.raft === undefined) return undefined;
    const result = node.raft.propose(data);
    this.#pump(node);
    return result;
  }

  proposeConfigChange(id: NodeId, change: ConfigChange): ProposeResult | undefined {
    const node = this.node(id);
    if (!node.up || node.raft === undefined) return undefined;
    const result = node.raft.proposeConfigChange(change);
    this.log(`n${id} config ${change.kind} ${change.node} -> ${result.ok ? 'ok' : result.reason}`);
    this.#pump(node);
    return result;
  }

  transferLeadership(from: NodeId, to: NodeId): boolean {
    const node = this.node(from);
    if (!node.up || node.raft === undefined) return false;
    const accepted = node.raft.transferLeadership(to);
    this.log(`n${from} transfer to n${to} ${accepted ? 'accepted' : 'refused'}`);
    this.#pump(node);
    return accepted;
  }

  /** Up nodes that consider themselves leader, highest term first. */
  leaders(): { readonly id: NodeId; readonly term: number }[] {
    const out: { id: NodeId; term: number }[] = [];
    for (const node of this.nodes.values()) {
      if (node.up && node.role === 'leader') out.push({ id: node.id, term: node.leaderTerm });
    }
    return out.sort((a, b) => b.term - a.term || a.id - b.id);
  }

  /** The leader of the highest term if it has committed an entry of its term. */
  committedLeader(): NodeId | undefined {
    const top = this.leaders()[0];
    if (top === undefined) return undefined;
    const node = this.node(top.id);
    return node.log.termAt(node.hardState.commitIndex) === top.term ? top.id : undefined;
  }

  maxTerm(): number {
    let max = 0;
    for (const node of this.nodes.values()) max = Math.max(max, node.hardState.term);
    return max;
  }

  upNodes(): NodeId[] {
    return [...this.nodes.values()].filter((node) => node.up).map((node) => node.id);
  }

  /** Up nodes whose apply index and log end equal the leader's commit index. */
  caughtUp(): boolean {
    const leaderId = this.committedLeader();
    if (leaderId === undefined) return false;
    const leader = this.node(leaderId);
    const members = leader.raft!.status().membership;
    const commit = leader.hardState.commitIndex;
    if (leader.log.lastIndex !== commit || leader.applied !== commit) return false;
    for (const id of [...members.voters, ...members.learners]) {
      const node = this.nodes.get(id);
      if (node === undefined || !node.up) continue;
      if (node.applied !== commit || node.log.lastIndex !== commit) return false;
    }
    return true;
  }

  // --- clients ---

  startClients(): void {
    if (this.#clientsRunning) return;
    this.#clientsRunning = true;
    for (const client of this.#clients) {
      if (client.pending === undefined)
        this.#schedule(client.rng.range(0, this.params.clientThinkUsMax), () => this.#issue(client));
    }
  }

  stopClients(): void {
    this.#clientsRunning = false;
  }

  get clientsIdle(): boolean {
    return this.#clients.every((client) => client.pending === undefined);
  }

  #issue(client: SimClient): void {
    if (!this.#clientsRunning || client.pending !== undefined) return;
    const rng = client.rng;
    const key = `k${rng.int(this.params.keys)}`;
    const roll = rng.int(10);
    client.commands++;
    const value = `${client.id}.${client.commands};`;
    const input: KvInput =
      roll < 4
        ? { kind: 'put', key, value }
        : roll < 7
          ? { kind: 'append', key, value }
          : { kind: 'get', key };
    const historyId = this.history.call(client.id, input, this.#now);
    client.pending = historyId;
    client.attempt = 0;
    this.#attempt(client, { client: client.id, historyId, input, commandId: client.commands });
  }

  /**
   * One attempt of the client's pending operation. Writes carry (client, command id), which the
   * state machine deduplicates, so a client retries the same operation at another controller
   * after a timeout, a redirect or a lost proposal until it gets a definite answer (at most once
   * per attempt timeout): outcomes stay known and the history checkable.
   */
  #attempt(client: SimClient, request: ClientRequest): void {
    const attempt = ++client.attempt;
    if (attempt > clientAttemptsMax) throw new Error(`client ${client.id} over its retry limit`);
    const target = client.target;
    this.log(
      `c${client.id} ${request.input.kind} ${request.input.key} #${request.historyId}.${attempt} -> n${target}`,
    );
    this.#schedule(client.rng.range(0, this.params.clientDelayUsMax), () => {
      const node = this.nodes.get(target);
      if (node === undefined || !node.up || node.raft === undefined) return;
      this.#handleRequest(node, request);
    });
    this.#schedule(this.params.clientTimeoutUs, () => {
      if (client.pending !== request.historyId || client.attempt !== attempt) return;
      this.log(`c${client.id} timeout #${request.historyId}.${attempt}`);
      client.target = this.#otherNode(client, target);
      this.#attempt(client, request);
    });
  }

  #otherNode(client: SimClient, not: NodeId): NodeId {
    const ids = [...this.nodes.keys()].filter((id) => id !== not);
    return ids.length === 0 ? not : client.rng.pick(ids);
  }

  #handleRequest(node: SimNode, request: ClientRequest): void {
    const raft = node.raft!;
    const input = request.input;
    if (input.kind === 'get') {
      if (node.role !== 'leader') {
        this.#reply(node, request, { kind: 'redirect', leader: node.leader });
        return;
      }
      const requestId = ++this.#readRequests;
      if (!raft.readIndex(requestId)) {
        this.#reply(node, request, { kind: 'redirect', leader: node.leader });
        return;
      }
      node.reads.set(requestId, request);
      this.#pump(node);
      return;
    }
    const data = encodeCommand({
      op: input.kind,
      key: input.key,
      value: input.value,
      client: request.client,
      id: request.commandId,
    });
    const result = raft.propose(data);
    if (!result.ok) {
      this.#reply(node, request, { kind: 'redirect', leader: result.leader });
      return;
    }
    node.proposals.set(result.index, { term: result.term, data, request });
    this.#pump(node);
  }

  #reply(node: SimNode, request: ClientRequest, reply: ClientReply): void {
    const client = this.#clients[request.client - 1]!;
    const attempt = client.attempt;
    this.#schedule(client.rng.range(0, this.params.clientDelayUsMax), () => {
      if (client.pending !== request.historyId) return;
      if (reply.kind === 'ok') {
        client.pending = undefined;
        this.history.ok(
          request.historyId,
          this.#now,
          request.input.kind === 'get' ? reply.output : undefined,
        );
        client.target = node.id;
        this.log(
          `c${client.id} ok #${request.historyId}${reply.output === undefined ? '' : ` =${reply.output}`}`,
        );
        this.#schedule(client.rng.range(0, this.params.clientThinkUsMax), () => this.#issue(client));
        return;
      }
      // A refusal of an older attempt says nothing about the current one.
      if (client.attempt !== attempt) return;
      this.log(`c${client.id} ${reply.kind} #${request.historyId}.${attempt}`);
      client.target =
        reply.kind === 'redirect' && reply.leader !== 0 ? reply.leader : this.#otherNode(client, node.id);
      this.#schedule(client.rng.range(10_000, 30_000), () => {
        if (client.pending === request.historyId && client.attempt === attempt)
          this.#attempt(client, request);
      });
    });
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const MESSAGE_TYPE_CODES: Record<Message['type'], number> = {
  RequestVote: 1,
  RequestVoteResponse: 2,
  AppendEntries: 3,
  AppendEntriesResponse: 4,
  InstallSnapshot: 5,
  InstallSnapshotResponse: 6,
  TimeoutNow: 7,
};

/** The fields of a message that its trace line shows, as integers for the trace hash. */
function messageNumbers(message: Message): number[] {
  const head = [MESSAGE_TYPE_CODES[message.type], message.from, message.to, message.term];
  switch (message.type) {
    case 'RequestVote':
      return [
        ...head,
        message.lastLogIndex,
        message.lastLogTerm,
        message.preVote ? 1 : 0,
        message.transfer ? 1 : 0,
      ];
    case 'RequestVoteResponse':
      return [...head, message.granted ? 1 : 0, message.preVote ? 1 : 0];
    case 'AppendEntries':
      return [
        ...head,
        message.prevLogIndex,
        message.prevLogTerm,
        message.entries.length,
        message.leaderCommit,
        message.readContext,
      ];
    case 'AppendEntriesResponse':
      return [
        ...head,
        message.success ? 1 : 0,
        message.matchIndex,
        message.conflictIndex,
        message.conflictTerm,
      ];
    case 'InstallSnapshot':
      return [...head, message.snapshot.meta.index, message.snapshot.meta.term];
    case 'InstallSnapshotResponse':
      return [...head, message.matchIndex];
    case 'TimeoutNow':
      return head;
  }
}

export function describeMessage(message: Message): string {
  const head = `${message.type} ${message.from}>${message.to} t${message.term}`;
  switch (message.type) {
    case 'RequestVote':
      return `${head} last=${message.lastLogIndex}/${message.lastLogTerm}${message.preVote ? ' pre' : ''}${message.transfer ? ' transfer' : ''}`;
    case 'RequestVoteResponse':
      return `${head} ${message.granted ? 'granted' : 'rejected'}${message.preVote ? ' pre' : ''}`;
    case 'AppendEntries':
      return `${head} prev=${message.prevLogIndex}/${message.prevLogTerm} n=${message.entries.length} commit=${message.leaderCommit}${message.readContext === 0 ? '' : ` read=${message.readContext}`}`;
    case 'AppendEntriesResponse':
      return `${head} ${message.success ? `ok match=${message.matchIndex}` : `reject hint=${message.conflictIndex}/${message.conflictTerm}`}`;
    case 'InstallSnapshot':
      return `${head} snap=${message.snapshot.meta.index}/${message.snapshot.meta.term}`;
    case 'InstallSnapshotResponse':
      return `${head} match=${message.matchIndex}`;
    case 'TimeoutNow':
      return head;
  }
}
