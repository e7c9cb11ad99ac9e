import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { bundled, bundleSources, sourceFingerprint } from '../../node/cli/bundle.ts';
import { packageRoot } from '../../node/common/package-root.ts';
import { tempDirectory } from '../helpers.ts';

const execFileAsync = promisify(execFile);

test('the bundle is used only when built from exactly the source files there are now', (t) => {
  const root = tempDirectory(t);
  const at = (path: string, seconds: number, content = 'x') => {
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, content);
    utimesSync(path, seconds, seconds);
  };
  for (const source of bundleSources) at(join(root, source, 'deep', 'file.ts'), 1000);
  const build = () => writeFileSync(join(root, 'dist', 'BUILT'), sourceFingerprint(root));
  assert.equal(bundled('zhsm-node.mjs', root), undefined, 'no dist/');
  at(join(root, 'dist', 'zhsm-node.mjs'), 2000);
  assert.equal(bundled('zhsm-node.mjs', root), undefined, 'no BUILT: an unfinished build');
  build();
  const url = bundled('zhsm-node.mjs', root);
  assert.ok(url !== undefined);
  assert.equal(fileURLToPath(url), join(root, 'dist', 'zhsm-node.mjs'));
  assert.equal(bundled('zhsm.mjs', root), undefined, 'an entry the bundle does not have');
  const changes: Array<[string, () => void]> = [
    ['a file edited', () => at(join(root, 'node', 'deep', 'file.ts'), 3000)],
    ['a file copied in with an older time kept', () => at(join(root, 'fuse', 'deep', 'file.ts'), 500)],
    ['the same time, another size', () => at(join(root, 'consensus', 'deep', 'file.ts'), 1000, 'xy')],
    ['a file added', () => at(join(root, 'proto', 'new.proto'), 1000)],
    ['a file removed', () => rmSync(join(root, 'proto', 'new.proto'))],
  ];
  for (const [what, change] of changes) {
    change();
    assert.equal(bundled('zhsm-node.mjs', root), undefined, what);
    build();
    assert.ok(bundled('zhsm-node.mjs', root) !== undefined, `rebuilt after: ${what}`);
  }
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
