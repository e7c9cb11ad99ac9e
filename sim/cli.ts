/**
 * zhsm network simulator CLI.
 *
 *   npm run sim -- --scenario all --seeds 200      table of all scenarios over seeds 1..200
 *   npm run sim -- --scenario figure8 --seed 17 --trace   replay one run with its trace
 *   npm run sim -- --scenario all --seeds 20 --json       the summary as one JSON object
 *   npm run sim -- hsm --seeds 50                  HSM scenarios (sim/hsm/cli.ts)
 *   npm run sim -- energy [--seed N] [--json]      the HSM energy report
 *   npm run sim -- split-brain --seeds 200         split brain and rebuild (sim/recovery/)
 *
 * Exit code 1 on any violation, 2 on bad usage.
 */
import { parseArgs } from 'node:util';
import { energyMain, hsmMain } from './hsm/cli.ts';
import { splitBrainMain } from './recovery/split-brain.ts';
import { describeParams, type RunOptions, type RunResult, runScenario } from './runner.ts';
import { findScenario, SCENARIOS } from './scenarios.ts';
import type { CoreFaults } from './simulation.ts';
import { percentile } from './stats.ts';

const HELP = `zhsm simulator: deterministic discrete-event simulation of the controller cell.

Usage: npm run sim -- [options]

  --scenario NAME[,NAME...]  scenarios to run, or "all" (default: all)
  --seeds N                  run seeds first..first+N-1 of each scenario (default: 20)
  --first-seed N             first seed (default: 1)
  --seed N                   run exactly this seed (replay)
  --trace                    print the run's trace (with --seed)
  --json                     print the summary as one JSON object
  --fault NAME               run a deliberately broken core (skipUpToDateCheck,
                             commitOldTermByCount, forgetVote); repeatable
  --list                     list the scenarios
  --help                     this text

Subcommands: \`hsm\` (HSM scenarios: npm run sim -- hsm --help), \`energy\` (the energy
report: npm run sim -- energy --help) and \`split-brain\` (split brain and rebuild:
npm run sim -- split-brain --help).

Every run prints nothing but its row unless --seed is given; a replay prints the seed and all
parameters first, then (with --trace) every event, then the trace hash. The same seed gives the
same trace hash.`;

interface ScenarioSummary {
  readonly scenario: string;
  readonly seeds: number;
  readonly violations: readonly { seed: number; code: string; message: string; replay: string }[];
  readonly failoverP50Ms: number | null;
  readonly failoverP99Ms: number | null;
  readonly failovers: number;
  readonly simulatedSeconds: number;
  readonly wallSeconds: number;
  readonly speedup: number;
}

const FAULT_NAMES = ['skipUpToDateCheck', 'commitOldTermByCount', 'forgetVote'] as const;

