/**
 * The named, seeded scenarios, adapted from the MIT 6.5840 Raft tests (3A-3D) and etcd-io/raft,
 * plus zhsm's lowest-id rules. Each picks its parameters from the seed, runs a safety phase with
 * faults and scenario-specific checks, and (unless it says otherwise) the standard liveness
 * phase on the healed cell (see runner.ts).
 */
import type { NodeId } from '../consensus/types.ts';
import { hashEntry } from './checkers.ts';
import { encodeCommand } from './kv.ts';
import type { NetworkFaults } from './network.ts';
import type { Prng } from './prng.ts';
import { awaitLeader, expect, fail, type Scenario, type ScenarioContext } from './runner.ts';
import { DEFAULT_PARAMS, type SimParams, type Simulation } from './simulation.ts';

/** Figure 8 rounds per seed (MIT runs 1000 once; we run fewer per seed over many seeds). */
export const FIGURE8_ROUNDS = 60;

// --- parameter helpers ---

function params(rng: Prng, overrides: Partial<SimParams> = {}): SimParams {
  // Every run varies the base latencies, disk speed and clock skew with its seed.
  const delayUsMin = rng.range(100, 1_000);
  return {
    ...DEFAULT_PARAMS,
    driftPpmMax: rng.range(0, 2_000),
    network: { ...DEFAULT_PARAMS.network, delayUsMin, delayUsMax: delayUsMin + rng.range(500, 8_000) },
    disk: {
      writeUsMin: rng.range(100, 500),
      writeUsMax: rng.range(600, 4_000),
      crashLoseChance: rng.float() * 0.5,
      crashTearChance: rng.float() * 0.5,
    },
    clients: rng.range(1, 4),
    keys: rng.range(1, 5),
    // Small batches and windows make replication lag entry by entry (Figure 8 needs that).
    ...(rng.chance(0.3)
      ? { maxEntriesPerMessage: rng.range(1, 4), maxInflightAppends: rng.range(1, 8) }
      : {}),
    ...overrides,
  };
}

function unreliableNetwork(rng: Prng): NetworkFaults {
  return {
    delayUsMin: 0,
    delayUsMax: 27_000,
    reorderChance: 0.05 + rng.float() * 0.15,
    reorderUsMax: rng.range(200_000, 2_000_000),
    dropChance: 0.1,
    duplicateChance: rng.float() * 0.05,
  };
}

// --- script helpers ---

/** Per simulation: commands proposed directly by the scenario (client 0). */
const directCommands = new WeakMap<Simulation, number>();

/** Propose one command directly on a node; returns its (index, term, hash) or undefined. */
function proposeOn(
  sim: Simulation,
  id: NodeId,
  tag: string,
): { index: number; term: number; hash: number } | undefined {
  const count = (directCommands.get(sim) ?? 0) + 1;
  directCommands.set(sim, count);
  const data = encodeCommand({ op: 'put', key: `direct-${tag}`, value: `${count}`, client: 0, id: count });
  const result = sim.propose(id, data);
  sim.log(
    `propose n${id} ${tag} -> ${result === undefined ? 'down' : result.ok ? `${result.index}/${result.term}` : result.reason}`,
  );
  if (result === undefined || !result.ok) return undefined;
  return {
    index: result.index,
    term: result.term,
    hash: hashEntry({ index: result.index, term: result.term, type: 'normal', data }),
  };
}

/** Propose on the current leader and wait until every up member applied it. */
async function agree(
  context: ScenarioContext,
  tag: string,
  boundUs = firstLeaderBoundUs(context),
): Promise<number> {
  const { sim } = context;
  const deadline = sim.nowUs + boundUs;
  for (;;) {
    const leader = await awaitLeader(sim, Math.max(1, deadline - sim.nowUs));
    const proposal = proposeOn(sim, leader, tag);
    if (proposal !== undefined) {
      // A leader cut off from its quorum never commits: give each attempt two election timeouts.
      const attemptUs = Math.max(1, Math.min(deadline - sim.nowUs, 2 * context.electionUs));
      const applied = await sim.waitFor(
        () => sim.checker.appliedHashAt(proposal.index) !== undefined,
        attemptUs,
      );
      if (applied && sim.checker.appliedHashAt(proposal.index) === proposal.hash) {
        const everywhere = await sim.waitFor(
          () =>
            sim
              .upNodes()
              .every(
                (id) =>
                  !isMember(sim, leader, id) ||
                  !sim.network.connected(leader, id) ||
                  !sim.network.connected(id, leader) ||
                  sim.node(id).applied >= proposal.index,
              ),
          Math.max(1, deadline - sim.nowUs),
        );
        if (everywhere) return proposal.index;
      }
    }
    if (sim.nowUs >= deadline) fail(sim, `no agreement on ${tag} within ${boundUs / 1000} ms`, 'no-leader');
    await sim.runFor(context.electionUs / 10);
  }
}

function isMember(sim: Simulation, leader: NodeId, id: NodeId): boolean {
  const raft = sim.raft(leader);
  if (raft === undefined) return true;
  const membership = raft.status().membership;
  return membership.voters.includes(id) || membership.learners.includes(id);
}

async function awaitLowestLeader(context: ScenarioContext, expected: NodeId, boundUs: number): Promise<void> {
  const { sim } = context;
  const ok = await sim.waitFor(() => sim.committedLeader() === expected, boundUs);
  if (!ok) {
    fail(
      sim,
      `expected n${expected} to lead within ${boundUs / 1000} ms, leader is ${sim.committedLeader() ?? 'none'}`,
      'not-lowest-id-leader',
    );
  }
}

/**
 * Bound for a fresh cell's first leader. With the lowest-id rule, timeouts are staggered by
 * rank and the first election practically never splits. Without it, timeouts are random in
 * [electionTicks, 2 × electionTicks) ticks: only electionTicks distinct values, so split votes
 * are common (as in etcd) and several rounds may be needed.
 */
