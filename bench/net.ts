/**
 * Network layer benchmark, between separate processes on loopback:
 * - raw libp2p stream throughput (one stream, 1 MiB sends, drain-aware) vs the framed streaming
 *   service (`serveStream`/`callStream`) for a 1 GiB download, and a framed 1 GiB upload;
 * - unary RPC calls per second (small request/response), one at a time and 64 in flight;
 * - raw and framed downloads (256 MiB) through one circuit-relay hop (a third process; members,
 *   no limits).
 * The parent process is the client; `node bench/net.ts child <role> ...` is a server or relay.
 */
// Its child processes run as a daemon would (see node/common/v8-tuning.ts).
import '../node/common/v8-tuning.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { createHost, type Host } from '../node/net/host.ts';
import { call, callStream, defineMethod, serve, serveStream } from '../node/net/rpc.ts';
import { codec } from '../proto/index.ts';
import { median, nextDrain, printTable, round } from './_table.ts';

const mebibyte = 1024 * 1024;
const transferBytes = 1024 * mebibyte;
/** Through the relay: smaller, the hop is several times slower. */
const relayedTransferBytes = 256 * mebibyte;
const sendBytes = mebibyte;
const rounds = 3;
const rawProtocol = '/zhsm-bench/raw/1.0.0';
const sequentialCalls = 2000;
const concurrentCalls = 20_000;
const callsInFlight = 64;

interface Pair {
  code: string;
  message: string;
}
const pairCodec = codec<Pair>('zhsm.net.RemoteError');
const echo = defineMethod<Pair, Pair>({
  name: 'bench-echo',
  requestCodec: pairCodec,
  responseCodec: pairCodec,
});
const bulk = defineMethod<Pair, Pair>({
  name: 'bench-bulk',
  requestCodec: pairCodec,
  responseCodec: pairCodec,
});

function keyToArgument(key: PrivateKey): string {
  return Buffer.from(privateKeyToProtobuf(key)).toString('base64');
}

function keyFromArgument(value: string): PrivateKey {
  return privateKeyFromProtobuf(Buffer.from(value, 'base64'));
}

// ---------------------------------------------------------------------------------------------
// Child: a server (raw, framed and echo services) or a relay.

