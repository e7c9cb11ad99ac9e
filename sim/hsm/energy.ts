/**
 * The energy report: an archive cell (6 storage servers, 100 000 files in folders of 100, 95 % of
 * the reads on 5 % of the files) runs a warm-up and then a measured day, once per policy variant
 * with the same seed (so the same cell, boot delays and workload). It reports the share of
 * storage-server-hours spent asleep, the share of reads that waited for a wake-up (with wait
 * percentiles), bytes moved by the mover, and acknowledged writes lost.
 */

import { Prng } from '../prng.ts';
import { percentile } from '../stats.ts';
import { type HsmConfig, HsmSim, HsmViolation, type ServerSpec } from './model.ts';
import { type ArchiveWorkload, drive, groupedChains, populate, spreadChains } from './workload.ts';

const MB = 1024 ** 2;
const GB = 1024 ** 3;
const TB = 1024 ** 4;
const MIN = 60_000;
const HOUR = 3_600_000;

export interface EnergyOptions {
  readonly seed: number;
  /** Files (default 100 000). */
  readonly files?: number;
  /** Measured time (default a day). */
  readonly measureMs?: number;
  /** Warm-up before measuring (default 12 h): the cache fills, servers settle. */
  readonly warmupMs?: number;
  /** Variant names to run (default all). */
  readonly variants?: readonly string[];
}

export interface EnergyVariant {
  readonly name: string;
  readonly summary: string;
  apply(config: HsmConfig): HsmConfig;
}

export interface EnergyRow {
  readonly variant: string;
  readonly summary: string;
  readonly asleepShare: number;
  readonly serverHours: number;
  readonly asleepHours: number;
  readonly reads: number;
  readonly readsCache: number;
  readonly readsWaited: number;
  readonly readsWaitedShare: number;
  readonly readsFailed: number;
  readonly waitMs: { p50: number | null; p90: number | null; p99: number | null; max: number | null };
  readonly writes: number;
  readonly writesWaited: number;
  readonly acknowledged: number;
  readonly acknowledgedLost: number;
  readonly bytesWritten: number;
  readonly bytesMoved: number;
  readonly wakes: Record<string, number>;
  readonly powerOffs: number;
  readonly scriptFailures: number;
  readonly cacheHitShare: number;
  readonly violation: string | null;
  readonly traceHash: string;
  readonly wallSeconds: number;
}

export interface EnergyReport {
  readonly seed: number;
  readonly workload: ArchiveWorkload;
  readonly warmupHours: number;
  readonly measuredHours: number;
  readonly servers: readonly { name: string; bootDelayS: number }[];
  readonly target: { asleepShareMin: number; readsWaitedShareMax: number };
  readonly defaultMeetsTarget: boolean;
  readonly rows: readonly EnergyRow[];
}

export const ENERGY_TARGET = { asleepShareMin: 0.8, readsWaitedShareMax: 0.01 };

export function archiveWorkload(files: number): ArchiveWorkload {
  return {
    files,
    filesPerFolder: 100,
    hotShare: 0.05,
    hotReadShare: 0.95,
    readsPerHour: 2_000,
    sessionShareMin: 0.2,
    thinkMeanMs: 10_000,
    writesPerHour: 20,
    writeSessionFiles: 10,
    hotWriteShare: 0.5,
    overwriteShare: 0,
    sizeMin: 1 * MB,
    sizeMax: 64 * MB,
  };
}

/** The default policy (what the report's first row runs). */
export function defaultEnergyConfig(seed: number): HsmConfig {
  const rng = new Prng(seed).fork('energy-cell');
  const servers: ServerSpec[] = [];
  for (let i = 0; i < 6; i++)
    servers.push({
      name: `s${i + 1}`,
      tags: ['archive'],
      backends: 2,
      backendBytes: 1 * TB,
      // The RAID's boot: 1 to 5 minutes, per server from the seed.
      bootDelayMs: rng.range(60, 300) * 1000,
    });
  return {
    seed,
    servers,
    chains: groupedChains(6, 2),
    policy: {
      idleTimeoutMs: 3 * MIN,
      wakeTimeoutMs: 7 * MIN,
      retryBackoffMs: 30_000,
      retryBackoffMaxMs: 30 * MIN,
    },
    powerTickMs: 1000,
    scripts: {
      scriptMsMin: 500,
      scriptMsMax: 5000,
      failChance: 0.02,
      hangChance: 0.005,
      timeoutMs: 60_000,
      retries: 2,
      retryDelayMs: 2000,
    },
    slowWakeChance: 0.05,
    slowWakeExtraMs: 60_000,
    cache: { maxBytes: 256 * GB, admitAfterReads: 1, windowMs: 24 * HOUR },
    preWake: true,
    mover: { concurrency: 2, bytesPerMs: 100_000, tickMs: 60_000, batchAgeMs: 12 * HOUR },
    transferBytesPerMs: 100_000,
    waitMaxMs: 15 * MIN,
    startAsleep: false,
  };
}

