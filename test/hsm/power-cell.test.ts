/**
 * Power management on a real local cell (zhsm-node processes on loopback): a controller c1, one
 * storage server s1 with the `sim` power driver (boot delay 2 s), and a client node in this
 * process. A file whose only copy is on s1; s1 goes to sleep after 3 s idle (its process really
 * exits); a read wakes it (WAKING, then ON in the power log) and returns the right bytes; a
 * hanging power-off script ends in FAILED_TO_STOP (kept on), a failing power-on script in
 * FAILED_TO_START, retried with backoff until the start works again.
 *
 * Every process this test starts (or that the controller starts for it: s1 woken by the sim
 * driver, pid in s1/sim-power.pid) is killed by pid when the test ends.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { CellClient } from '../../node/client/cell-client.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import type { PowerEventJson, PowerServerJson } from '../../node/hsm/power-admin.ts';
import {
  initCell,
  joinNode,
  LOOPBACK,
  newNode,
  startNode,
  status,
  waitFor,
  zhsmCli,
} from '../daemon/_cell.ts';
import { patternBytes, tempDirectory } from '../helpers.ts';
import { alive, simProcesses } from './_power.ts';

const run = promisify(execFile);

test('idle sleep, wake on read, failing and hanging power scripts', { timeout: 240_000 }, async (t) => {
  const base = tempDirectory(t, 'zhsm-power-');
  const { first: c1, token } = await initCell(base, 'power');
  await startNode(t, c1);
  const peer = c1.addresses.find((a) => a.includes('127.0.0.1'))!;
  const s1 = newNode(base, 's1');
  await joinNode(s1, peer, token, ['--backend', join(base, 's1-backend'), '--name', 's1']);
  await startNode(t, s1);
  const firstPid = s1.child!.pid!;
  // Processes the controller's sim driver starts for s1: killed by pid at the end.
  const notePid = simProcesses(t, s1.data).note;

  const zhsm = async (...args: string[]) => {
    const { stdout } = await run(process.execPath, [zhsmCli, ...args, '--data', c1.data, '--json'], {
      timeout: 60_000,
    });
    return JSON.parse(stdout);
  };
  const powerOf = async (): Promise<PowerServerJson> =>
    ((await zhsm('power', 'status')) as { servers: PowerServerJson[] }).servers.find((s) => s.name === 's1')!;
  const log = async (): Promise<PowerEventJson[]> => zhsm('power', 'log', '--limit', '200');
  const waitPower = (state: string, timeoutMs = 60_000) =>
    waitFor(
      `s1 ${state}`,
      async () => {
        const record = await powerOf();
        return record.power === state ? record : undefined;
      },
      timeoutMs,
    ).catch(async (error: Error) => {
      // What happened instead: the power log and the record.
      const events = (await log()).slice(-12).map((e) => `${e.from}>${e.to} (${e.reason})`);
      throw new Error(`${error.message}; s1: ${JSON.stringify(await powerOf())}; log: ${events.join(', ')}`);
    });

  await waitFor('s1 registered', async () =>
    (await status(c1)).servers.some((s) => s.online) ? true : undefined,
  );

  // The client: a member node in this process, its cell client on the node's RemoteCell.
  const clientData = join(base, 'client');
  await ZhsmNode.join({ peer, token, data: clientData, listen: [LOOPBACK] });
  const client = await ZhsmNode.start(clientData);
  t.after(() => client.stop());
  const cell = new CellClient(client.remote, { replicas: 2 });

  // Usage errors are exit 2, failures exit 1.
  await assert.rejects(
    run(process.execPath, [zhsmCli, 'power', 'policy', '--idle', '3x', '--data', c1.data]),
    (e: { code: number }) => e.code === 2,
  );
  await assert.rejects(
    run(process.execPath, [zhsmCli, 'power', 'on', 'nosuch', '--data', c1.data]),
    (e: { code: number; stderr: string }) => e.code === 1 && /no storage server named nosuch/.test(e.stderr),
  );
  await assert.rejects(
    run(process.execPath, [zhsmCli, 'power', 'config', 's1', '--driver', 'sim', '--data', c1.data]),
    (e: { code: number; stderr: string }) => e.code === 2 && /needs --sim-data/.test(e.stderr),
  );

  const sim = ['--driver', 'sim', '--sim-data', s1.data, '--boot-delay', '2s', '--stop-grace', '5s'];
  const configured = (await zhsm('power', 'config', 's1', ...sim)) as { server: PowerServerJson };
  assert.equal(configured.server.driver, 'sim');

  // One copy only: the cell has one storage server (the client asks for 2 replicas).
  const bytes = patternBytes(5 * 1024 * 1024 + 123, 7);
  const handle = await cell.create('/archive.bin', 0o644, { uid: 0, gid: 0 }, { mode: 'write' });
  await handle.write(0, bytes);
  await handle.close();

  await zhsm(
    'power',
    'policy',
    '--idle',
    '3s',
    '--wake-timeout',
    '20s',
    '--retry-backoff',
    '1s',
    '--retry-backoff-max',
    '4s',
  );
  const asleep = await waitPower('SLEEPING');
  assert.equal(asleep.online, false);
  assert.match(asleep.powerReason, /idle for \d+ s/);
  await waitFor('the first s1 process to exit', async () => (alive(firstPid) ? undefined : true), 10_000);
  assert.ok(s1.child!.exitCode !== null || s1.child!.signalCode !== null, 's1 process is gone');
  // No idle power-down while the test looks at the woken server (on a loaded machine the steps
  // below can take longer than 3 s); the short idle time is back for the power-off cases.
  await zhsm('power', 'policy', '--idle', '1h');

  // A read wakes s1 (boot delay 2 s), waits for it, and returns the right bytes.
  const started = Date.now();
  const reader = await cell.open('/archive.bin', { mode: 'read' });
  const read = Buffer.from(await reader.read(0, bytes.length));
  const waitedMs = Date.now() - started;
  await reader.close();
  notePid();
  assert.equal(Buffer.compare(read, bytes), 0, 'the right bytes after the wake-up');
  assert.ok(waitedMs >= 2000, `the read waited for the boot delay (${waitedMs} ms)`);
  const woken = await waitPower('ON');
  assert.equal(woken.online, true);
  const events = await log();
  const transitions = events.filter((e) => e.name === 's1').map((e) => `${e.from}>${e.to}`);
  const sleepAt = transitions.indexOf('GOING_DOWN>SLEEPING');
  assert.ok(sleepAt >= 0, transitions.join(' '));
  assert.deepEqual(transitions.slice(sleepAt, sleepAt + 3), [
    'GOING_DOWN>SLEEPING',
    'SLEEPING>WAKING',
    'WAKING>ON',
  ]);
  assert.ok(events.some((e) => e.to === 'WAKING' && /woken for a read/.test(e.reason)));
  const simPid = Number(readFileSync(join(s1.data, 'sim-power.pid'), 'utf8'));
  assert.ok(alive(simPid), 'the woken s1 runs as a new process');

  // A read with an awake copy does not wait and wakes nothing.
  const eventsBefore = (await log()).length;
  const quick = Date.now();
  const again = await cell.open('/archive.bin', { mode: 'read' });
  assert.equal(Buffer.compare(Buffer.from(await again.read(0, 4096)), bytes.subarray(0, 4096)), 0);
  await again.close();
  // No wait: nothing was woken for it (timings on a loaded machine prove nothing).
  t.diagnostic(`read with an awake copy: ${Date.now() - quick} ms`);
  assert.ok(
    !(await log()).slice(eventsBefore).some((e) => e.to === 'WAKING'),
    'no wake-up for a read with an awake copy',
  );

  // A hanging power-off script: killed at its timeout, FAILED_TO_STOP, the server kept on.
  const hang = join(base, 'hang.sh');
  writeFileSync(hang, '#!/bin/sh\nsleep 60\n');
  chmodSync(hang, 0o755);
  const failOn = join(base, 'fail-on.sh');
  writeFileSync(failOn, '#!/bin/sh\necho "outlet {$1} refused" >&2\nexit 3\n');
  chmodSync(failOn, 0o755);
  await zhsm(
    'power',
    'config',
    's1',
    '--driver',
    'command',
    '--on',
    'true',
    '--off',
    hang,
    '--timeout',
    '1s',
  );
  await zhsm('power', 'policy', '--idle', '3s');
  const stuck = await waitPower('FAILED_TO_STOP', 90_000);
  assert.match(stuck.powerReason, /timed out after 1000 ms \(killed\)/);
  assert.equal(stuck.online, true, 'kept marked on');
  assert.ok(alive(simPid), 's1 still runs');
  assert.ok((await log()).length > eventsBefore);

  // Back to the sim driver; power it off by hand, then a failing power-on script.
  await zhsm('power', 'config', 's1', ...sim);
  const off = (await zhsm('power', 'off', 's1')) as { server: PowerServerJson };
  assert.ok(['SLEEPING', 'GOING_DOWN'].includes(off.server.power), off.server.power);
  await waitPower('SLEEPING');
  await waitFor('the woken s1 process to exit', async () => (alive(simPid) ? undefined : true), 10_000);
  await zhsm('power', 'policy', '--idle', '1h'); // no idle power-down of the restarted s1 below
  await zhsm(
    'power',
    'config',
    's1',
    '--driver',
    'command',
    '--on',
    `${failOn} {outlet}`,
    '--off',
    'true',
    '--outlet',
    '7',
    '--timeout',
    '5s',
  );
  const on = (await zhsm('power', 'on', 's1')) as { server: PowerServerJson; waitMs: number };
  assert.equal(on.waitMs, 20_000);
  const failed = await waitPower('FAILED_TO_START');
  assert.match(failed.powerReason, /exit code 3: outlet \{7\} refused/);
  // Retried with backoff (1 s, then 2 s): a second failure is logged.
  await waitFor('a retried start', async () => {
    const record = await powerOf();
    return record.power === 'FAILED_TO_START' && record.powerFailures >= 2 ? true : undefined;
  });
  // The start works again (sim driver): the next retry brings it up.
  await zhsm('power', 'config', 's1', ...sim);
  const back = await waitPower('ON', 40_000);
  notePid();
  assert.equal(back.powerFailures, 0);
  const final = (await log()).filter((e) => e.name === 's1').map((e) => `${e.from}>${e.to}`);
  const retried = final.filter((x) => x === 'FAILED_TO_START>WAKING').length;
  assert.ok(retried >= 2, `retries logged: ${final.join(' ')}`);
  assert.equal(final.at(-1), 'WAKING>ON');
});