async function main(argv: string[]): Promise<number> {
  const write = (stream: NodeJS.WriteStream) => (text: string) => void stream.write(text);
  if (argv[0] === 'hsm') return hsmMain(argv.slice(1), write(process.stdout), write(process.stderr));
  if (argv[0] === 'energy') return energyMain(argv.slice(1), write(process.stdout), write(process.stderr));
  if (argv[0] === 'split-brain')
    return splitBrainMain(argv.slice(1), write(process.stdout), write(process.stderr));
  let values: ReturnType<typeof parse>['values'];
  try {
    values = parse(argv).values;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${HELP}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (values.list) {
    for (const scenario of SCENARIOS)
      process.stdout.write(`${scenario.name.padEnd(28)} ${scenario.summary}\n`);
    return 0;
  }
  const names =
    values.scenario === undefined || values.scenario === 'all'
      ? SCENARIOS.map((s) => s.name)
      : values.scenario.split(',');
  const scenarios = names.map((name) => findScenario(name.trim()));
  const unknown = names.filter((_, i) => scenarios[i] === undefined);
  if (unknown.length > 0) {
    process.stderr.write(`unknown scenario(s): ${unknown.join(', ')} (see --list)\n`);
    return 2;
  }
  const coreFaults: Record<string, boolean> = {};
  for (const fault of values.fault ?? []) {
    if (!(FAULT_NAMES as readonly string[]).includes(fault)) {
      process.stderr.write(`unknown fault ${fault}; one of ${FAULT_NAMES.join(', ')}\n`);
      return 2;
    }
    coreFaults[fault] = true;
  }
  const faults: CoreFaults | undefined = Object.keys(coreFaults).length > 0 ? coreFaults : undefined;
  const faultArgs = Object.keys(coreFaults)
    .map((fault) => ` --fault ${fault}`)
    .join('');

  if (values.seed !== undefined) {
    const seed = parseSeed(values.seed);
    let failed = false;
    const summaries: RunResult[] = [];
    for (const scenario of scenarios) {
      const options: RunOptions = {
        seed,
        trace: values.trace === true,
        ...(faults === undefined ? {} : { coreFaults: faults }),
      };
      const result = await runScenario(scenario!, options);
      summaries.push(result);
      if (!values.json) {
        if (result.traceLines.length === 0) {
          process.stdout.write(`scenario ${result.scenario} seed ${result.seed}\n`);
          process.stdout.write(`params ${describeParams(result.params)}\n`);
        }
        for (const line of result.traceLines) process.stdout.write(`${line}\n`);
        process.stdout.write(
          `result ${result.violation === undefined ? 'ok' : `VIOLATION ${result.violation.message} at ${result.violation.atUs}us`}` +
            ` simulated=${(result.simulatedUs / 1e6).toFixed(3)}s events=${result.events} trace=${result.traceHash}` +
            ` failovers=[${result.failoversUs.map((us) => (us / 1000).toFixed(1)).join(',')}]ms` +
            ` ops ok=${result.operations.ok} unknown=${result.operations.unknown} failed=${result.operations.failed}\n`,
        );
      }
      if (result.violation !== undefined) failed = true;
      if (!values.json && values.trace === true && result.violation?.detail !== undefined) {
        process.stdout.write(`${result.violation.detail}\n`);
      }
    }
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({
          seed,
          faults: faults ?? null,
          violations: summaries.filter((result) => result.violation !== undefined).length,
          runs: summaries.map((result) => ({
            scenario: result.scenario,
            params: result.params,
            violation: result.violation ?? null,
            traceHash: result.traceHash,
            simulatedSeconds: result.simulatedUs / 1e6,
            events: result.events,
            failoversMs: result.failoversUs.map((us) => us / 1000),
            operations: result.operations,
          })),
        })}\n`,
      );
    }
    return failed ? 1 : 0;
  }

  const seeds = values.seeds === undefined ? 20 : parseSeed(values.seeds);
  const firstSeed = values['first-seed'] === undefined ? 1 : parseSeed(values['first-seed']);
  const summaries: ScenarioSummary[] = [];
  const started = performance.now();
  for (const scenario of scenarios) {
    const violations: ScenarioSummary['violations'][number][] = [];
    const failovers: number[] = [];
    let simulatedUs = 0;
    const scenarioStarted = performance.now();
    for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
      const result = await runScenario(scenario!, {
        seed,
        ...(faults === undefined ? {} : { coreFaults: faults }),
      });
      simulatedUs += result.simulatedUs;
      failovers.push(...result.failoversUs);
      if (result.violation !== undefined) {
        violations.push({
          seed,
          code: result.violation.code,
          message: result.violation.message,
          replay: `npm run sim -- --scenario ${scenario!.name} --seed ${seed} --trace${faultArgs}`,
        });
      }
    }
    const wallSeconds = (performance.now() - scenarioStarted) / 1000;
    const summary: ScenarioSummary = {
      scenario: scenario!.name,
      seeds,
      violations,
      failoverP50Ms: toMs(percentile(failovers, 50)),
      failoverP99Ms: toMs(percentile(failovers, 99)),
      failovers: failovers.length,
      simulatedSeconds: simulatedUs / 1e6,
      wallSeconds,
      speedup: simulatedUs / 1e6 / Math.max(wallSeconds, 1e-9),
    };
    summaries.push(summary);
    if (!values.json) printRow(summary, summaries.length === 1);
  }
  const violationCount = summaries.reduce((sum, s) => sum + s.violations.length, 0);
  if (values.json) {
    process.stdout.write(
      `${JSON.stringify({
        seeds,
        firstSeed,
        faults: faults ?? null,
        violations: violationCount,
        wallSeconds: (performance.now() - started) / 1000,
        scenarios: summaries,
      })}\n`,
    );
  } else {
    process.stdout.write(
      `\n${violationCount} violation(s) in ${summaries.length * seeds} runs, ${((performance.now() - started) / 1000).toFixed(1)} s wall\n`,
    );
    for (const summary of summaries) {
      for (const violation of summary.violations) {
        process.stdout.write(
          `  ${summary.scenario} seed ${violation.seed}: ${violation.message}\n    replay: ${violation.replay}\n`,
        );
      }
    }
  }
  return violationCount > 0 ? 1 : 0;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
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
  });
}

function parseSeed(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a seed: ${text}`);
  return value;
}

function toMs(us: number | undefined): number | null {
  return us === undefined ? null : Math.round(us / 100) / 10;
}

function printRow(summary: ScenarioSummary, header: boolean): void {
  if (header) {
    process.stdout.write(
      `${'scenario'.padEnd(28)} ${'seeds'.padStart(6)} ${'violations'.padStart(10)} ${'failover p50'.padStart(13)} ${'p99'.padStart(9)} ${'sim s/wall s'.padStart(13)}\n`,
    );
  }
  const ms = (value: number | null): string => (value === null ? '-' : `${value.toFixed(1)} ms`);
  const violations =
    summary.violations.length === 0
      ? '0'
      : `${summary.violations.length} (seed ${summary.violations[0]!.seed})`;
  process.stdout.write(
    `${summary.scenario.padEnd(28)} ${String(summary.seeds).padStart(6)} ${violations.padStart(10)} ${ms(summary.failoverP50Ms).padStart(13)} ${ms(summary.failoverP99Ms).padStart(9)} ${summary.speedup.toFixed(0).padStart(12)}x\n`,
  );
}

// A closed pipe (e.g. `| head`) ends the output quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 3;
  },
);
