/**
 * The operations CLI `zhsm` on a real local cell (zhsm-node processes on loopback): controllers c1
 * and c2, a storage server s1 with a tagged backend, and a client node in this process that holds
 * an open file and runs a job. Every command's human and JSON output; leadership transfer, pin and
 * unpin; a member made a controller (s1: its running daemon starts the role, learner, voter) and
 * removed again; refusals (the primary, the last voter, a pinned primary); bad arguments (exit 2 with a message); a daemon
 * that is not running (exit 3).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CellClient } from '../../node/client/cell-client.ts';
import { adminRequest } from '../../node/daemon/admin-client.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import type {
  BackendJson,
  ControllersReport,
  JoinTokenJson,
  OpenTokenJson,
  ReplicationStatus,
} from '../../node/daemon/ops-admin.ts';
import type { ControllerAnswer } from '../../node/daemon/protocols.ts';
import { METADATA_LEVEL } from '../../node/metadata/records.ts';
import {
  initCell,
  joinNode,
  LOOPBACK,
  newNode,
  startNode,
  stopNode,
  waitFor,
  zhsmOutcome,
} from '../daemon/_cell.ts';
import { tempDirectory } from '../helpers.ts';

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run zhsm; never throws for a nonzero exit. */
async function zhsm(...args: string[]): Promise<Outcome> {
  return zhsmOutcome(args);
}

/** Run zhsm, expect exit 0, return stdout. */
async function ok(...args: string[]): Promise<string> {
  const outcome = await zhsm(...args);
  assert.equal(outcome.code, 0, `zhsm ${args.join(' ')}: exit ${outcome.code}: ${outcome.stderr}`);
  return outcome.stdout;
}

async function json<T>(...args: string[]): Promise<T> {
  return JSON.parse(await ok(...args, '--json')) as T;
}

function configOf(data: string): { controllerId: number } {
  return JSON.parse(readFileSync(join(data, 'node.json'), 'utf8')) as { controllerId: number };
}

