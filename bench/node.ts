/**
 * The peer daemon benchmark (`npm run bench -- node`), with real `zhsm-node` processes on
 * loopback and a client node in this process:
 * 1. Data path: a 1 GiB file written and read back through the cell client (chunks streamed
 *    client <-> storage server, 1 replica: the cell has one storage server) against a raw libp2p
 *    stream between the same two processes (`/zhsm/probe`, no framing). Target >= 0.8. Three
 *    rounds after a warm-up, each raw upload, file write, raw download, file read back to back;
 *    the ratios are the medians of the rounds' ratios. `npm run bench -- node data` runs only this.
 * 2. Metadata creates per second on a 3-controller cell: createNode proposals with many in
 *    flight (batched into log appends by the primary). Target >= 2,000/s. Also whole file creates
 *    through the cell client (lookup + create + open token + close).
 * 3. Failover: SIGKILL of the primary to the first successful metadata write, default timeouts
 *    (tick 100 ms, election timeout 1 s). Target <= 2 s. Three rounds; the killed controller is
 *    restarted and takes the lead back between rounds.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CellClient } from '../node/client/cell-client.ts';
import { ZhsmNode } from '../node/daemon/node.ts';
import { probeDownload, probeUpload } from '../node/net/probe.ts';
import { cli, kill, killAll, LOOPBACK, type Proc, start, waitFor } from './_procs.ts';
import { median, printTable, round } from './_table.ts';
import type { BenchResult } from './run.ts';

const MiB = 1024 * 1024;
const FILE_BYTES = 1024 * MiB;
const PIECE_BYTES = 8 * MiB;
/** Rounds of the data path (each: raw upload, file write, raw download, file read). */
const DATA_ROUNDS = 3;
const WARM_UP_BYTES = 64 * MiB;
const CREATES = 20_000;
const CREATES_IN_FLIGHT = 512;
const FILE_CREATES = 2_000;
const FILE_CREATES_IN_FLIGHT = 64;
/** Failover rounds (`ZHSM_BENCH_FAILOVER_ROUNDS` for more, e.g. to look for outliers). */
const FAILOVER_ROUNDS = Number(process.env.ZHSM_BENCH_FAILOVER_ROUNDS ?? 3) || 3;
const caller = { uid: 0, gid: 0 };

/** A client node of the cell in this process. */
async function clientOf(base: string, name: string, peer: string, token: string): Promise<ZhsmNode> {
  const data = join(base, name);
  await ZhsmNode.join({ peer, token, data, listen: [LOOPBACK] });
  return ZhsmNode.start(data);
}

async function dataPath(base: string) {
  const server: Proc = { name: 's1', data: join(base, 's1'), peerId: '', addresses: [] };
  const init = await cli([
    'init',
    '--data',
    server.data,
    '--cell',
    'bench',
    '--backend',
    join(base, 's1-backend'),
    '--listen',
    LOOPBACK,
  ]);
  await start(server);
  const client = await clientOf(base, 'client-data', server.addresses[0]!, init.token as string);
  try {
    await waitFor('the storage server registered', async () =>
      (await client.remote.metadata.backends()).length === 1 ? true : undefined,
    );
    const fs = new CellClient(client.remote, { replicas: 1 });
    // Incompressible content (a random 8 MiB block, rotated per piece so chunks differ).
    const block = new Uint8Array(randomBytes(PIECE_BYTES));
    // The content of piece k of a round is `block` with its first two bytes set to (k, round):
    // reads are checked byte for byte against it (cheaper than hashing, which would load the
    // client with work that is not zhsm's; zhsm itself verifies every chunk's sha256).
    const pieceOf = (offset: number, round: number) => {
      block[0] = offset / PIECE_BYTES;
      block[1] = round;
      return block;
    };
    /** Write a file of `bytes` in pieces; MiB/s. */
    const writeFile = async (path: string, bytes: number, round: number) => {
      const started = performance.now();
      const handle = await fs.create(path, 0o644, caller, { mode: 'write' });
      for (let offset = 0; offset < bytes; offset += PIECE_BYTES) {
        await handle.write(offset, pieceOf(offset, round));
      }
      await handle.close();
      return bytes / MiB / ((performance.now() - started) / 1000);
    };
    /** Read it back, 4 pieces in flight, checking every byte; MiB/s. */
    const readFile = async (path: string, bytes: number, round: number) => {
      const started = performance.now();
      const reader = await fs.open(path, { mode: 'read' });
      const inFlight = 4;
      for (let offset = 0; offset < bytes; offset += PIECE_BYTES * inFlight) {
        const at = Array.from({ length: inFlight }, (_, i) => offset + i * PIECE_BYTES).filter(
          (start) => start < bytes,
        );
        const pieces = await Promise.all(at.map((start) => reader.read(start, PIECE_BYTES)));
        pieces.forEach((piece, i) => {
          if (Buffer.compare(piece, pieceOf(at[i]!, round)) !== 0)
            throw new Error(`read back different bytes at ${at[i]}`);
        });
      }
      await reader.close();
      return bytes / MiB / ((performance.now() - started) / 1000);
    };
    // Warm up both paths (the connection, the storage protocols, the JIT), unmeasured.
    await probeUpload(client.host, server.peerId, WARM_UP_BYTES);
    await probeDownload(client.host, server.peerId, WARM_UP_BYTES);
    await writeFile('/warm-up', WARM_UP_BYTES, 255);
    await readFile('/warm-up', WARM_UP_BYTES, 255);
    await fs.unlink('/warm-up');
    // Each round: raw upload, file write, raw download, file read, back to back, so that each
    // ratio compares runs close in time (the machines are shared: the load drifts).
    const rawUp: number[] = [];
    const rawDown: number[] = [];
    const writes: number[] = [];
    const reads: number[] = [];
    for (let round = 0; round < DATA_ROUNDS; round++) {
      const path = `/big-${round}`;
      rawUp.push(FILE_BYTES / MiB / (await probeUpload(client.host, server.peerId, FILE_BYTES)));
      writes.push(await writeFile(path, FILE_BYTES, round));
      rawDown.push(FILE_BYTES / MiB / (await probeDownload(client.host, server.peerId, FILE_BYTES)));
      reads.push(await readFile(path, FILE_BYTES, round));
      await fs.unlink(path);
    }
    return { rawUp, rawDown, writes, reads };
  } finally {
    await client.stop();
    await kill(server, 'SIGTERM');
  }
}