function firstLeaderBoundUs(context: ScenarioContext): number {
  return (context.sim.params.lowestIdLeader ? 4 : 12) * context.electionUs;
}

function crashLeader(sim: Simulation): NodeId | undefined {
  const leader = sim.committedLeader();
  if (leader === undefined) return undefined;
  sim.markFailoverStart();
  sim.crash(leader);
  return leader;
}

function others(sim: Simulation, exclude: readonly NodeId[]): NodeId[] {
  return [...sim.nodes.keys()].filter((id) => !exclude.includes(id));
}

/** Leaders elected after a point in time (from the simulation's record). */
function leadersSince(sim: Simulation, sinceUs: number): { node: NodeId; term: number; atUs: number }[] {
  return sim.leaderChanges.filter((change) => change.atUs >= sinceUs);
}

// --- the scenarios ---

const initialElection: Scenario = {
  name: 'initial-election',
  summary: 'a fresh cell elects a leader, the lowest id, and keeps it while healthy (MIT 3A)',
  params: (rng) => params(rng, { nodes: rng.range(3, 5), clients: 0 }),
  async safety(context) {
    const { sim, electionUs } = context;
    await awaitLeader(sim, 4 * electionUs);
    await awaitLowestLeader(context, 1, 6 * electionUs);
    const term = sim.maxTerm();
    await sim.runFor(3 * electionUs);
    expect(sim, sim.maxTerm() === term, `term changed ${term} -> ${sim.maxTerm()} without failures`);
    expect(sim, sim.committedLeader() === 1, 'leader changed without failures');
  },
};

const reelection: Scenario = {
  name: 'reelection',
  summary: 'leader crash or disconnect -> new leader; old one rejoins; no quorum -> no leader (MIT 3A)',
  params: (rng) => params(rng, { nodes: 3 }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    const leader1 = await awaitLeader(sim, 4 * electionUs);
    const crash = rng.chance(0.5);
    sim.markFailoverStart();
    if (crash) sim.crash(leader1);
    else sim.network.isolate(leader1);
    const leader2 = await awaitLeader(sim, 4 * electionUs, 'new leader', (id) => id !== leader1);
    expect(sim, leader2 !== leader1, `the lost leader ${leader1} still counts as leader`);
    if (crash) sim.restart(leader1);
    else sim.network.reconnect(leader1);
    await awaitLeader(sim, 4 * electionUs);
    // No quorum: the leader and one follower gone.
    const leader3 = sim.committedLeader()!;
    const follower = rng.pick(others(sim, [leader3]));
    sim.network.isolate(leader3);
    sim.network.isolate(follower);
    const termBefore = sim.maxTerm();
    await sim.runFor(3 * electionUs);
    const newLeaders = leadersSince(sim, sim.nowUs - 2 * electionUs).filter(
      (change) => change.term > termBefore,
    );
    expect(sim, newLeaders.length === 0, `a leader was elected without a quorum: n${newLeaders[0]?.node}`);
    expect(
      sim,
      sim.leaders().length === 0,
      `n${sim.leaders()[0]?.id} still leads without a quorum (check-quorum)`,
    );
    sim.network.reconnect(follower);
    await awaitLeader(sim, 4 * electionUs, 'leader after quorum returns');
  },
};

const manyElections: Scenario = {
  name: 'many-elections',
  summary: '7 nodes, repeatedly disconnect 3 random nodes; the other 4 always elect a leader (MIT 3A)',
  params: (rng) => params(rng, { nodes: 7, clients: rng.range(0, 2) }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    await awaitLeader(sim, 4 * electionUs);
    for (let round = 0; round < 5; round++) {
      const gone = rng.shuffle([...sim.nodes.keys()]).slice(0, 3);
      for (const id of gone) sim.network.isolate(id);
      await awaitLeader(
        sim,
        6 * electionUs,
        `leader with ${gone.join(',')} disconnected`,
        (id) => !gone.includes(id),
      );
      const leader = sim.committedLeader()!;
      expect(sim, !gone.includes(leader), `disconnected n${leader} counted as leader`);
      for (const id of gone) sim.network.reconnect(id);
      await sim.runFor(rng.range(0, electionUs));
    }
  },
};

const basicAgreement: Scenario = {
  name: 'basic-agreement',
  summary: 'commands proposed on the leader are applied by every node, in order (MIT 3B)',
  params: (rng) => params(rng, { nodes: rng.range(3, 5) }),
  async safety(context) {
    const { sim, rng } = context;
    sim.startClients();
    let last = 0;
    const count = rng.range(5, 15);
    for (let i = 0; i < count; i++) {
      const index = await agree(context, `basic-${i}`);
      expect(sim, index > last, `agreement index went from ${last} to ${index}`);
      last = index;
    }
  },
};

const followerDown: Scenario = {
  name: 'follower-down',
  summary: 'agreement continues with one follower disconnected; it catches up on return (MIT 3B)',
  params: (rng) => params(rng, { nodes: 3 }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    const leader = await awaitLeader(sim, 4 * electionUs);
    await agree(context, 'before');
    const follower = rng.pick(others(sim, [leader]));
    if (rng.chance(0.5)) sim.network.isolate(follower);
    else sim.crash(follower);
    let last = 0;
    for (let i = 0; i < 5; i++) last = await agree(context, `without-${follower}-${i}`);
    sim.network.reconnect(follower);
    sim.restart(follower);
    const ok = await sim.waitFor(() => sim.node(follower).applied >= last, 4 * electionUs);
    expect(sim, ok, `follower ${follower} did not catch up to ${last}`);
  },
};

const noMajority: Scenario = {
  name: 'no-majority',
  summary: 'with 3 of 5 followers gone nothing commits; after the heal agreement resumes (MIT 3B)',
  params: (rng) => params(rng, { nodes: 5 }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    const leader = await awaitLeader(sim, 4 * electionUs);
    await agree(context, 'before');
    const gone = rng.shuffle(others(sim, [leader])).slice(0, 3);
    for (const id of gone) sim.network.isolate(id);
    const committedBefore = sim.checker.committedMax;
    const proposal = proposeOn(sim, leader, 'minority');
    expect(sim, proposal !== undefined, `leader ${leader} refused a proposal right after the partition`);
    await sim.runFor(3 * electionUs);
    expect(
      sim,
      sim.checker.committedMax === committedBefore,
      `entries committed without a majority (${sim.checker.committedMax})`,
    );
    for (const id of gone) sim.network.reconnect(id);
    await agree(context, 'after');
  },
};

