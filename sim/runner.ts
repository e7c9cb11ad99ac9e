/**
 * Runs one named scenario for one seed: picks every parameter from the seed, prints them (into
 * the trace), runs the safety phase with faults, then the liveness phase on a healed cell, then
 * the end checks (one leader, lowest id, caught-up nodes equal byte for byte, linearizable
 * client history). A violation ends the run and is returned, never thrown.
 */
import type { NodeId } from '../consensus/types.ts';
import { SimViolation, type ViolationCode } from './checkers.ts';
import { checkLinearizable } from './linearizability.ts';
import { Prng } from './prng.ts';
import { type CoreFaults, type SimParams, Simulation } from './simulation.ts';

export interface ScenarioContext {
  readonly sim: Simulation;
  /** The scenario's own stream, derived from the seed. */
  readonly rng: Prng;
  /** Election timeout in virtual µs (electionTicks × tickUs). */
  readonly electionUs: number;
}

export interface LivenessOptions {
  /** After the heal, a leader that committed in its term must exist within this bound. */
  readonly leaderBoundUs?: number;
  /** Client traffic on the healed cell before it must converge. */
  readonly trafficUs?: number;
  /** Expect the lowest-id voter to end up leader (default: params.lowestIdLeader). */
  readonly expectLowestId?: boolean;
}

export interface Scenario {
  readonly name: string;
  readonly summary: string;
  /** Every parameter of the run, picked from the seed's stream. */
  params(rng: Prng): SimParams;
  /** The safety phase: faults and scenario-specific checks. */
  safety(context: ScenarioContext): Promise<void>;
  /** The liveness phase; false to skip it. */
  readonly liveness?: LivenessOptions | false;
  /** Nodes the liveness phase must not restart (e.g. removed from the cell). */
  retired?(context: ScenarioContext): readonly NodeId[];
}

export interface RunOptions {
  readonly seed: number;
  readonly trace?: boolean;
  readonly traceLinesMax?: number;
  readonly coreFaults?: CoreFaults;
  readonly disabledChecks?: readonly 'unpersisted-send'[];
}

export interface RunResult {
  readonly scenario: string;
  readonly seed: number;
  readonly params: SimParams;
  readonly violation?: {
    readonly code: ViolationCode;
    readonly message: string;
    readonly atUs: number;
    /** For core errors: the stack of the error thrown inside the core. */
    readonly detail?: string;
  };
  /** Primary crash/loss -> a new primary committing, per measured failover. */
  readonly failoversUs: readonly number[];
  /** Heal -> a leader that committed, in the liveness phase. */
  readonly recoveryUs: number | undefined;
  readonly simulatedUs: number;
  readonly wallMs: number;
  readonly events: number;
  readonly traceHash: string;
  readonly traceLines: readonly string[];
  readonly operations: { readonly ok: number; readonly unknown: number; readonly failed: number };
}

export function describeParams(params: SimParams): string {
  const n = params.network;
  const d = params.disk;
  return [
    `nodes=${params.nodes}`,
    `tick=${params.tickUs}us`,
    `heartbeat=${params.heartbeatTicks}`,
    `election=${params.electionTicks}`,
    `preVote=${params.preVote}`,
    `checkQuorum=${params.checkQuorum}`,
    `lowestId=${params.lowestIdLeader}`,
    `entriesPerMessage=${params.maxEntriesPerMessage ?? 'default'}`,
    `inflight=${params.maxInflightAppends ?? 'default'}`,
    `drift=±${params.driftPpmMax}ppm`,
    `delay=${n.delayUsMin}-${n.delayUsMax}us`,
    `reorder=${n.reorderChance.toFixed(3)}/${n.reorderUsMax}us`,
    `drop=${n.dropChance.toFixed(3)}`,
    `dup=${n.duplicateChance.toFixed(3)}`,
    `disk=${d.writeUsMin}-${d.writeUsMax}us lose=${d.crashLoseChance.toFixed(3)} tear=${d.crashTearChance.toFixed(3)}`,
    `snapshotEvery=${params.snapshotEveryEntries}`,
    `clients=${params.clients}`,
    `keys=${params.keys}`,
  ].join(' ');
}

