/**
 * A fresh controller set: both controllers of a cell lose their metadata; the rebuild runs on
 * one, and the other comes back as a voter with the rebuilt metadata (its member record is
 * restored, the primary adds it as a learner, it catches up and is promoted).
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { test } from 'node:test';
import { paths } from '../../node/daemon/config.ts';
import { joinNode, newNode, startNode, status, stopNode, waitFor } from '../daemon/_cell.ts';
import { getFile, headersWritten, jsonOf, putFile, recoveryCell, zhsmRun } from './_recovery.ts';

test('rebuild with two controllers: both lost their metadata; the second comes back as a voter', async (t) => {
  const cell = await recoveryCell(t, { servers: 1, cell: 'controllers' });
  const { c1, base } = cell;
  const created = await zhsmRun(['token', 'create', '--data', c1.data, '--json']);
  const { token } = jsonOf<{ token: string }>(created.stdout);
  const c2 = newNode(base, 'c2');
  await joinNode(c2, c1.addresses[0]!, token, ['--controller']);
  t.after(async () => {
    await stopNode(c2, 'SIGKILL').catch(() => {});
  });
  await startNode(t, c2);
  await waitFor('c2 a voter', async () => ((await status(c1)).voters.includes(2) ? true : undefined), 60_000);
  await putFile(cell.fs, '/a.txt', Buffer.from('kept through the rebuild'));
  await headersWritten(c1);

  await cell.stopClient();
  for (const node of [...cell.servers, c2, c1]) await stopNode(node);
  for (const node of [c1, c2]) {
    await rm(paths(node.data).raft, { recursive: true, force: true });
    await rm(paths(node.data).metadata, { recursive: true, force: true });
  }
  for (const node of [c1, c2, ...cell.servers]) await startNode(t, node);
  const rebuilt = await zhsmRun(['rebuild', '--data', c1.data, '--expect-servers', '1', '--json'], 300_000);
  assert.equal(rebuilt.code, 0, rebuilt.stdout);
  assert.equal(jsonOf<{ report: { restored: number } }>(rebuilt.stdout).report.restored, 3);

  const caughtUp = await waitFor(
    'c2 a voter again, caught up',
    async () => {
      const report = await status(c1);
      const [first, second] = [1, 2].map((id) => report.controllers.find((c) => c.id === id));
      return report.voters.includes(2) && second?.appliedIndex === first?.appliedIndex ? report : undefined;
    },
    90_000,
  );
  assert.deepEqual(caughtUp.voters, [1, 2]);
  const fs = await cell.restartClient();
  assert.equal((await getFile(fs, '/a.txt')).toString(), 'kept through the rebuild');
  await cell.stopClient();
});
