/**
 * Unit tests of the consensus core (consensus/raft.ts) on the in-process cluster.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeConfigRecord } from '../../consensus/membership.ts';
import { createRaft, defaultRaftConfig } from '../../consensus/raft.ts';
import type { Message, NodeId, RaftConfig } from '../../consensus/types.ts';
import { Cluster, type NodeOptions } from './cluster.ts';

const encoder = new TextEncoder();

async function cluster(count: number, options: NodeOptions = {}): Promise<Cluster> {
  const c = new Cluster();
  const membership = { voters: Array.from({ length: count }, (_, i) => i + 1), learners: [] };
  for (let id = 1; id <= count; id++) await c.addNode(id, membership, options);
  return c;
}

/** Campaign until `id` leads (a campaign with a stale term first learns the current one). */
async function electLeader(c: Cluster, id: NodeId): Promise<void> {
  for (let attempt = 0; attempt < 3 && c.node(id).raft.status().role !== 'leader'; attempt++) {
    c.node(id).raft.campaign();
    await c.stabilize();
  }
  assert.equal(c.node(id).raft.status().role, 'leader');
}

function lastTerms(c: Cluster): string[] {
  return c
    .upNodes()
    .map((node) => `${node.id}:${node.raft.status().lastIndex}/${node.raft.status().lastTerm}`);
}

function countMessages(trace: readonly string[], pattern: RegExp): number {
  return trace.filter((line) => pattern.test(line)).length;
}

describe('log replication', () => {
  test('fast backtracking replaces 50 divergent entries in a few round trips', async () => {
    const c = await cluster(3, {
      config: { lowestIdLeader: false, checkQuorum: false, maxEntriesPerMessage: 100 },
    });
    c.verbose = true;
    await electLeader(c, 1);
    // The old leader 1 appends 50 entries that only it has (term 1).
    c.partition([[1], [2, 3]]);
    for (let i = 0; i < 50; i++) c.propose(1, `old${i}`);
    await c.stabilize();
    // 2 and 3 elect 2 (term 2), which commits 50 different entries; then 3 takes over (term 3),
    // so the leader's first probe to 1 is far beyond the point where the logs diverge.
    await electLeader(c, 2);
    for (let i = 0; i < 50; i++) c.propose(2, `new${i}`);
    await c.stabilize();
    await electLeader(c, 3);
    c.takeTrace();
    c.heal();
    await c.tick('all', 2);
    const trace = c.takeTrace();
    const rejections = countMessages(trace, /^1->3 AppendEntriesResponse .* reject/);
    assert.ok(rejections >= 1 && rejections <= 2, `expected 1-2 rejections, got ${rejections}`);
    assert.deepEqual(c.node(1).state, c.node(2).state);
    assert.equal(c.node(1).state.length, 50);
    assert.ok(c.node(1).state.every((data) => data.startsWith('new')));
    assert.deepEqual(new Set(lastTerms(c).map((s) => s.split(':')[1])).size, 1);
  });

  test('a follower that lost appends in flight is caught up without new proposals', async () => {
    const c = await cluster(3, { config: { lowestIdLeader: false } });
    await electLeader(c, 1);
    c.dropIf = (m) => m.type === 'AppendEntries' && m.to === 3 && m.entries.length > 0;
    for (let i = 0; i < 5; i++) c.propose(1, `v${i}`);
    await c.stabilize();
    assert.equal(c.node(3).state.length, 0);
    c.dropIf = undefined;
    await c.tick('all', 4);
    assert.deepEqual(c.node(3).state, ['v0', 'v1', 'v2', 'v3', 'v4']);
  });

  test('maxInflightAppends bounds the appends in flight to one follower', async () => {
    const c = await cluster(2, { config: { maxEntriesPerMessage: 1, maxInflightAppends: 3 } });
    await electLeader(c, 1);
    c.verbose = true;
    c.partition([[1], [2]]);
    c.takeTrace();
    for (let i = 0; i < 10; i++) c.propose(1, `v${i}`);
    await c.stabilize();
    assert.equal(countMessages(c.takeTrace(), /^DROP 1->2 AppendEntries .*entries=/), 3);
  });
});

