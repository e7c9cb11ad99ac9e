/**
 * A deterministic file tree for the workload tests, and its manifest (what must survive a copy).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { execFileAsync } from './harness.ts';

/** A deterministic tree: nested directories, files of many sizes, symlinks, a hard link, odd modes. */
export function generateTree(root: string): void {
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

/**
 * sha256 of every regular file, and the mode and mtime (s) of everything, by relative path.
 * Asynchronous: on a mount, a hung daemon blocks a worker thread, not the test's event loop (its
 * timeouts and teardown still run).
 */
export async function manifest(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string) => {
    for (const name of (await fsp.readdir(dir)).sort()) {
      const path = join(dir, name);
      const stat = await fsp.lstat(path);
      const relative = path.slice(root.length);
      if (stat.isDirectory()) {
        out.set(relative, `dir ${stat.mode.toString(8)}`);
        await walk(path);
      } else if (stat.isSymbolicLink()) {
        out.set(relative, `link ${await fsp.readlink(path)}`);
      } else {
        const hash = createHash('sha256')
          .update(await fsp.readFile(path))
          .digest('hex');
        out.set(relative, `file ${stat.mode.toString(8)} ${Math.floor(stat.mtimeMs / 1000)} ${hash}`);
      }
    }
  };
  await walk(root);
  return out;
}

/** Is `command` on the PATH? */
export function has(command: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      fs.accessSync(join(dir, command), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * The SQLite workload: a table, 10,000 inserts in one transaction, an index, deletes of a third,
 * optionally VACUUM, then `PRAGMA integrity_check` and the row count (prints "ok" and 6667).
 */
export function sqliteScript(options: { vacuum?: boolean } = {}): string {
  return [
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
    ...(options.vacuum === true ? ['VACUUM;'] : []),
    'PRAGMA integrity_check;',
    'SELECT count(*) FROM t;',
  ].join('\n');
}

/** git with a fixed identity and branch, in `cwd` (any owner: the mount's files may be root's). */
export function git(cwd: string, ...args: string[]) {
  return execFileAsync(
    'git',
    [
      '-c',
      'user.name=zhsm',
      '-c',
      'user.email=zhsm@localhost',
      '-c',
      'init.defaultBranch=main',
      '-c',
      'safe.directory=*',
      ...args,
    ],
    { cwd },
  );
}