const concurrentProposals: Scenario = {
  name: 'concurrent-proposals',
  summary: 'many clients and bursts of simultaneous proposals all commit at distinct indexes (MIT 3B)',
  params: (rng) =>
    params(rng, { nodes: rng.range(3, 5), clients: rng.range(4, 6), clientThinkUsMax: 20_000 }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    for (let burst = 0; burst < 3; burst++) {
      const leader = await awaitLeader(sim, 4 * electionUs);
      const proposals: { index: number; term: number; hash: number }[] = [];
      for (let i = 0; i < rng.range(2, 10); i++) {
        const proposal = proposeOn(sim, leader, `burst-${burst}-${i}`);
        if (proposal !== undefined) proposals.push(proposal);
      }
      const indexes = new Set(proposals.map((proposal) => proposal.index));
      expect(sim, indexes.size === proposals.length, 'two concurrent proposals got the same index');
      const ok = await sim.waitFor(
        () => proposals.every((proposal) => sim.checker.appliedHashAt(proposal.index) !== undefined),
        4 * electionUs,
      );
      expect(sim, ok, 'a burst of proposals did not commit');
      for (const proposal of proposals) {
        expect(
          sim,
          sim.checker.appliedHashAt(proposal.index) === proposal.hash,
          `proposal at ${proposal.index} lost on a healthy cell`,
        );
      }
      await sim.runFor(rng.range(0, electionUs));
    }
  },
};

const rejoin: Scenario = {
  name: 'rejoin-partitioned-leader',
  summary: 'a partitioned leader with uncommitted entries rejoins; its entries are discarded (MIT 3B)',
  params: (rng) => params(rng, { nodes: 3, lowestIdLeader: rng.chance(0.5) }),
  async safety(context) {
    const { sim, electionUs } = context;
    sim.startClients();
    await agree(context, 'first');
    const leader1 = sim.committedLeader()!;
    sim.network.isolate(leader1);
    const stale = [
      proposeOn(sim, leader1, 'stale-1'),
      proposeOn(sim, leader1, 'stale-2'),
      proposeOn(sim, leader1, 'stale-3'),
    ];
    await agree(context, 'second');
    const leader2 = sim.committedLeader()!;
    expect(sim, leader2 !== leader1, 'isolated leader still leads');
    sim.network.isolate(leader2);
    sim.network.reconnect(leader1);
    for (const id of others(sim, [leader1, leader2])) sim.network.connect(leader1, id);
    await agree(context, 'third', 8 * electionUs);
    sim.network.heal();
    await agree(context, 'fourth', 8 * electionUs);
    await sim.waitFor(() => sim.caughtUp(), 4 * electionUs);
    for (const proposal of stale) {
      if (proposal === undefined) continue;
      expect(
        sim,
        sim.checker.appliedHashAt(proposal.index) !== proposal.hash,
        `stale entry ${proposal.index} was committed`,
      );
    }
  },
};

const backup: Scenario = {
  name: 'backup-50',
  summary: 'leaders back up quickly over 50 divergent, incorrect entries (MIT 3B TestBackup)',
  params: (rng) => params(rng, { nodes: 5, clients: 0 }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    await agree(context, 'start');
    const leader1 = sim.committedLeader()!;
    const followers = rng.shuffle(others(sim, [leader1]));
    const buddy = followers[0]!;
    const majority = followers.slice(1);
    sim.network.partition([[leader1, buddy], majority]);
    for (let i = 0; i < 50; i++) proposeOn(sim, leader1, `lost-a-${i}`);
    await sim.runFor(electionUs / 2);
    const leader2 = await awaitLeader(sim, 6 * electionUs, 'majority leader', (id) => majority.includes(id));
    expect(sim, majority.includes(leader2), `leader ${leader2} outside the majority`);
    let last = 0;
    for (let i = 0; i < 50; i++) last = proposeOn(sim, leader2, `kept-${i}`)?.index ?? last;
    await sim.waitFor(() => sim.checker.committedMax >= last, 4 * electionUs);
    const other = majority.find((id) => id !== leader2)!;
    sim.network.partition([
      [leader1, buddy],
      [leader2, ...majority.filter((id) => id !== leader2 && id !== other)],
      [other],
    ]);
    for (let i = 0; i < 50; i++) proposeOn(sim, leader2, `lost-b-${i}`);
    await sim.runFor(electionUs / 2);
    sim.network.partition([[leader1, buddy, other], majority.filter((id) => id !== other)]);
    await agree(context, 'second-majority', 10 * electionUs);
    for (let i = 0; i < 50; i++) proposeOn(sim, sim.committedLeader()!, `kept-c-${i}`);
    sim.network.heal();
    await agree(context, 'all', 10 * electionUs);
  },
};

function persistScenario(name: string, summary: string, who: 'all' | 'primary' | 'follower'): Scenario {
  return {
    name,
    summary,
    params: (rng) =>
      params(rng, { nodes: rng.range(3, 5), snapshotEveryEntries: rng.chance(0.3) ? rng.range(5, 30) : 0 }),
    async safety(context) {
      const { sim, rng, electionUs } = context;
      sim.startClients();
      await agree(context, 'start');
      for (let round = 0; round < 3; round++) {
        await awaitLeader(sim, 6 * electionUs);
        // Crash at a random moment, often in the middle of a write.
        await sim.runFor(rng.range(0, 50_000));
        const leader = sim.committedLeader() ?? (await awaitLeader(sim, 6 * electionUs));
        const victims =
          who === 'all'
            ? [...sim.nodes.keys()]
            : who === 'primary'
              ? [leader]
              : [rng.pick(others(sim, [leader]))];
        // A failover is measured only where the rest of the cell stays healthy.
        if (who === 'primary') sim.markFailoverStart();
        for (const id of victims) sim.crash(id);
        await sim.runFor(rng.range(0, 2 * electionUs));
        for (const id of victims) sim.restart(id);
        await agree(context, `after-${round}`, 8 * electionUs);
      }
    },
  };
}

