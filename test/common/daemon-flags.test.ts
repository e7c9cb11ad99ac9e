/**
 * The daemon's V8 flags (node/common/daemon-flags.ts): this Node accepts them (an unknown flag
 * would stop every daemon from starting), and the places that spell them out instead of importing
 * them (bin/zhsm-node, the bench script) say the same. Their effect on collections is measured, not
 * tested (see daemon-flags.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DAEMON_V8_FLAGS } from '../../node/common/daemon-flags.ts';

const root = join(import.meta.dirname, '..', '..');

test('this Node starts with the daemon flags', () => {
  const script = "const v8 = require('node:v8'); console.log(JSON.stringify(v8.getHeapSpaceStatistics()))";
  const withFlags = JSON.parse(
    execFileSync(process.execPath, [...DAEMON_V8_FLAGS, '-e', script], { encoding: 'utf8' }),
  ) as Array<{ space_name: string }>;
  assert.ok(withFlags.some((space) => space.space_name === 'old_space'));
  // The flag's value is V8's own: `node --v8-options` would list a flag it does not know nowhere,
  // and an unknown flag makes node exit with an error (execFileSync above would have thrown).
  const options = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8' });
  for (const flag of DAEMON_V8_FLAGS) assert.ok(options.includes(flag.split('=')[0]!), flag);
});

test('bin/zhsm-node and the bench script pass the same flags', () => {
  const wrapper = readFileSync(join(root, 'bin', 'zhsm-node'), 'utf8');
  const exec = wrapper.split('\n').find((line) => line.startsWith('exec '));
  assert.ok(exec !== undefined);
  const packageJson = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };
  for (const flag of DAEMON_V8_FLAGS) {
    assert.ok(exec.includes(` ${flag} `), `bin/zhsm-node lacks ${flag}`);
    assert.ok(packageJson.scripts.bench!.includes(` ${flag} `), `the bench script lacks ${flag}`);
  }
});
