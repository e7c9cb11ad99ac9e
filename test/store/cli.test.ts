import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { patternBytes, tempDirectory } from '../helpers.ts';

const cli = join(import.meta.dirname, '..', '..', 'node', 'cli', 'store.ts');

function run(...args: string[]) {
  const result = spawnSync(process.execPath, [cli, ...args], {
    encoding: 'buffer',
    maxBuffer: 64 * 1024 * 1024,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.toString() };
}

test('zhsm-store: init, put, get (whole and range), ls, head, scrub, rm, space', (t) => {
  const directory = tempDirectory(t);
  const backend = join(directory, 'backend');
  const file = join(directory, 'input.bin');
  const content = Buffer.concat([patternBytes(100_000, 1), Buffer.alloc(300_000), patternBytes(5000, 2)]);
  writeFileSync(file, content);
  assert.equal(run('init', backend, '--cell', 'demo').status, 0);
  const put = run('put', backend, file);
  assert.equal(put.status, 0, put.stderr);
  const id = put.stdout.toString().trim();
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.ok(run('get', backend, id).stdout.equals(content));
  assert.ok(
    run('get', backend, id, '--offset', '99990', '--length', '20').stdout.equals(
      content.subarray(99_990, 100_010),
    ),
  );
  assert.match(run('ls', backend).stdout.toString(), new RegExp(`^${id}  DATA\\s+405000 `));
  assert.equal(JSON.parse(run('head', backend, id).stdout.toString()).bodySize, 405_000);
  assert.equal(JSON.parse(run('scrub', backend, '--json').stdout.toString()).objectsChecked, 1);
  assert.ok(JSON.parse(run('space', backend, '--json').stdout.toString()).totalBytes > 0);
  writeFileSync(join(backend, 'stray.txt'), 'x');
  assert.equal(run('scrub', backend).status, 3, 'problems found -> exit 3');
  assert.equal(run('rm', backend, id).status, 0);
  assert.equal(run('get', backend, id).status, 1);
});

test('zhsm-store: bad arguments give clear errors and exit codes', (t) => {
  const directory = tempDirectory(t);
  const usage = run('get', directory, 'not-an-id');
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /not an object id/);
  const notBackend = run('ls', directory);
  assert.equal(notBackend.status, 1);
  assert.match(notBackend.stderr, /not a zhsm backend/);
  assert.equal(run('frobnicate').status, 2);
  assert.equal(run('get', directory, '00112233445566778899aabbccddeeff', '--offset', '-5').status, 2);
  assert.equal(run('--help').status, 0);
});
