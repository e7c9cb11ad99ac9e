/**
 * Three controller replicas, each on its own libp2p host, wired with the libp2p consensus
 * transport (node/controller/net-transport.ts).
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { encodeMessage } from '../../consensus/codec.ts';
import { MemoryRaftStorage } from '../../consensus/storage-memory.ts';
import type { Message } from '../../consensus/types.ts';
import {
  type ControllerPeer,
  createNetReplicaTransport,
  encodeRaftBatch,
  type NetReplicaTransport,
  raftMethod,
} from '../../node/controller/net-transport.ts';
import { ControllerReplica } from '../../node/controller/replica.ts';
import { MemoryKv } from '../../node/metadata/kv.ts';
import { createHost, type Host } from '../../node/net/host.ts';
import { openSession } from '../../node/net/session.ts';
import { id } from '../metadata/harness.ts';
import { type Keyed, newKey } from '../net/_helpers.ts';

const tickMs = 30; // election timeout about 300 ms

interface Controller {
  readonly id: number;
  readonly key: Keyed;
  host: Host;
  transport: NetReplicaTransport;
  replica: ControllerReplica;
  storage: MemoryRaftStorage;
  readonly kv: MemoryKv;
  running: boolean;
}

/** A cell of controllers on real hosts; the directory maps controller ids to peers. */
class TestCell {
  readonly directory = new Map<number, ControllerPeer>();
  readonly controllers: Controller[] = [];
  readonly voters: number[];

  constructor(voters: number[]) {
    this.voters = voters;
  }

  isMember = (peerId: string): boolean => [...this.directory.values()].some((p) => p.peerId === peerId);
  resolve = (controllerId: number): ControllerPeer | undefined => this.directory.get(controllerId);

  async start(t: TestContext): Promise<void> {
    const keys = await Promise.all(this.voters.map(() => newKey()));
    this.voters.forEach((voter, i) => {
      this.directory.set(voter, { peerId: keys[i]!.peerId, addresses: [] });
    });
    for (const [i, voter] of this.voters.entries()) {
      const kv = new MemoryKv();
      const controller = await this.#boot(voter, keys[i]!, new MemoryRaftStorage(), kv);
      this.controllers.push(controller);
    }
    t.after(() => this.stopAll());
  }

  async #boot(voter: number, key: Keyed, storage: MemoryRaftStorage, kv: MemoryKv): Promise<Controller> {
    const host = await createHost({ privateKey: key.privateKey, isMember: this.isMember });
    this.directory.set(voter, { peerId: key.peerId, addresses: host.multiaddrs().map(String) });
    const transport = await createNetReplicaTransport({ host, selfId: voter, resolve: this.resolve });
    const replica = await ControllerReplica.start({
      id: voter,
      storage,
      kv,
      transport,
      initialMembership: { voters: this.voters, learners: [] },
      tickMs,
      snapshotEveryEntries: 50,
    });
    return { id: voter, key, host, transport, replica, storage, kv, running: true };
  }

  get(voter: number): Controller {
    return this.controllers.find((c) => c.id === voter)!;
  }

  get running(): Controller[] {
    return this.controllers.filter((c) => c.running);
  }

  /** Stop a controller and its host (a crash, as far as the others can tell). */
  async stop(voter: number): Promise<void> {
    const controller = this.get(voter);
    if (!controller.running) return;
    controller.running = false;
    await controller.replica.stop();
    await controller.transport.close();
    await controller.host.stop();
  }

  /** Restart a stopped controller from what it persisted, on a new host (new port). */
  async restart(voter: number): Promise<void> {
    const old = this.get(voter);
    assert.equal(old.running, false);
    const storage = new MemoryRaftStorage(old.storage.exportState());
    const restarted = await this.#boot(voter, old.key, storage, old.kv);
    this.controllers[this.controllers.indexOf(old)] = restarted;
  }

  async stopAll(): Promise<void> {
    for (const controller of this.controllers) await this.stop(controller.id).catch(() => {});
  }
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function propose(cell: TestCell, command: Parameters<ControllerReplica['propose']>[0]) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const leader = cell.running.find((c) => c.replica.isLeader);
    if (leader !== undefined) {
      try {
        return await leader.replica.propose(command);
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code !== 'NOT_LEADER' && code !== 'CLOSED' && code !== 'TIMEOUT') throw error;
      }
    }
    if (Date.now() > deadline) throw new Error('no primary accepted the proposal');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function sameState(controllers: Controller[]): Promise<void> {
  await waitFor('replicas caught up', () => {
    const applied = controllers.map((c) => c.replica.machine.appliedIndex);
    return applied.every((index) => index === applied[0]);
  });
  const snapshots = await Promise.all(controllers.map((c) => c.replica.machine.snapshot()));
  for (const snapshot of snapshots) assert.ok(Buffer.from(snapshot).equals(Buffer.from(snapshots[0]!)));
}

