/**
 * HSM scenarios: a small archive cell per seed (3-6 servers, a few hundred files, short idle
 * timeouts so that servers sleep and wake many times), each with its faults. Every parameter is
 * picked from the seed; a run ends with a quiet period (no new work, the mover finishes what it
 * can) and a check of every file.
 */
import type { PowerPolicy } from '../../node/metadata/records.ts';
import { Prng } from '../prng.ts';
import {
  type HsmConfig,
  type HsmFaults,
  HsmSim,
  HsmViolation,
  type HsmViolationCode,
  type ServerSpec,
} from './model.ts';
import { type ArchiveWorkload, drive, groupedChains, populate, spreadChains } from './workload.ts';

const MB = 1024 ** 2;
const GB = 1024 ** 3;
const MIN = 60_000;
const HOUR = 3_600_000;

export interface HsmScenarioContext {
  readonly sim: HsmSim;
  readonly rng: Prng;
  readonly durationMs: number;
}

export interface HsmScenario {
  readonly name: string;
  readonly summary: string;
  /** Adjust the base configuration and workload (from the seed's stream). */
  setup(
    rng: Prng,
    base: { config: HsmConfig; workload: ArchiveWorkload; durationMs: number },
  ): {
    config: HsmConfig;
    workload: ArchiveWorkload;
    durationMs: number;
  };
  /** Faults scheduled during the run. */
  faults?(context: HsmScenarioContext): void;
}

export interface HsmRunOptions {
  readonly seed: number;
  readonly trace?: boolean;
  readonly faults?: HsmFaults;
}

export interface HsmRunResult {
  readonly scenario: string;
  readonly seed: number;
  readonly params: string;
  readonly violation?: { readonly code: HsmViolationCode; readonly message: string; readonly atMs: number };
  readonly traceHash: string;
  readonly events: number;
  readonly simulatedMs: number;
  readonly reads: number;
  readonly readsWaited: number;
  readonly readsFailed: number;
  readonly writes: number;
  readonly acknowledged: number;
  readonly copies: number;
  readonly wakes: number;
  readonly powerOffs: number;
  readonly scriptFailures: number;
  readonly asleepShare: number;
  readonly traceLines: readonly string[];
}

function basePolicy(rng: Prng): PowerPolicy {
  return {
    idleTimeoutMs: rng.range(1, 5) * MIN,
    wakeTimeoutMs: 7 * MIN,
    retryBackoffMs: rng.range(10, 60) * 1000,
    retryBackoffMaxMs: 20 * MIN,
  };
}

function baseSetup(rng: Prng): { config: HsmConfig; workload: ArchiveWorkload; durationMs: number } {
  const count = rng.range(3, 6);
  const servers: ServerSpec[] = [];
  for (let i = 0; i < count; i++)
    servers.push({
      name: `s${i + 1}`,
      tags: i % 2 === 0 ? ['archive'] : ['archive', 'fast'],
      backends: rng.range(1, 3),
      backendBytes: rng.range(20, 60) * GB,
      // Boot delays up to the RAID's 5 minutes.
      bootDelayMs: rng.range(5, 300) * 1000,
    });
  const config: HsmConfig = {
    seed: 0,
    servers,
    chains: rng.chance(0.7) ? groupedChains(count, rng.range(1, 2)) : spreadChains(rng.range(1, 3)),
    policy: basePolicy(rng),
    powerTickMs: 1000,
    scripts: {
      scriptMsMin: 200,
      scriptMsMax: 3000,
      failChance: 0,
      hangChance: 0,
      timeoutMs: 30_000,
      retries: 2,
      retryDelayMs: 2000,
    },
    slowWakeChance: 0,
    slowWakeExtraMs: 0,
    cache: {
      maxBytes: rng.range(0, 4) * GB,
      admitAfterReads: rng.range(1, 2),
      windowMs: HOUR,
    },
    preWake: rng.chance(0.8),
    mover: {
      concurrency: rng.range(1, 4),
      bytesPerMs: 100_000,
      tickMs: 60_000,
      batchAgeMs: rng.range(10, 60) * MIN,
    },
    transferBytesPerMs: 100_000,
    waitMaxMs: 12 * MIN,
    startAsleep: rng.chance(0.5),
  };
  const workload: ArchiveWorkload = {
    files: rng.range(100, 600),
    filesPerFolder: rng.range(5, 40),
    hotShare: 0.1,
    hotReadShare: 0.9,
    readsPerHour: rng.range(50, 400),
    sessionShareMin: 0.2,
    thinkMeanMs: rng.range(2, 30) * 1000,
    writesPerHour: rng.range(10, 120),
    writeSessionFiles: rng.range(1, 10),
    hotWriteShare: 0.5,
    overwriteShare: 0.2,
    sizeMin: 1 * MB,
    sizeMax: 256 * MB,
  };
  return { config, workload, durationMs: rng.range(2, 5) * HOUR };
}

