/**
 * An in-process cluster of consensus cores over a fixed-order network, for the golden tests and
 * the unit tests. Deterministic: nodes are processed in id order, messages are delivered FIFO,
 * randomInt comes from a seeded generator (or is always 0).
 *
 * The application state machine is a list of applied normal-entry payloads (as strings); its
 * snapshot is that list as JSON.
 */
import { createRaft, defaultRaftConfig } from '../../consensus/raft.ts';
import { MemoryRaftStorage } from '../../consensus/storage-memory.ts';
import type {
  ConfigChange,
  Entry,
  Membership,
  Message,
  NodeId,
  RaftConfig,
  RaftNode,
  Ready,
  Snapshot,
} from '../../consensus/types.ts';

export interface NodeOptions {
  readonly config?: Partial<Omit<RaftConfig, 'id' | 'randomInt'>>;
  /** Seed for randomInt; undefined = randomInt always returns 0. */
  readonly seed?: number;
}

export interface ClusterNode {
  readonly id: NodeId;
  raft: RaftNode;
  storage: MemoryRaftStorage;
  readonly initialMembership: Membership;
  readonly options: NodeOptions;
  up: boolean;
  /** Applied normal-entry payloads, index-aligned via appliedIndexes. */
  state: string[];
  appliedIndex: number;
  /** Every committed entry this node applied (index -> "term/type/data"), for safety checks. */
  appliedLog: Map<number, string>;
  readStates: { requestId: number; index: number }[];
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Mulberry32: a tiny seeded generator for deterministic jitter. */
export function seededRandomInt(seed: number): (bound: number) => number {
  let a = seed >>> 0;
  return (bound: number) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const value = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return Math.floor(value * bound);
  };
}

export function describeEntry(entry: Entry): string {
  if (entry.type === 'normal') return `${entry.index}/${entry.term} ${decoder.decode(entry.data)}`;
  if (entry.type === 'noop') return `${entry.index}/${entry.term} noop`;
  const record = JSON.parse(decoder.decode(entry.data)) as { change: ConfigChange };
  return `${entry.index}/${entry.term} ${record.change.kind}(${record.change.node})`;
}

export function describeMessage(message: Message): string {
  const head = `${message.from}->${message.to} ${message.type} term=${message.term}`;
  switch (message.type) {
    case 'RequestVote':
      return `${head} last=${message.lastLogIndex}/${message.lastLogTerm}${message.preVote ? ' pre' : ''}${message.transfer ? ' transfer' : ''}`;
    case 'RequestVoteResponse':
      return `${head} ${message.granted ? 'granted' : 'rejected'}${message.preVote ? ' pre' : ''}`;
    case 'AppendEntries': {
      const entries =
        message.entries.length === 0 ? '' : ` entries=[${message.entries.map(describeEntry).join(', ')}]`;
      const context = message.readContext === 0 ? '' : ` ctx=${message.readContext}`;
      return `${head} prev=${message.prevLogIndex}/${message.prevLogTerm} commit=${message.leaderCommit}${entries}${context}`;
    }
    case 'AppendEntriesResponse': {
      const context = message.readContext === 0 ? '' : ` ctx=${message.readContext}`;
      if (message.success) return `${head} ok match=${message.matchIndex}${context}`;
      return `${head} reject conflict=${message.conflictIndex}/${message.conflictTerm}${context}`;
    }
    case 'InstallSnapshot': {
      const meta = message.snapshot.meta;
      return `${head} snapshot=${meta.index}/${meta.term} voters=${meta.membership.voters.join(',')} learners=${meta.membership.learners.join(',')}`;
    }
    case 'InstallSnapshotResponse':
      return `${head} match=${message.matchIndex}`;
    case 'TimeoutNow':
      return head;
  }
}

/** Network faults for randomized tests (all decisions from `randomInt`, so runs replay exactly). */
export interface Chaos {
  readonly randomInt: (bound: number) => number;
  readonly dropPercent: number;
  readonly duplicatePercent: number;
  /** Held back to a later delivery round (reordering and delay). */
  readonly holdPercent: number;
  /** Of the held messages, this share is delayed by 1..delayTicksMax ticks instead. */
  readonly delayPercent?: number;
  readonly delayTicksMax?: number;
}

export class Cluster {
  readonly nodes = new Map<NodeId, ClusterNode>();
  chaos: Chaos | undefined;
  /** Drop messages matching this filter (targeted scenarios such as Figure 8). */
  dropIf: ((message: Message) => boolean) | undefined;
  private inflight: Message[] = [];
  private delayed: { due: number; message: Message }[] = [];
  private ticks = 0;
  /** Connectivity groups; two nodes can talk iff some group holds both. undefined = fully connected. */
  private groups: NodeId[][] | undefined;
  readonly trace: string[] = [];
  /** Print every message (otherwise idle heartbeats and acks that add nothing are elided). */
  verbose = false;
  private readonly lastPrintedMatch = new Map<string, number>();
  /** Safety: committed entries by index across all nodes. */
  private readonly committed = new Map<number, string>();

