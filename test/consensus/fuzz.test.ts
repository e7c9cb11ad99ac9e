/**
 * Randomized safety and liveness runs of the core on the in-process cluster (a small cousin of
 * the simulator in sim/): seeded partitions, crashes/restarts, message drops, duplicates and
 * reordering, proposals, compaction. Checked after every round: at most one leader per term,
 * no two nodes apply different entries at one index (Cluster throws), term/commit never go
 * backwards on a live node. Then a liveness phase on a healed cell: a leader exists, every
 * acknowledged proposal is applied everywhere, and node 1 (lowest id, up to date) leads.
 *
 * ZHSM_FUZZ_SEEDS=N runs more seeds; ZHSM_FUZZ_FAULT=skipUpToDateCheck (or commitOldTermByCount,
 * forgetVote) runs a deliberately broken core, which is expected to FAIL these tests.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeId } from '../../consensus/types.ts';
import { Cluster, seededRandomInt } from './cluster.ts';

const SEEDS = Number(process.env.ZHSM_FUZZ_SEEDS ?? 40);
const FAULTS: Record<string, unknown> = process.env.ZHSM_FUZZ_FAULT
  ? { faults: { [process.env.ZHSM_FUZZ_FAULT]: true } }
  : {};

async function run(seed: number, nodeCount: number, rounds: number, churn = false): Promise<void> {
  const random = seededRandomInt(seed * 7919);
  const cluster = new Cluster();
  const membership = { voters: Array.from({ length: nodeCount }, (_, i) => i + 1), learners: [] };
  const options = { seed, config: { maxEntriesPerMessage: 4, maxInflightAppends: 4, ...FAULTS } };
  for (let id = 1; id <= nodeCount; id++) await cluster.addNode(id, membership, options);
  let nextNodeId = nodeCount + 1;
  const leaderOfTerm = new Map<number, NodeId>();
  const acknowledged = new Map<string, number>();
  const lastSeen = new Map<NodeId, { term: number; commit: number }>();
  let proposalCounter = 0;
  const check = (): void => {
    for (const node of cluster.upNodes()) {
      const status = node.raft.status();
      if (status.role === 'leader') {
        const other = leaderOfTerm.get(status.term);
        assert.ok(
          other === undefined || other === node.id,
          `seed ${seed}: two leaders in term ${status.term}`,
        );
        leaderOfTerm.set(status.term, node.id);
      }
      const previous = lastSeen.get(node.id);
      if (previous !== undefined) {
        assert.ok(status.term >= previous.term, `seed ${seed}: term went backwards on ${node.id}`);
        assert.ok(status.commitIndex >= previous.commit, `seed ${seed}: commit went backwards on ${node.id}`);
      }
      lastSeen.set(node.id, { term: status.term, commit: status.commitIndex });
    }
    // Acknowledged = applied by its leader; it must never be applied differently elsewhere.
    for (const node of cluster.upNodes()) {
      for (const [index, described] of node.appliedLog) {
        const data = described.split(' ')[1];
        if (data !== undefined && /^p\d+$/.test(data) && !acknowledged.has(data))
          acknowledged.set(data, index);
      }
    }
  };

  cluster.chaos = {
    randomInt: random,
    dropPercent: 10,
    duplicatePercent: 5,
    holdPercent: 20,
    delayPercent: 50,
    delayTicksMax: 15,
  };
  for (let round = 0; round < rounds; round++) {
    const action = random(100);
    if (action < 5) {
      const ids = [...cluster.nodes.keys()];
      const groupA = ids.filter(() => random(2) === 0);
      const groupB = ids.filter((id) => !groupA.includes(id));
      cluster.partition([groupA, groupB]);
    } else if (action < 10) {
      cluster.heal();
    } else if (action < 14) {
      const victim = 1 + random(cluster.nodes.size);
      const node = cluster.node(victim);
      if (node.up && cluster.upNodes().length > 1) await cluster.crash(victim);
      else if (!node.up) await cluster.restart(victim);
    } else if (action < 40) {
      for (const leader of cluster.leaders()) cluster.propose(leader, `p${proposalCounter++}`);
    } else if (action < 42) {
      const node = cluster.node(1 + random(cluster.nodes.size));
      if (node.up && node.appliedIndex > node.raft.status().snapshotIndex) await cluster.compact(node.id);
    } else if (churn && action < 47) {
      for (const leader of cluster.leaders()) {
        const current = cluster.node(leader).raft.status().membership;
        const choice = random(3);
        if (choice === 0 && current.learners.length > 0) {
          cluster.node(leader).raft.proposeConfigChange({ kind: 'promote', node: current.learners[0]! });
        } else if (choice === 1 && current.voters.length > 3) {
          const victim = current.voters[random(current.voters.length)]!;
          cluster.node(leader).raft.proposeConfigChange({ kind: 'remove', node: victim });
        } else if (choice === 2 && current.voters.length + current.learners.length < 7) {
          if (!cluster.nodes.has(nextNodeId))
            await cluster.addNode(nextNodeId, { voters: [], learners: [] }, options);
          const result = cluster
            .node(leader)
            .raft.proposeConfigChange({ kind: 'addLearner', node: nextNodeId });
          if (result.ok) nextNodeId++;
        }
      }
    }
    // Clock drift: a node misses a tick now and then.
    const tickers = cluster
      .upNodes()
      .map((node) => node.id)
      .filter(() => random(100) < 92);
    await cluster.tick(tickers, 1);
    check();
    cluster.takeTrace();
  }

  // Liveness phase: heal everything, restart the dead, reliable network.
  cluster.chaos = undefined;
  cluster.heal();
  for (const node of cluster.nodes.values()) if (!node.up) await cluster.restart(node.id);
  let settled = false;
  for (let round = 0; round < 400 && !settled; round++) {
    await cluster.tick('all', 1);
    check();
    cluster.takeTrace();
    const leaders = cluster.leaders();
    if (leaders.length !== 1) continue;
    const leader = cluster.node(leaders[0]!);
    const final = leader.raft.status().membership;
    const members = [...final.voters, ...final.learners].map((id) => cluster.node(id));
    settled =
      leader.id === Math.min(...final.voters) &&
      !members.some((node) => node.raft.status().lastIndex !== leader.raft.status().lastIndex) &&
      !members.some((node) => node.appliedIndex !== leader.raft.status().lastIndex);
  }
  const leaders = cluster.leaders();
  assert.ok(settled, `seed ${seed}: no settled lowest-id leader after healing (leaders ${leaders})`);
  const leader = cluster.node(leaders[0]!);
  const final = leader.raft.status().membership;
  const reference = leader.state.join(',');
  for (const id of [...final.voters, ...final.learners]) {
    assert.equal(cluster.node(id).state.join(','), reference, `seed ${seed}: node ${id} state differs`);
  }
  for (const data of acknowledged.keys()) {
    assert.ok(leader.state.includes(data), `seed ${seed}: acknowledged ${data} lost`);
  }
}

test(`randomized safety + liveness, 3 nodes, ${SEEDS} seeds`, async () => {
  for (let seed = 1; seed <= SEEDS; seed++) await run(seed, 3, 300);
});

test(`randomized safety + liveness, 5 nodes, ${SEEDS} seeds`, async () => {
  for (let seed = 1; seed <= SEEDS; seed++) await run(seed + 1000, 5, 300);
});

test(`randomized safety + liveness with membership churn, 5 nodes, ${SEEDS} seeds`, async () => {
  for (let seed = 1; seed <= SEEDS; seed++) await run(seed + 2000, 5, 400, true);
});
