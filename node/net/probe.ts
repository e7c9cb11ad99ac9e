/**
 * `/zhsm/probe/1.0.0`: a throughput probe between two members, on a raw libp2p stream (no
 * frames): the baseline that zhsm's own data paths are measured against (bench/node.ts), and a
 * tool to check a link between two nodes.
 *
 * The caller sends 9 bytes — a mode (1: the server discards `bytes` bytes, then answers one byte;
 * 2: the server sends `bytes` bytes) and a big-endian uint64 count — then the data. Members only
 * (like every zhsm protocol); at most PROBE_BYTES_MAX per call.
 */
import type { Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { Uint8ArrayList } from 'uint8arraylist';
import { ClosedError, InvalidArgumentError, PermissionDeniedError } from '../common/errors.ts';
import { streamChunks, writeRaw } from './frames.ts';
import type { Host } from './host.ts';
import { admitPeer } from './rpc.ts';

export const probeProtocol = '/zhsm/probe/1.0.0';
export const PROBE_BYTES_MAX = 64 * 1024 * 1024 * 1024;
const SEND_BYTES = 1024 * 1024;
const MODE_SINK = 1;
const MODE_SOURCE = 2;

export async function serveProbe(host: Host): Promise<{ stop(): Promise<void> }> {
  await host.libp2p.handle(
    probeProtocol,
    (stream, connection) => {
      void (async () => {
        if (!(await admitPeer(host, connection.remotePeer.toString(), false))) {
          host.counters.refusedStreams += 1;
          stream.abort(new PermissionDeniedError('not a member of the cell'));
          return;
        }
        await answer(stream);
      })().catch((error: unknown) => stream.abort(error instanceof Error ? error : new Error(String(error))));
    },
    { maxInboundStreams: 4 },
  );
  return { stop: () => host.libp2p.unhandle(probeProtocol) };
}

async function answer(stream: Stream): Promise<void> {
  const buffered = new Uint8ArrayList();
  let header: { mode: number; bytes: number } | undefined;
  let received = 0;
  for await (const chunk of streamChunks(stream)) {
    if (header === undefined) {
      buffered.append(chunk);
      if (buffered.byteLength < 9) continue;
      const head = buffered.subarray(0, 9);
      const bytes = Number(new DataView(head.buffer, head.byteOffset, 9).getBigUint64(1));
      header = { mode: head[0]!, bytes };
      if ((header.mode !== MODE_SINK && header.mode !== MODE_SOURCE) || bytes > PROBE_BYTES_MAX)
        throw new InvalidArgumentError('bad probe request');
      received = buffered.byteLength - 9;
      if (header.mode === MODE_SOURCE) break;
    } else {
      received += chunk.byteLength;
    }
    if (header.mode === MODE_SINK && received >= header.bytes) break;
  }
  if (header === undefined) throw new ClosedError('the probe ended before its request');
  if (header.mode === MODE_SINK) {
    await writeRaw(stream, new Uint8Array([1]));
  } else {
    const piece = new Uint8Array(SEND_BYTES).fill(0x5a);
    for (let sent = 0; sent < header.bytes; sent += SEND_BYTES) {
      await writeRaw(stream, piece.subarray(0, Math.min(SEND_BYTES, header.bytes - sent)));
    }
  }
  await stream.close();
}

function request(mode: number, bytes: number): Uint8Array {
  const head = new Uint8Array(9);
  head[0] = mode;
  new DataView(head.buffer).setBigUint64(1, BigInt(bytes));
  return head;
}

async function open(host: Host, peer: string): Promise<Stream> {
  return peer.startsWith('/')
    ? host.libp2p.dialProtocol(multiaddr(peer), probeProtocol)
    : host.libp2p.dialProtocol((await import('@libp2p/peer-id')).peerIdFromString(peer), probeProtocol);
}

/** Upload `bytes` to `peer` on a raw stream; resolves with the seconds taken (until its ack). */
export async function probeUpload(host: Host, peer: string, bytes: number): Promise<number> {
  const stream = await open(host, peer);
  const started = performance.now();
  await writeRaw(stream, request(MODE_SINK, bytes));
  const piece = new Uint8Array(SEND_BYTES).fill(0xa5);
  for (let sent = 0; sent < bytes; sent += SEND_BYTES)
    await writeRaw(stream, piece.subarray(0, Math.min(SEND_BYTES, bytes - sent)));
  for await (const _ of streamChunks(stream)) break;
  const seconds = (performance.now() - started) / 1000;
  await stream.close().catch(() => {});
  return seconds;
}

/** Download `bytes` from `peer` on a raw stream; resolves with the seconds taken. */
export async function probeDownload(host: Host, peer: string, bytes: number): Promise<number> {
  const stream = await open(host, peer);
  const started = performance.now();
  await writeRaw(stream, request(MODE_SOURCE, bytes));
  await stream.close();
  let received = 0;
  for await (const chunk of streamChunks(stream)) received += chunk.byteLength;
  if (received !== bytes) throw new ClosedError(`probe download: ${received} of ${bytes} bytes`);
  return (performance.now() - started) / 1000;
}
