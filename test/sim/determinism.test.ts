import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runScenario } from '../../sim/runner.ts';
import { findScenario } from '../../sim/scenarios.ts';

describe('determinism', () => {
  for (const name of ['churn-unreliable', 'persist-all', 'membership-change', 'snapshot-catch-up']) {
    test(`${name}: the same seed replays the same run (trace hash), another seed does not`, async () => {
      const scenario = findScenario(name)!;
      const first = await runScenario(scenario, { seed: 11 });
      const again = await runScenario(scenario, { seed: 11, trace: true });
      const other = await runScenario(scenario, { seed: 12 });
      assert.equal(first.violation, undefined, first.violation?.message);
      assert.equal(again.traceHash, first.traceHash);
      assert.equal(again.events, first.events);
      assert.equal(again.simulatedUs, first.simulatedUs);
      assert.deepEqual(again.params, first.params);
      assert.ok(again.traceLines.length > 10);
      assert.notEqual(other.traceHash, first.traceHash);
    });
  }

  test('the trace starts with the seed and every parameter', async () => {
    const result = await runScenario(findScenario('initial-election')!, { seed: 5, trace: true });
    assert.match(result.traceLines[0]!, /scenario initial-election seed 5/);
    assert.match(result.traceLines[1]!, /params nodes=\d+ .*drop=.*dup=.*disk=.*clients=/);
  });
});