async function childMain(role: string, keyArgument: string, memberIds: string[], relayAddress?: string) {
  const members = new Set(memberIds);
  const host = await createHost({
    privateKey: keyFromArgument(keyArgument),
    isMember: (peer) => members.has(peer),
  });
  if (role === 'server') {
    const chunk = new Uint8Array(sendBytes).fill(0x5a);
    await host.libp2p.handle(rawProtocol, async (stream) => {
      // The request: the byte count as decimal text; then the raw bytes, 1 MiB per send.
      let request = '';
      for await (const data of stream) {
        request += Buffer.from(data.subarray()).toString();
        if (request.endsWith('\n')) break;
      }
      let remaining = Number(request.trim());
      while (remaining > 0) {
        const piece = remaining >= chunk.byteLength ? chunk : chunk.subarray(0, remaining);
        remaining -= piece.byteLength;
        if (!stream.send(piece)) await nextDrain(stream);
        while (stream.writeBufferLength > sendBytes) await nextDrain(stream).catch(() => {});
      }
      await stream.close();
    });
    await serve(host, { ...echo, handler: async (request) => request });
    await serveStream(host, {
      ...bulk,
      async *handler(request, context) {
        if (request.code === 'download') {
          let remaining = Number(request.message);
          while (remaining > 0) {
            const piece = remaining >= chunk.byteLength ? chunk : chunk.subarray(0, remaining);
            remaining -= piece.byteLength;
            yield piece;
          }
          return { code: 'ok', message: '' };
        }
        let received = 0;
        for await (const data of context.data) received += data.byteLength;
        return { code: 'ok', message: String(received) };
      },
    });
    if (relayAddress !== undefined) await host.listenViaRelay(relayAddress);
  }
  // Wait until the relayed address is announced, so the parent can dial it.
  for (let attempt = 0; relayAddress !== undefined && attempt < 200; attempt += 1) {
    if (host.multiaddrs().some((address) => address.toString().includes('/p2p-circuit'))) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  process.stdout.write(`${JSON.stringify({ ready: true, addrs: host.multiaddrs().map(String) })}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => {
    host.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Parent: the client and the measurements.

interface Child {
  readonly process: ChildProcess;
  readonly addrs: string[];
}

async function startChild(args: string[]): Promise<Child> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const ready = await new Promise<{ addrs: string[] }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child did not start within 30 s')), 30_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as { addrs: string[] });
    });
    child.once('exit', (code) => reject(new Error(`child exited with ${code}`)));
  });
  return { process: child, addrs: ready.addrs };
}

async function stopChild(child: Child): Promise<void> {
  const exited = new Promise<void>((resolve) => child.process.once('exit', () => resolve()));
  child.process.stdin?.end();
  const timer = setTimeout(() => child.process.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

function mebibytesPerSecond(bytes: number, startedMs: number): number {
  return bytes / mebibyte / ((performance.now() - startedMs) / 1000);
}

async function rawDownload(client: Host, address: string, bytes: number): Promise<number> {
  const started = performance.now();
  const stream = await client.libp2p.dialProtocol(multiaddr(address), rawProtocol);
  stream.send(new TextEncoder().encode(`${bytes}\n`));
  await stream.close();
  let received = 0;
  for await (const data of stream) received += data.byteLength;
  if (received !== bytes) throw new Error(`raw download: ${received} of ${bytes} bytes`);
  return mebibytesPerSecond(bytes, started);
}

async function framedDownload(client: Host, address: string, bytes: number): Promise<number> {
  const started = performance.now();
  const download = await callStream(client, address, bulk, { code: 'download', message: String(bytes) });
  let received = 0;
  for await (const data of download.data) received += data.byteLength;
  await download.response();
  if (received !== bytes) throw new Error(`framed download: ${received} of ${bytes} bytes`);
  return mebibytesPerSecond(bytes, started);
}

async function framedUpload(client: Host, address: string, bytes: number): Promise<number> {
  const chunk = new Uint8Array(sendBytes).fill(0xa5);
  function* source(): Generator<Uint8Array> {
    for (let sent = 0; sent < bytes; sent += chunk.byteLength) yield chunk;
  }
  const started = performance.now();
  const upload = await callStream(
    client,
    address,
    bulk,
    { code: 'upload', message: '' },
    { upload: source() },
  );
  const response = await upload.response();
  if (Number(response.message) !== bytes)
    throw new Error(`framed upload: ${response.message} of ${bytes} bytes`);
  return mebibytesPerSecond(bytes, started);
}

async function callsPerSecond(
  client: Host,
  address: string,
  count: number,
  inFlight: number,
): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < count) {
        next += 1;
        await call(client, address, echo, { code: 'ping', message: 'x' });
      }
    }),
  );
  return count / ((performance.now() - started) / 1000);
}

export async function run(): Promise<{ figures: Record<string, number>; ratios: Record<string, number> }> {
  const [clientKey, serverKey, relayKey, relayClientKey] = await Promise.all(
    Array.from({ length: 4 }, () => generateKeyPair('Ed25519')),
  );
  const keys = [clientKey!, serverKey!, relayKey!, relayClientKey!];
  const memberIds = keys.map((key) => peerIdFromPrivateKey(key).toString());
  const members = new Set(memberIds);
  const isMember = (peer: string) => members.has(peer);
  const relay = await startChild(['relay', keyToArgument(relayKey!), memberIds.join(',')]);
  const server = await startChild([
    'server',
    keyToArgument(serverKey!),
    memberIds.join(','),
    relay.addrs[0]!,
  ]);
  const client = await createHost({ privateKey: clientKey!, isMember });
  const relayClient = await createHost({ privateKey: relayClientKey!, isMember });
  try {
    const direct = server.addrs.find((address) => !address.includes('/p2p-circuit'))!;
    const relayed = server.addrs.find((address) => address.includes('/p2p-circuit'))!;
    // Warm up: connect, JIT the paths.
    await rawDownload(client, direct, 64 * mebibyte);
    await framedDownload(client, direct, 64 * mebibyte);
    const raw: number[] = [];
    const framed: number[] = [];
    const framedUp: number[] = [];
    for (let round = 0; round < rounds; round += 1) {
      raw.push(await rawDownload(client, direct, transferBytes));
      framed.push(await framedDownload(client, direct, transferBytes));
      framedUp.push(await framedUpload(client, direct, transferBytes));
    }
    const sequential = await callsPerSecond(client, direct, sequentialCalls, 1);
    const concurrent = await callsPerSecond(client, direct, concurrentCalls, callsInFlight);
    // Through the relay: a client that never connected to the server directly.
    await framedDownload(relayClient, relayed, 16 * mebibyte);
    const connection = relayClient.libp2p
      .getConnections()
      .find((c) => c.remoteAddr.toString().includes('/p2p-circuit'));
    if (connection === undefined) throw new Error('the relayed path did not use a relayed connection');
    const relayedRaw = await rawDownload(relayClient, relayed, relayedTransferBytes);
    const relayedDownload = await framedDownload(relayClient, relayed, relayedTransferBytes);

    const figures = {
      rawStreamMiBps: round(median(raw), 1),
      framedDownloadMiBps: round(median(framed), 1),
      framedUploadMiBps: round(median(framedUp), 1),
      relayedRawStreamMiBps: round(relayedRaw, 1),
      relayedDownloadMiBps: round(relayedDownload, 1),
      callsPerSecondSequential: Math.round(sequential),
      callsPerSecond64InFlight: Math.round(concurrent),
      transferMiB: transferBytes / mebibyte,
      relayedTransferMiB: relayedTransferBytes / mebibyte,
    };
    const ratios = {
      framedOverRaw: round(median(framed) / median(raw), 3),
      relayedOverDirect: round(relayedDownload / median(framed), 3),
      relayedFramedOverRaw: round(relayedDownload / relayedRaw, 3),
    };
    printTable(
      `net: ${transferBytes / mebibyte} MiB transfers between processes on loopback (median of ${rounds})`,
      [
        {
          path: 'raw libp2p stream, 1 MiB sends',
          'MiB/s': figures.rawStreamMiBps,
          runs: raw.map((v) => v.toFixed(0)).join(' '),
        },
        {
          path: 'framed download (callStream)',
          'MiB/s': figures.framedDownloadMiBps,
          runs: framed.map((v) => v.toFixed(0)).join(' '),
        },
        {
          path: 'framed upload (callStream)',
          'MiB/s': figures.framedUploadMiBps,
          runs: framedUp.map((v) => v.toFixed(0)).join(' '),
        },
        {
          path: `raw stream via 1 relay hop (${relayedTransferBytes / mebibyte} MiB)`,
          'MiB/s': figures.relayedRawStreamMiBps,
          runs: relayedRaw.toFixed(0),
        },
        {
          path: `framed download via 1 relay hop (${relayedTransferBytes / mebibyte} MiB)`,
          'MiB/s': figures.relayedDownloadMiBps,
          runs: relayedDownload.toFixed(0),
        },
      ],
    );
    printTable('net: unary calls (small request/response)', [
      { mode: 'one at a time', 'calls/s': figures.callsPerSecondSequential, calls: sequentialCalls },
      {
        mode: `${callsInFlight} in flight`,
        'calls/s': figures.callsPerSecond64InFlight,
        calls: concurrentCalls,
      },
    ]);
    printTable('net: ratios', [
      { ratio: 'framed / raw (target >= 0.9)', value: ratios.framedOverRaw },
      { ratio: 'relayed / direct (framed)', value: ratios.relayedOverDirect },
      { ratio: 'relayed framed / relayed raw', value: ratios.relayedFramedOverRaw },
    ]);
    return { figures, ratios };
  } finally {
    await relayClient.stop();
    await client.stop();
    await stopChild(server);
    await stopChild(relay);
  }
}

if (import.meta.main && process.argv[2] === 'child') {
  const [role, key, memberList, relayAddress] = process.argv.slice(3);
  await childMain(role!, key!, memberList!.split(','), relayAddress);
}
