/**
 * Everyday tools on a real mount: tar (with mtimes), cp -p, sha256sum, git, rsync.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execFileAsync, fuseSkipReason, startMount, type TestMount } from './harness.ts';

const skip = await fuseSkipReason();
const has = (command: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/** A deterministic tree: nested directories, files of many sizes, symlinks, a hard link, odd modes. */
function generateTree(root: string): void {
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let d = 0; d < 6; d++) {
    const dir = join(root, `dir-${d}`, `sub-${d % 3}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 25; f++) {
      const size = [0, 1, 100, 4095, 4096, 70_000, 300_000][random() % 7]!;
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i++) data[i] = random() & 0xff;
      const path = join(dir, `file-${f}.bin`);
      fs.writeFileSync(path, data);
      fs.chmodSync(path, [0o644, 0o600, 0o755, 0o444][f % 4]!);
      fs.utimesSync(path, new Date(1_500_000_000_000 + f * 1000), new Date(1_600_000_000_000 + f * 60_000));
    }
    fs.symlinkSync(`file-0.bin`, join(dir, 'link-to-0'));
  }
  fs.linkSync(join(root, 'dir-0', 'sub-0', 'file-1.bin'), join(root, 'dir-0', 'hardlink'));
  fs.writeFileSync(join(root, 'name with spaces & ünïcode'), 'x');
}

/** sha256 of every regular file, and the mode and mtime (s) of everything, by relative path. */
function manifest(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const path = join(dir, name);
      const stat = fs.lstatSync(path);
      const relative = path.slice(root.length);
      if (stat.isDirectory()) {
        out.set(relative, `dir ${stat.mode.toString(8)}`);
        walk(path);
      } else if (stat.isSymbolicLink()) {
        out.set(relative, `link ${fs.readlinkSync(path)}`);
      } else {
        const hash = createHash('sha256').update(fs.readFileSync(path)).digest('hex');
        out.set(relative, `file ${stat.mode.toString(8)} ${Math.floor(stat.mtimeMs / 1000)} ${hash}`);
      }
    }
  };
  walk(root);
  return out;
}

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
      assert.deepEqual(manifest(target), manifest(source));
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
      const git = (...args: string[]) =>
        execFileAsync(
          'git',
          [
            '-c',
            'user.name=zhsm',
            '-c',
            'user.email=zhsm@localhost',
            '-c',
            'init.defaultBranch=main',
            ...args,
          ],
          {
            cwd: repo,
          },
        );
      await git('init', '-q');
      await git('add', '-A');
      await git('commit', '-q', '-m', 'tree on zhsm');
      fs.appendFileSync(join(repo, 'dir-2', 'sub-2', 'file-0.bin'), 'change');
      await git('commit', '-q', '-a', '-m', 'second');
      await git('gc', '-q');
      await git('fsck', '--full', '--strict');
      const status = await git('status', '--porcelain');
      assert.equal(status.stdout, '');
      const log = await git('log', '--oneline');
      assert.equal(log.stdout.trim().split('\n').length, 2);
    });

    test('sqlite3: 10,000 inserts, integrity_check', {
      skip: has('sqlite3') ? undefined : 'sqlite3 missing',
    }, async () => {
      const database = join(mount.mountpoint, 'test.sqlite');
      const script = [
        'PRAGMA journal_mode=DELETE;',
        'CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, payload BLOB);',
        'BEGIN;',
        ...Array.from(
          { length: 10_000 },
          (_, i) => `INSERT INTO t (name, payload) VALUES ('row ${i}', randomblob(${i % 500}));`,
        ),
        'COMMIT;',
        'CREATE INDEX t_name ON t (name);',
        'DELETE FROM t WHERE id % 3 = 0;',
        'VACUUM;',
        'PRAGMA integrity_check;',
        'SELECT count(*) FROM t;',
      ].join('\n');
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
      assert.deepEqual(manifest(there), manifest(source));
      assert.deepEqual(manifest(back), manifest(source));
      const again = await execFileAsync('rsync', ['-a', '-H', '-i', '--dry-run', `${source}/`, `${there}/`]);
      assert.equal(again.stdout, '', 'a second rsync finds nothing to do (mtimes and sizes match)');
    });
  });