const flakyScripts = (rng: Prng, config: HsmConfig): HsmConfig => ({
  ...config,
  scripts: {
    ...config.scripts,
    failChance: 0.1 + rng.float() * 0.3,
    hangChance: 0.05 + rng.float() * 0.15,
    timeoutMs: rng.range(5, 60) * 1000,
    retries: rng.range(0, 3),
  },
});

export const HSM_SCENARIOS: readonly HsmScenario[] = [
  {
    name: 'hsm-sleepy',
    summary: 'servers sleep when idle and wake for reads and writes; cache, pre-wake, mover',
    setup: (_rng, base) => base,
  },
  {
    name: 'hsm-slow-wake',
    summary: 'boots up to 5 min, some slower than the wake timeout (FAILED_TO_START, late registration)',
    setup: (rng, base) => ({
      ...base,
      config: {
        ...base.config,
        servers: base.config.servers.map((s) => ({ ...s, bootDelayMs: rng.range(120, 300) * 1000 })),
        slowWakeChance: 0.2 + rng.float() * 0.3,
        slowWakeExtraMs: rng.range(3, 10) * MIN,
      },
    }),
  },
  {
    name: 'hsm-flaky-scripts',
    summary: 'power scripts fail or hang (timeouts, retries, FAILED_TO_START/FAILED_TO_STOP, backoff)',
    setup: (rng, base) => ({ ...base, config: flakyScripts(rng, base.config) }),
  },
  {
    name: 'hsm-full-backends',
    summary: 'backends fill up during the run: writes and copies take the next use match',
    setup: (_rng, base) => base,
    faults: ({ sim, rng, durationMs }) => {
      const fills = rng.range(1, Math.max(1, sim.backends.length - 1));
      for (let i = 0; i < fills; i++) {
        const backend = rng.int(sim.backends.length);
        sim.at(rng.float() * durationMs, 'fault-fill', () =>
          sim.fillBackend(backend, 0.97 + rng.float() * 0.03),
        );
      }
    },
  },
  {
    name: 'hsm-chains-change',
    summary: 'the chains change (copies, grouping) twice under flaky power scripts; the mover re-places',
    setup: (rng, base) => ({
      ...base,
      config: flakyScripts(rng, { ...base.config, scripts: base.config.scripts }),
    }),
    faults: ({ sim, rng, durationMs }) => {
      const servers = sim.servers.length;
      const options = [
        groupedChains(servers, 1),
        groupedChains(servers, 2),
        spreadChains(1),
        spreadChains(2),
      ];
      for (let i = 0; i < 2; i++) {
        const text = rng.pick(options);
        sim.at(rng.float() * durationMs, 'fault-chains', () => sim.setChains(text));
      }
    },
  },
  {
    name: 'hsm-dead-server',
    summary:
      'a server fails to start every time (retried with backoff); its data is served from other copies',
    setup: (rng, base) => {
      const dead = rng.int(base.config.servers.length);
      return {
        ...base,
        config: {
          ...base.config,
          servers: base.config.servers.map((s, i) => (i === dead ? { ...s, neverStarts: true } : s)),
        },
      };
    },
  },
];