export async function runScenario(scenario: Scenario, options: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const root = new Prng(options.seed);
  const params = scenario.params(root.fork('params'));
  const sim = new Simulation({
    seed: options.seed,
    params,
    trace: options.trace ?? false,
    header: [
      `scenario ${scenario.name} seed ${options.seed}`,
      `params ${describeParams(params)}`,
      ...(options.coreFaults === undefined ? [] : [`coreFaults ${JSON.stringify(options.coreFaults)}`]),
    ],
    ...(options.traceLinesMax === undefined ? {} : { traceLinesMax: options.traceLinesMax }),
    ...(options.coreFaults === undefined ? {} : { coreFaults: options.coreFaults }),
    ...(options.disabledChecks === undefined ? {} : { disabledChecks: options.disabledChecks }),
  });
  const context: ScenarioContext = {
    sim,
    rng: root.fork('scenario'),
    electionUs: params.electionTicks * params.tickUs,
  };
  let violation: RunResult['violation'];
  let recoveryUs: number | undefined;
  try {
    await scenario.safety(context);
    if (scenario.liveness !== false)
      recoveryUs = await livenessPhase(scenario, context, scenario.liveness ?? {});
  } catch (error) {
    if (!(error instanceof SimViolation)) throw error;
    violation =
      error.code === 'core-error' && error.stack !== undefined
        ? { code: error.code, message: error.message, atUs: error.atUs, detail: error.stack }
        : { code: error.code, message: error.message, atUs: error.atUs };
    sim.log(`VIOLATION ${error.message}`);
  }
  const counts = sim.history.counts();
  const result: RunResult = {
    scenario: scenario.name,
    seed: options.seed,
    params,
    failoversUs: sim.failoversUs.slice(),
    recoveryUs,
    simulatedUs: sim.nowUs,
    wallMs: performance.now() - started,
    events: sim.events,
    traceHash: sim.trace.hash,
    traceLines: sim.trace.lines,
    operations: { ok: counts.ok, unknown: counts.unknown + counts.pending, failed: counts.failed },
  };
  return violation === undefined ? result : { ...result, violation };
}

/** Fail the run with a scenario-specific violation. */
export function fail(sim: Simulation, message: string, code: ViolationCode = 'scenario'): never {
  throw new SimViolation(code, message, sim.nowUs);
}

export function expect(sim: Simulation, condition: boolean, message: string): void {
  if (!condition) fail(sim, message);
}

/**
 * Wait until a leader (optionally one that `accept`s) has committed an entry of its term and no
 * node leads a higher term; fails after boundUs.
 */
export async function awaitLeader(
  sim: Simulation,
  boundUs: number,
  what = 'a leader',
  accept: (id: NodeId) => boolean = () => true,
): Promise<NodeId> {
  const found = (): boolean => {
    const leader = sim.committedLeader();
    return leader !== undefined && accept(leader);
  };
  const ok = await sim.waitFor(found, boundUs);
  if (!ok) fail(sim, `no ${what} committed within ${boundUs / 1000} ms`, 'no-leader');
  return sim.committedLeader()!;
}

