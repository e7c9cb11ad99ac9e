/** Power drivers with real processes: the command driver on shell scripts, the sim driver. */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  CommandPowerDriver,
  expandTemplate,
  type PowerTarget,
  SimPowerDriver,
  shellQuote,
} from '../../node/hsm/power-driver.ts';
import { tempDirectory } from '../helpers.ts';

const target: PowerTarget = {
  name: "s1 'quoted'",
  uuid: 'ab'.repeat(16),
  address: '10.0.0.7',
  outlet: '4; rm -rf /',
};

function script(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('templates substitute shell-quoted values; unknown placeholders are refused', () => {
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  assert.equal(
    expandTemplate('ctl on {outlet} {name}', target),
    `ctl on '4; rm -rf /' 's1 '\\''quoted'\\'''`,
  );
  assert.throws(() => expandTemplate('ctl {port}', target), /unknown placeholder \{port\}/);
  assert.throws(
    () => new CommandPowerDriver({ onCommand: 'x {nope}', offCommand: 'y' }, target),
    /placeholder/,
  );
  assert.throws(() => new CommandPowerDriver({ onCommand: '', offCommand: 'y' }, target), /on and an off/);
});

test('command driver: success passes the values, status is parsed', async (t) => {
  const dir = tempDirectory(t, 'zhsm-power-');
  const log = join(dir, 'calls');
  const ctl = script(
    dir,
    'ctl.sh',
    `printf '%s|%s|%s\\n' "$1" "$2" "$3" >> ${shellQuote(log)}\necho "Chassis Power is $(cat ${shellQuote(join(dir, 'state'))} 2>/dev/null || echo off)"`,
  );
  const driver = new CommandPowerDriver(
    {
      onCommand: `${ctl} on {outlet} {address} && echo on > ${shellQuote(join(dir, 'state'))}`,
      offCommand: `${ctl} off {outlet} {name} && echo off > ${shellQuote(join(dir, 'state'))}`,
      statusCommand: `${ctl} status {uuid}`,
      timeoutMs: 5000,
    },
    target,
  );
  assert.equal(await driver.status(), 'off');
  await driver.on();
  assert.equal(await driver.status(), 'on');
  await driver.off();
  assert.equal(await driver.status(), 'off');
  assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), [
    `status|${target.uuid}|`,
    'on|4; rm -rf /|10.0.0.7',
    `status|${target.uuid}|`,
    `off|4; rm -rf /|s1 'quoted'`,
    `status|${target.uuid}|`,
  ]);
  const noStatus = new CommandPowerDriver({ onCommand: 'true', offCommand: 'true' }, target);
  assert.equal(await noStatus.status(), 'unknown');
});

test('command driver: a failing script is retried with backoff, then fails with its output', async (t) => {
  const dir = tempDirectory(t, 'zhsm-power-');
  const count = join(dir, 'count');
  const failing = script(dir, 'fail.sh', `echo x >> ${shellQuote(count)}\necho "PDU says no" >&2\nexit 3`);
  const driver = new CommandPowerDriver(
    { onCommand: failing, offCommand: failing, retries: 2, retryDelayMs: 100, timeoutMs: 5000 },
    target,
  );
  const started = Date.now();
  await assert.rejects(
    driver.on(),
    /power on command for s1 'quoted' failed 3 times: exit code 3: PDU says no/,
  );
  const elapsed = Date.now() - started;
  assert.equal(readFileSync(count, 'utf8').trim().split('\n').length, 3);
  assert.ok(elapsed >= 300, `backoff 100 + 200 ms, took ${elapsed} ms`);
  // Succeeds on the second attempt.
  const flaky = script(
    dir,
    'flaky.sh',
    `if [ -e ${shellQuote(join(dir, 'once'))} ]; then exit 0; fi\ntouch ${shellQuote(join(dir, 'once'))}\nexit 1`,
  );
  await new CommandPowerDriver(
    { onCommand: flaky, offCommand: flaky, retries: 1, retryDelayMs: 50 },
    target,
  ).on();
});

test('command driver: a hanging script is killed at the timeout, with its whole process group', async (t) => {
  const dir = tempDirectory(t, 'zhsm-power-');
  const pids = join(dir, 'pids');
  // The script starts a grandchild that would outlive a plain kill of the shell.
  const hanging = script(dir, 'hang.sh', `sleep 60 &\necho $! > ${shellQuote(pids)}\nwait`);
  const driver = new CommandPowerDriver({ onCommand: hanging, offCommand: hanging, timeoutMs: 500 }, target);
  const started = Date.now();
  await assert.rejects(driver.off(), /timed out after 500 ms \(killed\)/);
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 3000, `killed in time (${elapsed} ms)`);
  const grandchild = Number(readFileSync(pids, 'utf8'));
  t.after(() => {
    if (alive(grandchild)) process.kill(grandchild, 'SIGKILL');
  });
  const deadline = Date.now() + 2000;
  while (alive(grandchild) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(alive(grandchild), false, 'the grandchild in the group is gone too');
});

test('sim driver: refuses a relative directory; off and status without a daemon', async (t) => {
  assert.throws(() => new SimPowerDriver({ data: 'relative' }), /absolute/);
  const dir = tempDirectory(t, 'zhsm-power-');
  const driver = new SimPowerDriver({ data: dir });
  assert.equal(await driver.status(), 'off');
  await driver.off();
  // A directory without a node is reported, not hidden.
  await assert.rejects(driver.on(), /no zhsm node in .* \(node.json is missing\)/);
});