describe('commit rule (Figure 8)', () => {
  /**
   * Raft paper Figure 8 on five nodes: an entry of an old term replicated on a majority must not
   * be committed by counting replicas, because a node with a later-term entry can still win and
   * overwrite it. With faults.commitOldTermByCount the broken leader commits it and the cluster
   * later applies a different entry at the same index (the Cluster throws SAFETY).
   */
  async function figure8(
    broken: boolean,
  ): Promise<{ applied1: string | undefined; final: string | undefined }> {
    const config: NodeOptions['config'] = {
      preVote: false,
      checkQuorum: false,
      lowestIdLeader: false,
      maxEntriesPerMessage: 1,
      ...(broken ? { faults: { commitOldTermByCount: true } } : {}),
    };
    const c = await cluster(5, { config });
    await electLeader(c, 1); // term 1, noop at 1 everywhere
    // (a) 1 appends x at index 2 (term 1) and replicates it to 2 only.
    c.partition([[1, 2], [3], [4], [5]]);
    c.propose(1, 'x');
    await c.stabilize();
    // (b) 1 crashes; 5 is elected in term 2 by 3 and 4; its noop (index 2, term 2) stays local.
    await c.crash(1);
    c.partition([[3, 4, 5], [2]]);
    c.dropIf = (m) => m.from === 5 && m.type === 'AppendEntries';
    await electLeader(c, 5);
    await c.crash(5);
    // (c) 1 restarts and is elected in term 3; only its index 2 (term 1) reaches 3 and 4.
    c.heal();
    // 3 and 4 may reject one probe (that makes 1 back off to index 2), then nothing at >= 3.
    const probed = new Set<NodeId>();
    c.dropIf = (m) => {
      if (m.type !== 'AppendEntries' || (m.to !== 3 && m.to !== 4) || !m.entries.some((e) => e.index >= 3))
        return false;
      if (probed.has(m.to)) return true;
      probed.add(m.to);
      return false;
    };
    await c.restart(1);
    await electLeader(c, 1);
    await c.stabilize();
    const applied1 = c.node(1).appliedLog.get(2);
    // (d) 1 crashes; 5 restarts and, with a later last term (2), wins and overwrites index 2.
    await c.crash(1);
    c.dropIf = undefined;
    await c.restart(5);
    await electLeader(c, 5);
    return { applied1, final: c.node(2).appliedLog.get(2) };
  }

  test('a correct leader does not commit an old-term entry by counting replicas', async () => {
    const result = await figure8(false);
    assert.equal(result.applied1, undefined);
    assert.equal(result.final, '2/2 noop');
  });

  test('the commitOldTermByCount fault breaks safety (the checker sees it)', async () => {
    await assert.rejects(figure8(true), /SAFETY/);
  });
});

describe('snapshots', () => {
  test('a lagging follower whose prefix was compacted away receives InstallSnapshot', async () => {
    const c = await cluster(3, { config: { lowestIdLeader: false } });
    await electLeader(c, 1);
    await c.crash(3);
    for (let i = 0; i < 20; i++) c.propose(1, `v${i}`);
    await c.stabilize();
    const snapshot = await c.compact(1);
    assert.equal(snapshot.meta.index, 21);
    assert.deepEqual(snapshot.meta.membership, { voters: [1, 2, 3], learners: [] });
    c.propose(1, 'after');
    await c.stabilize();
    await c.restart(3);
    c.verbose = true;
    c.takeTrace();
    await c.tick('all', 3);
    const trace = c.takeTrace();
    assert.equal(countMessages(trace, /^1->3 InstallSnapshot term=1 snapshot=21\/1/), 1);
    assert.deepEqual(c.node(3).state, c.node(1).state);
    assert.equal(c.node(3).raft.status().snapshotIndex, 21);
    assert.equal(c.node(3).raft.status().lastIndex, 22);
    // The follower's storage holds the snapshot and only the entries after it.
    const stored = await c.node(3).storage.load();
    assert.equal(stored.snapshot?.meta.index, 21);
    assert.deepEqual(
      stored.entries.map((e) => e.index),
      [22],
    );
    // And it restarts from it.
    await c.crash(3);
    await c.restart(3);
    await c.tick('all', 2);
    assert.deepEqual(c.node(3).state, c.node(1).state);
  });

  test('a restarted leader can still send its snapshot', async () => {
    const c = await cluster(3, { config: { lowestIdLeader: false } });
    await electLeader(c, 1);
    await c.crash(3);
    for (let i = 0; i < 5; i++) c.propose(1, `v${i}`);
    await c.stabilize();
    await c.compact(1);
    await c.crash(1);
    await c.restart(1);
    await c.restart(3);
    c.node(1).raft.campaign();
    await c.stabilize();
    await c.tick('all', 3);
    assert.deepEqual(c.leaders(), [1]);
    assert.deepEqual(c.node(3).state, ['v0', 'v1', 'v2', 'v3', 'v4']);
  });
});

