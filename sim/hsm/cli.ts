/**
 * The HSM subcommands of `npm run sim` (sim/cli.ts hands them over):
 *
 *   npm run sim -- hsm [--scenario NAME[,NAME]|all] [--seeds N] [--first-seed N] [--seed N [--trace]] [--json]
 *   npm run sim -- energy [--seed N] [--files N] [--hours H] [--warmup H] [--variant NAME[,NAME]] [--json]
 *
 * Exit code 1 on a violation (or, for energy, when the default policy misses its target), 2 on
 * bad usage.
 */
import { parseArgs } from 'node:util';
import { ENERGY_VARIANTS, energyReport, formatEnergyReport } from './energy.ts';
import { findHsmScenario, HSM_SCENARIOS, type HsmRunResult, runHsmScenario } from './scenarios.ts';

const HSM_HELP = `npm run sim -- hsm [options]: HSM scenarios (storage servers, power, placement, cache, mover)

  --scenario NAME[,NAME...]  scenarios, or "all" (default)
  --seeds N                  seeds first..first+N-1 of each (default 20)
  --first-seed N             first seed (default 1)
  --seed N                   one seed (replay); --trace prints its events
  --fault NAME               a broken variant: releaseBeforeCopy, ignorePending, ackWithoutCopy
  --json                     one JSON object
  --list                     the scenarios`;

const ENERGY_HELP = `npm run sim -- energy [options]: the energy report (archive workload)

  --seed N          seed (default 1)
  --files N         files (default 100000)
  --hours H         measured hours (default 24)
  --warmup H        warm-up hours before measuring (default 12)
  --variant A,B     variants (default all: ${ENERGY_VARIANTS.map((v) => v.name).join(', ')})
  --json            one JSON object`;

const FAULTS = ['releaseBeforeCopy', 'ignorePending', 'ackWithoutCopy'] as const;

function number(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`not a valid ${what}: ${text}`);
  return value;
}

