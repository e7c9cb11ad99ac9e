/**
 * Storage service benchmark, between two processes on loopback: the parent is the client, a
 * forked child runs a storage server (one Backend in a temp directory) and raw stream handlers.
 * (a) raw libp2p stream throughput of 1 GiB, parent -> child (child discards) and child -> parent
 *     (child produces), 1 MiB sends, drain-aware;
 * (b) 1 GiB written as 256 chunks of 4 MiB (`StorageClient.write`, durable on return) with k
 *     writes in flight;
 * (c) the same chunks read back (`StorageClient.read`) with k reads in flight.
 * Usage: `node bench/storage-net.ts [k,k,...]` (default 1,2,4,8).
 */
// Its child processes run as a daemon would (see node/common/v8-tuning.ts).
import '../node/common/v8-tuning.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey, Stream } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { createHost, type Host } from '../node/net/host.ts';
import { StorageClient } from '../node/storage/client.ts';
import { serveStorage } from '../node/storage/service.ts';
import { Backend } from '../node/store/backend.ts';
import { median, nextDrain, printTable, round } from './_table.ts';

const mebibyte = 1024 * 1024;
const totalBytes = 1024 * mebibyte;
const chunkBytes = 4 * mebibyte;
const chunkCount = totalBytes / chunkBytes;
/** Distinct chunk bodies (hashed before timing); object ids are all distinct. */
const distinctBodies = 8;
const sendBytes = mebibyte;
const sinkProtocol = '/zhsm-bench/storage-sink/1.0.0';
const sourceProtocol = '/zhsm-bench/storage-source/1.0.0';
const defaultInFlight = [1, 2, 4, 8];

function keyToArgument(key: PrivateKey): string {
  return Buffer.from(privateKeyToProtobuf(key)).toString('base64');
}