describe('membership', () => {
  test('add a learner, promote it, remove a follower, remove the leader itself', async () => {
    const c = await cluster(3, { seed: 5, config: { lowestIdLeader: false } });
    await electLeader(c, 1);
    await c.addNode(4, { voters: [], learners: [] }, c.node(1).options);
    // Promote before it is a learner: invalid.
    assert.deepEqual(c.node(1).raft.proposeConfigChange({ kind: 'promote', node: 4 }), {
      ok: false,
      reason: 'invalidConfigChange',
      leader: 1,
    });
    const added = c.node(1).raft.proposeConfigChange({ kind: 'addLearner', node: 4 });
    assert.equal(added.ok, true);
    // One change at a time.
    assert.equal(
      (c.node(1).raft.proposeConfigChange({ kind: 'remove', node: 3 }) as { reason: string }).reason,
      'configChangePending',
    );
    await c.stabilize();
    assert.equal(c.node(4).raft.status().role, 'learner');
    // A learner far behind cannot be promoted.
    c.partition([[1, 2, 3], [4]]);
    for (let i = 0; i < 20; i++) c.propose(1, `v${i}`);
    await c.stabilize();
    assert.equal(
      (c.node(1).raft.proposeConfigChange({ kind: 'promote', node: 4 }) as { reason: string }).reason,
      'learnerBehind',
    );
    c.heal();
    await c.tick('all', 2);
    assert.equal(c.node(1).raft.proposeConfigChange({ kind: 'promote', node: 4 }).ok, true);
    await c.stabilize();
    assert.deepEqual(c.node(4).raft.status().membership, { voters: [1, 2, 3, 4], learners: [] });
    assert.equal(c.node(4).raft.status().role, 'follower');
    // Remove follower 3: the quorum is now 3 of {1,2,4}.
    assert.equal(c.node(1).raft.proposeConfigChange({ kind: 'remove', node: 3 }).ok, true);
    await c.stabilize();
    assert.deepEqual(c.node(1).raft.status().membership.voters, [1, 2, 4]);
    // The removed node never learns of its removal; its pre-votes cannot disrupt the cell.
    const term = c.node(1).raft.status().term;
    await c.tick('all', 40);
    assert.deepEqual(c.leaders(), [1]);
    assert.equal(c.node(1).raft.status().term, term);
    assert.equal(c.node(3).raft.status().term, term);
    // Remove the leader itself: it steps down once the removal commits, 2 or 4 takes over.
    assert.equal(c.node(1).raft.proposeConfigChange({ kind: 'remove', node: 1 }).ok, true);
    await c.stabilize();
    assert.equal(c.node(1).raft.status().role, 'follower');
    await c.tick('all', 20);
    const leaders = c.leaders();
    assert.equal(leaders.length, 1);
    assert.ok(leaders[0] === 2 || leaders[0] === 4);
    const result = c.propose(leaders[0]!, 'after-removal');
    assert.equal(result.ok, true);
    await c.stabilize();
    assert.ok(c.node(2).state.includes('after-removal'));
    assert.ok(c.node(4).state.includes('after-removal'));
  });

  test('a config entry carries the full resulting membership', async () => {
    const c = await cluster(1);
    await electLeader(c, 1);
    c.node(1).raft.proposeConfigChange({ kind: 'addLearner', node: 9 });
    await c.stabilize();
    const stored = await c.node(1).storage.load();
    const config = stored.entries.find((e) => e.type === 'config')!;
    assert.deepEqual(decodeConfigRecord(config.data), {
      change: { kind: 'addLearner', node: 9 },
      membership: { voters: [1], learners: [9] },
    });
  });
});

describe('read index', () => {
  test('a leader confirms leadership with a heartbeat round before the read is served', async () => {
    const c = await cluster(3);
    await c.tick('all', 12);
    assert.deepEqual(c.leaders(), [1]);
    c.propose(1, 'a');
    await c.stabilize();
    c.verbose = true;
    c.takeTrace();
    assert.equal(c.node(1).raft.readIndex(42), true);
    await c.stabilize();
    const trace = c.takeTrace();
    assert.ok(trace.some((line) => /^1->2 AppendEntries .* ctx=1/.test(line)));
    assert.deepEqual(c.node(1).readStates, [{ requestId: 42, index: 2 }]);
    // A follower refuses: the driver retries at the leader.
    assert.equal(c.node(2).raft.readIndex(43), false);
  });

  test('a leader cut off from the majority never serves the read', async () => {
    const c = await cluster(3);
    await c.tick('all', 12);
    c.partition([[1], [2, 3]]);
    assert.equal(c.node(1).raft.readIndex(1), true);
    await c.tick('all', 30);
    assert.deepEqual(c.node(1).readStates, []);
    assert.notEqual(c.node(1).raft.status().role, 'leader');
  });

  test('a new leader defers reads until it committed an entry of its term', async () => {
    const c = await cluster(3, { config: { lowestIdLeader: false } });
    c.dropIf = (m) => m.type === 'AppendEntriesResponse';
    c.node(1).raft.campaign();
    await c.stabilize();
    assert.deepEqual(c.leaders(), [1]);
    assert.equal(c.node(1).raft.readIndex(5), true);
    await c.stabilize();
    assert.deepEqual(c.node(1).readStates, []);
    c.dropIf = undefined;
    await c.tick('all', 1);
    assert.deepEqual(c.node(1).readStates, [{ requestId: 5, index: 1 }]);
  });
});