export function findHsmScenario(name: string): HsmScenario | undefined {
  return HSM_SCENARIOS.find((s) => s.name === name);
}

/** One scenario, one seed. A violation ends the run and is returned. */
export function runHsmScenario(scenario: HsmScenario, options: HsmRunOptions): HsmRunResult {
  const root = new Prng(options.seed);
  const setup = scenario.setup(root.fork('params'), baseSetup(root.fork('base')));
  const config: HsmConfig = {
    ...setup.config,
    seed: options.seed,
    trace: options.trace ?? false,
    ...(options.faults === undefined ? {} : { faults: options.faults }),
  };
  const sim = new HsmSim(config);
  const params = describe(config, setup.workload, setup.durationMs);
  sim.log(`scenario ${scenario.name} seed ${options.seed}`);
  sim.log(`params ${params}`);
  let violation: HsmRunResult['violation'];
  try {
    const cell = populate(sim, setup.workload, config.servers.length, sim.rng('populate'));
    drive(sim, cell, setup.workload, sim.rng('workload'), 0, setup.durationMs);
    scenario.faults?.({ sim, rng: sim.rng('faults'), durationMs: setup.durationMs });
    // The workload stops; then a quiet hour for the mover and the power loop, and a full check.
    sim.run(setup.durationMs + HOUR + config.mover.batchAgeMs);
    sim.checkAll();
  } catch (error) {
    if (!(error instanceof HsmViolation)) throw error;
    violation = { code: error.code, message: error.message, atMs: error.atMs };
  }
  const stats = sim.stats;
  return {
    scenario: scenario.name,
    seed: options.seed,
    params,
    ...(violation === undefined ? {} : { violation }),
    traceHash: sim.traceHash,
    events: sim.events,
    simulatedMs: sim.nowMs,
    reads: stats.reads,
    readsWaited: stats.readsWaited,
    readsFailed: stats.readsFailed,
    writes: stats.writes,
    acknowledged: stats.acknowledged,
    copies: stats.copies,
    wakes: Object.values(stats.wakes).reduce((a, b) => a + b, 0),
    powerOffs: stats.powerOffs,
    scriptFailures: stats.scriptFailures,
    asleepShare: sim.asleepShare(),
    traceLines: sim.traceLines,
  };
}

function describe(config: HsmConfig, workload: ArchiveWorkload, durationMs: number): string {
  const s = config.scripts;
  return [
    `servers=${config.servers.map((x) => `${x.name}:${x.backends}x${Math.round(x.backendBytes / GB)}G/boot${Math.round(x.bootDelayMs / 1000)}s${x.neverStarts ? '/dead' : ''}`).join(',')}`,
    `chains=${JSON.stringify(config.chains.replace(/\n\s*/g, '; ').slice(0, 60))}`,
    `idle=${config.policy.idleTimeoutMs / 1000}s`,
    `backoff=${config.policy.retryBackoffMs / 1000}s`,
    `scripts=fail${s.failChance.toFixed(2)}/hang${s.hangChance.toFixed(2)}/timeout${s.timeoutMs / 1000}s/retries${s.retries}`,
    `slowWake=${config.slowWakeChance.toFixed(2)}+${config.slowWakeExtraMs / 1000}s`,
    `cache=${Math.round(config.cache.maxBytes / GB)}G/k${config.cache.admitAfterReads}`,
    `preWake=${config.preWake}`,
    `mover=${config.mover.concurrency}/batch${config.mover.batchAgeMs / 60_000}m`,
    `startAsleep=${config.startAsleep}`,
    `files=${workload.files}/${workload.filesPerFolder}`,
    `reads/h=${workload.readsPerHour}`,
    `writes/h=${workload.writesPerHour}`,
    `hours=${durationMs / HOUR}`,
  ].join(' ');
}
