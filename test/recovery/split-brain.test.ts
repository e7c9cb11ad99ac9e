/**
 * A split brain with real processes: one file changed twice, each version on another server,
 * each by a primary that did not see the other's change (the controller's metadata forked from
 * a copy, as after a partition with a manual primary on each side). The cell keeps the older
 * version's metadata; `zhsm fsck` sees the newer META objects, `zhsm rebuild` merges them: the
 * newest version is served, the older one is kept in lost+found, logged, listed.
 */
import assert from 'node:assert/strict';
import { cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { paths } from '../../node/daemon/config.ts';
import { startNode, stopNode } from '../daemon/_cell.ts';
import { patternBytes } from '../helpers.ts';
import { getFile, headersWritten, jsonOf, putFile, recoveryCell, zhsmRun } from './_recovery.ts';

test('split brain: the newest version wins, the other is kept in lost+found, nothing is lost', async (t) => {
  const cell = await recoveryCell(t, { servers: 2, replicas: 1, cell: 'split' });
  const { c1, base } = cell;
  const [s1, s2] = cell.servers as [(typeof cell.servers)[0], (typeof cell.servers)[0]];
  const metadataCopy = async (to: string) => {
    await rm(to, { recursive: true, force: true });
    await cp(paths(c1.data).raft, join(to, 'raft'), { recursive: true });
    await cp(paths(c1.data).metadata, join(to, 'metadata'), { recursive: true });
  };
  const metadataRestore = async (from: string) => {
    await rm(paths(c1.data).raft, { recursive: true, force: true });
    await rm(paths(c1.data).metadata, { recursive: true, force: true });
    await cp(join(from, 'raft'), paths(c1.data).raft, { recursive: true });
    await cp(join(from, 'metadata'), paths(c1.data).metadata, { recursive: true });
  };
  const versions = {
    common: { small: Buffer.from('the common version\n'), big: patternBytes(150_000, 1) },
    x: { small: Buffer.from('side X wrote this first\n'), big: patternBytes(160_000, 2) },
    y: { small: Buffer.from('side Y wrote this later\n'), big: patternBytes(170_000, 3) },
  };
  await putFile(cell.fs, '/small.txt', versions.common.small);
  await putFile(cell.fs, '/big.bin', versions.common.big);
  await headersWritten(c1);
  await cell.stopClient();
  await stopNode(c1);
  await metadataCopy(join(base, 'm0'));
  await startNode(t, c1);

  // Side X: s1 only. The cell will keep this side's metadata.
  await stopNode(s2);
  let fs = await cell.restartClient();
  await putFile(fs, '/small.txt', versions.x.small);
  await putFile(fs, '/big.bin', versions.x.big);
  await headersWritten(c1);
  await cell.stopClient();
  await stopNode(c1);
  await metadataCopy(join(base, 'mx'));

  // Side Y: another primary from the metadata before side X's changes, with s2 only.
  await metadataRestore(join(base, 'm0'));
  await startNode(t, c1);
  await stopNode(s1);
  await startNode(t, s2);
  fs = await cell.restartClient();
  await putFile(fs, '/small.txt', versions.y.small);
  await putFile(fs, '/big.bin', versions.y.big);
  await headersWritten(c1);
  await cell.stopClient();
  await stopNode(c1);

  // Healed: the cell has side X's metadata (the older versions); both servers are back.
  await metadataRestore(join(base, 'mx'));
  await startNode(t, c1);
  await stopNode(s2);
  await startNode(t, s2);
  await startNode(t, s1);
  fs = await cell.restartClient();
  assert.deepEqual(
    await getFile(fs, '/small.txt'),
    versions.x.small,
    'the metadata serves side X until the merge',
  );

  const checked = await zhsmRun(['fsck', '--data', c1.data, '--json']);
  assert.equal(checked.code, 4, checked.stdout);
  const counts = jsonOf<{ report: { counts: Record<string, number> } }>(checked.stdout).report.counts;
  assert.equal(counts['meta-newer'], 2, JSON.stringify(counts));

  const merged = await zhsmRun(['rebuild', '--data', c1.data, '--json']);
  assert.equal(merged.code, 0, merged.stdout);
  const report = jsonOf<{
    report: { conflicts: Array<{ path: string; kept: string; winnerServer: string; loserServer: string }> };
  }>(merged.stdout).report;
  t.diagnostic(`conflicts: ${JSON.stringify(report.conflicts)}`);
  assert.deepEqual(report.conflicts.map((conflict) => conflict.path).sort(), ['/big.bin', '/small.txt']);
  for (const conflict of report.conflicts) {
    assert.equal(conflict.winnerServer, 's2');
    assert.equal(conflict.loserServer, 's1');
    assert.match(conflict.kept, /^\/lost\+found\/(small\.txt|big\.bin)\.conflict-s1-\d+$/);
  }

  // The newest versions are served; the older ones are kept, byte for byte.
  assert.deepEqual(await getFile(fs, '/small.txt'), versions.y.small);
  assert.deepEqual(await getFile(fs, '/big.bin'), versions.y.big);
  const kept = (name: string) => report.conflicts.find((conflict) => conflict.path === `/${name}`)!.kept;
  assert.deepEqual(await getFile(fs, kept('small.txt')), versions.x.small);
  assert.deepEqual(await getFile(fs, kept('big.bin')), versions.x.big);

  // Logged and listed.
  const listed = await zhsmRun(['conflicts', '--data', c1.data]);
  assert.equal(listed.code, 0);
  assert.match(
    listed.stdout,
    /\/small\.txt: s2's version .* wins; s1's .* kept as \/lost\+found\/small\.txt\.conflict-s1-/,
  );
  const status = jsonOf<{ conflicts?: { count: number } }>(
    (await zhsmRun(['status', '--data', c1.data, '--json'])).stdout,
  );
  assert.equal(status.conflicts?.count, 2);
  // A second merge (human output) finds nothing new to keep.
  const again = await zhsmRun(['rebuild', '--data', c1.data]);
  assert.equal(again.code, 0, again.stdout);
  assert.match(again.stdout, /rebuild done in [\d.]+ s/);
  assert.match(again.stdout, /split-brain conflicts\s+0\n/);
  assert.deepEqual(await getFile(fs, kept('big.bin')), versions.x.big);
  await cell.stopClient();
});