function figure8Scenario(unreliable: boolean): Scenario {
  return {
    name: unreliable ? 'figure8-unreliable' : 'figure8',
    summary: unreliable
      ? `Figure 8 with drops, reordering and disconnects, ${FIGURE8_ROUNDS} rounds per seed (MIT 3C)`
      : `Figure 8: crash leaders at random moments, ${FIGURE8_ROUNDS} rounds per seed (MIT 3C)`,
    params: (rng) =>
      params(rng, {
        nodes: 5,
        clients: unreliable ? rng.range(1, 4) : rng.range(0, 2),
        ...(unreliable ? { network: unreliableNetwork(rng) } : {}),
      }),
    async safety({ sim, rng, electionUs }) {
      sim.startClients();
      const ids = [...sim.nodes.keys()];
      const down = new Set<NodeId>();
      for (let round = 0; round < FIGURE8_ROUNDS; round++) {
        const leader = sim.leaders()[0]?.id;
        if (leader !== undefined) proposeOn(sim, leader, `f8-${round}`);
        // Mostly short pauses, sometimes half an election timeout (the MIT distribution, scaled).
        const pauseUs = rng.chance(0.1)
          ? rng.range(0, electionUs / 2)
          : rng.range(0, Math.floor(electionUs / 23));
        await sim.runFor(pauseUs);
        if (leader !== undefined && !down.has(leader)) {
          if (unreliable) sim.network.isolate(leader);
          else sim.crash(leader);
          down.add(leader);
        }
        if (down.size > 2) {
          const back = rng.pick([...down]);
          down.delete(back);
          if (unreliable) sim.network.reconnect(back);
          else sim.restart(back);
        }
      }
      for (const id of ids) {
        sim.network.reconnect(id);
        sim.restart(id);
      }
    },
  };
}

const figure8Classic: Scenario = {
  name: 'figure8-classic',
  summary: 'the exact Figure 8 schedule of the Raft paper, driven by partitions (one entry per message)',
  params: (rng) => params(rng, { nodes: 5, clients: 0, maxEntriesPerMessage: 1, maxInflightAppends: 1 }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    await awaitLeader(sim, 4 * electionUs);
    await awaitLowestLeader(context, 1, 8 * electionUs);
    await agree(context, 'base');
    // (a) S1 leads term T and replicates X at index i to S2 only.
    sim.network.partition([
      [1, 2],
      [3, 4, 5],
    ]);
    const x = proposeOn(sim, 1, 'X');
    if (x === undefined) fail(sim, 'n1 refused X');
    await sim.waitFor(() => sim.node(2).log.lastIndex >= x.index, electionUs);
    // (b) S1 crashes; S5 (here: whoever wins among 3,4,5) leads term T+1 and appends at i, then is cut off.
    sim.crash(1);
    const found = await sim.waitFor(
      () => [3, 4, 5].some((id) => sim.node(id).role === 'leader'),
      8 * electionUs,
    );
    expect(sim, found, 'no leader among 3,4,5');
    const l2 = [3, 4, 5].find((id) => sim.node(id).role === 'leader')!;
    sim.network.isolate(l2);
    const [b1, b2] = rng.shuffle([3, 4, 5].filter((id) => id !== l2));
    sim.log(
      `figure8: X at ${x.index}/${x.term}, l2=n${l2} has ${sim.node(l2).log.termAt(x.index) ?? '-'} there`,
    );
    // (c) S1 restarts, leads term T+2 with S2 and B1, and replicates X to B1.
    sim.restart(1);
    sim.network.partition([[1, 2, b1!], [l2], [b2!]]);
    const committed = await sim.waitFor(
      () => sim.checker.appliedHashAt(x.index) !== undefined,
      8 * electionUs,
    );
    // The moment X is committed (in the broken core: by counting replicas), S1 is cut off.
    sim.network.isolate(1);
    sim.log(`figure8: X committed=${committed}`);
    // (d) L2 returns with B1 and B2; it must not be able to overwrite a committed X.
    sim.network.partition([[l2, b1!, b2!], [1], [2]]);
    await sim.runFor(rng.range(4, 8) * electionUs);
  },
};

const unreliableAgreement: Scenario = {
  name: 'unreliable-agreement',
  summary: '10% drops, 0-27 ms delay, long reordering; many clients still agree (MIT 3C)',
  params: (rng) => params(rng, { nodes: 5, network: unreliableNetwork(rng), clients: rng.range(3, 6) }),
  async safety(context) {
    const { sim } = context;
    sim.startClients();
    for (let i = 0; i < 5; i++) await agree(context, `unreliable-${i}`, 12 * context.electionUs);
  },
};

function churnScenario(unreliable: boolean): Scenario {
  return {
    name: unreliable ? 'churn-unreliable' : 'churn',
    summary: `random crashes, restarts and disconnects under client load${unreliable ? ' on a lossy network' : ''} (MIT 3C)`,
    params: (rng) =>
      params(rng, {
        nodes: 5,
        clients: rng.range(2, 5),
        snapshotEveryEntries: rng.chance(0.3) ? rng.range(10, 40) : 0,
        ...(unreliable ? { network: unreliableNetwork(rng) } : {}),
      }),
    async safety({ sim, rng, electionUs }) {
      sim.startClients();
      const ids = [...sim.nodes.keys()];
      for (let step = 0; step < 30; step++) {
        const id = rng.pick(ids);
        const roll = rng.float();
        if (roll < 0.2) sim.network.isolate(id);
        else if (roll < 0.5) sim.network.reconnect(id);
        else if (roll < 0.7) sim.crash(id);
        else sim.restart(id);
        await sim.runFor(rng.range(0, electionUs / 2));
      }
    },
  };
}

