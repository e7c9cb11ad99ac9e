/**
 * The energy report's default policy meets its targets on a reduced archive workload (10 000
 * files, 6 h warm-up, 12 h measured), and the report is deterministic.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ENERGY_TARGET, ENERGY_VARIANTS, runEnergyVariant } from '../../sim/hsm/energy.ts';

const HOUR = 3_600_000;
const OPTIONS = { seed: 1, files: 10_000, warmupMs: 6 * HOUR, measureMs: 12 * HOUR };

test('default policy: >= 80 % asleep, <= 1 % of reads waiting, no acknowledged write lost', () => {
  const variant = ENERGY_VARIANTS.find((v) => v.name === 'default')!;
  const row = runEnergyVariant(variant, OPTIONS);
  assert.equal(row.violation, null);
  assert.equal(row.acknowledgedLost, 0);
  assert.ok(row.acknowledged > 0 && row.reads > 5_000, `the workload ran (${row.reads} reads)`);
  assert.ok(
    row.asleepShare >= ENERGY_TARGET.asleepShareMin,
    `asleep ${(row.asleepShare * 100).toFixed(1)} %`,
  );
  assert.ok(
    row.readsWaitedShare <= ENERGY_TARGET.readsWaitedShareMax,
    `waited ${(row.readsWaitedShare * 100).toFixed(2)} %`,
  );
  const again = runEnergyVariant(variant, OPTIONS);
  assert.equal(again.traceHash, row.traceHash);
  assert.equal(again.asleepShare, row.asleepShare);
});

test('without the cache the servers sleep far less', () => {
  const row = runEnergyVariant(ENERGY_VARIANTS.find((v) => v.name === 'no-cache')!, OPTIONS);
  assert.equal(row.violation, null);
  assert.equal(row.readsCache, 0);
  assert.ok(row.asleepShare < ENERGY_TARGET.asleepShareMin, `asleep ${(row.asleepShare * 100).toFixed(1)} %`);
});
