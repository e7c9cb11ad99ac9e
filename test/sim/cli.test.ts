import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';

const root = new URL('../../', import.meta.url).pathname;

function cli(...args: string[]) {
  const result = spawnSync(process.execPath, ['sim/cli.ts', ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('sim/cli.ts', () => {
  test('--help explains the options', () => {
    const { code, stdout } = cli('--help');
    assert.equal(code, 0);
    assert.match(stdout, /--scenario/);
    assert.match(stdout, /--seeds/);
    assert.match(stdout, /--trace/);
    assert.match(stdout, /--json/);
  });

  test('prints a table row per scenario and exits 0 without violations', () => {
    const { code, stdout } = cli('--scenario', 'initial-election,reelection', '--seeds', '3');
    assert.equal(code, 0);
    assert.match(stdout, /^scenario +seeds +violations +failover p50 +p99 +sim s\/wall s$/m);
    assert.match(stdout, /^initial-election +3 +0 /m);
    assert.match(stdout, /^reelection +3 +0 +\d+\.\d ms/m);
  });

  test('--json prints one JSON object', () => {
    const { code, stdout } = cli('--scenario', 'reelection', '--seeds', '2', '--json');
    assert.equal(code, 0);
    const summary = JSON.parse(stdout) as {
      violations: number;
      scenarios: { scenario: string; seeds: number; speedup: number }[];
    };
    assert.equal(summary.violations, 0);
    assert.equal(summary.scenarios[0]!.scenario, 'reelection');
    assert.equal(summary.scenarios[0]!.seeds, 2);
    assert.ok(summary.scenarios[0]!.speedup > 0);
  });

  test('--seed N --json prints one JSON object with the run', () => {
    const { code, stdout } = cli('--scenario', 'reelection', '--seed', '4', '--json');
    assert.equal(code, 0);
    const summary = JSON.parse(stdout) as { seed: number; violations: number; runs: { traceHash: string }[] };
    assert.equal(summary.seed, 4);
    assert.equal(summary.violations, 0);
    assert.match(summary.runs[0]!.traceHash, /^[0-9a-f]{16}$/);
  });

  test('--seed N --trace replays: seed and parameters first, same hash twice', () => {
    const first = cli('--scenario', 'churn', '--seed', '3', '--trace');
    const second = cli('--scenario', 'churn', '--seed', '3', '--trace');
    assert.equal(first.code, 0);
    const lines = first.stdout.trim().split('\n');
    assert.match(lines[0]!, /scenario churn seed 3/);
    assert.match(lines[1]!, /params nodes=5/);
    assert.equal(first.stdout, second.stdout);
    assert.match(lines.at(-1)!, /result ok .*trace=[0-9a-f]{16}/);
  });

  test('exits 1 and prints the replay command on a violation', () => {
    const { code, stdout } = cli(
      '--scenario',
      'figure8-classic',
      '--seeds',
      '3',
      '--fault',
      'commitOldTermByCount',
    );
    assert.equal(code, 1);
    assert.match(
      stdout,
      /replay: npm run sim -- --scenario figure8-classic --seed \d+ --trace --fault commitOldTermByCount/,
    );
  });

  test('exits 2 on bad usage', () => {
    assert.equal(cli('--scenario', 'no-such-scenario').code, 2);
    assert.equal(cli('--bogus').code, 2);
    assert.equal(cli('--fault', 'nonsense').code, 2);
  });
});