describe('lowest id', () => {
  test('with the k lowest ids dead, the election delay grows linearly in k', async () => {
    const delays: number[] = [];
    for (let k = 0; k <= 3; k++) {
      const c = await cluster(7);
      await c.tick('all', 12);
      assert.deepEqual(c.leaders(), [1]);
      for (let id = 1; id <= Math.max(k, 1); id++) await c.crash(id);
      let ticks = 0;
      while (c.leaders().length === 0 && ticks < 200) {
        await c.tick('all', 1);
        ticks++;
      }
      assert.deepEqual(c.leaders(), [Math.max(k, 1) + 1]);
      delays.push(ticks);
    }
    // electionTicks 10, stagger 2: rank r times out at 11 + 2r (jitter 0 here).
    const bound = (k: number) => 10 + 1 + 2 * (k + 1);
    delays.forEach((delay, k) => {
      assert.ok(delay <= bound(k), `k=${k}: ${delay} ticks > ${bound(k)}`);
    });
  });

  test('a low id reachable only through the leader (a minority) never leads and never bumps the term', async () => {
    const c = await cluster(5, { seed: 11 });
    c.partition([
      [1, 2],
      [2, 3, 4, 5],
    ]);
    await c.tick('all', 300);
    assert.deepEqual(c.leaders(), [2]);
    assert.equal(c.node(2).raft.status().term, 1);
    assert.equal(c.node(1).raft.status().term, 1);
    // Handoff attempts back off exponentially: only a few in 300 ticks.
    const timeoutNows = c.takeTrace().filter((line) => line.startsWith('2->1 TimeoutNow')).length;
    assert.ok(timeoutNows >= 1 && timeoutNows <= 4, `${timeoutNows} handoff attempts`);
  });

  test('elections with seeded jitter: node 1 leads a cell of up-to-date nodes', async () => {
    for (let seed = 1; seed <= 20; seed++) {
      const c = await cluster(5, { seed });
      await c.tick('all', 20);
      assert.deepEqual(c.leaders(), [1], `seed ${seed}`);
      assert.equal(c.node(1).raft.status().term, 1, `seed ${seed}: a single election`);
    }
  });

  test('without lowestIdLeader, no handoff happens', async () => {
    const c = await cluster(3, { config: { lowestIdLeader: false } });
    await electLeader(c, 3);
    await c.tick('all', 100);
    assert.deepEqual(c.leaders(), [3]);
  });
});

describe('pre-vote off', () => {
  test('without pre-vote a partitioned node bumps its term and disrupts the leader on return', async () => {
    const c = await cluster(3, { config: { preVote: false, checkQuorum: false } });
    await c.tick('all', 12);
    c.partition([[1, 2], [3]]);
    await c.tick('all', 40);
    assert.ok(c.node(3).raft.status().term > 1);
    c.heal();
    await c.tick('all', 30);
    assert.ok(c.node(1).raft.status().term > 1, 'the term was bumped (what pre-vote prevents)');
  });
});

