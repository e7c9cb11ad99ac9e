/**
 * `zhsm --node MULTIADDR`: the ops CLI asks another node of the cell over the network, with the
 * identity of a member's data directory as the credential.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadOrCreateIdentity } from '../../node/net/identity.ts';
import { initCell, joinNode, newNode, startNode, stopNode, zhsmOutcome } from '../daemon/_cell.ts';
import { tempDirectory } from '../helpers.ts';

test('zhsm --node: members ask any node over the network; others are refused', async (t) => {
  const base = tempDirectory(t, 'zhsm-remote-');
  const { first: c1, token } = await initCell(base, 'remote');
  t.after(async () => {
    await stopNode(c1, 'SIGKILL').catch(() => {});
  });
  await startNode(t, c1);
  const node = c1.addresses.find((address) => address.includes('127.0.0.1'))!;
  // An operator's workstation: a member that runs no daemon (its identity is the credential).
  const operator = newNode(base, 'operator');
  await joinNode(operator, node, token);
  const stranger = join(base, 'stranger');
  await loadOrCreateIdentity(stranger);

  const status = await zhsmOutcome(['status', '--node', node, '--data', operator.data, '--json']);
  assert.equal(status.code, 0, status.stderr);
  const report = JSON.parse(status.stdout) as { cell: string; primary: { id: number } | null };
  assert.equal(report.cell, 'remote');
  assert.equal(report.primary?.id, 1);
  const human = await zhsmOutcome(['controllers', '--node', node, '--data', operator.data]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /leader/);

  const refused = await zhsmOutcome(['status', '--node', node, '--data', stranger]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /not a member of its cell/);
  const noIdentity = await zhsmOutcome(['status', '--node', node, '--data', join(base, 'nothing')]);
  assert.equal(noIdentity.code, 1);
  assert.match(noIdentity.stderr, /no identity key/);
  const badNode = await zhsmOutcome(['status', '--node', 'localhost:4001', '--data', operator.data]);
  assert.equal(badNode.code, 2);
  assert.match(badNode.stderr, /--node must be a multiaddr ending in \/p2p\//);
  const peerId = node.split('/p2p/')[1]!;
  const unreachable = await zhsmOutcome([
    'status',
    '--node',
    `/ip4/127.0.0.1/tcp/1/p2p/${peerId}`,
    '--data',
    operator.data,
  ]);
  assert.equal(unreachable.code, 3, unreachable.stderr);
});
