/**
 * Golden interaction tests for the election rules: each script in test/sim/golden/ runs on a
 * deterministic cell and must reproduce the trace written beside its commands. Regenerate on
 * purpose with UPDATE_GOLDEN=1 and review the diff as text.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { formatScript, parseScript, runScript } from '../../sim/script.ts';

const directory = new URL('./golden/', import.meta.url);
const update = process.env.UPDATE_GOLDEN === '1';

describe('golden election scripts', () => {
  for (const file of readdirSync(directory)
    .filter((name) => name.endsWith('.txt'))
    .sort()) {
    test(file, async () => {
      const path = new URL(file, directory);
      const text = readFileSync(path, 'utf8');
      const steps = parseScript(text);
      const actual = await runScript(steps);
      if (update) {
        const comments = text.split('\n').filter((line) => line.startsWith('#'));
        writeFileSync(
          path,
          `${comments.join('\n')}${comments.length > 0 ? '\n' : ''}${formatScript(actual)}`,
        );
        return;
      }
      for (let i = 0; i < steps.length; i++) {
        assert.equal(
          actual[i]!.expected,
          steps[i]!.expected,
          `${file}: step ${i + 1} "${steps[i]!.command}"`,
        );
      }
    });
  }
});

describe('golden script format', () => {
  test('a command must be followed by ----; unknown commands are refused', async () => {
    assert.throws(() => parseScript('cell nodes=3\ntick 1\n'), /must be followed by ----/);
    const steps = parseScript('# comment\ncell nodes=3\n----\nok\n\nfly 1\n----\n\n');
    assert.equal(steps.length, 2);
    await assert.rejects(runScript(steps), /unknown script command "fly"/);
    await assert.rejects(runScript(parseScript('tick 1\n----\n')), /before "cell"/);
  });
});
