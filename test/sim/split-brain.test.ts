/**
 * The split-brain simulator (sim/recovery/split-brain.ts): seeded runs of a cell that splits,
 * changes files on both sides, loses its metadata and is rebuilt from the servers' objects.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planRebuild } from '../../node/recovery/rebuild-plan.ts';
import { runSplitBrain } from '../../sim/recovery/split-brain.ts';

test('split brain: over 300 seeds the newest version wins, the other is kept, deletes stay deleted', (t) => {
  let conflicts = 0;
  let both = 0;
  for (let seed = 1; seed <= 300; seed++) {
    const result = runSplitBrain(seed);
    assert.deepEqual(result.violations, [], `seed ${seed} ${JSON.stringify(result.params)}`);
    conflicts += result.conflicts;
    both += result.changedOnBothSides;
  }
  t.diagnostic(`${both} files changed apart on both sides; ${conflicts} losers kept`);
  assert.ok(both > 100 && conflicts > 50, 'the runs do produce split-brain conflicts');
  // The same seed gives the same run.
  assert.deepEqual(runSplitBrain(42), runSplitBrain(42));
});

test('split brain: the checks catch a rebuild that drops the losers or ignores tombstones', () => {
  const dropsLosers: typeof planRebuild = (input) => ({ ...planRebuild(input), conflicts: [] });
  const lost = Array.from({ length: 100 }, (_, i) => runSplitBrain(i + 1, { plan: dropsLosers })).filter(
    (result) => result.violations.some((violation) => violation.includes('is lost')),
  );
  assert.ok(lost.length > 10, `dropping the losers is caught (${lost.length} seeds)`);
  const noTombstones: typeof planRebuild = (input) =>
    planRebuild({
      ...input,
      metas: input.metas.map((meta) => ({
        ...meta,
        header: { ...meta.header, flags: { ...meta.header.flags, deleted: false } },
      })),
    });
  const resurrected = Array.from({ length: 100 }, (_, i) =>
    runSplitBrain(i + 1, { plan: noTombstones }),
  ).filter((result) =>
    result.violations.some((violation) => violation.includes('newest version is a delete')),
  );
  assert.ok(resurrected.length > 10, `ignoring tombstones is caught (${resurrected.length} seeds)`);
});