  async addNode(id: NodeId, initialMembership: Membership, options: NodeOptions = {}): Promise<ClusterNode> {
    const storage = new MemoryRaftStorage();
    const node: ClusterNode = {
      id,
      raft: undefined as unknown as RaftNode,
      storage,
      initialMembership,
      options,
      up: true,
      state: [],
      appliedIndex: 0,
      appliedLog: new Map(),
      readStates: [],
    };
    node.raft = await this.boot(node);
    this.nodes.set(id, node);
    return node;
  }

  private async boot(node: ClusterNode): Promise<RaftNode> {
    const stored = await node.storage.load();
    const randomInt =
      node.options.seed === undefined ? () => 0 : seededRandomInt(node.options.seed + node.id);
    const config: RaftConfig = { ...defaultRaftConfig(node.id, randomInt), ...node.options.config };
    node.state = [];
    node.appliedIndex = 0;
    if (stored.snapshot !== undefined) {
      node.state = JSON.parse(decoder.decode(stored.snapshot.data)) as string[];
      node.appliedIndex = stored.snapshot.meta.index;
    }
    return createRaft(config, {
      hardState: stored.hardState,
      entries: stored.entries,
      initialMembership: node.initialMembership,
      ...(stored.snapshot === undefined ? {} : { snapshot: stored.snapshot }),
    });
  }

  node(id: NodeId): ClusterNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  private log(line: string): void {
    this.trace.push(line);
  }

  takeTrace(): string[] {
    return this.trace.splice(0, this.trace.length);
  }

  canTalk(a: NodeId, b: NodeId): boolean {
    if (this.groups === undefined) return true;
    return this.groups.some((group) => group.includes(a) && group.includes(b));
  }

  partition(groups: NodeId[][]): void {
    this.groups = groups;
  }

  heal(): void {
    this.groups = undefined;
  }

  async crash(id: NodeId): Promise<void> {
    const node = this.node(id);
    node.up = false;
    this.log(`${id}: crashed`);
  }

  async restart(id: NodeId): Promise<void> {
    const node = this.node(id);
    node.raft = await this.boot(node);
    node.up = true;
    const status = node.raft.status();
    this.log(
      `${id}: restarted term=${status.term} last=${status.lastIndex}/${status.lastTerm} commit=${status.commitIndex}`,
    );
  }

  private async processReady(node: ClusterNode): Promise<void> {
    const ready: Ready = node.raft.ready();
    if (ready.softState !== undefined) {
      this.log(
        `${node.id}: role=${ready.softState.role} leader=${ready.softState.leader} term=${node.raft.status().term}`,
      );
    }
    await node.storage.save({
      entries: ready.entries,
      ...(ready.hardState === undefined ? {} : { hardState: ready.hardState }),
      ...(ready.snapshot === undefined ? {} : { snapshot: ready.snapshot }),
    });
    if (ready.snapshot !== undefined) {
      node.state = JSON.parse(decoder.decode(ready.snapshot.data)) as string[];
      node.appliedIndex = ready.snapshot.meta.index;
      this.log(`${node.id}: restore snapshot ${ready.snapshot.meta.index}/${ready.snapshot.meta.term}`);
    }
    for (const entry of ready.committedEntries) {
      if (entry.index <= node.appliedIndex) continue;
      if (entry.index !== node.appliedIndex + 1)
        throw new Error(`node ${node.id} applies ${entry.index} after ${node.appliedIndex}`);
      node.appliedIndex = entry.index;
      const described = describeEntry(entry);
      node.appliedLog.set(entry.index, described);
      const previous = this.committed.get(entry.index);
      if (previous !== undefined && previous !== described) {
        throw new Error(`SAFETY: node ${node.id} applies ${described} where ${previous} was applied`);
      }
      this.committed.set(entry.index, described);
      if (entry.type === 'normal') node.state.push(decoder.decode(entry.data));
      this.log(`${node.id}: apply ${described}`);
    }
    for (const read of ready.readStates) {
      node.readStates.push(read);
      this.log(`${node.id}: read-state request=${read.requestId} index=${read.index}`);
    }
    this.inflight.push(...ready.messages);
    node.raft.advance(ready);
  }

  private shouldPrint(message: Message): boolean {
    if (this.verbose) return true;
    if (message.type === 'AppendEntries') return message.entries.length > 0 || message.readContext > 0;
    if (message.type === 'AppendEntriesResponse') {
      if (!message.success || message.readContext > 0) return true;
      const key = `${message.from}->${message.to}@${message.term}`;
      const last = this.lastPrintedMatch.get(key) ?? -1;
      this.lastPrintedMatch.set(key, Math.max(last, message.matchIndex));
      return message.matchIndex > last;
    }
    return true;
  }