export function hsmMain(argv: string[], out: (text: string) => void, err: (text: string) => void): number {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        scenario: { type: 'string' },
        seeds: { type: 'string' },
        'first-seed': { type: 'string' },
        seed: { type: 'string' },
        trace: { type: 'boolean' },
        json: { type: 'boolean' },
        fault: { type: 'string', multiple: true },
        list: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (error) {
    err(`${(error as Error).message}\n\n${HSM_HELP}\n`);
    return 2;
  }
  if (values.help) {
    out(`${HSM_HELP}\n`);
    return 0;
  }
  if (values.list) {
    for (const s of HSM_SCENARIOS) out(`${s.name.padEnd(22)} ${s.summary}\n`);
    return 0;
  }
  const names =
    values.scenario === undefined || values.scenario === 'all'
      ? HSM_SCENARIOS.map((s) => s.name)
      : String(values.scenario).split(',');
  const scenarios = names.map((n) => findHsmScenario(n.trim()));
  if (scenarios.some((s) => s === undefined)) {
    err(
      `unknown scenario(s): ${names.filter((_, i) => scenarios[i] === undefined).join(', ')} (see --list)\n`,
    );
    return 2;
  }
  const faults: Record<string, boolean> = {};
  for (const fault of (values.fault as string[] | undefined) ?? []) {
    if (!(FAULTS as readonly string[]).includes(fault)) {
      err(`unknown fault ${fault}; one of ${FAULTS.join(', ')}\n`);
      return 2;
    }
    faults[fault] = true;
  }
  const faultArgs = Object.keys(faults)
    .map((f) => ` --fault ${f}`)
    .join('');
  let seeds: number[];
  try {
    if (values.seed !== undefined) seeds = [number(values.seed as string, 1, 'seed')];
    else {
      const count = number(values.seeds as string | undefined, 20, 'seed count');
      const first = number(values['first-seed'] as string | undefined, 1, 'seed');
      seeds = Array.from({ length: count }, (_, i) => first + i);
    }
  } catch (error) {
    err(`${(error as Error).message}\n`);
    return 2;
  }
  const started = performance.now();
  const results: HsmRunResult[] = [];
  const single = values.seed !== undefined;
  if (!values.json && !single)
    out(
      `${'scenario'.padEnd(22)} ${'seeds'.padStart(6)} ${'violations'.padStart(12)} ${'reads'.padStart(8)} ${'waited'.padStart(7)} ${'failed'.padStart(7)} ${'writes'.padStart(7)} ${'wakes'.padStart(6)} ${'asleep'.padStart(7)} ${'wall'.padStart(7)}\n`,
    );
  for (const scenario of scenarios) {
    const scenarioStarted = performance.now();
    const mine: HsmRunResult[] = [];
    for (const seed of seeds) {
      const result = runHsmScenario(scenario!, {
        seed,
        trace: single && values.trace === true,
        ...(Object.keys(faults).length > 0 ? { faults } : {}),
      });
      mine.push(result);
      results.push(result);
      if (single && !values.json) {
        for (const line of result.traceLines) out(`${line}\n`);
        out(
          `scenario ${result.scenario} seed ${seed}\nparams ${result.params}\nresult ${result.violation === undefined ? 'ok' : `VIOLATION ${result.violation.message} at ${(result.violation.atMs / 1000).toFixed(3)} s`} simulated=${(result.simulatedMs / 1000).toFixed(0)}s events=${result.events} trace=${result.traceHash} reads=${result.reads} waited=${result.readsWaited} failed=${result.readsFailed} writes=${result.writes} acknowledged=${result.acknowledged} copies=${result.copies} wakes=${result.wakes} power-offs=${result.powerOffs} script-failures=${result.scriptFailures}\n`,
        );
      }
    }
    if (!values.json && !single) {
      const bad = mine.filter((r) => r.violation !== undefined);
      const sum = (f: (r: HsmRunResult) => number) => mine.reduce((a, r) => a + f(r), 0);
      const asleep = mine.reduce((a, r) => a + r.asleepShare, 0) / mine.length;
      out(
        `${scenario!.name.padEnd(22)} ${String(mine.length).padStart(6)} ${(bad.length === 0 ? '0' : `${bad.length} (seed ${bad[0]!.seed})`).padStart(12)} ${String(sum((r) => r.reads)).padStart(8)} ${String(sum((r) => r.readsWaited)).padStart(7)} ${String(sum((r) => r.readsFailed)).padStart(7)} ${String(sum((r) => r.writes)).padStart(7)} ${String(sum((r) => r.wakes)).padStart(6)} ${`${(asleep * 100).toFixed(0)} %`.padStart(7)} ${`${((performance.now() - scenarioStarted) / 1000).toFixed(1)} s`.padStart(7)}\n`,
      );
    }
  }
  const violations = results.filter((r) => r.violation !== undefined);
  if (values.json) {
    out(
      `${JSON.stringify({
        seeds,
        faults: Object.keys(faults).length > 0 ? faults : null,
        violations: violations.length,
        wallSeconds: (performance.now() - started) / 1000,
        runs: results.map(({ traceLines: _lines, ...rest }) => rest),
      })}\n`,
    );
  } else if (!single) {
    out(
      `\n${violations.length} violation(s) in ${results.length} runs, ${((performance.now() - started) / 1000).toFixed(1)} s wall\n`,
    );
    for (const v of violations)
      out(
        `  ${v.scenario} seed ${v.seed}: ${v.violation!.message}\n    replay: npm run sim -- hsm --scenario ${v.scenario} --seed ${v.seed} --trace${faultArgs}\n`,
      );
  }
  return violations.length > 0 ? 1 : 0;
}

export function energyMain(argv: string[], out: (text: string) => void, err: (text: string) => void): number {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        seed: { type: 'string' },
        files: { type: 'string' },
        hours: { type: 'string' },
        warmup: { type: 'string' },
        variant: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (error) {
    err(`${(error as Error).message}\n\n${ENERGY_HELP}\n`);
    return 2;
  }
  if (values.help) {
    out(`${ENERGY_HELP}\n`);
    return 0;
  }
  let options: Parameters<typeof energyReport>[0];
  try {
    const variants = values.variant === undefined ? undefined : String(values.variant).split(',');
    const unknown = variants?.filter((v) => !ENERGY_VARIANTS.some((x) => x.name === v)) ?? [];
    if (unknown.length > 0) throw new RangeError(`unknown variant(s): ${unknown.join(', ')}`);
    options = {
      seed: number(values.seed as string | undefined, 1, 'seed'),
      files: Math.round(number(values.files as string | undefined, 100_000, 'file count')),
      measureMs: number(values.hours as string | undefined, 24, 'hours') * 3_600_000,
      warmupMs: number(values.warmup as string | undefined, 12, 'hours') * 3_600_000,
      ...(variants === undefined ? {} : { variants }),
    };
  } catch (error) {
    err(`${(error as Error).message}\n\n${ENERGY_HELP}\n`);
    return 2;
  }
  const report = energyReport(options);
  out(values.json ? `${JSON.stringify(report)}\n` : formatEnergyReport(report));
  const violated = report.rows.some((r) => r.violation !== null || r.acknowledgedLost > 0);
  const checked = report.rows.some((r) => r.variant === 'default');
  return violated || (checked && !report.defaultMeetsTarget) ? 1 : 0;
}
