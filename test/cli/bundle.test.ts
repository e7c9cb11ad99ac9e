import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { bundled, bundleSources } from '../../node/cli/bundle.ts';
import { packageRoot } from '../../node/common/package-root.ts';
import { tempDirectory } from '../helpers.ts';

const execFileAsync = promisify(execFile);

test('the bundle is used only when complete and newer than every source file', (t) => {
  const root = tempDirectory(t);
  const at = (path: string, seconds: number) => {
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, 'x');
    utimesSync(path, seconds, seconds);
  };
  for (const source of bundleSources) at(join(root, source, 'deep', 'file.ts'), 1000);
  assert.equal(bundled('zhsm-node.mjs', root), undefined, 'no dist/');
  at(join(root, 'dist', 'zhsm-node.mjs'), 2000);
  assert.equal(bundled('zhsm-node.mjs', root), undefined, 'no BUILT marker: an unfinished build');
  at(join(root, 'dist', 'BUILT'), 2000);
  const url = bundled('zhsm-node.mjs', root);
  assert.ok(url !== undefined);
  assert.equal(fileURLToPath(url), join(root, 'dist', 'zhsm-node.mjs'));
  assert.equal(bundled('zhsm.mjs', root), undefined, 'an entry the bundle does not have');
  // An edited source file, however deep: the sources run.
  at(join(root, 'node', 'deep', 'file.ts'), 3000);
  assert.equal(bundled('zhsm-node.mjs', root), undefined);
  at(join(root, 'dist', 'BUILT'), 4000);
  assert.ok(bundled('zhsm-node.mjs', root) !== undefined);
  process.env.ZHSM_NO_BUNDLE = '1';
  try {
    assert.equal(bundled('zhsm-node.mjs', root), undefined, 'ZHSM_NO_BUNDLE=1');
  } finally {
    delete process.env.ZHSM_NO_BUNDLE;
  }
});

test("this checkout's bundle (when current) runs both CLIs", async (t) => {
  const node = bundled('zhsm-node.mjs');
  const ops = bundled('zhsm.mjs');
  if (node === undefined || ops === undefined) {
    t.skip('no current bundle in dist/ (npm run build makes one; npm ci does)');
    return;
  }
  const { stdout: nodeHelp } = await execFileAsync(process.execPath, [fileURLToPath(node), '--help']);
  assert.match(nodeHelp, /zhsm-node/);
  assert.match(nodeHelp, /init/);
  const { stdout: opsHelp } = await execFileAsync(process.execPath, [fileURLToPath(ops), '--help']);
  assert.match(opsHelp, /status/);
  // The entry scripts pick it (the same help, through node/cli/node.ts).
  const { stdout: viaEntry } = await execFileAsync(process.execPath, [
    join(packageRoot, 'node', 'cli', 'node.ts'),
    '--help',
  ]);
  assert.equal(viaEntry, nodeHelp);
});
