/**
 * The HSM benchmark (`npm run bench -- hsm`), on real `zhsm-node` processes on loopback: a
 * controller c1 with a backend tagged `cache`, storage servers s1 (the `sim` power driver, boot
 * delay 3 s) and s2, and a client node in this process.
 * 1. Cached read: a 4 MiB file cached on c1, read whole (open, read, close) 20 times with s1 awake
 *    and 20 times with s1 asleep. Ratio asleep/awake of the median latencies; target <= 2.
 * 2. Wake path: a read of a file whose only copy is on sleeping s1, three rounds; the figure is
 *    the latency minus the configured boot delay (the overhead of zhsm's wake-up: the power
 *    manager, the daemon's start, its registration, the reader's polling). Target < 1 s.
 * 3. Mover: 256 MiB on s1 moved to s2 by new chains (c1 plans and records; s2 fetches each
 *    chunk from s1 server to server, verifies and stores it) against a raw libp2p stream from
 *    this process to s2 (the node benchmark's raw client->storage baseline). Ratio mover/raw;
 *    target >= 0.7.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CellClient } from '../node/client/cell-client.ts';
import { adminRequest } from '../node/daemon/admin-client.ts';
import { ZhsmNode } from '../node/daemon/node.ts';
import { probeUpload } from '../node/net/probe.ts';
import { cli, killAll, LOOPBACK, type Proc, start, waitFor } from './_procs.ts';
import { median, printTable, round } from './_table.ts';
import type { BenchResult } from './run.ts';

const execFileAsync = promisify(execFile);
const zhsmCli = join(import.meta.dirname, '..', 'node', 'cli', 'zhsm.ts');
const MiB = 1024 * 1024;
const BOOT_DELAY_MS = 3_000;
const CACHED_READS = 20;
const WAKE_ROUNDS = 3;
const MOVE_BYTES = 256 * MiB;
const MOVE_FILE_BYTES = 16 * MiB;
const caller = { uid: 0, gid: 0 };

async function benchmark(base: string): Promise<BenchResult> {
  const zhsm = async (data: string, ...args: string[]) => {
    const { stdout } = await execFileAsync(process.execPath, [zhsmCli, ...args, '--data', data, '--json'], {
      timeout: 120_000,
    });
    return JSON.parse(stdout);
  };
  const c1: Proc = { name: 'c1', data: join(base, 'c1'), peerId: '', addresses: [] };
  const cacheDir = join(base, 'c1-cache');
  const init = await cli([
    'init',
    '--data',
    c1.data,
    '--cell',
    'bench',
    '--backend',
    cacheDir,
    '--tag',
    `${cacheDir}=cache`,
    '--listen',
    LOOPBACK,
  ]);
  await start(c1);
  const peer = c1.addresses.find((address) => address.includes('127.0.0.1'))!;
  const token = init.token as string;
  const servers: Proc[] = [];
  for (const name of ['s1', 's2']) {
    const server: Proc = { name, data: join(base, name), peerId: '', addresses: [] };
    await cli([
      'join',
      peer,
      '--token',
      token,
      '--data',
      server.data,
      '--backend',
      join(base, `${name}-backend`),
      '--name',
      name,
      '--listen',
      LOOPBACK,
    ]);
    await start(server);
    servers.push(server);
  }
  const [s1, s2] = servers as [Proc, Proc];
  const simPid = () => {
    try {
      return Number(readFileSync(join(s1.data, 'sim-power.pid'), 'utf8'));
    } catch {
      return 0;
    }
  };
  const clientData = join(base, 'client');
  await ZhsmNode.join({ peer, token, data: clientData, listen: [LOOPBACK] });
  const client = await ZhsmNode.start(clientData);
  try {
    await waitFor('three storage servers', async () =>
      (await client.remote.metadata.servers()).filter((s) => s.online).length === 3 ? true : undefined,
    );
    const fs = new CellClient(client.remote, { replicas: 1 });
    const chainsFile = join(base, 'chains');
    const applyChains = async (text: string) => {
      writeFileSync(chainsFile, text);
      await zhsm(c1.data, 'chains', 'apply', chainsFile);
    };
    await applyChains('copies 1\nchain main\n  use server:s1\n');
    await zhsm(
      c1.data,
      'power',
      'config',
      's1',
      '--driver',
      'sim',
      '--sim-data',
      s1.data,
      '--boot-delay',
      `${BOOT_DELAY_MS / 1000}s`,
      '--stop-grace',
      '5s',
    );
    await zhsm(c1.data, 'power', 'policy', '--idle', '1h', '--wake-timeout', '60s');
    const power = async () =>
      (
        (await zhsm(c1.data, 'power', 'status')) as { servers: Array<{ name: string; power: string }> }
      ).servers.find((s) => s.name === 's1')!.power;
    const sleepS1 = async () => {
      await zhsm(c1.data, 'power', 'off', 's1');
      await waitFor('s1 asleep', async () => ((await power()) === 'SLEEPING' ? true : undefined));
    };
    const put = async (path: string, bytes: Uint8Array) => {
      const handle = await fs.create(path, 0o644, caller, { mode: 'write' });
      await handle.write(0, bytes);
      await handle.close();
    };
    const readWhole = async (path: string, size: number) => {
      const started = performance.now();
      const handle = await fs.open(path, { mode: 'read' });
      const bytes = await handle.read(0, size);
      await handle.close();
      if (bytes.length !== size) throw new Error(`${path}: ${bytes.length} of ${size} bytes`);
      return performance.now() - started;
    };

    // 1. Cached read, s1 awake then asleep. The hot file has a folder of its own: reading it while
    // s1 sleeps would otherwise pre-wake s1 for the folder's other files.
    for (const folder of ['/hot', '/cold', '/move']) await fs.mkdir(folder, 0o755, caller);
    const hot = new Uint8Array(randomBytes(4 * MiB));
    await put('/hot/hot.bin', hot);
    for (let i = 0; i < 2; i++) await readWhole('/hot/hot.bin', hot.length);
    await waitFor('the hot file cached', async () =>
      ((await zhsm(c1.data, 'cache')) as { files: number }).files === 1 ? true : undefined,
    );
    const cold: string[] = [];
    for (let k = 0; k < WAKE_ROUNDS; k++) {
      cold.push(`/cold/${k}.bin`);
      await put(cold[k]!, new Uint8Array(randomBytes(MiB)));
    }
    await readWhole('/hot/hot.bin', hot.length); // warm-up
    const awake: number[] = [];
    for (let i = 0; i < CACHED_READS; i++) awake.push(await readWhole('/hot/hot.bin', hot.length));
    await sleepS1();
    const asleep: number[] = [];
    for (let i = 0; i < CACHED_READS; i++) asleep.push(await readWhole('/hot/hot.bin', hot.length));
    if ((await power()) !== 'SLEEPING') throw new Error('reading the cached file woke s1');

    // 2. Wake path.
    const wakes: number[] = [];
    for (let k = 0; k < WAKE_ROUNDS; k++) {
      if ((await power()) !== 'SLEEPING') await sleepS1();
      wakes.push(await readWhole(cold[k]!, MiB));
    }

    // 3. Mover: s1 -> s2 against a raw stream to s2.
    if ((await power()) !== 'ON') await zhsm(c1.data, 'power', 'on', 's1');
    await waitFor('s1 on', async () => ((await power()) === 'ON' ? true : undefined), 60_000);
    const block = new Uint8Array(randomBytes(MOVE_FILE_BYTES));
    for (let i = 0; i < MOVE_BYTES / MOVE_FILE_BYTES; i++) {
      block[0] = i;
      await put(`/move/${i}.bin`, block);
    }
    await client.directory.remember(client.host, s2.peerId, s2.addresses);
    await probeUpload(client.host, s2.peerId, 64 * MiB); // warm-up
    const rawSeconds = await probeUpload(client.host, s2.peerId, MOVE_BYTES);
    // The mover's status through c1's admin socket from this process: a `zhsm migrate` child
    // every 100 ms would itself take most of a core from the move it measures (a CLI start costs
    // about 0.35 s of CPU here).
    const moverStatus = async () =>
      (
        await adminRequest<{
          mover: {
            passes: number;
            bytesDone: number;
            passStartedMs: number;
            passFinishedMs: number;
            chainsVersion: number;
          };
        }>(c1.data, { op: 'mover' })
      ).mover;
    const before = await moverStatus();
    await applyChains('copies 1\nchain main\n  use server:s2\n');
    const done = await waitFor(
      'the move',
      async () => {
        const mover = await moverStatus();
        return mover.passes > before.passes && mover.chainsVersion === 2 ? mover : undefined;
      },
      300_000,
    );
    // The pass's own clock (the controller's): the CLI polls above see its end late.
    const moverSeconds = (done.passFinishedMs - done.passStartedMs) / 1000;
    const movedBytes = done.bytesDone;
    if (movedBytes < MOVE_BYTES) throw new Error(`the mover copied ${movedBytes} of ${MOVE_BYTES} bytes`);

    const awakeMs = median(awake);
    const asleepMs = median(asleep);
    const overheadMs = wakes.map((ms) => ms - BOOT_DELAY_MS);
    const rawMiBs = MOVE_BYTES / MiB / rawSeconds;
    const moverMiBs = movedBytes / MiB / moverSeconds;
    printTable('Cached read of a 4 MiB file (open, read, close)', [
      { s1: 'awake', 'median ms': round(awakeMs, 1), 'max ms': round(Math.max(...awake), 1) },
      { s1: 'asleep', 'median ms': round(asleepMs, 1), 'max ms': round(Math.max(...asleep), 1) },
    ]);
    printTable(
      `Wake path: read of a 1 MiB file on sleeping s1 (boot delay ${BOOT_DELAY_MS} ms)`,
      wakes.map((ms, k) => ({
        round: k + 1,
        'latency ms': round(ms, 0),
        'overhead ms': round(ms - BOOT_DELAY_MS, 0),
      })),
    );
    printTable('Mover: 256 MiB from s1 to s2 (s2 fetches from s1) vs a raw stream to s2', [
      { path: 'raw libp2p stream client -> s2', 'MiB/s': round(rawMiBs, 1) },
      { path: 'mover s1 -> s2', 'MiB/s': round(moverMiBs, 1) },
    ]);
    if (simPid() > 0)
      try {
        process.kill(simPid(), 'SIGKILL');
      } catch {}
    return {
      figures: {
        cached_read_awake_ms: round(awakeMs, 2),
        cached_read_asleep_ms: round(asleepMs, 2),
        wake_overhead_ms_median: round(median(overheadMs), 0),
        wake_overhead_ms_max: round(Math.max(...overheadMs), 0),
        raw_to_s2_mib_s: round(rawMiBs, 1),
        mover_mib_s: round(moverMiBs, 1),
      },
      ratios: {
        cached_asleep_vs_awake: round(asleepMs / awakeMs, 3),
        mover_vs_raw: round(moverMiBs / rawMiBs, 3),
      },
    };
  } finally {
    await client.stop().catch(() => {});
    if (simPid() > 0)
      try {
        process.kill(simPid(), 'SIGKILL');
      } catch {}
  }
}

export async function run(): Promise<BenchResult> {
  const base = mkdtempSync(join(tmpdir(), 'zhsm-bench-hsm-'));
  try {
    return await benchmark(base);
  } finally {
    killAll();
    rmSync(base, { recursive: true, force: true });
  }
}