async function livenessPhase(
  scenario: Scenario,
  context: ScenarioContext,
  options: LivenessOptions,
): Promise<number> {
  const { sim, electionUs } = context;
  const params = sim.params;
  sim.log('liveness phase: heal');
  sim.network.heal();
  sim.network.setFaults({
    ...params.network,
    dropChance: 0,
    duplicateChance: 0,
    reorderChance: 0,
    reorderUsMax: 0,
  });
  const retired = new Set(scenario.retired?.(context) ?? []);
  for (const id of sim.nodes.keys()) if (!retired.has(id)) sim.restart(id);
  const healedAt = sim.nowUs;
  // Without the lowest-id stagger, split votes may take a few more rounds (see scenarios.ts).
  const leaderBoundUs = options.leaderBoundUs ?? (params.lowestIdLeader ? 8 : 16) * electionUs;
  await awaitLeader(sim, leaderBoundUs, 'leader after the heal');
  const recoveryUs = sim.nowUs - healedAt;

  sim.startClients();
  await sim.runFor(options.trafficUs ?? 2 * electionUs);
  sim.stopClients();
  if (!(await sim.waitFor(() => sim.clientsIdle, params.clientTimeoutUs + electionUs))) {
    fail(sim, 'clients still waiting after their timeout');
  }

  const expectLowestId = options.expectLowestId ?? params.lowestIdLeader;
  const converged = (): boolean => {
    if (!sim.caughtUp()) return false;
    if (!expectLowestId) return true;
    const leader = sim.committedLeader()!;
    return leader === lowestVoter(sim, leader);
  };
  if (!(await sim.waitFor(converged, 10 * electionUs))) {
    const leader = sim.committedLeader();
    if (leader !== undefined && sim.caughtUp() && expectLowestId) {
      fail(
        sim,
        `leader is ${leader}, lowest-id up-to-date voter is ${lowestVoter(sim, leader)}`,
        'not-lowest-id-leader',
      );
    }
    fail(sim, `cell did not converge after the heal (leader ${leader ?? 'none'})`, 'not-caught-up');
  }
  // Stable for a while: no further elections on a healthy cell.
  const term = sim.maxTerm();
  const leader = sim.committedLeader()!;
  await sim.runFor(2 * electionUs);
  if (sim.maxTerm() !== term || sim.committedLeader() !== leader) {
    fail(
      sim,
      `healthy cell changed term ${term} -> ${sim.maxTerm()} or leader ${leader} -> ${sim.committedLeader()}`,
    );
  }
  if (sim.leaders().length !== 1)
    fail(sim, `${sim.leaders().length} nodes think they lead a healthy cell`, 'election-safety');
  compareCaughtUp(sim, leader);
  const history = sim.history.operations();
  const linearizable = checkLinearizable(history);
  if (!linearizable.ok) {
    if (linearizable.reason === 'budget') {
      fail(sim, `history of key ${linearizable.key} too large to check`, 'linearizability-budget');
    }
    fail(sim, `client history of key ${linearizable.key} is not linearizable`, 'not-linearizable');
  }
  sim.log(`liveness ok: leader n${leader} t${term}, ${linearizable.operations} operations linearizable`);
  return recoveryUs;
}

function lowestVoter(sim: Simulation, leader: NodeId): NodeId {
  const membership = sim.raft(leader)!.status().membership;
  const up = membership.voters.filter((id) => sim.nodes.get(id)?.up === true);
  return Math.min(...up);
}

/** Caught-up nodes must hold identical state machines and logs, byte for byte. */
function compareCaughtUp(sim: Simulation, leaderId: NodeId): void {
  const leader = sim.node(leaderId);
  // Every acknowledged write is in the final, applied log.
  for (const [index, hash] of sim.checker.acknowledged) {
    if (index > leader.applied || sim.checker.appliedHashAt(index) !== hash) {
      fail(sim, `acknowledged write at ${index} is not in the final log`, 'acknowledged-write-lost');
    }
  }
  const state = leader.kv.serialize();
  const leaderEntries = new Map(leader.disk.durable.entries.map((entry) => [entry.index, entry]));
  for (const node of sim.nodes.values()) {
    if (!node.up || node.id === leaderId || node.applied !== leader.applied) continue;
    const other = node.kv.serialize();
    if (Buffer.compare(Buffer.from(state), Buffer.from(other)) !== 0) {
      fail(
        sim,
        `node ${node.id} state machine differs from leader ${leaderId} at ${node.applied}`,
        'divergent-state',
      );
    }
    for (const entry of node.disk.durable.entries) {
      const mine = leaderEntries.get(entry.index);
      if (mine === undefined) continue;
      if (
        mine.term !== entry.term ||
        mine.type !== entry.type ||
        Buffer.compare(Buffer.from(mine.data), Buffer.from(entry.data)) !== 0
      ) {
        fail(
          sim,
          `node ${node.id} log entry ${entry.index} differs from leader ${leaderId}`,
          'divergent-state',
        );
      }
    }
  }
}