async function sendBytesOn(stream: Stream, bytes: number): Promise<void> {
  const chunk = new Uint8Array(sendBytes).fill(0x5a);
  let remaining = bytes;
  while (remaining > 0) {
    const piece = remaining >= chunk.byteLength ? chunk : chunk.subarray(0, remaining);
    remaining -= piece.byteLength;
    if (!stream.send(piece)) await nextDrain(stream);
    while (stream.writeBufferLength > sendBytes) await nextDrain(stream).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Child: the storage server.

async function childMain(keyArgument: string, clientId: string, directory: string): Promise<void> {
  const key = privateKeyFromProtobuf(Buffer.from(keyArgument, 'base64'));
  const host = await createHost({ privateKey: key, isMember: (peer) => peer === clientId });
  const backend = await Backend.create(join(directory, 'backend'), { cell: 'bench' });
  const backends = new Map([[Buffer.from(backend.uuid).toString('hex'), backend]]);
  const service = await serveStorage(host, { backends: () => backends });
  // Raw sink: read everything, answer the byte count.
  await host.libp2p.handle(sinkProtocol, async (stream) => {
    let received = 0;
    for await (const data of stream) received += data.byteLength;
    stream.send(new TextEncoder().encode(`${received}\n`));
    await stream.close();
  });
  // Raw source: the request is a byte count as decimal text; then that many bytes.
  await host.libp2p.handle(sourceProtocol, async (stream) => {
    let request = '';
    for await (const data of stream) {
      request += Buffer.from(data.subarray()).toString();
      if (request.endsWith('\n')) break;
    }
    await sendBytesOn(stream, Number(request.trim()));
    await stream.close();
  });
  process.stdout.write(
    `${JSON.stringify({ addrs: host.multiaddrs().map(String), backend: Buffer.from(backend.uuid).toString('hex') })}\n`,
  );
  process.stdin.resume();
  process.stdin.on('end', () => {
    (async () => {
      await service.stop();
      await host.stop();
      await backend.close();
    })().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Parent: the client and the measurements.

interface Child {
  readonly process: ChildProcess;
  readonly address: string;
  readonly backend: Uint8Array;
}

async function startChild(args: string[]): Promise<Child> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  try {
    const lines = createInterface({ input: child.stdout! });
    const ready = await new Promise<{ addrs: string[]; backend: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('child did not start within 30 s')), 30_000);
      lines.once('line', (line) => {
        clearTimeout(timer);
        resolve(JSON.parse(line) as { addrs: string[]; backend: string });
      });
      child.once('exit', (code) => reject(new Error(`child exited with ${code}`)));
    });
    return {
      process: child,
      address: ready.addrs[0]!,
      backend: new Uint8Array(Buffer.from(ready.backend, 'hex')),
    };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin?.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

interface Measurement {
  readonly what: string;
  readonly k: number;
  readonly mebibytesPerSecond: number;
  /** CPU seconds (user + system, all threads) per GiB moved. */
  readonly serverCpuPerGiB: number;
  /** The server's main thread only (where Noise, yamux and the service run: the bottleneck). */
  readonly serverMainCpuPerGiB: number;
  readonly clientCpuPerGiB: number;
}

/**
 * CPU seconds (user + system) a process has used so far (Linux): all threads, or with `mainThread`
 * only its main thread.
 */
function processCpuSeconds(pid: number | undefined, mainThread = false): number {
  try {
    const path = mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`;
    const fields = readFileSync(path, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime are fields 14 and 15 of /proc/PID/stat (12 and 13 after the command).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** Peak resident memory of a process (Linux), MiB. */
function peakRssMiB(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /VmHWM:\s+(\d+) kB/.exec(status);
    return match === null ? Number.NaN : Number(match[1]) / 1024;
  } catch {
    return Number.NaN;
  }
}

function mebibytesPerSecond(bytes: number, startedMs: number): number {
  return bytes / mebibyte / ((performance.now() - startedMs) / 1000);
}

async function rawUpload(client: Host, address: string, bytes: number): Promise<number> {
  const started = performance.now();
  const stream = await client.libp2p.dialProtocol(multiaddr(address), sinkProtocol);
  await sendBytesOn(stream, bytes);
  await stream.close();
  let answer = '';
  for await (const data of stream) answer += Buffer.from(data.subarray()).toString();
  if (Number(answer.trim()) !== bytes) throw new Error(`raw upload: ${answer.trim()} of ${bytes} bytes`);
  return mebibytesPerSecond(bytes, started);
}

async function rawDownload(client: Host, address: string, bytes: number): Promise<number> {
  const started = performance.now();
  const stream = await client.libp2p.dialProtocol(multiaddr(address), sourceProtocol);
  stream.send(new TextEncoder().encode(`${bytes}\n`));
  await stream.close();
  let received = 0;
  for await (const data of stream) received += data.byteLength;
  if (received !== bytes) throw new Error(`raw download: ${received} of ${bytes} bytes`);
  return mebibytesPerSecond(bytes, started);
}

/** Run `task(0..count-1)` with `inFlight` at a time. */
async function pool(count: number, inFlight: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(inFlight, count) }, async () => {
      while (next < count) {
        const index = next;
        next += 1;
        await task(index);
      }
    }),
  );
}

function parseInFlight(args: readonly string[]): number[] {
  const list = args.find((arg) => /^\d+(,\d+)*$/.test(arg));
  return list === undefined ? defaultInFlight : list.split(',').map(Number);
}

export async function run(
  args: string[] = [],
): Promise<{ figures: Record<string, number>; ratios: Record<string, number> }> {
  const inFlightList = parseInFlight(args);
  const [clientKey, serverKey] = await Promise.all([generateKeyPair('Ed25519'), generateKeyPair('Ed25519')]);
  const clientId = peerIdFromPrivateKey(clientKey).toString();
  const serverId = peerIdFromPrivateKey(serverKey).toString();
  const directory = mkdtempSync(join(tmpdir(), 'zhsm-bench-storage-'));
  let child: Child | undefined;
  let client: Host | undefined;
  // Interrupted: the child exits when its stdin closes; remove the directory here.
  const onSignal = (signal: NodeJS.Signals) => {
    child?.process.kill('SIGKILL');
    rmSync(directory, { recursive: true, force: true });
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    child = await startChild([keyToArgument(serverKey), clientId, directory]);
    client = await createHost({ privateKey: clientKey, isMember: (peer) => peer === serverId });
    const storage = new StorageClient(client);
    const { address, backend } = child;
    const bodies = Array.from({ length: distinctBodies }, () => {
      // Incompressible and without zero blocks (the backend stores zero blocks as holes).
      const body = new Uint8Array(randomBytes(chunkBytes));
      return { body, hash: new Uint8Array(createHash('sha256').update(body).digest()) };
    });
    const newIds = () =>
      Array.from({ length: chunkCount }, () => new Uint8Array(crypto.getRandomValues(new Uint8Array(16))));

    // Warm up: the connection, the JIT, the backend's directories.
    await rawUpload(client, address, 64 * mebibyte);
    await rawDownload(client, address, 64 * mebibyte);
    const warmIds = newIds().slice(0, 16);
    await pool(warmIds.length, 4, async (i) => {
      const { body, hash } = bodies[i % distinctBodies]!;
      await storage.write(address, backend, warmIds[i]!, body, chunkBytes, hash);
      await storage.read(address, backend, warmIds[i]!, 0, chunkBytes);
    });
    await storage.delete(address, warmIds, backend);

    // Per k: raw upload, writes, raw download, reads, back to back, so that each ratio compares
    // runs close in time (the machines are shared: load drifts). CPU seconds per GiB of both
    // processes (all threads) are reported too: they depend much less on the load.
    const rows: Measurement[] = [];
    const measure = async (what: string, k: number, task: () => Promise<void>): Promise<Measurement> => {
      const serverBefore = processCpuSeconds(child!.process.pid);
      const serverMainBefore = processCpuSeconds(child!.process.pid, true);
      const clientBefore = process.cpuUsage();
      const started = performance.now();
      await task();
      const seconds = (performance.now() - started) / 1000;
      const clientUsage = process.cpuUsage(clientBefore);
      const gibibytes = totalBytes / (1024 * mebibyte);
      const row = {
        what,
        k,
        mebibytesPerSecond: totalBytes / mebibyte / seconds,
        serverCpuPerGiB: (processCpuSeconds(child!.process.pid) - serverBefore) / gibibytes,
        serverMainCpuPerGiB: (processCpuSeconds(child!.process.pid, true) - serverMainBefore) / gibibytes,
        clientCpuPerGiB: (clientUsage.user + clientUsage.system) / 1e6 / gibibytes,
      };
      rows.push(row);
      return row;
    };
    const results: Array<{
      k: number;
      rawUp: Measurement;
      write: Measurement;
      rawDown: Measurement;
      read: Measurement;
    }> = [];
    for (const k of inFlightList) {
      const ids = newIds();
      const rawUp = await measure('raw stream parent -> child', k, async () => {
        await rawUpload(client!, address, totalBytes);
      });
      const write = await measure(`write, ${k} in flight (durable)`, k, () =>
        pool(chunkCount, k, async (i) => {
          const { body, hash } = bodies[i % distinctBodies]!;
          await storage.write(address, backend, ids[i]!, body, chunkBytes, hash);
        }),
      );
      const rawDown = await measure('raw stream child -> parent', k, async () => {
        await rawDownload(client!, address, totalBytes);
      });
      const read = await measure(`read, ${k} in flight`, k, () =>
        pool(chunkCount, k, async (i) => {
          const bytes = await storage.read(address, backend, ids[i]!, 0, chunkBytes);
          if (bytes.byteLength !== chunkBytes)
            throw new Error(`read ${bytes.byteLength} bytes of chunk ${i}`);
        }),
      );
      results.push({ k, rawUp, write, rawDown, read });
      await storage.delete(address, ids, backend, { timeoutMs: 120_000 });
    }
    const serverPeakRss = peakRssMiB(child.process.pid);

    const rawUps = results.map((result) => result.rawUp.mebibytesPerSecond);
    const rawDowns = results.map((result) => result.rawDown.mebibytesPerSecond);
    const figures: Record<string, number> = {
      rawUploadMiBps: round(median(rawUps), 1),
      rawDownloadMiBps: round(median(rawDowns), 1),
      serverPeakRssMiB: round(serverPeakRss, 0),
    };
    const ratios: Record<string, number> = {};
    for (const { k, rawUp, write, rawDown, read } of results) {
      figures[`write${k}InFlightMiBps`] = round(write.mebibytesPerSecond, 1);
      figures[`read${k}InFlightMiBps`] = round(read.mebibytesPerSecond, 1);
      figures[`write${k}ServerCpuSecondsPerGiB`] = round(write.serverCpuPerGiB, 2);
      figures[`read${k}ServerCpuSecondsPerGiB`] = round(read.serverCpuPerGiB, 2);
      ratios[`write${k}OverRaw`] = round(write.mebibytesPerSecond / rawUp.mebibytesPerSecond, 3);
      ratios[`read${k}OverRaw`] = round(read.mebibytesPerSecond / rawDown.mebibytesPerSecond, 3);
    }
    ratios.bestWriteOverRaw = Math.max(...results.map(({ k }) => ratios[`write${k}OverRaw`]!));
    ratios.bestReadOverRaw = Math.max(...results.map(({ k }) => ratios[`read${k}OverRaw`]!));
    printTable(
      `storage-net: ${totalBytes / mebibyte} MiB between processes on loopback, ${chunkCount} chunks of ${chunkBytes / mebibyte} MiB; each chunk run is compared with the raw run just before it`,
      results.flatMap(({ rawUp, write, rawDown, read }) =>
        [
          [rawUp, rawUp],
          [write, rawUp],
          [rawDown, rawDown],
          [read, rawDown],
        ].map(([row, raw]) => ({
          path: row!.what,
          'MiB/s': row!.mebibytesPerSecond,
          'x raw': row!.mebibytesPerSecond / raw!.mebibytesPerSecond,
          'server cpu s/GiB': row!.serverCpuPerGiB,
          'server main thread': row!.serverMainCpuPerGiB,
          'client cpu s/GiB': row!.clientCpuPerGiB,
        })),
      ),
    );
    console.log(`storage server peak RSS: ${serverPeakRss.toFixed(0)} MiB`);
    return { figures, ratios };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await client?.stop().catch(() => {});
    if (child !== undefined) await stopChild(child.process);
    rmSync(directory, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  if (process.argv[2] === 'child') {
    const [key, clientId, directory] = process.argv.slice(3);
    await childMain(key!, clientId!, directory!);
  } else {
    await run(process.argv.slice(2));
  }
}
