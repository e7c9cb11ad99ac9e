/**
 * The controllers' cache on a real local cell: controller c1 with a backend tagged `cache`, one
 * storage server s1 with the `sim` power driver (boot delay 2 s), a client node in this process.
 * Files opened twice are cached on c1; s1 goes to sleep; a cached file is read with s1 asleep and
 * without waking it; reading a cached file of a folder whose other files only s1 holds wakes s1
 * ahead of time (pre-wake, in the power log), and the uncached file then reads.
 *
 * Every process this test starts (and s1 as the sim driver restarts it) is killed by pid at the end.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { CellClient } from '../../node/client/cell-client.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import type { CacheStatus } from '../../node/hsm/cache.ts';
import type { PowerEventJson, PowerServerJson } from '../../node/hsm/power-admin.ts';
import {
  initCell,
  joinNode,
  LOOPBACK,
  newNode,
  startNode,
  status,
  waitFor,
  zhsmCli,
} from '../daemon/_cell.ts';
import { dataObjects, patternBytes, tempDirectory } from '../helpers.ts';
import { simProcesses } from './_power.ts';

const run = promisify(execFile);

/** DATA object files on a backend directory (META objects are left out). */
const objects = dataObjects;

test('a cached file reads while its server sleeps, without waking it; pre-wake for its folder', {
  timeout: 240_000,
}, async (t) => {
  const base = tempDirectory(t, 'zhsm-cache-');
  const cacheDir = join(base, 'c1-cache');
  const { first: c1, token } = await initCell(base, 'cache', [
    '--backend',
    cacheDir,
    '--tag',
    `${cacheDir}=cache`,
  ]);
  await startNode(t, c1);
  const peer = c1.addresses.find((a) => a.includes('127.0.0.1'))!;
  const s1 = newNode(base, 's1');
  await joinNode(s1, peer, token, ['--backend', join(base, 's1-backend'), '--name', 's1']);
  await startNode(t, s1);
  const notePid = simProcesses(t, s1.data).note;
  const zhsm = async (...args: string[]) => {
    const { stdout } = await run(process.execPath, [zhsmCli, ...args, '--data', c1.data, '--json'], {
      timeout: 60_000,
    });
    return JSON.parse(stdout);
  };
  const power = async (): Promise<PowerServerJson> =>
    ((await zhsm('power', 'status')) as { servers: PowerServerJson[] }).servers.find((s) => s.name === 's1')!;
  const log = async (): Promise<PowerEventJson[]> =>
    ((await zhsm('power', 'log', '--limit', '200')) as PowerEventJson[]).filter((e) => e.name === 's1');
  const cache = async (): Promise<CacheStatus> => zhsm('cache');
  await waitFor('c1 and s1 registered', async () =>
    (await status(c1)).servers.filter((s) => s.online).length === 2 ? true : undefined,
  );

  const clientData = join(base, 'client');
  await ZhsmNode.join({ peer, token, data: clientData, listen: [LOOPBACK] });
  const client = await ZhsmNode.start(clientData);
  t.after(() => client.stop());
  const cell = new CellClient(client.remote, { replicas: 2 });
  const owner = { uid: 0, gid: 0 };
  const files: Record<string, Buffer> = {
    '/hot/a.bin': Buffer.from(patternBytes(1024 * 1024 + 5, 1)),
    '/d/1-cached.bin': Buffer.from(patternBytes(1024 * 1024 + 7, 2)),
    '/d/2-cold.bin': Buffer.from(patternBytes(1024 * 1024 + 9, 3)),
  };
  await cell.mkdir('/hot', 0o755, owner);
  await cell.mkdir('/d', 0o755, owner);
  for (const [path, bytes] of Object.entries(files)) {
    const handle = await cell.create(path, 0o644, owner, { mode: 'write' });
    await handle.write(0, bytes);
    await handle.close();
  }
  // Placement never uses the cache backend: one copy each, on s1.
  assert.equal(objects(cacheDir).length, 0);
  assert.equal(objects(join(base, 's1-backend')).length, 3);
  const readAll = async (path: string, size = files[path]!.length) => {
    const handle = await cell.open(path, { mode: 'read' });
    try {
      return Buffer.from(await handle.read(0, size));
    } finally {
      await handle.close();
    }
  };
  // Opened twice: cached.
  for (const path of ['/hot/a.bin', '/d/1-cached.bin']) for (let i = 0; i < 2; i++) await readAll(path);
  const filled = await waitFor('two files cached', async () => {
    const now = await cache();
    return now.files === 2 && objects(cacheDir).length === 2 ? now : undefined;
  }).catch(async (error) => {
    throw new Error(
      `${(error as Error).message}: ${JSON.stringify(await cache())}; c1: ${c1.stderr.slice(-3000)}`,
    );
  });
  assert.equal(filled.active, true);
  assert.equal(filled.admissions, 2);

  await zhsm(
    'power',
    'config',
    's1',
    '--driver',
    'sim',
    '--sim-data',
    s1.data,
    '--boot-delay',
    '2s',
    '--stop-grace',
    '5s',
  );
  await zhsm('power', 'policy', '--idle', '3s', '--wake-timeout', '20s');
  await waitFor('s1 asleep', async () => ((await power()).power === 'SLEEPING' ? true : undefined), 30_000);
  const eventsAsleep = (await log()).length;

  // The cached hot file: right bytes, no wake.
  assert.ok(
    (await readAll('/hot/a.bin')).equals(files['/hot/a.bin']!),
    'the cached file reads with s1 asleep',
  );
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal((await power()).power, 'SLEEPING', 'reading a cached file did not wake s1');
  assert.equal((await log()).length, eventsAsleep, 'no power event');
  assert.ok((await cache()).hits >= 1, 'the open of the cached file counts as a hit');

  // The cached file of /d: served from the cache, and s1 is woken for /d's other file.
  assert.ok((await readAll('/d/1-cached.bin')).equals(files['/d/1-cached.bin']!));
  const prewoken = await waitFor(
    'a pre-wake of s1 in the power log',
    async () => (await log()).find((e) => e.to === 'WAKING' && /pre-wake/.test(e.reason)),
    10_000,
  );
  t.diagnostic(`pre-wake: ${prewoken.reason}`);
  notePid();
  assert.ok((await readAll('/d/2-cold.bin')).equals(files['/d/2-cold.bin']!), 'the uncached file reads');
  notePid();
  await waitFor('s1 on after the pre-wake', async () => ((await power()).power === 'ON' ? true : undefined));
  assert.ok((await cache()).prewakes >= 1);
  const human = await run(process.execPath, [zhsmCli, 'cache', '--data', c1.data]);
  assert.match(human.stdout, /cache: backend [0-9a-f]{8}, .* in 2 file\(s\)/);

  // A strict chain row: a write to sleeping s1 wakes it and waits, instead of going elsewhere.
  const sleepS1 = async () => {
    await zhsm('power', 'off', 's1');
    await waitFor(
      's1 asleep again',
      async () => ((await power()).power === 'SLEEPING' ? true : undefined),
      30_000,
    );
  };
  await sleepS1();
  const chainsFile = join(base, 'chains');
  writeFileSync(chainsFile, 'copies 1\nchain main\n  use server:s1 strict\n');
  await zhsm('chains', 'apply', chainsFile);
  const strictBytes = Buffer.from(patternBytes(700 * 1024, 4));
  const strict = await cell.create('/strict.bin', 0o644, owner, { mode: 'write' });
  await strict.write(0, strictBytes);
  await strict.close();
  notePid();
  assert.ok((await log()).some((e) => e.to === 'WAKING' && /strict write of \/strict\.bin/.test(e.reason)));
  assert.equal(objects(join(base, 's1-backend')).length, 4, 'the strict file is on s1');
  assert.ok((await readAll('/strict.bin', strictBytes.length)).equals(strictBytes));

  // The mover wakes a sleeping source: new chains want everything on s2 (awake), s1 sleeps.
  const s2 = newNode(base, 's2');
  await joinNode(s2, peer, token, ['--backend', join(base, 's2-backend'), '--name', 's2']);
  await startNode(t, s2);
  await waitFor('s2 registered', async () =>
    (await status(c1)).servers.some((s) => s.name === 's2' && s.online) ? true : undefined,
  );
  await sleepS1();
  writeFileSync(chainsFile, 'copies 1\nchain main\n  use server:s2\n');
  await zhsm('chains', 'apply', chainsFile);
  const woken = await waitFor(
    'the mover waking s1',
    async () => (await log()).find((e) => e.to === 'WAKING' && /mover/.test(e.reason)),
    30_000,
  );
  t.diagnostic(`mover wake: ${woken.reason}`);
  notePid();
  await waitFor(
    'every file moved to s2',
    async () => (objects(join(base, 's2-backend')).length === 4 ? true : undefined),
    60_000,
  );
  notePid();
  for (const [path, bytes] of Object.entries({ ...files, '/strict.bin': strictBytes }))
    assert.ok((await readAll(path, bytes.length)).equals(bytes), `${path} after the move`);
});