async function controllerCell(base: string) {
  const controllers: Proc[] = ['c1', 'c2', 'c3'].map((name) => ({
    name,
    data: join(base, name),
    peerId: '',
    addresses: [],
  }));
  const init = await cli(['init', '--data', controllers[0]!.data, '--cell', 'bench3', '--listen', LOOPBACK]);
  await start(controllers[0]!);
  const peer = controllers[0]!.addresses[0]!;
  for (const proc of controllers.slice(1)) {
    await cli([
      'join',
      peer,
      '--token',
      init.token as string,
      '--data',
      proc.data,
      '--controller',
      '--listen',
      LOOPBACK,
    ]);
    await start(proc);
  }
  const client = await clientOf(base, 'client-meta', peer, init.token as string);
  await waitFor('3 voters', async () => {
    const info = await client.remote.cellInfoOf(controllers[0]!.peerId);
    return info.voters.length === 3 ? true : undefined;
  });
  return { controllers, client };
}

async function creates(client: ZhsmNode) {
  const fs = new CellClient(client.remote);
  await fs.mkdir('/creates', 0o755, caller);
  const parent = (await client.remote.metadata.lookup(await client.remote.metadata.root(), 'creates'))!.id;
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < CREATES) {
      const i = next++;
      const result = await client.remote.propose({
        create: {
          parent,
          name: `n${i}`,
          id: new Uint8Array(randomBytes(16)),
          type: 'FILE',
          mode: 0o644,
          uid: 0,
          gid: 0,
        },
      });
      if (result.code !== 'OK') throw new Error(`create failed: ${result.code} ${result.message}`);
    }
  };
  await Promise.all(Array.from({ length: CREATES_IN_FLIGHT }, worker));
  const proposals = CREATES / ((performance.now() - started) / 1000);
  await fs.mkdir('/files', 0o755, caller);
  let nextFile = 0;
  const fileStarted = performance.now();
  const fileWorker = async () => {
    while (nextFile < FILE_CREATES) {
      const i = nextFile++;
      const handle = await fs.create(`/files/f${i}`, 0o644, caller, { mode: 'write', exclusive: true });
      await handle.close();
    }
  };
  await Promise.all(Array.from({ length: FILE_CREATES_IN_FLIGHT }, fileWorker));
  const files = FILE_CREATES / ((performance.now() - fileStarted) / 1000);
  return { proposals, files };
}

async function failovers(controllers: Proc[], client: ZhsmNode): Promise<number[]> {
  const fs = new CellClient(client.remote);
  const times: number[] = [];
  for (let round = 0; round < FAILOVER_ROUNDS; round++) {
    const primary = await waitFor('controller 1 leads', async () => {
      const info = await client.remote.cellInfoOf(controllers[0]!.peerId);
      return info.role === 'leader' ? controllers[0]! : undefined;
    });
    await fs.mkdir(`/before-${round}`, 0o755, caller);
    const killed = performance.now();
    await kill(primary, 'SIGKILL');
    await fs.mkdir(`/after-${round}`, 0o755, caller);
    times.push(performance.now() - killed);
    const after = await client.remote.cellInfoOf(controllers[1]!.peerId).catch(() => undefined);
    console.log(
      `  failover round ${round + 1}: ${times.at(-1)!.toFixed(0)} ms, then term ${after?.term ?? '?'}`,
    );
    await start(primary);
  }
  return times;
}

