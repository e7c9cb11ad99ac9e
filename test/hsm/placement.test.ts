/**
 * Placement chains on a real local cell (zhsm-node processes on loopback, a FUSE mount):
 * files land where the chains say (checked on the backend directories themselves), a dry run
 * reports what new chains would move, and applying them migrates the data while reads go on.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, open, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { initCell, joinNode, newNode, startNode, stopNode, waitFor, zhsmCli } from '../daemon/_cell.ts';
import { dataObjects } from '../helpers.ts';

const run = promisify(execFile);

async function zhsm(args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [zhsmCli, ...args], { timeout: 60_000 });
  return stdout;
}

/** DATA object files on a backend directory (their paths: ab/cd/<the rest of the id>). */
async function objects(root: string): Promise<string[]> {
  return dataObjects(root);
}

test('chains place files on the backends they name; new chains migrate the data while reads go on', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'zhsm-hsm-'));
  const mountpoint = join(base, 'mnt');
  await mkdir(mountpoint);
  const nodes: Array<ReturnType<typeof newNode>> = [];
  t.after(async () => {
    for (const node of nodes.reverse()) await stopNode(node, 'SIGTERM').catch(() => {});
    rmSync(base, { recursive: true, force: true });
  });
  const { first: c1, token } = await initCell(base, 'hsm');
  nodes.push(c1);
  await startNode(t, c1);
  const peer = `${c1.addresses[0]}`;
  const backends: Record<string, string> = {};
  for (const [name, tag] of [
    ['s1', 'ssd'],
    ['s2', 'hdd'],
    ['s3', 'archive'],
  ] as const) {
    const node = newNode(base, name);
    backends[tag] = join(base, `${name}-backend`);
    await joinNode(node, peer, token, [
      '--backend',
      backends[tag],
      '--tag',
      `${backends[tag]}=${tag}`,
      '--name',
      name,
    ]);
    nodes.push(node);
    await startNode(t, node);
  }
  const client = newNode(base, 'a');
  await joinNode(client, peer, token);
  nodes.push(client);
  await startNode(t, client, ['--mount', mountpoint]);
  await waitFor('three storage servers registered', async () => {
    const status = JSON.parse(await zhsm(['status', '--data', c1.data, '--json'])) as {
      servers: Array<{ online: boolean }>;
    };
    return status.servers.filter((s) => s.online).length === 3 ? true : undefined;
  });

  // Chains with a mistake are refused with the line and the reason.
  const badFile = join(base, 'bad.chains');
  await writeFile(badFile, 'copies 1\nchain main\n  use tag:nvme\n');
  await assert.rejects(
    zhsm(['chains', 'apply', badFile, '--data', client.data]),
    (error: { stderr: string }) => {
      assert.match(error.stderr, /row 1: tag:nvme names no backend of the cell/);
      return true;
    },
  );

  const first = join(base, 'first.chains');
  await writeFile(
    first,
    `copies 1
chain main
  use tag:archive if path = /archive/**
  use tag:ssd if size < 1M
  use tag:hdd
`,
  );
  await zhsm(['chains', 'apply', first, '--data', client.data]);
  const shown = await zhsm(['chains', 'show', '--data', client.data]);
  assert.match(shown, /# version 1\ncopies 1\nchain main\n {2}use tag:archive if path = \/archive\/\*\*/);

  // Files above the inline limit (64 KiB) are stored as chunk objects. A file cut short after it was
  // written keeps its (now longer) chunk object with no content hash for it: the mover must still
  // copy it (the trimmed bytes, hashed where they land).
  const long = randomBytes(300 * 1024);
  const files: Record<string, Buffer> = {
    '/small.bin': randomBytes(200 * 1024),
    '/big.bin': randomBytes(3 * 1024 * 1024),
    '/archive/old.bin': randomBytes(300 * 1024),
    '/cut.bin': long.subarray(0, 150 * 1024),
  };
  await mkdir(join(mountpoint, 'archive'));
  for (const [path, bytes] of Object.entries(files))
    await writeFile(join(mountpoint, path), path === '/cut.bin' ? long : bytes);
  await truncate(join(mountpoint, 'cut.bin'), 150 * 1024);
  // Placed as written: one object each, on the backend its row names.
  await waitFor('the first placement on the backends', async () => {
    const counts = await Promise.all(
      ['ssd', 'hdd', 'archive'].map(async (tag) => (await objects(backends[tag]!)).length),
    );
    return counts.join(',') === '2,1,1' ? true : undefined;
  });

  const why = JSON.parse(
    await zhsm(['chains', 'test', '/archive/new.bin', '--size', '2M', '--data', client.data, '--json']),
  ) as { targets: Array<{ server: string }>; trace: string[] };
  assert.deepEqual(
    why.targets.map((target) => target.server),
    ['s3'],
  );
  assert.match(why.trace[0]!, /use backend .* on s3/);

  // New chains: two copies, archive and hdd. The dry run counts what moves.
  const second = join(base, 'second.chains');
  await writeFile(second, 'copies 2\nchain main\n  use tag:archive\n  use tag:hdd\n');
  const dry = JSON.parse(
    await zhsm(['chains', 'apply', second, '--dry-run', '--data', client.data, '--json']),
  ) as {
    plan: { files: number; objectsToCopy: number; bytesToCopy: number; objectsToRelease: number };
  };
  assert.equal(dry.plan.files, 4);
  assert.equal(dry.plan.objectsToCopy, 6, 'small, cut: to archive and hdd; big: to archive; old: to hdd');
  assert.equal(dry.plan.bytesToCopy, 2 * 200 * 1024 + 2 * 150 * 1024 + 3 * 1024 * 1024 + 300 * 1024);
  assert.equal(dry.plan.objectsToRelease, 2, "small's and cut's copies on the ssd");
  assert.equal((await objects(backends.ssd!)).length, 2, 'a dry run moves nothing');

  // Apply, and read every file again and again while the mover works: no read may fail.
  await zhsm(['chains', 'apply', second, '--data', client.data]);
  let reading = true;
  let reads = 0;
  const reader = (async () => {
    while (reading) {
      for (const [path, bytes] of Object.entries(files)) {
        const read = await readFile(join(mountpoint, path));
        assert.ok(read.equals(bytes), `${path} reads back the same bytes during the migration`);
        reads += 1;
      }
    }
  })();
  try {
    await waitFor(
      'the migration on the backends',
      async () => {
        const counts = await Promise.all(
          ['ssd', 'hdd', 'archive'].map(async (tag) => (await objects(backends[tag]!)).length),
        );
        return counts.join(',') === '0,4,4' ? true : undefined;
      },
      60_000,
    );
  } finally {
    reading = false;
    await reader;
  }
  t.diagnostic(`${reads} reads during the migration, none failed`);
  const mover = JSON.parse(await zhsm(['migrate', '--data', client.data, '--json'])) as {
    active: boolean;
    copiesDone: number;
    released: number;
    chainsVersion: number;
    passes: number;
    passStartedMs: number;
    passFinishedMs: number;
  };
  assert.equal(mover.active, true);
  // A pass that saw chains version 2 has ended: its end time is known (a later pass may run).
  assert.ok(mover.passes >= 1 && mover.passFinishedMs > 0, `pass finished at ${mover.passFinishedMs}`);
  assert.ok(mover.copiesDone >= 6, `copies done: ${mover.copiesDone}`);
  assert.ok(mover.released >= 2);
  const human = await zhsm(['migrate', '--data', client.data]);
  assert.match(human, /mover: (idle|moving|scanning); chains version 2/);
  for (const [path, bytes] of Object.entries(files))
    assert.ok((await readFile(join(mountpoint, path))).equals(bytes), `${path} after the migration`);

  // A damaged copy: one byte of big.bin's object flipped on disk, in the hdd copy (where it was
  // written first: the copy the mount's client knows and reads). Reads still return the right
  // bytes (from the archive copy); the reader reports the copy, the mover copies a good one over it.
  const readFirst = { path: backends.hdd! };
  const copies = await Promise.all(
    (await objects(readFirst.path)).map(async (path) => ({ path, size: (await stat(path)).size })),
  );
  const big = copies.sort((a, b) => b.size - a.size)[0]!;
  const at = big.size - 1024 * 1024;
  const file = await open(big.path, 'r+');
  const original = Buffer.alloc(1);
  await file.read(original, 0, 1, at);
  await file.write(Buffer.from([original[0]! ^ 0xff]), 0, 1, at);
  await file.close();
  const before = (
    JSON.parse(await zhsm(['migrate', '--data', client.data, '--json'])) as { copiesDone: number }
  ).copiesDone;
  await waitFor(
    'the damaged copy repaired',
    async () => {
      // Past the kernel's page cache (the file was read before): drop its pages, then read.
      await run('dd', [`if=${join(mountpoint, 'big.bin')}`, 'of=/dev/null', 'iflag=nocache', 'count=0']);
      assert.ok((await readFile(join(mountpoint, '/big.bin'))).equals(files['/big.bin']!), 'the right bytes');
      const now = await open(big.path, 'r');
      const byte = Buffer.alloc(1);
      await now.read(byte, 0, 1, at);
      await now.close();
      return byte[0] === original[0] ? true : undefined;
    },
    60_000,
  ).catch((error: Error) => {
    throw new Error(`${error.message}\nc1: ${c1.stderr.slice(-4000)}\nclient: ${client.stderr.slice(-4000)}`);
  });
  const after = JSON.parse(await zhsm(['migrate', '--data', client.data, '--json'])) as {
    copiesDone: number;
  };
  assert.ok(after.copiesDone > before, 'the mover made a copy (the repair)');
});
