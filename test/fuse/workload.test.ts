/**
 * Everyday tools on a real mount: tar (with mtimes), cp -p, sha256sum, git, rsync.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateTree, git, has, manifest, sqliteScript } from './_tree.ts';
import { execFileAsync, fuseSkipReason, startMount, type TestMount } from './harness.ts';

const skip = await fuseSkipReason();

for (const client of ['memory', 'cell'] as const)
  describe(`workloads on a real mount (${client} client)`, { skip }, () => {
    let mount: TestMount;
    let scratch: string;
    let source: string;

    before(async () => {
      mount = await startMount({ client });
      scratch = fs.mkdtempSync(join(tmpdir(), 'zhsm-fuse-work-'));
      source = join(scratch, 'source');
      fs.mkdirSync(source);
      generateTree(source);
    });
    after(async () => {
      await mount?.stop();
      if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
    });

    test('tar extract of a generated tree: same bytes (sha256sum), modes and mtimes', async () => {
      const archive = join(scratch, 'tree.tar');
      await execFileAsync('tar', ['-cf', archive, '-C', source, '.']);
      const target = join(mount.mountpoint, 'untar');
      fs.mkdirSync(target);
      await execFileAsync('tar', ['-xf', archive, '-C', target]);
      assert.deepEqual(await manifest(target), await manifest(source));
      const sums = (
        await execFileAsync('sh', ['-c', 'find . -type f -print0 | sort -z | xargs -0 sha256sum'], {
          cwd: source,
        })
      ).stdout;
      fs.writeFileSync(join(scratch, 'SHA256SUMS'), sums);
      await execFileAsync('sh', ['-c', `sha256sum --check --quiet ${join(scratch, 'SHA256SUMS')}`], {
        cwd: target,
      });
      const hard = fs.statSync(join(target, 'dir-0', 'hardlink'));
      assert.equal(hard.nlink, 2);
    });

    test('cp -p and touch -m -d keep mtimes', async () => {
      const file = join(source, 'dir-1', 'sub-1', 'file-3.bin');
      const copy = join(mount.mountpoint, 'copied.bin');
      await execFileAsync('cp', ['-p', file, copy]);
      assert.equal(Math.floor(fs.statSync(copy).mtimeMs), Math.floor(fs.statSync(file).mtimeMs));
      await execFileAsync('touch', ['-m', '-d', '2010-10-10 10:10:10.123', copy]);
      assert.equal(fs.statSync(copy).mtime.toISOString(), '2010-10-10T10:10:10.123Z');
    });

    test('git init, add, commit, fsck', { skip: has('git') ? undefined : 'git missing' }, async () => {
      const repo = join(mount.mountpoint, 'repo');
      fs.mkdirSync(repo);
      await execFileAsync('cp', ['-a', `${source}/.`, repo]);
      await git(repo, 'init', '-q');
      await git(repo, 'add', '-A');
      await git(repo, 'commit', '-q', '-m', 'tree on zhsm');
      fs.appendFileSync(join(repo, 'dir-2', 'sub-2', 'file-0.bin'), 'change');
      await git(repo, 'commit', '-q', '-a', '-m', 'second');
      await git(repo, 'gc', '-q');
      await git(repo, 'fsck', '--full', '--strict');
      const status = await git(repo, 'status', '--porcelain');
      assert.equal(status.stdout, '');
      const log = await git(repo, 'log', '--oneline');
      assert.equal(log.stdout.trim().split('\n').length, 2);
    });

    test('sqlite3: 10,000 inserts, integrity_check', {
      skip: has('sqlite3') ? undefined : 'sqlite3 missing',
    }, async () => {
      const database = join(mount.mountpoint, 'test.sqlite');
      const script = sqliteScript({ vacuum: true });
      fs.writeFileSync(join(scratch, 'script.sql'), script);
      const { stdout } = await execFileAsync('sh', [
        '-c',
        `sqlite3 ${database} < ${join(scratch, 'script.sql')}`,
      ]);
      assert.deepEqual(stdout.trim().split('\n').slice(-2), ['ok', '6667']);
    });

    test('rsync -a there and back: no differences', {
      skip: has('rsync') ? undefined : 'rsync missing',
    }, async () => {
      const there = join(mount.mountpoint, 'rsynced');
      const back = join(scratch, 'back');
      await execFileAsync('rsync', ['-a', '-H', `${source}/`, `${there}/`]);
      await execFileAsync('rsync', ['-a', '-H', `${there}/`, `${back}/`]);
      assert.deepEqual(await manifest(there), await manifest(source));
      assert.deepEqual(await manifest(back), await manifest(source));
      const again = await execFileAsync('rsync', ['-a', '-H', '-i', '--dry-run', `${source}/`, `${there}/`]);
      assert.equal(again.stdout, '', 'a second rsync finds nothing to do (mtimes and sizes match)');
    });
  });
