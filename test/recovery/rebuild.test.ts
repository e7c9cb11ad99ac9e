/**
 * `zhsm rebuild` on a real cell (zhsm-node processes; the client in the test process): a tree of
 * 1,000 files is written, the cell stopped, every controller's metadata deleted, and the rebuild
 * brings back the tree, contents, modes, times and placement (compared with a listing made
 * before). Then fsck finds no difference.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { test } from 'node:test';
import type { CellClient } from '../../node/client/cell-client.ts';
import { adminRequest } from '../../node/daemon/admin-client.ts';
import { paths } from '../../node/daemon/config.ts';
import type { JobStatus } from '../../node/daemon/jobs.ts';
import { startNode, stopNode, waitFor } from '../daemon/_cell.ts';
import { patternBytes } from '../helpers.ts';
import { headersWritten, jsonOf, recoveryCell, zhsmRun } from './_recovery.ts';

interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  nlink: number;
  sha256?: string;
  target?: string;
  /** Backends (sorted) holding current copies of each chunk. */
  placement?: string[];
}

/** Every path of the tree with its attributes, content hash and chunk placement. */
async function listing(client: CellClient): Promise<Map<string, Entry>> {
  const found = new Map<string, Entry>();
  const walk = async (dir: string): Promise<void> => {
    const subdirectories: string[] = [];
    for (const name of (await client.readdir(dir)).sort()) {
      const path = dir === '/' ? `/${name}` : `${dir}/${name}`;
      if (path === '/lost+found' || path.startsWith('/.zhsm')) continue;
      const inode = await client.resolve(path);
      const entry: Entry = {
        type: inode.type,
        mode: inode.mode,
        uid: inode.uid,
        gid: inode.gid,
        size: inode.size,
        mtimeMs: inode.mtimeMs,
        nlink: inode.nlink,
      };
      if (inode.type === 'FILE') {
        // The content straight from the chunks (no open token: faster; the same bytes).
        const hash = createHash('sha256');
        let at = 0;
        const zeros = (to: number) => {
          if (to > at) hash.update(Buffer.alloc(to - at));
          at = Math.max(at, to);
        };
        if (inode.inlineData.length > 0) {
          hash.update(inode.inlineData);
          at = inode.inlineData.length;
        }
        for (const chunk of inode.chunks) {
          zeros(chunk.offset);
          hash.update(await client.readChunk(chunk, 0, chunk.size, inode.id));
          at = chunk.offset + chunk.size;
        }
        zeros(inode.size);
        entry.sha256 = hash.digest('hex');
        entry.placement = [];
        for (const chunk of inode.chunks) {
          const where = await client.cell.metadata.locations(chunk.id);
          entry.placement.push(
            where
              .filter((copy) => copy.location.current)
              .map((copy) => Buffer.from(copy.backend).toString('hex'))
              .sort()
              .join('+'),
          );
        }
      }
      if (inode.type === 'SYMLINK') entry.target = await client.readlink(path);
      found.set(path, entry);
      if (inode.type === 'DIRECTORY') subdirectories.push(path);
    }
    await Promise.all(subdirectories.map(walk));
  };
  await walk('/');
  return found;
}