const snapshotCatchUp: Scenario = {
  name: 'snapshot-catch-up',
  summary:
    'a lagging or restarted follower catches up by InstallSnapshot after log compaction (MIT 3D, etcd)',
  params: (rng) =>
    params(rng, { nodes: rng.range(3, 5), snapshotEveryEntries: rng.range(5, 20), clients: rng.range(2, 4) }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    const leader = await awaitLeader(sim, 4 * electionUs);
    const follower = rng.pick(others(sim, [leader]));
    if (rng.chance(0.5)) sim.network.isolate(follower);
    else sim.crash(follower);
    let last = 0;
    for (let i = 0; i < 60; i++)
      last = proposeOn(sim, sim.committedLeader() ?? leader, `snap-${i}`)?.index ?? last;
    await sim.waitFor(() => {
      const current = sim.committedLeader();
      return current !== undefined && sim.node(current).log.baseIndex > sim.node(follower).log.lastIndex;
    }, 6 * electionUs);
    const current = sim.committedLeader();
    expect(sim, current !== undefined, 'no leader during the snapshot scenario');
    sim.network.reconnect(follower);
    sim.restart(follower);
    const target = sim.node(current!).hardState.commitIndex;
    const ok = await sim.waitFor(() => sim.node(follower).applied >= target, 6 * electionUs);
    expect(
      sim,
      ok,
      `follower ${follower} did not catch up to ${target} (applied ${sim.node(follower).applied})`,
    );
    // A restart loads the snapshot from disk.
    sim.crash(follower);
    await sim.runFor(rng.range(0, electionUs));
    sim.restart(follower);
    await agree(context, 'after-snapshot', 6 * electionUs);
  },
};

const membershipChange: Scenario = {
  name: 'membership-change',
  summary: 'add a learner, promote it, remove a voter, under drops and crashes (etcd, Raft §4.1)',
  params: (rng) =>
    params(rng, {
      nodes: 3,
      network: {
        ...DEFAULT_PARAMS.network,
        dropChance: rng.float() * 0.05,
        duplicateChance: rng.float() * 0.02,
      },
    }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    await agree(context, 'start');
    sim.addNode(4);
    await changeConfig(context, { kind: 'addLearner', node: 4 });
    if (rng.chance(0.5)) {
      const victim = rng.pick([1, 2, 3, 4]);
      sim.crash(victim);
      await sim.runFor(rng.range(0, electionUs));
      sim.restart(victim);
    }
    await changeConfig(context, { kind: 'promote', node: 4 });
    const removed = rng.pick([1, 2, 3]);
    removedBySeed.set(sim, removed);
    await changeConfig(context, { kind: 'remove', node: removed });
    await agree(context, 'after-remove', 8 * electionUs);
    const leader = sim.committedLeader()!;
    const membership = sim.raft(leader)!.status().membership;
    expect(sim, !membership.voters.includes(removed), `n${removed} still a voter after its removal`);
    expect(sim, membership.voters.includes(4), 'n4 not a voter after its promotion');
    sim.crash(removed);
  },
  retired: ({ sim }) => [removedBySeed.get(sim) ?? 0],
};

const removedBySeed = new WeakMap<Simulation, NodeId>();

async function changeConfig(
  context: ScenarioContext,
  change: { kind: 'addLearner' | 'promote' | 'remove'; node: NodeId },
): Promise<void> {
  const { sim, electionUs } = context;
  const deadline = sim.nowUs + 20 * electionUs;
  while (sim.nowUs < deadline) {
    const leader = await awaitLeader(sim, deadline - sim.nowUs);
    const result = sim.proposeConfigChange(leader, change);
    if (result?.ok === true) {
      const committed = await sim.waitFor(() => {
        const hash = sim.checker.appliedHashAt(result.index);
        return hash !== undefined;
      }, 4 * electionUs);
      if (committed && sim.node(leader).log.termAt(result.index) === result.term) {
        const status = sim.raft(sim.committedLeader() ?? leader)?.status();
        const members =
          status === undefined ? [] : [...status.membership.voters, ...status.membership.learners];
        const applied =
          change.kind === 'remove' ? !members.includes(change.node) : members.includes(change.node);
        if (applied) return;
      }
    }
    await sim.runFor(electionUs / 5);
  }
  fail(sim, `config change ${change.kind} ${change.node} did not complete`, 'no-leader');
}

const voteAmnesia: Scenario = {
  name: 'vote-amnesia',
  summary: 'a voter restarts right after granting its vote; a second candidate of that term must not get it',
  // Plain Raft elections (no pre-vote, no leases) so that the second candidate can ask at once.
  params: (rng) =>
    params(rng, { nodes: 3, preVote: false, checkQuorum: false, lowestIdLeader: false, clients: 0 }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    await awaitLeader(sim, firstLeaderBoundUs(context));
    await sim.runFor(rng.range(0, electionUs / 2));
    const [first, voter, second] = rng.shuffle([1, 2, 3]);
    // first and second reach only the voter.
    sim.network.heal();
    sim.network.cut(first!, second!);
    sim.raft(first!)?.campaign();
    sim.pump(first!);
    const elected = await sim.waitFor(() => sim.node(first!).role === 'leader', electionUs / 2);
    if (!elected) return;
    // The voter crashes right after its grant (before the new leader's first append arrives).
    sim.crash(voter!);
    sim.restart(voter!);
    sim.network.isolate(first!);
    await sim.runFor(0);
    sim.raft(second!)?.campaign();
    sim.pump(second!);
    await sim.runFor(electionUs / 2);
  },
};