test('zhsm: every command, human and JSON; controllers by hand; errors', { timeout: 120_000 }, async (t) => {
  const started = Date.now();
  const base = tempDirectory(t, 'zhsm-cli-');
  const tick = ['--tick-ms', '50'];
  const { first: c1, token } = await initCell(base, 'clicell');
  await startNode(t, c1, tick);
  const peer = c1.addresses.find((a) => a.includes('127.0.0.1'))!;
  const c2 = newNode(base, 'c2');
  const s1 = newNode(base, 's1');
  const backend = join(base, 's1-backend');
  await Promise.all([
    joinNode(c2, peer, token, ['--controller', '--name', 'c2']),
    joinNode(s1, peer, token, ['--backend', backend, '--tag', `${backend}=ssd,fast`, '--name', 's1']),
  ]);
  await Promise.all([startNode(t, c2, tick), startNode(t, s1, tick)]);
  const data = ['--data', c1.data];

  const controllers = () => json<ControllersReport>('controllers', ...data);
  // Polling goes through the admin socket from this process (no CLI process per poll).
  const view = async () =>
    (await adminRequest<{ report: ControllersReport }>(c1.data, { op: 'controllers' })).report;
  await waitFor('c2 a voter, s1 registered', async () => {
    const [report, backends] = await Promise.all([
      view(),
      adminRequest<{ backends: BackendJson[] }>(c1.data, { op: 'backends' }),
    ]);
    return report.voters.length === 2 && report.primary?.id === 1 && backends.backends.some((b) => b.online)
      ? true
      : undefined;
  });

  // A client in this process: one open file (a token) and a job on its node.
  const clientData = join(base, 'client');
  await ZhsmNode.join({ peer, token, data: clientData, listen: [LOOPBACK] });
  const client = await ZhsmNode.start(clientData);
  t.after(() => client.stop());
  const cell = new CellClient(client.remote, { replicas: 1 });
  const held = await cell.create('/held.txt', 0o644, { uid: 0, gid: 0 }, { mode: 'write' });
  t.after(() => held.close().catch(() => {}));
  const job = client.jobs.start('scrub', 'objects');
  client.jobs.update(job, { phase: 'verify', done: 40, total: 100 });
  client.jobs.count(job, 'damaged', 1);

  await t.test('status: replication health, open tokens, jobs', async () => {
    const [human, report, clientHuman] = await Promise.all([
      ok('status', ...data),
      json<{
        primary: { id: number };
        replication: ReplicationStatus[];
        pinnedLeader: number;
        metadataLevel: number;
        controllers: Array<{ id: number; softwareLevel: number }>;
        openTokens: number;
        jobs: Array<{ kind: string; state: string; done: number; total: number }>;
        servers: Array<{ name: string; power: string }>;
      }>('status', ...data),
      ok('status', '--data', clientData),
    ]);
    assert.equal(report.primary.id, 1);
    assert.deepEqual(
      report.replication.map((r) => [r.id, r.membership, r.healthy]),
      [
        [1, 'voter', true],
        [2, 'voter', true],
      ],
    );
    assert.equal(report.pinnedLeader, 0);
    // A new cell is at this software's metadata level; each controller reported its own.
    assert.equal(report.metadataLevel, METADATA_LEVEL);
    assert.deepEqual(
      report.controllers.map((c) => [c.id, c.softwareLevel]),
      [
        [1, METADATA_LEVEL],
        [2, METADATA_LEVEL],
      ],
    );
    assert.match(human, new RegExp(`commit index \\d+, metadata level ${METADATA_LEVEL}`));
    assert.equal(report.openTokens, 1);
    assert.deepEqual(report.jobs, []);
    assert.equal(report.servers[0]?.power, 'ON');
    assert.match(human, /cell clicell: primary controller 1/);
    assert.match(human, /MEMBER\s+LAG/);
    assert.match(human, /replication: healthy \(2 voters, quorum 2\)/);
    assert.match(human, /open tokens: 1/);
    assert.match(human, /jobs: none/);
    assert.match(
      clientHuman,
      /scrub scrub-\S+ running, verify \[#{8}-{12}\]\s+40% 40\/100 objects.*damaged 1/,
    );
    const clientJson = await json<{
      jobs: Array<{ kind: string; done: number; total: number; state: string }>;
    }>('status', '--data', clientData);
    assert.deepEqual(
      clientJson.jobs.map((j) => [j.kind, j.state, j.done, j.total]),
      [['scrub', 'running', 40, 100]],
    );
  });

  await t.test('servers and backends', async () => {
    const [servers, serversJson, backends, backendsJson] = await Promise.all([
      ok('servers', ...data),
      json<{ servers: Array<{ name: string; backends: unknown[] }> }>('servers', ...data),
      ok('backends', ...data),
      json<{ backends: BackendJson[] }>('backends', ...data),
    ]);
    assert.match(servers, /s1 online ON/);
    assert.equal(serversJson.servers[0]?.name, 's1');
    assert.equal(serversJson.servers[0]?.backends.length, 1);
    const [row] = backendsJson.backends;
    assert.ok(row !== undefined);
    assert.equal(row.server, 's1');
    assert.equal(row.path, backend);
    assert.deepEqual(row.tags, ['ssd', 'fast']);
    assert.match(row.uuid, /^[0-9a-f]{32}$/);
    assert.ok(row.capacityBytes > 0 && row.freeBytes > 0 && row.freeBytes <= row.capacityBytes);
    assert.ok(row.usedPercent >= 0 && row.usedPercent <= 100);
    assert.match(backends, /SERVER\s+BACKEND\s+PATH\s+TAGS\s+CAPACITY\s+FREE\s+USED/);
    assert.match(
      backends,
      new RegExp(`s1\\s+${row.uuid}\\s+${backend.replace(/[/.]/g, '\\$&')}\\s+ssd,fast\\s`),
    );
    assert.match(backends, /1 backend: .* capacity, .* free/);
  });

  await t.test('tokens: the open file with its path', async () => {
    const [human, report] = await Promise.all([
      ok('tokens', ...data),
      json<{ nowMs: number; tokens: OpenTokenJson[] }>('tokens', ...data),
    ]);
    assert.equal(report.tokens.length, 1);
    const [open] = report.tokens;
    assert.equal(open?.path, '/held.txt');
    assert.equal(open?.mode, 'WRITE');
    assert.equal(open?.holder, client.peerId);
    assert.ok(open!.expiresMs > report.nowMs);
    assert.match(human, /OBJECT\s+PATH\s+MODE\s+HOLDER\s+OPENED\s+EXPIRES IN/);
    assert.match(human, /\/held\.txt\s+WRITE/);
    assert.match(human, /1 open token$/m);
  });

  await t.test('join tokens: create, list, revoke', async () => {
    const [created, human] = await Promise.all([
      json<{ token: string; id: string; expiresMs: number }>('token', 'create', '--ttl', '1h', ...data),
      ok('token', 'create', '--ttl', '30m', ...data),
    ]);
    assert.match(created.token, /^zhsm1\.[0-9a-f]{32}\.[0-9a-f]{64}$/);
    assert.ok(Math.abs(created.expiresMs - (Date.now() + 3_600_000)) < 60_000);
    assert.match(human, /^zhsm1\.[0-9a-f]{32}\.[0-9a-f]{64}\nid [0-9a-f]{32}, valid until \S+ \(30 min\)$/m);
    const [list, listHuman] = await Promise.all([
      json<{ tokens: JoinTokenJson[] }>('token', 'list', ...data),
      ok('token', 'list', ...data),
    ]);
    assert.ok(list.tokens.some((x) => x.id === created.id && x.state === 'valid'));
    assert.ok(!JSON.stringify(list).includes(created.token.split('.')[2]!), 'no secrets in the list');
    assert.match(listHuman, new RegExp(`${created.id}\\s+valid`));
    assert.doesNotMatch(listHuman, new RegExp(created.token.split('.')[2]!));
    assert.equal(
      (await ok('token', 'revoke', created.id, ...data)).trim(),
      `join token ${created.id} revoked`,
    );
    const [after, all, revokedJson] = await Promise.all([
      json<{ tokens: JoinTokenJson[] }>('token', 'list', ...data),
      json<{ tokens: JoinTokenJson[] }>('token', 'list', '--all', ...data),
      // The whole token is accepted too (revoking twice is fine).
      json<{ id: string; revoked: boolean }>('token', 'revoke', created.token, ...data),
    ]);
    assert.ok(!after.tokens.some((x) => x.id === created.id), 'a revoked token is not listed');
    assert.ok(all.tokens.some((x) => x.id === created.id && x.state === 'revoked'));
    assert.deepEqual(revokedJson, { id: created.id, revoked: true });
  });

  await t.test('controllers: list, transfer, pin, unpin, refusals', async () => {
    const [human, report] = await Promise.all([ok('controllers', ...data), controllers()]);
    assert.equal(report.primary?.id, 1);
    assert.deepEqual(report.voters, [1, 2]);
    assert.equal(report.pinnedLeader, 0);
    assert.deepEqual(
      report.controllers.map((c) => [c.id, c.membership, c.primary, c.healthy, c.lag !== null]),
      [
        [1, 'voter', true, true, true],
        [2, 'voter', false, true, true],
      ],
    );
    assert.equal(report.controllers[1]?.peerId, c2.peerId);
    assert.match(human, /primary: controller 1, term \d+/);
    assert.match(human, /ID\s+ROLE\s+MEMBER\s+TERM\s+COMMIT\s+APPLIED\s+MATCH\s+LAG\s+HEALTH\s+LEVEL\s+PEER/);
    assert.equal(report.metadataLevel, METADATA_LEVEL);
    assert.match(human, new RegExp(`metadata level: ${METADATA_LEVEL} `));
    assert.match(human, new RegExp(`^2\\s.*\\sok\\s+${METADATA_LEVEL}\\s+${c2.peerId}`, 'm'));
    assert.match(human, /^1\*\s+leader\s+voter/m);
    assert.match(human, /^2\s+follower\s+voter/m);
    assert.match(human, /replication: healthy/);

    const moved = await json<ControllerAnswer>('controllers', 'transfer', '2', ...data);
    assert.equal(moved.done, true);
    assert.equal(moved.leaderId, 2);
    assert.match(moved.message, /controller 2 is the primary now; without a pin/);

    const pinned = await ok('controllers', 'pin', '2', ...data);
    assert.match(pinned, /leadership is pinned to controller 2/);
    assert.match(pinned, /primary: controller 2;.*pinned to controller 2/);
    // Every controller applies the stored pin to its core within a duty round (500 ms): the
    // primary reports it then.
    const whilePinned = await waitFor('the primary reports the pin', async () => {
      const report = await view();
      return report.primary?.id === 2 && report.pinnedLeader === 2 ? report : undefined;
    });
    assert.equal(whilePinned.pinnedLeader, 2);
    // A pin holds: a transfer elsewhere is refused.
    const [pinnedStatus, refused] = await Promise.all([
      ok('status', ...data),
      zhsm('controllers', 'transfer', '1', ...data, '--json'),
    ]);
    assert.match(pinnedStatus, /pinned to controller 2 \(manual\)/);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /pinned to controller 2: unpin it first/);
    // Refused by the primary on another node: the error keeps its code across the network.
    assert.equal((JSON.parse(refused.stdout) as { error: { code: string } }).error.code, 'NOT_PERMITTED');
    const unpinned = await json<ControllerAnswer>('controllers', 'unpin', ...data);
    assert.equal(unpinned.done, true);
    assert.equal(unpinned.pinnedLeader, 0);
    // The lowest-id rule brings controller 1 back.
    await waitFor('controller 1 leads again', async () =>
      (await view()).primary?.id === 1 ? true : undefined,
    );

    const primary = await zhsm('controllers', 'remove', '1', ...data);
    assert.equal(primary.code, 1);
    assert.match(primary.stderr, /cannot remove controller 1: it is the primary; transfer leadership first/);
  });

  await t.test('controllers: add a member (no restart), then remove it', async () => {
    const added = await json<ControllerAnswer>('controllers', 'add', s1.peerId, ...data);
    assert.equal(added.done, true);
    assert.equal(added.controllerId, 3);
    assert.match(added.message, /its daemon starts the controller role/);
    const again = await zhsm('controllers', 'add', s1.peerId.slice(0, 20), ...data);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already controller 3/);
    // The running daemon starts the controller role and writes its node.json: no restart.
    await waitFor('s1 node.json controllerId 3', async () =>
      configOf(s1.data).controllerId === 3 ? true : undefined,
    );
    await waitFor('controller 3 a voter', async () => {
      const report = await view();
      return report.voters.includes(3) && report.controllers.find((c) => c.id === 3)?.healthy
        ? true
        : undefined;
    });
    const removed = await json<ControllerAnswer>('controllers', 'remove', '3', ...data);
    assert.equal(removed.done, true, removed.message);
    assert.deepEqual(removed.voters, [1, 2]);
    assert.deepEqual(removed.learners, []);
    await waitFor('s1 node.json controllerId 0', async () =>
      configOf(s1.data).controllerId === 0 ? true : undefined,
    );
    // Its daemon runs on without the role (still a storage server).
    const own = await adminRequest<{ status: { node: { controllerId: number; storage: boolean } } }>(
      s1.data,
      {
        op: 'status',
      },
    );
    assert.deepEqual([own.status.node.controllerId, own.status.node.storage], [0, true]);
    const report = await view();
    assert.deepEqual(
      report.controllers.map((c) => c.id),
      [1, 2],
    );
  });

  await t.test('controllers: remove down to the last voter', async () => {
    const removed = await ok('controllers', 'remove', '2', ...data);
    assert.match(removed, /controller 2 removed \(voters 1\)/);
    const last = await zhsm('controllers', 'remove', '1', ...data, '--json');
    assert.equal(last.code, 1);
    assert.match(last.stderr, /cannot remove controller 1: it is the last voter/);
    assert.equal((JSON.parse(last.stdout) as { error: { code: string } }).error.code, 'NOT_PERMITTED');
    await waitFor('c2 node.json controllerId 0', async () =>
      configOf(c2.data).controllerId === 0 ? true : undefined,
    );
  });

  await t.test('bad arguments: exit 2 with a message', async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ['token', 'create', '--ttl', 'abc', ...data],
        /--ttl <duration>' argument 'abc' is invalid. invalid duration/,
      ],
      [['token', 'revoke', 'nothex', ...data], /not a join token id: "nothex"/],
      [['token', 'revoke', '0'.repeat(32), ...data], /no join token 0{32}/],
      [['controllers', 'transfer', 'x', ...data], /a controller id is a positive integer/],
      [['controllers', 'transfer', '9', ...data], /no controller 9 \(controllers: 1\)/],
      [['controllers', 'pin', '7', ...data], /no controller 7/],
      [['controllers', 'add', 'QmNoSuchPeer', ...data], /no member with peer id QmNoSuchPeer/],
      [
        ['controllers', 'frob', ...data],
        /unknown command 'controllers frob' \(list, transfer, pin, unpin, add, remove\)/,
      ],
      [['backends'], /required option '--data <dir>' not specified/],
      [['nosuch'], /unknown command 'nosuch'/],
    ];
    const outcomes = await Promise.all(cases.map(([args]) => zhsm(...args)));
    outcomes.forEach((outcome, i) => {
      const [args, message] = cases[i]!;
      assert.equal(outcome.code, 2, `zhsm ${args.join(' ')}: exit ${outcome.code}: ${outcome.stderr}`);
      assert.match(outcome.stderr, message, `zhsm ${args.join(' ')}`);
    });
    const usageJson = await zhsm('controllers', 'transfer', '9', ...data, '--json');
    assert.equal((JSON.parse(usageJson.stdout) as { error: { code: string } }).error.code, 'USAGE');
    const help = await ok('--help');
    assert.match(help, /Exit codes:\n {2}0 {2}ok\n {2}1 {2}failed/);
    assert.match(help, /3 {2}the daemon is not reachable/);
    assert.match(await ok('controllers', '--help'), /transfer \[options\] <id>/);
  });

  await t.test('a daemon that is not running: exit 3', async () => {
    await stopNode(c2);
    const [stopped, nowhere, stoppedJson] = await Promise.all([
      zhsm('status', '--data', c2.data),
      zhsm('controllers', '--data', join(base, 'nowhere')),
      zhsm('backends', '--data', c2.data, '--json'),
    ]);
    assert.equal(stopped.code, 3);
    assert.match(stopped.stderr, /no running zhsm node for .*c2 \(start it with: zhsm-node start --data/);
    assert.equal(nowhere.code, 3);
    assert.match(nowhere.stderr, /no running zhsm node for .*nowhere: it is not a node's data directory/);
    assert.equal(stoppedJson.code, 3);
    assert.equal((JSON.parse(stoppedJson.stdout) as { error: { code: string } }).error.code, 'UNREACHABLE');
  });

  t.diagnostic(`took ${Date.now() - started} ms`);
});