describe('the Ready contract', () => {
  function config(id: NodeId): RaftConfig {
    return defaultRaftConfig(id, () => 0);
  }
  const initial = {
    hardState: { term: 0, votedFor: 0, commitIndex: 0 },
    entries: [],
    initialMembership: { voters: [1], learners: [] },
  };

  test('ready() twice without advance() throws', () => {
    const raft = createRaft(config(1), initial);
    raft.campaign();
    raft.ready();
    assert.throws(() => raft.ready(), { name: 'AssertionError' });
  });

  test('hard state (vote) comes in the same Ready as the vote response, to persist before sending', () => {
    const raft = createRaft(config(2), {
      ...initial,
      initialMembership: { voters: [1, 2, 3], learners: [] },
    });
    const vote: Message = {
      type: 'RequestVote',
      from: 1,
      to: 2,
      term: 1,
      lastLogIndex: 0,
      lastLogTerm: 0,
      preVote: false,
      transfer: false,
    };
    raft.step(vote);
    const ready = raft.ready();
    assert.deepEqual(ready.hardState, { term: 1, votedFor: 1, commitIndex: 0 });
    assert.deepEqual(
      ready.messages.map((m) => m.type),
      ['RequestVoteResponse'],
    );
    raft.advance(ready);
    assert.equal(raft.hasReady(), false);
  });

  test('forgetVote (test fault) leaves the vote out of the persisted hard state', () => {
    const raft = createRaft(
      { ...config(2), faults: { forgetVote: true } },
      { ...initial, initialMembership: { voters: [1, 2, 3], learners: [] } },
    );
    raft.step({
      type: 'RequestVote',
      from: 1,
      to: 2,
      term: 1,
      lastLogIndex: 0,
      lastLogTerm: 0,
      preVote: false,
      transfer: false,
    });
    const ready = raft.ready();
    assert.deepEqual(ready.hardState, { term: 1, votedFor: 0, commitIndex: 0 });
    raft.advance(ready);
    assert.equal(raft.hasReady(), false);
  });

  test('a learner never answers a vote request', () => {
    const raft = createRaft(config(4), {
      ...initial,
      initialMembership: { voters: [1, 2, 3], learners: [4] },
    });
    assert.equal(raft.status().role, 'learner');
    for (const preVote of [true, false]) {
      raft.step({
        type: 'RequestVote',
        from: 1,
        to: 4,
        term: 5,
        lastLogIndex: 9,
        lastLogTerm: 5,
        preVote,
        transfer: true,
      });
    }
    const ready = raft.ready();
    assert.deepEqual(ready.messages, []);
    raft.advance(ready);
    for (let i = 0; i < 100; i++) raft.tick();
    assert.equal(raft.status().role, 'learner', 'a learner never campaigns');
    assert.equal(raft.hasReady(), false);
  });

  test('malformed messages from the network are dropped, not fatal', () => {
    const raft = createRaft(config(2), {
      ...initial,
      initialMembership: { voters: [1, 2, 3], learners: [] },
    });
    const garbage = [
      {
        type: 'AppendEntries',
        from: 1,
        to: 2,
        term: 1,
        prevLogIndex: 0,
        prevLogTerm: 0,
        leaderCommit: 0,
        readContext: 0,
        entries: [{ index: 5, term: 1, type: 'normal', data: new Uint8Array(0) }],
      },
      {
        type: 'AppendEntries',
        from: 1,
        to: 2,
        term: 1,
        prevLogIndex: 0,
        prevLogTerm: 0,
        leaderCommit: 0,
        readContext: 0,
        entries: [{ index: 1, term: 7, type: 'normal', data: new Uint8Array(0) }],
      },
      {
        type: 'AppendEntries',
        from: 1,
        to: 2,
        term: 1,
        prevLogIndex: 0,
        prevLogTerm: 0,
        leaderCommit: 0,
        readContext: 0,
        entries: [{ index: 1, term: 1, type: 'config', data: Uint8Array.of(1) }],
      },
      {
        type: 'InstallSnapshot',
        from: 1,
        to: 2,
        term: 1,
        snapshot: {
          meta: { index: 3, term: 1, membership: { voters: [1, 1], learners: [] } },
          data: new Uint8Array(0),
        },
      },
      {
        type: 'RequestVote',
        from: 0,
        to: 2,
        term: 1,
        lastLogIndex: 0,
        lastLogTerm: 0,
        preVote: false,
        transfer: false,
      },
      {
        type: 'RequestVote',
        from: 1,
        to: 2,
        term: -1,
        lastLogIndex: 0,
        lastLogTerm: 0,
        preVote: false,
        transfer: false,
      },
      { type: 'Bogus', from: 1, to: 2, term: 1 },
      null,
    ];
    for (const message of garbage) raft.step(message as unknown as Message);
    assert.equal(raft.status().term, 0);
    assert.equal(raft.hasReady(), false);
  });

  test('invalid configuration is refused', () => {
    assert.throws(() => createRaft({ ...config(1), electionTicks: 1 }, initial), { name: 'AssertionError' });
    assert.throws(() => createRaft({ ...config(0) }, initial), { name: 'AssertionError' });
  });

  test('proposals on a follower are refused with the leader hint', async () => {
    const c = await cluster(3);
    await c.tick('all', 12);
    assert.deepEqual(c.node(2).raft.propose(encoder.encode('x')), {
      ok: false,
      reason: 'notLeader',
      leader: 1,
    });
  });
});