export const ENERGY_VARIANTS: readonly EnergyVariant[] = [
  {
    name: 'default',
    summary: 'grouped chains, 256 GiB cache (admit on first read), idle 3 min, pre-wake',
    apply: (c) => c,
  },
  {
    name: 'no-cache',
    summary: 'default without the controller cache',
    apply: (c) => ({ ...c, cache: { ...c.cache, maxBytes: 0 } }),
  },
  {
    name: 'cache-128g-k2',
    summary: 'default, but a 128 GiB cache admitting on the 2nd read in 24 h',
    apply: (c) => ({ ...c, cache: { ...c.cache, maxBytes: 128 * GB, admitAfterReads: 2 } }),
  },
  {
    name: 'idle-1m',
    summary: 'default with a 1 min idle timeout',
    apply: (c) => ({ ...c, policy: { ...c.policy, idleTimeoutMs: 1 * MIN } }),
  },
  {
    name: 'idle-10m',
    summary: 'default with a 10 min idle timeout',
    apply: (c) => ({ ...c, policy: { ...c.policy, idleTimeoutMs: 10 * MIN } }),
  },
  {
    name: 'idle-60m',
    summary: 'default with a 60 min idle timeout',
    apply: (c) => ({ ...c, policy: { ...c.policy, idleTimeoutMs: 60 * MIN } }),
  },
  { name: 'no-prewake', summary: 'default without pre-wake', apply: (c) => ({ ...c, preWake: false }) },
  {
    name: 'spread',
    summary: 'copies on any backends by free space (no grouping)',
    apply: (c) => ({ ...c, chains: spreadChains(2) }),
  },
];

/** Run one variant. */
export function runEnergyVariant(variant: EnergyVariant, options: EnergyOptions): EnergyRow {
  const started = performance.now();
  const files = options.files ?? 100_000;
  const warmupMs = options.warmupMs ?? 12 * HOUR;
  const measureMs = options.measureMs ?? 24 * HOUR;
  const workload = archiveWorkload(files);
  const config = variant.apply(defaultEnergyConfig(options.seed));
  const sim = new HsmSim(config);
  let violation: string | null = null;
  try {
    const cell = populate(sim, workload, config.servers.length, sim.rng('populate'));
    drive(sim, cell, workload, sim.rng('workload'), 0, warmupMs + measureMs);
    sim.run(warmupMs);
    sim.resetStats();
    sim.run(warmupMs + measureMs);
  } catch (error) {
    if (!(error instanceof HsmViolation)) throw error;
    violation = `${error.message} at ${(error.atMs / 1000).toFixed(3)} s (seed ${options.seed}, variant ${variant.name})`;
  }
  const stats = sim.stats;
  const times = sim.powerTimes();
  let total = 0;
  let asleep = 0;
  for (const t of times)
    for (const [state, ms] of Object.entries(t.times)) {
      total += ms;
      if (state === 'SLEEPING') asleep += ms;
    }
  const waits = stats.readWaitsMs;
  const at = (p: number) => {
    const v = percentile(waits, p);
    return v === undefined ? null : Math.round(v);
  };
  return {
    variant: variant.name,
    summary: variant.summary,
    asleepShare: total === 0 ? 0 : asleep / total,
    serverHours: total / HOUR,
    asleepHours: asleep / HOUR,
    reads: stats.reads,
    readsCache: stats.readsCache,
    readsWaited: stats.readsWaited,
    readsWaitedShare: stats.reads === 0 ? 0 : stats.readsWaited / stats.reads,
    readsFailed: stats.readsFailed,
    waitMs: {
      p50: at(50),
      p90: at(90),
      p99: at(99),
      max: waits.length === 0 ? null : Math.round(Math.max(...waits)),
    },
    writes: stats.writes,
    writesWaited: stats.writesWaited,
    acknowledged: stats.acknowledged,
    acknowledgedLost: sim.lostWrites(),
    bytesWritten: stats.bytesWritten,
    bytesMoved: stats.bytesMoved,
    wakes: { ...stats.wakes },
    powerOffs: stats.powerOffs,
    scriptFailures: stats.scriptFailures,
    cacheHitShare: stats.reads === 0 ? 0 : stats.readsCache / stats.reads,
    violation,
    traceHash: sim.traceHash,
    wallSeconds: (performance.now() - started) / 1000,
  };
}