const staleCandidate: Scenario = {
  name: 'stale-candidate',
  summary:
    'a node that missed committed entries campaigns at once on its return; voters must refuse it (§5.4.1)',
  // Plain Raft elections (no pre-vote, no leases), so only the up-to-date check stops it.
  params: (rng) =>
    params(rng, { nodes: rng.pick([3, 5]), preVote: false, checkQuorum: false, lowestIdLeader: false }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    const leader = await awaitLeader(sim, firstLeaderBoundUs(context));
    const stale = rng.pick(others(sim, [leader]));
    sim.network.isolate(stale);
    for (let i = 0; i < rng.range(1, 4); i++) await agree(context, `without-${stale}-${i}`);
    sim.network.reconnect(stale);
    const since = sim.nowUs;
    sim.raft(stale)?.campaign();
    sim.pump(stale);
    await sim.runFor(electionUs);
    const won = leadersSince(sim, since).filter((change) => change.node === stale);
    expect(sim, won.length === 0, `stale n${stale} won term ${won[0]?.term}`);
  },
  liveness: { expectLowestId: false },
};

const preVoteDisruption: Scenario = {
  name: 'prevote-disruption',
  summary:
    'a follower partitioned for long rejoins without bumping the term or deposing the leader (etcd pre-vote)',
  params: (rng) => params(rng, { nodes: rng.pick([3, 5]) }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    await awaitLeader(sim, 4 * electionUs);
    await awaitLowestLeader({ sim, rng, electionUs }, 1, 8 * electionUs);
    const leader = sim.committedLeader()!;
    const term = sim.maxTerm();
    const follower = rng.pick(others(sim, [leader]));
    sim.network.isolate(follower);
    await sim.runFor(rng.range(3, 6) * electionUs);
    expect(
      sim,
      sim.node(follower).hardState.term === term,
      `isolated n${follower} bumped its term to ${sim.node(follower).hardState.term}`,
    );
    sim.network.reconnect(follower);
    await sim.runFor(3 * electionUs);
    expect(
      sim,
      sim.maxTerm() === term,
      `rejoining n${follower} disrupted the cell: term ${term} -> ${sim.maxTerm()}`,
    );
    expect(
      sim,
      sim.committedLeader() === leader,
      `leader changed from ${leader} to ${sim.committedLeader()}`,
    );
  },
};

const stepDown: Scenario = {
  name: 'step-down',
  summary: 'a leader that loses its quorum steps down within one election timeout (check-quorum)',
  params: (rng) => params(rng, { nodes: rng.pick([3, 5]) }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    const leader = await awaitLeader(sim, 4 * electionUs);
    // The leader keeps at most a minority (itself and up to ⌊(n-1)/2⌋ - 1 followers).
    const keep = rng
      .shuffle(others(sim, [leader]))
      .slice(0, rng.range(0, Math.floor((sim.params.nodes - 1) / 2) - 1));
    const minority = [leader, ...keep];
    sim.network.partition([minority, others(sim, minority)]);
    const started = sim.nowUs;
    const tick = sim.params.tickUs;
    // One election timeout after the last contact, plus a tick of phase and the drift.
    const boundUs = electionUs + 2 * tick;
    const ok = await sim.waitFor(() => sim.node(leader).role !== 'leader', boundUs + 2 * electionUs);
    expect(sim, ok, `leader ${leader} never stepped down without a quorum`);
    expect(
      sim,
      sim.nowUs - started <= boundUs,
      `leader ${leader} stepped down after ${(sim.nowUs - started) / 1000} ms > ${boundUs / 1000} ms`,
    );
    await awaitLeader(sim, 6 * electionUs, 'majority leader');
  },
};

const transferTimeout: Scenario = {
  name: 'transfer-timeout',
  summary:
    'transfer to an unreachable node aborts after an election timeout; the leader keeps leading (etcd)',
  params: (rng) => params(rng, { nodes: rng.range(3, 5), lowestIdLeader: false }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    const leader = await awaitLeader(sim, firstLeaderBoundUs(context));
    const target = rng.pick(others(sim, [leader]));
    if (rng.chance(0.5)) sim.crash(target);
    else sim.network.isolate(target);
    await sim.runFor(sim.params.tickUs);
    const term = sim.maxTerm();
    expect(sim, sim.transferLeadership(leader, target), `transfer to ${target} refused`);
    const during = proposeOn(sim, leader, 'during-transfer');
    expect(sim, during === undefined, 'proposal accepted during a transfer');
    const ok = await sim.waitFor(() => proposeOn(sim, leader, 'after-abort') !== undefined, 2 * electionUs);
    expect(sim, ok, 'transfer to an unreachable node never aborted');
    expect(
      sim,
      sim.committedLeader() === leader && sim.maxTerm() === term,
      'leadership moved despite an unreachable target',
    );
  },
  liveness: { expectLowestId: false },
};

const transferRefuses: Scenario = {
  name: 'transfer-refuses-proposals',
  summary: 'during a transfer proposals are refused; the target leads after one term bump (etcd)',
  params: (rng) => params(rng, { nodes: rng.range(3, 5), lowestIdLeader: false }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    const leader = await awaitLeader(sim, firstLeaderBoundUs(context));
    const target = rng.pick(others(sim, [leader]));
    const term = sim.maxTerm();
    expect(sim, sim.transferLeadership(leader, target), `transfer to ${target} refused`);
    const result = sim.propose(leader, encodeCommand({ op: 'put', key: 'x', value: 'y', client: 0, id: 0 }));
    expect(
      sim,
      result !== undefined && !result.ok && result.reason === 'transferring',
      `proposal during transfer: ${JSON.stringify(result)}`,
    );
    const ok = await sim.waitFor(() => sim.committedLeader() === target, 2 * electionUs);
    expect(sim, ok, `target ${target} did not take over`);
    expect(sim, sim.maxTerm() === term + 1, `transfer took terms ${term} -> ${sim.maxTerm()}`);
  },
  liveness: { expectLowestId: false },
};

