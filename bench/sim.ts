/**
 * Simulator benchmark.
 *
 * Speed: simulated seconds per second of CPU time (process.cpuUsage, so other load on the
 * machine does not distort it) of a 5-node cell with default timeouts, for three workloads:
 * idle (heartbeats only), light (one client, about 9 operations per simulated second) and heavy
 * (three clients, about 75 operations per second; every write costs ~10 synced disk records and
 * ~16 messages). The 500x target is for the 5-node cell; see the table for which load meets it.
 *
 * Failover: default timeouts (heartbeat 100 ms, election 1 s), 300 primary crashes at a random
 * phase under light client load: time from the crash to a new primary committing an entry of its
 * own term (target p99 <= 1.5 s simulated).
 */
import { fileURLToPath } from 'node:url';
import { DEFAULT_PARAMS, type SimParams, Simulation } from '../sim/simulation.ts';
import { percentile } from '../sim/stats.ts';
import { printTable, round } from './_table.ts';

const SPEED_WARMUP_US = 10_000_000;
const SPEED_SIMULATED_US = 200_000_000;
const FAILOVER_CRASHES = 300;
const SPEED_TARGET = 500;
const FAILOVER_P99_TARGET_MS = 1_500;

const WORKLOADS: readonly { readonly name: string; readonly clients: number; readonly thinkUsMax: number }[] =
  [
    { name: 'idle', clients: 0, thinkUsMax: 0 },
    { name: 'light', clients: 1, thinkUsMax: 200_000 },
    { name: 'heavy', clients: 3, thinkUsMax: 60_000 },
  ];

function params(clients: number, thinkUsMax: number): SimParams {
  return { ...DEFAULT_PARAMS, nodes: 5, clients, clientThinkUsMax: thinkUsMax };
}

async function measureSpeed(clients: number, thinkUsMax: number) {
  const sim = new Simulation({ seed: 1, params: params(clients, thinkUsMax) });
  sim.startClients();
  await sim.runFor(SPEED_WARMUP_US);
  const operationsBefore = sim.history.counts().ok;
  const eventsBefore = sim.events;
  const cpu = process.cpuUsage();
  const wallStarted = performance.now();
  await sim.runFor(SPEED_SIMULATED_US);
  const used = process.cpuUsage(cpu);
  const cpuSeconds = (used.user + used.system) / 1e6;
  const wallSeconds = (performance.now() - wallStarted) / 1000;
  if (sim.committedLeader() === undefined) throw new Error('bench: no leader at the end of the speed run');
  const simulatedSeconds = SPEED_SIMULATED_US / 1e6;
  return {
    speedup: simulatedSeconds / cpuSeconds,
    speedupWall: simulatedSeconds / wallSeconds,
    eventsPerCpuSecond: (sim.events - eventsBefore) / cpuSeconds,
    operationsPerSimulatedSecond: (sim.history.counts().ok - operationsBefore) / simulatedSeconds,
  };
}

async function measureFailover(): Promise<number[]> {
  const cellParams = params(1, 200_000);
  const sim = new Simulation({ seed: 2, params: cellParams });
  const electionUs = cellParams.electionTicks * cellParams.tickUs;
  sim.startClients();
  const rng = sim.fork('bench');
  for (let i = 0; i < FAILOVER_CRASHES; i++) {
    if (!(await sim.waitFor(() => sim.committedLeader() !== undefined, 10 * electionUs))) {
      throw new Error(`bench: no leader before crash ${i}`);
    }
    // Let the cell settle, then kill the primary at a random phase of its heartbeat.
    await sim.runFor(2 * electionUs + rng.range(0, cellParams.tickUs));
    const leader = sim.committedLeader();
    if (leader === undefined) continue;
    sim.markFailoverStart();
    sim.crash(leader);
    if (!(await sim.waitFor(() => !sim.failoverPending, 10 * electionUs))) {
      throw new Error(`bench: failover ${i} did not finish`);
    }
    sim.restart(leader);
  }
  return sim.failoversUs.map((us) => us / 1000);
}

export async function run(): Promise<{ figures: Record<string, number>; ratios: Record<string, number> }> {
  const figures: Record<string, number> = {};
  const ratios: Record<string, number> = {};
  const rows: Record<string, string | number>[] = [];
  for (const workload of WORKLOADS) {
    const speed = await measureSpeed(workload.clients, workload.thinkUsMax);
    rows.push({
      workload: `${workload.name} (5 nodes)`,
      'ops/sim s': round(speed.operationsPerSimulatedSecond, 1),
      'sim s/cpu s': Math.round(speed.speedup),
      'sim s/wall s': Math.round(speed.speedupWall),
      'events/cpu s': Math.round(speed.eventsPerCpuSecond),
      target: `>= ${SPEED_TARGET}x`,
    });
    figures[`speedup_${workload.name}`] = round(speed.speedup, 1);
    figures[`operationsPerSecond_${workload.name}`] = round(speed.operationsPerSimulatedSecond, 1);
    ratios[`speedup_${workload.name}_vs_target`] = round(speed.speedup / SPEED_TARGET);
  }
  printTable('sim: simulated seconds per second of CPU', rows);

  const failovers = await measureFailover();
  const p50 = percentile(failovers, 50)!;
  const p99 = percentile(failovers, 99)!;
  const max = Math.max(...failovers);
  printTable('sim: failover (primary crash -> new primary commits), default timeouts', [
    {
      failovers: failovers.length,
      'p50 ms': round(p50, 1),
      'p99 ms': round(p99, 1),
      'max ms': round(max, 1),
      target: `p99 <= ${FAILOVER_P99_TARGET_MS} ms`,
    },
  ]);
  figures.failoverP50Ms = round(p50, 1);
  figures.failoverP99Ms = round(p99, 1);
  figures.failoverMaxMs = round(max, 1);
  figures.failovers = failovers.length;
  ratios.failoverP99_vs_target = round(p99 / FAILOVER_P99_TARGET_MS);
  return { figures, ratios };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = await run();
  process.stdout.write(`${JSON.stringify({ bench: 'sim', ...result })}\n`);
}