export function energyReport(options: EnergyOptions): EnergyReport {
  const wanted = options.variants;
  const variants =
    wanted === undefined ? ENERGY_VARIANTS : ENERGY_VARIANTS.filter((v) => wanted.includes(v.name));
  const rows = variants.map((variant) => runEnergyVariant(variant, options));
  const config = defaultEnergyConfig(options.seed);
  const main = rows.find((row) => row.variant === 'default');
  return {
    seed: options.seed,
    workload: archiveWorkload(options.files ?? 100_000),
    warmupHours: (options.warmupMs ?? 12 * HOUR) / HOUR,
    measuredHours: (options.measureMs ?? 24 * HOUR) / HOUR,
    servers: config.servers.map((s) => ({ name: s.name, bootDelayS: s.bootDelayMs / 1000 })),
    target: ENERGY_TARGET,
    defaultMeetsTarget:
      main !== undefined &&
      main.violation === null &&
      main.acknowledgedLost === 0 &&
      main.asleepShare >= ENERGY_TARGET.asleepShareMin &&
      main.readsWaitedShare <= ENERGY_TARGET.readsWaitedShareMax,
    rows,
  };
}

const pct = (x: number, digits = 1) => `${(x * 100).toFixed(digits)} %`;
const secs = (ms: number | null) => (ms === null ? '-' : `${(ms / 1000).toFixed(0)} s`);
const gib = (bytes: number) => `${(bytes / GB).toFixed(1)} GiB`;

/** The report as a table. */
export function formatEnergyReport(report: EnergyReport): string {
  const w = report.workload;
  const lines = [
    `energy report, seed ${report.seed}: ${report.servers.length} storage servers (boot ${report.servers.map((s) => `${s.name} ${s.bootDelayS} s`).join(', ')}),`,
    `${w.files} files in folders of ${w.filesPerFolder}, ${pct(w.hotReadShare, 0)} of read sessions on ${pct(w.hotShare, 0)} of the folders,`,
    `${w.readsPerHour} reads/h in folder walks, ${w.writesPerHour} new files/h; ${report.warmupHours} h warm-up, then ${report.measuredHours} h measured`,
    '',
    `${'variant'.padEnd(13)} ${'asleep'.padStart(8)} ${'reads'.padStart(7)} ${'cached'.padStart(7)} ${'waited'.padStart(8)} ${'wait p50'.padStart(9)} ${'p90'.padStart(6)} ${'p99'.padStart(6)} ${'max'.padStart(6)} ${'wakes'.padStart(6)} ${'moved'.padStart(10)} ${'lost'.padStart(5)}`,
  ];
  for (const r of report.rows) {
    const wakes = Object.values(r.wakes).reduce((a, b) => a + b, 0);
    lines.push(
      `${r.variant.padEnd(13)} ${pct(r.asleepShare).padStart(8)} ${String(r.reads).padStart(7)} ${pct(r.cacheHitShare, 0).padStart(7)} ${pct(r.readsWaitedShare, 2).padStart(8)} ${secs(r.waitMs.p50).padStart(9)} ${secs(r.waitMs.p90).padStart(6)} ${secs(r.waitMs.p99).padStart(6)} ${secs(r.waitMs.max).padStart(6)} ${String(wakes).padStart(6)} ${gib(r.bytesMoved).padStart(10)} ${String(r.acknowledgedLost).padStart(5)}${r.violation === null ? '' : `  VIOLATION ${r.violation}`}`,
    );
  }
  lines.push('');
  for (const r of report.rows) lines.push(`  ${r.variant.padEnd(13)} ${r.summary}`);
  lines.push('');
  const main = report.rows.find((r) => r.variant === 'default');
  if (main !== undefined)
    lines.push(
      `target (default): >= ${pct(report.target.asleepShareMin, 0)} asleep, <= ${pct(report.target.readsWaitedShareMax, 0)} of reads waiting, 0 writes lost: ${report.defaultMeetsTarget ? 'met' : 'NOT met'} (${pct(main.asleepShare)} asleep, ${pct(main.readsWaitedShare, 2)} waited, ${main.acknowledgedLost} lost of ${main.acknowledged} acknowledged)`,
    );
  return `${lines.join('\n')}\n`;
}