  private deliver(message: Message): void {
    const target = this.nodes.get(message.to);
    const sender = this.nodes.get(message.from);
    if (
      target === undefined ||
      !target.up ||
      sender === undefined ||
      !sender.up ||
      !this.canTalk(message.from, message.to) ||
      this.dropIf?.(message) === true
    ) {
      if (this.shouldPrint(message)) this.log(`DROP ${describeMessage(message)}`);
      return;
    }
    if (this.shouldPrint(message)) this.log(describeMessage(message));
    target.raft.step(message);
  }

  /** Process readies and deliver messages until nothing moves. */
  async stabilize(maxRounds = 10_000): Promise<void> {
    for (let round = 0; round < maxRounds; round++) {
      let moved = false;
      for (const node of this.upNodes()) {
        while (node.raft.hasReady()) {
          moved = true;
          await this.processReady(node);
        }
      }
      if (this.inflight.length > 0) {
        moved = true;
        const batch = this.inflight;
        this.inflight = [];
        const chaos = this.chaos;
        if (chaos === undefined) {
          for (const message of batch) this.deliver(message);
        } else {
          const held: Message[] = [];
          for (const message of batch) {
            if (chaos.randomInt(100) < chaos.dropPercent) continue;
            if (chaos.randomInt(100) < chaos.holdPercent) {
              held.push(message);
              continue;
            }
            this.deliver(message);
            if (chaos.randomInt(100) < chaos.duplicatePercent) this.deliver(message);
          }
          // Held messages go out in a later round (reverse order: reordering) or after some ticks.
          for (const message of held.reverse()) {
            if (chaos.randomInt(100) < (chaos.delayPercent ?? 0)) {
              const due = this.ticks + 1 + chaos.randomInt(chaos.delayTicksMax ?? 1);
              this.delayed.push({ due, message });
            } else {
              this.inflight.push(message);
            }
          }
        }
      }
      if (!moved) return;
    }
    throw new Error('cluster did not stabilize');
  }

  upNodes(): ClusterNode[] {
    return [...this.nodes.values()].filter((node) => node.up).sort((a, b) => a.id - b.id);
  }

  /** `rounds` times: tick every listed (up) node once, then stabilize. */
  async tick(ids: readonly NodeId[] | 'all', rounds: number): Promise<void> {
    for (let round = 0; round < rounds; round++) {
      this.ticks++;
      const due = this.delayed.filter((item) => item.due <= this.ticks);
      this.delayed = this.delayed.filter((item) => item.due > this.ticks);
      this.inflight.push(...due.map((item) => item.message));
      const targets = ids === 'all' ? this.upNodes().map((node) => node.id) : ids;
      for (const id of targets) {
        const node = this.node(id);
        if (node.up) node.raft.tick();
      }
      await this.stabilize();
    }
  }

  leaders(): NodeId[] {
    return this.upNodes()
      .filter((node) => node.raft.status().role === 'leader')
      .map((node) => node.id);
  }

  propose(id: NodeId, data: string) {
    return this.node(id).raft.propose(encoder.encode(data));
  }

  /** Application snapshot of `id` at its applied index, then compact both the core and the storage. */
  async compact(id: NodeId, index?: number): Promise<Snapshot> {
    const node = this.node(id);
    const at = index ?? node.appliedIndex;
    if (at !== node.appliedIndex) throw new Error('the test app can only snapshot at its applied index');
    const snapshot: Snapshot = {
      meta: node.raft.snapshotMeta(at),
      data: encoder.encode(JSON.stringify(node.state)),
    };
    node.raft.compact(snapshot);
    await node.storage.compact(snapshot);
    return snapshot;
  }

  statusLine(id: NodeId): string {
    const node = this.node(id);
    const s = node.raft.status();
    const progress = [...s.progress.entries()]
      .sort(([a], [b]) => a - b)
      .map(([peer, p]) => `${peer}:${p.matchIndex}/${p.nextIndex}`)
      .join(' ');
    return (
      `${id}: ${node.up ? '' : 'DOWN '}role=${s.role} term=${s.term} leader=${s.leader} commit=${s.commitIndex} ` +
      `applied=${s.appliedIndex} last=${s.lastIndex}/${s.lastTerm} voters=${s.membership.voters.join(',')} ` +
      `learners=${s.membership.learners.join(',')}` +
      (s.transferee === 0 ? '' : ` transferee=${s.transferee}`) +
      (s.snapshotIndex === 0 ? '' : ` snapshot=${s.snapshotIndex}/${s.snapshotTerm}`) +
      (progress === '' ? '' : ` progress=[${progress}]`) +
      ` state=[${node.state.join(',')}]`
    );
  }
}