const transferSlowTarget: Scenario = {
  name: 'transfer-slow-target',
  summary: 'a lagging transfer target is caught up before TimeoutNow (etcd)',
  params: (rng) => params(rng, { nodes: rng.range(3, 5), lowestIdLeader: false }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    const leader = await awaitLeader(sim, firstLeaderBoundUs(context));
    const target = rng.pick(others(sim, [leader]));
    sim.network.isolate(target);
    let last = 0;
    for (let i = 0; i < rng.range(20, 120); i++) last = proposeOn(sim, leader, `lag-${i}`)?.index ?? last;
    await sim.waitFor(() => sim.node(leader).hardState.commitIndex >= last, 4 * electionUs);
    const term = sim.maxTerm();
    expect(sim, sim.transferLeadership(leader, target), `transfer to ${target} refused`);
    await sim.runFor(rng.range(0, electionUs / 4));
    sim.network.reconnect(target);
    const ok = await sim.waitFor(
      () => sim.committedLeader() !== leader || sim.node(leader).role !== 'leader',
      3 * electionUs,
    );
    if (ok && sim.committedLeader() === target) {
      expect(sim, sim.node(target).log.lastIndex >= last, 'target led before it was caught up');
      expect(sim, sim.maxTerm() === term + 1, `slow-target transfer took terms ${term} -> ${sim.maxTerm()}`);
    }
    await awaitLeader(sim, 6 * electionUs);
  },
  liveness: { expectLowestId: false },
};

const partialChained: Scenario = {
  name: 'partial-chained',
  summary:
    '5 nodes connected only as a chain; safety holds; leader exists after the heal (etcd partial connectivity)',
  params: (rng) => params(rng, { nodes: 5 }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    await awaitLeader(sim, 4 * electionUs);
    const order = rng.shuffle([...sim.nodes.keys()]);
    for (const a of order) for (const b of order) if (a < b) sim.network.cut(a, b);
    for (let i = 0; i + 1 < order.length; i++) sim.network.connect(order[i]!, order[i + 1]!);
    sim.log(`chain ${order.join('-')}`);
    await sim.runFor(rng.range(4, 10) * electionUs);
  },
};

const partialAsymmetric: Scenario = {
  name: 'partial-asymmetric',
  summary:
    'one-way link cuts (leader deaf, leader mute, random); the cell recovers (etcd asymmetric partitions)',
  params: (rng) => params(rng, { nodes: 5 }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    const leader = await awaitLeader(sim, 4 * electionUs);
    const mode = rng.int(3);
    if (mode === 0) {
      // Deaf leader: it sends heartbeats but hears nothing; check-quorum makes it step down.
      for (const id of others(sim, [leader])) sim.network.cutOneWay(id, leader);
      const ok = await sim.waitFor(() => sim.node(leader).role !== 'leader', 3 * electionUs);
      expect(sim, ok, `deaf leader ${leader} never stepped down`);
    } else if (mode === 1) {
      for (const id of others(sim, [leader])) sim.network.cutOneWay(leader, id);
      await awaitLeader(sim, 8 * electionUs, 'leader after the old one went mute');
    } else {
      const ids = [...sim.nodes.keys()];
      for (let i = 0; i < rng.range(2, 8); i++) {
        const [a, b] = rng.shuffle(ids);
        sim.network.cutOneWay(a!, b!);
      }
    }
    sim.log(`cuts ${sim.network.describeCuts()}`);
    await sim.runFor(rng.range(3, 8) * electionUs);
  },
};

const clockDrift: Scenario = {
  name: 'clock-drift',
  summary: 'tick rates skewed up to ±20% per node with leader crashes; safety and linearizability hold',
  params: (rng) =>
    params(rng, {
      nodes: rng.range(3, 5),
      driftPpmMax: rng.range(50_000, 200_000),
      clients: rng.range(2, 4),
    }),
  async safety({ sim, rng, electionUs }) {
    sim.startClients();
    for (let round = 0; round < 3; round++) {
      await awaitLeader(sim, 8 * electionUs);
      await sim.runFor(rng.range(0, 2 * electionUs));
      const crashed = crashLeader(sim);
      await awaitLeader(sim, 8 * electionUs);
      if (crashed !== undefined) sim.restart(crashed);
    }
  },
};

const lowestIdEqualLogs: Scenario = {
  name: 'lowest-id-equal-logs',
  summary: 'with equal logs the lowest id leads, also after a restart of all nodes',
  params: (rng) => params(rng, { nodes: rng.range(3, 7) }),
  async safety(context) {
    const { sim, electionUs } = context;
    await awaitLeader(sim, 4 * electionUs);
    await awaitLowestLeader(context, 1, 8 * electionUs);
    await agree(context, 'equal');
    await sim.waitFor(() => sim.caughtUp(), 2 * electionUs);
    for (const id of sim.nodes.keys()) sim.crash(id);
    await sim.runFor(electionUs);
    for (const id of sim.nodes.keys()) sim.restart(id);
    const started = sim.nowUs;
    await awaitLowestLeader(context, 1, 8 * electionUs);
    const elected = leadersSince(sim, started);
    expect(
      sim,
      elected.length === 1,
      `restart of equal logs elected ${elected.map((e) => e.node).join(',')} before n1`,
    );
  },
};

const lowestIdStale: Scenario = {
  name: 'lowest-id-stale',
  summary: 'a stale lowest id never wins; an up-to-date higher id does, then hands back once n1 caught up',
  params: (rng) => params(rng, { nodes: rng.pick([3, 5]) }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    await awaitLeader(sim, 4 * electionUs);
    sim.network.isolate(1);
    for (let i = 0; i < rng.range(1, 5); i++) await agree(context, `without-1-${i}`, 8 * electionUs);
    const leader = sim.committedLeader()!;
    expect(sim, leader !== 1, 'isolated n1 leads');
    // Leader dies just as the stale n1 returns.
    const since = sim.nowUs;
    sim.markFailoverStart();
    sim.crash(leader);
    sim.network.reconnect(1);
    await awaitLeader(sim, 8 * electionUs, 'leader after crash');
    const first = leadersSince(sim, since)[0];
    expect(sim, first !== undefined && first.node !== 1, `stale n1 won the election (term ${first?.term})`);
    sim.restart(leader);
  },
};

