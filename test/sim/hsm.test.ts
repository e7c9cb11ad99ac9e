/**
 * The HSM simulation (sim/hsm/): determinism, the checker catching deliberately broken variants,
 * and the scenarios over a bounded number of seeds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { HsmFaults, HsmViolationCode } from '../../sim/hsm/model.ts';
import {
  findHsmScenario,
  HSM_SCENARIOS,
  type HsmRunResult,
  runHsmScenario,
} from '../../sim/hsm/scenarios.ts';

const SEEDS = Number(process.env.HSM_SIM_SEEDS ?? 4);

function fingerprint(result: HsmRunResult): string {
  const { traceLines: _lines, ...rest } = result;
  return JSON.stringify(rest);
}

describe('hsm simulation: determinism', () => {
  test('the same seed gives the same trace hash and figures; another seed does not', () => {
    const scenario = findHsmScenario('hsm-chains-change')!;
    const a = runHsmScenario(scenario, { seed: 7 });
    const b = runHsmScenario(scenario, { seed: 7 });
    assert.equal(a.traceHash, b.traceHash);
    assert.equal(fingerprint(a), fingerprint(b));
    assert.ok(a.events > 1_000, `a real run (${a.events} events)`);
    const c = runHsmScenario(scenario, { seed: 8 });
    assert.notEqual(c.traceHash, a.traceHash);
  });

  test('a traced replay runs the same events as the untraced run', () => {
    const scenario = findHsmScenario('hsm-flaky-scripts')!;
    const plain = runHsmScenario(scenario, { seed: 3 });
    const traced = runHsmScenario(scenario, { seed: 3, trace: true });
    assert.equal(traced.traceHash, plain.traceHash);
    assert.ok(traced.traceLines.some((line) => line.includes('power')));
  });
});

interface BrokenCase {
  readonly fault: keyof HsmFaults;
  readonly code: HsmViolationCode;
  readonly scenarios: readonly string[];
  readonly seedsMax: number;
}

const BROKEN: readonly BrokenCase[] = [
  // The mover drops the old copies before the new ones are current.
  { fault: 'releaseBeforeCopy', code: 'no-current-copy', scenarios: ['hsm-chains-change'], seedsMax: 4 },
  // The power layer ignores pending writes and migrations.
  {
    fault: 'ignorePending',
    code: 'power-off-with-pending',
    scenarios: ['hsm-chains-change', 'hsm-sleepy'],
    seedsMax: 6,
  },
  // A write with no awake destination is acknowledged without any bytes stored.
  {
    fault: 'ackWithoutCopy',
    code: 'acknowledged-write-lost',
    scenarios: ['hsm-sleepy', 'hsm-dead-server'],
    seedsMax: 6,
  },
];

describe('hsm simulation: the checker catches broken variants', () => {
  for (const broken of BROKEN) {
    test(`${broken.fault} fails with ${broken.code}, and the same seeds pass without it`, () => {
      let caught: HsmRunResult | undefined;
      const tried: Array<{ scenario: string; seed: number }> = [];
      outer: for (let seed = 1; seed <= broken.seedsMax; seed++)
        for (const name of broken.scenarios) {
          tried.push({ scenario: name, seed });
          const result = runHsmScenario(findHsmScenario(name)!, { seed, faults: { [broken.fault]: true } });
          if (result.violation !== undefined) {
            caught = result;
            break outer;
          }
        }
      assert.ok(caught !== undefined, `${broken.fault} was not caught within ${broken.seedsMax} seeds`);
      assert.equal(caught.violation!.code, broken.code, caught.violation!.message);
      for (const { scenario, seed } of tried) {
        const clean = runHsmScenario(findHsmScenario(scenario)!, { seed });
        assert.equal(clean.violation, undefined, `${scenario} seed ${seed}: ${clean.violation?.message}`);
      }
    });
  }
});

describe('hsm simulation: scenarios', () => {
  for (const scenario of HSM_SCENARIOS) {
    test(`${scenario.name}: ${SEEDS} seeds without a violation`, () => {
      for (let seed = 100; seed < 100 + SEEDS; seed++) {
        const result = runHsmScenario(scenario, { seed });
        assert.equal(
          result.violation,
          undefined,
          `${result.violation?.message} (replay: npm run sim -- hsm --scenario ${scenario.name} --seed ${seed} --trace)`,
        );
        assert.ok(result.acknowledged > 0 && result.reads > 0, 'the workload ran');
        if (scenario.name !== 'hsm-dead-server') assert.equal(result.readsFailed <= result.reads / 100, true);
      }
    });
  }
});