test('net transport: election, replication, failover and catch-up over libp2p', {
  timeout: 30_000,
}, async (t) => {
  const cell = new TestCell([1, 2, 3]);
  await cell.start(t);
  const started = Date.now();
  await waitFor('controller 1 leads', () => cell.get(1).replica.isLeader);
  t.diagnostic(`controller 1 elected after ${Date.now() - started} ms`);

  const rootId = id();
  const init = await propose(cell, {
    initCell: { cell: 'net', rootId, uid: 0, gid: 0, mode: 0o755, lostFoundId: id() },
  });
  assert.equal(init.code, 'OK');
  const creates = [];
  for (let i = 0; i < 60; i += 1) {
    creates.push(
      propose(cell, {
        create: { parent: rootId, name: `f-${i}`, id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
      }),
    );
  }
  for (const result of await Promise.all(creates)) assert.equal(result.code, 'OK');
  await sameState(cell.controllers);
  for (const controller of cell.controllers) {
    assert.equal((await controller.replica.machine.cell())?.cell, 'net');
    assert.equal((await controller.replica.machine.readdir(rootId)).length, 61);
    const stats = controller.transport.stats();
    assert.ok(stats.receivedMessages > 0 && stats.sentMessages > 0);
    assert.equal(stats.droppedImpersonation, 0);
    assert.equal(stats.droppedUndecodable, 0);
  }

  // The leader's host goes away: controller 2 (the lowest remaining id) takes over.
  const stoppedAt = Date.now();
  await cell.stop(1);
  await waitFor('controller 2 leads', () => cell.get(2).replica.isLeader);
  t.diagnostic(`failover to controller 2 after ${Date.now() - stoppedAt} ms`);
  // Enough writes that the log is compacted past what controller 1 has (snapshot every 50).
  for (let i = 0; i < 120; i += 1) {
    const result = await propose(cell, {
      create: { parent: rootId, name: `g-${i}`, id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
    });
    assert.equal(result.code, 'OK');
  }
  assert.ok(cell.get(2).replica.status().snapshotIndex > cell.get(1).replica.machine.appliedIndex);
  const failures = cell.get(2).transport.stats();
  assert.ok(failures.sessionFailures > 0, 'sends to the stopped controller failed');
  assert.ok(failures.sessionFailures < 40, `backoff keeps retries few (${failures.sessionFailures})`);

  // Restart controller 1 on a new port: it catches up (through a snapshot) and leads again.
  await cell.restart(1);
  await waitFor('controller 1 leads again', () => cell.get(1).replica.isLeader, 15_000);
  await cell.get(1).replica.readBarrier();
  assert.equal((await cell.get(1).replica.machine.readdir(rootId)).length, 181, 'nothing lost');
  await sameState(cell.controllers);
});

test('net transport: impersonating, misaddressed and undecodable messages are dropped', {
  timeout: 20_000,
}, async (t) => {
  const cell = new TestCell([1, 2, 3]);
  await cell.start(t);
  await waitFor('controller 1 leads', () => cell.get(1).replica.isLeader);
  const target = cell.get(2);
  const attacker = cell.get(3);
  const termBefore = target.replica.status().term;
  const vote = (from: number, to: number): Message => ({
    type: 'RequestVote',
    from,
    to,
    term: termBefore + 1000,
    lastLogIndex: 1_000_000,
    lastLogTerm: termBefore + 999,
    preVote: false,
    transfer: true,
  });
  const before = target.transport.stats();
  // Controller 3's host speaks for controller 1; sends a message for controller 1 to 2; and junk.
  const session = await openSession(attacker.host, target.host.multiaddrs()[0]!, raftMethod);
  t.after(() => session.close());
  assert.ok(session.notify(encodeRaftBatch([encodeMessage(vote(1, 2))])));
  assert.ok(session.notify(encodeRaftBatch([encodeMessage(vote(3, 1))])));
  assert.ok(session.notify(encodeRaftBatch([Uint8Array.from([0xff, 0xff, 0x01])])));
  assert.ok(session.notify(Uint8Array.from([0x0a, 0x7f])));
  await waitFor('dropped', () => {
    const stats = target.transport.stats();
    return (
      stats.droppedImpersonation === before.droppedImpersonation + 1 &&
      stats.droppedMisaddressed === before.droppedMisaddressed + 1 &&
      stats.droppedUndecodable === before.droppedUndecodable + 2
    );
  });
  assert.ok(target.replica.status().term < termBefore + 1000, 'the forged vote request had no effect');
  assert.equal(session.closed, false, 'a member is not cut off for one bad frame');

  // A peer that is not a member is refused by the session layer.
  const outsider = await createHost({ privateKey: (await newKey()).privateKey, isMember: () => true });
  t.after(() => outsider.stop());
  const refused = await openSession(outsider, target.host.multiaddrs()[0]!, raftMethod);
  refused.notify(encodeRaftBatch([encodeMessage(vote(3, 2))]));
  await waitFor('refused', () => refused.closed);
  assert.equal((refused.closedReason as Error & { code: string }).code, 'PERMISSION_DENIED');
  assert.ok(target.host.counters.refusedStreams >= 1);
  assert.ok(cell.get(1).replica.isLeader || cell.running.some((c) => c.replica.isLeader));
});

test('net transport: queues are bounded and an unreachable peer is retried with backoff', {
  timeout: 20_000,
}, async (t) => {
  const self = await newKey();
  const gone = await newKey();
  const host = await createHost({ privateKey: self.privateKey, isMember: () => true });
  t.after(() => host.stop());
  // A peer that listens nowhere: every dial fails.
  const directory = new Map<number, ControllerPeer>([
    [1, { peerId: self.peerId, addresses: [] }],
    [2, { peerId: gone.peerId, addresses: [`/ip4/127.0.0.1/tcp/9/p2p/${gone.peerId}`] }],
  ]);
  const transport = await createNetReplicaTransport({
    host,
    selfId: 1,
    resolve: (controllerId) => directory.get(controllerId),
    queueMessagesMax: 100,
  });
  t.after(() => transport.close());
  const heartbeat = (term: number): Message => ({
    type: 'AppendEntries',
    from: 1,
    to: 2,
    term,
    prevLogIndex: 0,
    prevLogTerm: 0,
    entries: [],
    leaderCommit: 0,
    readContext: 0,
  });
  const started = Date.now();
  for (let i = 0; i < 5_000; i += 1) transport.send(heartbeat(i + 1));
  // Keep sending for a while, as a leader would.
  while (Date.now() - started < 1_500) {
    transport.send(heartbeat(1));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const stats = transport.stats();
  assert.ok(stats.droppedQueueFull >= 4_900, `the queue stayed bounded (${stats.droppedQueueFull} dropped)`);
  assert.ok(stats.sessionFailures >= 2, `retried (${stats.sessionFailures})`);
  assert.ok(stats.sessionFailures <= 10, `with backoff, not in a loop (${stats.sessionFailures})`);
  assert.equal(stats.sentMessages, 0);
  // Unknown controllers drop their messages.
  transport.send({ ...heartbeat(1), to: 7 });
  await waitFor('unresolved drop', () => transport.stats().droppedUnresolved === 1);
  await transport.close();
  transport.send(heartbeat(1)); // ignored once closed
});

test('net transport: a large InstallSnapshot goes through, in order with the messages around it', {
  timeout: 30_000,
}, async (t) => {
  const keys = [await newKey(), await newKey()];
  const directory = new Map<number, ControllerPeer>();
  const isMember = (peerId: string) => keys.some((key) => key.peerId === peerId);
  const transports: NetReplicaTransport[] = [];
  for (const [i, key] of keys.entries()) {
    const host = await createHost({ privateKey: key.privateKey, isMember });
    t.after(() => host.stop());
    directory.set(i + 1, { peerId: key.peerId, addresses: host.multiaddrs().map(String) });
    const transport = await createNetReplicaTransport({
      host,
      selfId: i + 1,
      resolve: (controllerId) => directory.get(controllerId),
    });
    t.after(() => transport.close());
    transports.push(transport);
  }
  const received: Message[] = [];
  transports[1]!.listen((message) => received.push(message));
  const data = new Uint8Array(40 * 1024 * 1024);
  for (let i = 0; i < data.length; i += 4096) data[i] = (i / 4096) & 0xff;
  const heartbeat = (term: number): Message => ({
    type: 'AppendEntries',
    from: 1,
    to: 2,
    term,
    prevLogIndex: 0,
    prevLogTerm: 0,
    entries: [],
    leaderCommit: 0,
    readContext: 0,
  });
  transports[0]!.send(heartbeat(1));
  transports[0]!.send({
    type: 'InstallSnapshot',
    from: 1,
    to: 2,
    term: 2,
    snapshot: { meta: { index: 10, term: 2, membership: { voters: [1, 2], learners: [] } }, data },
  });
  for (let term = 3; term < 100; term += 1) transports[0]!.send(heartbeat(term));
  const started = Date.now();
  await waitFor('all messages', () => received.length === 99, 20_000);
  t.diagnostic(`40 MiB snapshot and 98 heartbeats delivered in ${Date.now() - started} ms`);
  assert.deepEqual(
    received.map((message) => message.term),
    Array.from({ length: 99 }, (_, i) => i + 1),
  );
  const snapshot = received[1]!;
  assert.equal(snapshot.type, 'InstallSnapshot');
  assert.ok(
    snapshot.type === 'InstallSnapshot' && Buffer.from(snapshot.snapshot.data).equals(Buffer.from(data)),
  );
  assert.equal(transports[0]!.stats().droppedQueueFull, 0);
});