const lowestIdReturns: Scenario = {
  name: 'lowest-id-returns',
  summary: 'n1 returns: no term change while it catches up, then at most one handoff to it',
  params: (rng) => params(rng, { nodes: rng.pick([3, 5]) }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    await awaitLeader(sim, 4 * electionUs);
    await awaitLowestLeader(context, 1, 8 * electionUs);
    sim.markFailoverStart();
    sim.crash(1);
    await awaitLeader(sim, 8 * electionUs, 'leader without n1');
    for (let i = 0; i < rng.range(1, 10); i++) await agree(context, `without-1-${i}`);
    const term = sim.maxTerm();
    const since = sim.nowUs;
    sim.restart(1);
    await awaitLowestLeader(context, 1, 12 * electionUs);
    const changes = leadersSince(sim, since);
    expect(
      sim,
      changes.length === 1,
      `n1's return caused ${changes.length} leader changes: ${changes.map((c) => `n${c.node}@t${c.term}`).join(' ')}`,
    );
    expect(
      sim,
      sim.maxTerm() === term + 1,
      `n1's return moved the term ${term} -> ${sim.maxTerm()} (expected one handoff)`,
    );
    const termAfter = sim.maxTerm();
    await sim.runFor(4 * electionUs);
    expect(
      sim,
      sim.maxTerm() === termAfter && sim.committedLeader() === 1,
      'leadership flapped after the handoff',
    );
  },
};

const lowestIdKDead: Scenario = {
  name: 'lowest-id-k-dead',
  summary: 'the k lowest ids die at once; the election completes within a bound linear in k',
  params: (rng) => params(rng, { nodes: rng.pick([5, 7]) }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    await awaitLeader(sim, 4 * electionUs);
    await awaitLowestLeader(context, 1, 8 * electionUs);
    await agree(context, 'before');
    const k = rng.range(1, Math.floor((sim.params.nodes - 1) / 2));
    sim.markFailoverStart();
    const started = sim.nowUs;
    for (let id = 1; id <= k; id++) sim.crash(id);
    // The core's bound: electionTicks + 1 + (k + 1) * stagger ticks to start, plus a pre-vote and
    // a vote round trip and the first commit; allow one extra stagger per dead node and a tick.
    const stagger = Math.max(1, Math.floor(sim.params.electionTicks / 5)) * sim.params.tickUs;
    const boundUs = electionUs + (k + 2) * stagger + k * stagger + 2 * sim.params.tickUs;
    const leader = await awaitLeader(sim, 4 * electionUs + k * electionUs, `leader with ${k} lowest dead`);
    const tookUs = sim.nowUs - started;
    sim.log(`k=${k} election took ${tookUs}us (bound ${boundUs}us)`);
    expect(
      sim,
      tookUs <= boundUs * (1 + sim.params.driftPpmMax / 1e6) + 50_000,
      `election with k=${k} took ${tookUs / 1000} ms > ${boundUs / 1000} ms`,
    );
    expect(sim, leader > k, `dead n${leader} leads`);
  },
};

const lowestIdMinorityReach: Scenario = {
  name: 'lowest-id-minority-reach',
  summary: 'n1 reachable only by a minority never becomes leader; the lowest id that reaches a quorum leads',
  params: (rng) => params(rng, { nodes: 5 }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    await awaitLeader(sim, 4 * electionUs);
    const since = sim.nowUs;
    // n1 can only talk to n2.
    for (const id of [3, 4, 5]) sim.network.cut(1, id);
    if (rng.chance(0.5)) sim.crash(sim.committedLeader()!);
    await sim.runFor(rng.range(4, 8) * electionUs);
    const won = leadersSince(sim, since).filter((change) => change.node === 1);
    expect(
      sim,
      won.length === 0,
      `n1 became leader in term ${won[0]?.term} while reachable only by a minority`,
    );
    for (const id of sim.nodes.keys()) sim.restart(id);
    await awaitLowestLeader(context, 2, 12 * electionUs);
    const won2 = leadersSince(sim, since).filter((change) => change.node === 1);
    expect(sim, won2.length === 0, 'n1 became leader while reachable only by a minority');
  },
};

const singleNode: Scenario = {
  name: 'single-node',
  summary: 'a cell of one controller (quorum of one) commits, crashes and recovers',
  params: (rng) => params(rng, { nodes: 1 }),
  async safety(context) {
    const { sim, rng, electionUs } = context;
    sim.startClients();
    for (let round = 0; round < 3; round++) {
      await agree(context, `single-${round}`);
      await sim.runFor(rng.range(0, electionUs));
      sim.crash(1);
      await sim.runFor(rng.range(0, electionUs));
      sim.restart(1);
    }
  },
};

export const SCENARIOS: readonly Scenario[] = [
  initialElection,
  reelection,
  manyElections,
  basicAgreement,
  followerDown,
  noMajority,
  concurrentProposals,
  rejoin,
  backup,
  persistScenario('persist-all', 'crash and restart all nodes; committed state survives (MIT 3C)', 'all'),
  persistScenario('persist-primary', 'crash and restart the primary repeatedly (MIT 3C)', 'primary'),
  persistScenario('persist-follower', 'crash and restart a follower repeatedly (MIT 3C)', 'follower'),
  figure8Scenario(false),
  figure8Scenario(true),
  figure8Classic,
  unreliableAgreement,
  churnScenario(false),
  churnScenario(true),
  snapshotCatchUp,
  membershipChange,
  voteAmnesia,
  staleCandidate,
  preVoteDisruption,
  stepDown,
  transferTimeout,
  transferRefuses,
  transferSlowTarget,
  partialChained,
  partialAsymmetric,
  clockDrift,
  lowestIdEqualLogs,
  lowestIdStale,
  lowestIdReturns,
  lowestIdKDead,
  lowestIdMinorityReach,
  singleNode,
];

export function findScenario(name: string): Scenario | undefined {
  return SCENARIOS.find((scenario) => scenario.name === name);
}
