/**
 * Shared driver of the scenario test files: runs seeds 1..SIM_SEEDS (default 200) of each named
 * scenario and fails with the replay commands of every violating seed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runScenario } from '../../sim/runner.ts';
import { findScenario } from '../../sim/scenarios.ts';

export const SEEDS = Number(process.env.SIM_SEEDS ?? 200);

export function scenarioTests(names: readonly string[]): void {
  for (const name of names) {
    const scenario = findScenario(name);
    test(`${name}: ${SEEDS} seeds without a violation`, async () => {
      assert.ok(scenario !== undefined, `unknown scenario ${name}`);
      const violations: string[] = [];
      for (let seed = 1; seed <= SEEDS; seed++) {
        const result = await runScenario(scenario, { seed });
        if (result.violation !== undefined) {
          violations.push(
            `seed ${seed}: ${result.violation.message}\n  replay: npm run sim -- --scenario ${name} --seed ${seed} --trace`,
          );
        }
      }
      assert.deepEqual(violations, [], violations.join('\n'));
    });
  }
}