export async function run(args: string[] = []): Promise<BenchResult> {
  // `npm run bench -- node data|meta|failover` runs one part (for profiling; meta includes the
  // failovers, failover alone skips the creates); the default runs all.
  const parts = new Set(args.length === 0 ? ['data', 'meta'] : args);
  if (parts.has('failover')) parts.add('meta');
  const base = mkdtempSync(join(tmpdir(), 'zhsm-bench-node-'));
  try {
    const data = parts.has('data')
      ? await dataPath(base)
      : { rawUp: [0], rawDown: [0], writes: [0], reads: [0] };
    const { controllers, client } = parts.has('meta')
      ? await controllerCell(base)
      : { controllers: [], client: undefined as unknown as ZhsmNode };
    let meta = { proposals: 0, files: 0 };
    let failover = [0];
    if (parts.has('meta'))
      try {
        if (!parts.has('failover') || args.includes('meta')) meta = await creates(client);
        // ZHSM_BENCH_NO_FAILOVER=1: skip the SIGKILLs (so CPU profiles of every controller are written).
        if (process.env.ZHSM_BENCH_NO_FAILOVER !== '1') failover = await failovers(controllers, client);
      } finally {
        await client.stop();
        for (const proc of controllers) await kill(proc, 'SIGTERM');
      }
    const figures = {
      rawUploadMiBps: round(median(data.rawUp), 1),
      rawDownloadMiBps: round(median(data.rawDown), 1),
      fileWriteMiBps: round(median(data.writes), 1),
      fileReadMiBps: round(median(data.reads), 1),
      createsPerSecond: round(meta.proposals, 0),
      fileCreatesPerSecond: round(meta.files, 0),
      failoverMsMedian: round(median(failover), 0),
      failoverMsMax: round(Math.max(...failover), 0),
    };
    const ratios = {
      // The median of the rounds' ratios (each against the raw run just before it).
      writeOverRawUpload: round(median(data.writes.map((write, i) => write / data.rawUp[i]!)), 3),
      readOverRawDownload: round(median(data.reads.map((read, i) => read / data.rawDown[i]!)), 3),
      createsOverTarget2000: round(figures.createsPerSecond / 2000, 3),
      failoverTarget2000MsOverMax: round(2000 / figures.failoverMsMax, 3),
    };
    printTable('data path, 1 GiB, client -> storage server (separate processes, loopback)', [
      {
        path: 'raw libp2p stream upload (/zhsm/probe)',
        'MiB/s': figures.rawUploadMiBps,
        runs: data.rawUp.map((v) => v.toFixed(0)).join(' '),
      },
      {
        path: 'raw libp2p stream download',
        'MiB/s': figures.rawDownloadMiBps,
        runs: data.rawDown.map((v) => v.toFixed(0)).join(' '),
      },
      {
        path: 'file write (cell client, 4 MiB chunks, durable)',
        'MiB/s': figures.fileWriteMiBps,
        runs: data.writes.map((v, i) => `${v.toFixed(0)} (${(v / data.rawUp[i]!).toFixed(2)}x)`).join(' '),
      },
      {
        path: 'file read (cell client, verified)',
        'MiB/s': figures.fileReadMiBps,
        runs: data.reads.map((v, i) => `${v.toFixed(0)} (${(v / data.rawDown[i]!).toFixed(2)}x)`).join(' '),
      },
    ]);
    printTable('metadata, 3-controller cell', [
      { what: `createNode proposals, ${CREATES_IN_FLIGHT} in flight`, 'per s': figures.createsPerSecond },
      {
        what: `file create+close (cell client), ${FILE_CREATES_IN_FLIGHT} in flight`,
        'per s': figures.fileCreatesPerSecond,
      },
    ]);
    printTable('failover (SIGKILL primary -> first successful metadata write)', [
      {
        rounds: failover.map((v) => v.toFixed(0)).join(' '),
        'median ms': figures.failoverMsMedian,
        'max ms': figures.failoverMsMax,
      },
    ]);
    printTable(
      'ratios',
      Object.entries(ratios).map(([ratio, value]) => ({ ratio, value })),
    );
    return { figures, ratios };
  } finally {
    killAll();
    rmSync(base, { recursive: true, force: true });
  }
}