test('rebuild: 1,000 files come back from the backends after every controller lost its metadata', async (t) => {
  const cell = await recoveryCell(t, { servers: 2, cell: 'rebuild' });
  const { c1, servers } = cell;
  let fs = cell.fs;

  // The tree: 20 directories of 50 files; every 25th file is chunked (100-300 KiB), the others
  // inline; modes, owners and mtimes vary; a few symlinks and an empty file.
  const caller = { uid: 0, gid: 0 };
  const files: Array<{ path: string; bytes: Buffer; mode: number; mtimeMs: number }> = [];
  for (let d = 0; d < 20; d++) {
    await fs.mkdir(`/d${d}`, 0o750 + (d % 2) * 5, caller);
    for (let f = 0; f < 50; f++) {
      const n = d * 50 + f;
      const size = n % 25 === 0 ? 100_000 + n * 200 : n === 7 ? 0 : 100 + (n % 97) * 37;
      files.push({
        path: `/d${d}/f${f}.bin`,
        bytes: patternBytes(size, n),
        mode: [0o644, 0o600, 0o755, 0o640][n % 4]!,
        mtimeMs: 1_600_000_000_000 + n * 1_000,
      });
    }
  }
  let next = 0;
  const writer = async () => {
    while (next < files.length) {
      const file = files[next++]!;
      const handle = await fs.create(file.path, file.mode, caller, { mode: 'write', exclusive: true });
      if (file.bytes.length > 0) await handle.write(0, file.bytes);
      await handle.close();
      await fs.utimens(file.path, file.mtimeMs, file.mtimeMs);
    }
  };
  let mark = Date.now();
  const phase = (what: string) => {
    t.diagnostic(`${what}: ${Date.now() - mark} ms`);
    mark = Date.now();
  };
  await Promise.all(Array.from({ length: 8 }, writer));
  phase('wrote 1,000 files');
  await fs.symlink('../d1/f1.bin', '/d0/link', caller);
  await fs.symlink('/nowhere', '/dangling', caller);
  await fs.chown('/d3/f3.bin', 1234, 5678);
  await fs.rename('/d19', '/renamed');
  // Hard links: three names of one file (its first name removed), two of another.
  await fs.link('/d4/f4.bin', '/d5/hard-a');
  await fs.link('/d4/f4.bin', '/renamed/hard-b');
  await fs.unlink('/d4/f4.bin');
  await fs.link('/d6/f6.bin', '/hard-c');
  // A chunked file cut short: its chunk keeps the longer object, with no content hash recorded.
  await fs.truncate('/d1/f0.bin', 70_000);
  const before = await listing(fs);
  phase('listed them');
  assert.equal([...before.values()].filter((entry) => entry.type === 'FILE').length, 1002);
  assert.equal(before.get('/d5/hard-a')?.nlink, 2);

  // Every META object is written before the cell stops (the header writer drains its marks).
  await headersWritten(c1);
  phase('META objects written');
  // Stop the cell; every controller loses its metadata (the log and the state machine).
  await cell.stopClient();
  for (const node of [...servers, c1]) await stopNode(node);
  await rm(paths(c1.data).raft, { recursive: true, force: true });
  await rm(paths(c1.data).metadata, { recursive: true, force: true });
  await startNode(t, c1);
  for (const server of servers) await startNode(t, server);

  phase('restarted without metadata');
  // A first rebuild is interrupted in its restore phase (SIGKILL of the controller running it)...
  const started = await zhsmRun([
    'rebuild',
    '--data',
    c1.data,
    '--expect-servers',
    '2',
    '--batch',
    '1',
    '--detach',
    '--json',
  ]);
  assert.equal(started.code, 0, started.stdout);
  const interruptedAt = await waitFor(
    'the first rebuild restoring',
    async () => {
      const { job } = await adminRequest<{ job: JobStatus | null }>(c1.data, {
        op: 'recovery-job',
        kind: 'rebuild',
      });
      if (job?.state === 'failed') throw new Error(`rebuild failed: ${job.error}`);
      return job?.phase === 'restore' && job.done >= 100 ? job.done : undefined;
    },
    120_000,
  );
  await stopNode(c1, 'SIGKILL');
  await startNode(t, c1);
  t.diagnostic(`the first rebuild was killed after ${interruptedAt} inodes`);
  // ... and run again: it resumes (what is restored already is skipped).
  const rebuilt = await zhsmRun(['rebuild', '--data', c1.data, '--expect-servers', '2', '--json'], 600_000);
  assert.equal(rebuilt.code, 0, rebuilt.stdout);
  const report = jsonOf<{
    report: {
      restored: number;
      conflicts: unknown[];
      missingChunks: number;
      orphans: number;
      backends: number;
      links: number;
    };
  }>(rebuilt.stdout);
  phase('rebuild');
  t.diagnostic(`rebuild report: ${JSON.stringify(report.report)}`);
  assert.equal(report.report.backends, 2);
  assert.equal(report.report.conflicts.length, 0);
  assert.equal(report.report.missingChunks, 0);
  assert.equal(report.report.orphans, 0);
  assert.equal(
    report.report.links,
    2,
    'hard links: one name besides the recorded one, for each of two files',
  );

  fs = await cell.restartClient();
  const after = await listing(fs);
  phase('listed again');
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  for (const [path, entry] of before) assert.deepEqual(after.get(path), entry, path);
  // The rebuilt cell works: a new file, and fsck agrees with the backends.
  const handle = await fs.create('/new.txt', 0o644, caller, { mode: 'write' });
  await handle.write(0, Buffer.from('after the rebuild'));
  await handle.close();
  let last = '';
  await waitFor(
    'fsck without differences after the rebuild',
    async () => {
      const result = await zhsmRun(['fsck', '--data', c1.data]);
      last = result.stdout;
      return result.code === 0 ? true : undefined;
    },
    120_000,
  ).catch((error: Error) => {
    throw new Error(`${error.message}; the last fsck said:\n${last}`);
  });
  phase('fsck');
  await cell.stopClient();
});
