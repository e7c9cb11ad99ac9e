/**
 * Routing benchmark (`npm run bench -- relay`): client <-> storage server throughput directly,
 * through one zhsm relay, and through a bare libp2p circuit-relay hop between the same processes
 * (the limit the zhsm path is measured against; target >= 0.9).
 *
 * Processes: S (`zhsm-node`: controller 1 and storage server, one backend), R (`zhsm-node`, a plain
 * member that relays) and the client, a node in this process. All on loopback; to make the client
 * need the relay, R announces a route from subnet 10.255.255.0/24 (at its loopback address) and
 * the client switches its own view of the network to that subnet: S is then not reachable from
 * the client's subnet and routing (node/daemon/routing.ts) sends every byte through R, exactly as
 * between real subnets. The direct rows use the client's real view.
 *
 * Rows per direction, 256 MiB each, two rounds interleaved:
 * - raw stream direct (`/zhsm/probe`), zhsm file write/read direct (cell client, 1 replica);
 * - bare relay hop: the same raw stream on the relayed connection;
 * - zhsm file write/read through the relay.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { CellClient } from '../node/client/cell-client.ts';
import { adminRequest } from '../node/daemon/admin-client.ts';
import type { StatusReport } from '../node/daemon/node.ts';
import { ZhsmNode } from '../node/daemon/node.ts';
import { localNetwork } from '../node/daemon/routing.ts';
import { probeDownload, probeUpload } from '../node/net/probe.ts';
import { cli, kill, LOOPBACK, type Proc, start, waitFor } from './_procs.ts';
import { median, printTable, round } from './_table.ts';
import type { BenchResult } from './run.ts';

const MiB = 1024 * 1024;
const FILE_BYTES = 256 * MiB;
const PIECE_BYTES = 8 * MiB;
const ROUNDS = 2;
const CLIENT_SUBNET = '10.255.255.0/24';
const caller = { uid: 0, gid: 0 };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

/** Write then read back a file through the cell client; MiB/s each, bytes checked. */
async function fileRound(
  fs: CellClient,
  path: string,
  tag: number,
): Promise<{ write: number; read: number }> {
  const block = new Uint8Array(randomBytes(PIECE_BYTES));
  const pieceOf = (offset: number) => {
    block[0] = offset / PIECE_BYTES;
    block[1] = tag;
    return block;
  };
  let started = performance.now();
  const handle = await fs.create(path, 0o644, caller, { mode: 'write' });
  for (let offset = 0; offset < FILE_BYTES; offset += PIECE_BYTES)
    await handle.write(offset, pieceOf(offset));
  await handle.close();
  const write = FILE_BYTES / MiB / ((performance.now() - started) / 1000);
  started = performance.now();
  const reader = await fs.open(path, { mode: 'read' });
  const inFlight = 4;
  for (let offset = 0; offset < FILE_BYTES; offset += PIECE_BYTES * inFlight) {
    const at = Array.from({ length: inFlight }, (_, i) => offset + i * PIECE_BYTES).filter(
      (s) => s < FILE_BYTES,
    );
    const pieces = await Promise.all(at.map((s) => reader.read(s, PIECE_BYTES)));
    pieces.forEach((piece, i) => {
      if (Buffer.compare(piece, pieceOf(at[i]!)) !== 0)
        throw new Error(`read back different bytes at ${at[i]}`);
    });
  }
  await reader.close();
  const read = FILE_BYTES / MiB / ((performance.now() - started) / 1000);
  await fs.unlink(path);
  return { write, read };
}

export async function run(): Promise<BenchResult> {
  const base = mkdtempSync(join(tmpdir(), 'zhsm-bench-relay-'));
  const server: Proc = { name: 's', data: join(base, 's'), peerId: '', addresses: [] };
  const relay: Proc = { name: 'r', data: join(base, 'r'), peerId: '', addresses: [] };
  let client: ZhsmNode | undefined;
  try {
    const init = await cli([
      'init',
      '--data',
      server.data,
      '--cell',
      'relaybench',
      '--backend',
      join(base, 's-backend'),
      '--listen',
      LOOPBACK,
    ]);
    await start(server);
    const port = await freePort();
    const relayAddress = `/ip4/127.0.0.1/tcp/${port}`;
    await cli([
      'join',
      server.addresses[0]!,
      '--token',
      init.token as string,
      '--data',
      relay.data,
      '--listen',
      relayAddress,
      '--route',
      `${CLIENT_SUBNET}=${relayAddress}`,
    ]);
    await start(relay);
    const clientData = join(base, 'client');
    await ZhsmNode.join({
      peer: server.addresses[0]!,
      token: init.token as string,
      data: clientData,
      listen: [LOOPBACK],
    });
    client = await ZhsmNode.start(clientData);
    const node = client;
    await waitFor('the storage server registered', async () =>
      (await node.remote.metadata.backends()).length === 1 ? true : undefined,
    );
    // S holds a reservation on R (R reaches a subnet S is not on) once it knows R's route.
    await waitFor('the reservation on the relay', async () => {
      const reply = await adminRequest<{ status: StatusReport }>(server.data, { op: 'status' });
      return reply.status.relayReservations.includes(relay.peerId) ? true : undefined;
    });
    const fs = new CellClient(node.remote, { replicas: 1 });
    const serverId = peerIdFromString(server.peerId);
    const realView = localNetwork();
    const relayedView = { routes: [], subnets: ['10.255.255.7/24'], hostname: 'bench-relay-client' };
    const circuit = `${relayAddress}/p2p/${relay.peerId}/p2p-circuit/p2p/${server.peerId}`;
    const useView = async (view: typeof realView) => {
      node.directory.setSelf(node.peerId, view);
      await node.host.libp2p.hangUp(serverId);
      // The raw probes dial by peer id: give libp2p the addresses of the new view at once.
      await node.directory.remember(node.host, server.peerId);
    };
    const pathToServer = () =>
      node.host.libp2p
        .getConnections(serverId)
        .map((c) => (c.remoteAddr.toString().includes('/p2p-circuit') ? 'relayed' : 'direct'));
    const describeConnections = () =>
      node.host.libp2p
        .getConnections(serverId)
        .map((c) => `${c.direction} ${c.remoteAddr.toString()}`)
        .join('; ');

    const samples: Record<string, number[]> = {};
    const add = (key: string, value: number) => {
      samples[key] ??= [];
      samples[key].push(value);
    };
    // Warm up both paths.
    await probeUpload(node.host, server.peerId, 32 * MiB);
    for (let r = 0; r < ROUNDS; r++) {
      await useView(realView);
      add('rawDirectUp', FILE_BYTES / MiB / (await probeUpload(node.host, server.peerId, FILE_BYTES)));
      add('rawDirectDown', FILE_BYTES / MiB / (await probeDownload(node.host, server.peerId, FILE_BYTES)));
      const direct = await fileRound(fs, `/direct-${r}`, r);
      add('zhsmDirectWrite', direct.write);
      add('zhsmDirectRead', direct.read);
      if (!pathToServer().includes('direct'))
        throw new Error(
          `the direct rows did not run direct: ${describeConnections()} paths ${JSON.stringify(node.directory.pathsTo(server.peerId))}`,
        );

      await useView(relayedView);
      const relayed = await fileRound(fs, `/relayed-${r}`, 100 + r);
      add('zhsmRelayWrite', relayed.write);
      add('zhsmRelayRead', relayed.read);
      const paths = pathToServer();
      if (paths.length === 0 || paths.some((p) => p !== 'relayed'))
        throw new Error(`the relayed rows did not go through the relay: ${paths}`);
      // The bare hop: a raw stream on the same relayed connection (same processes, same relay).
      add('rawRelayUp', FILE_BYTES / MiB / (await probeUpload(node.host, circuit, FILE_BYTES)));
      add('rawRelayDown', FILE_BYTES / MiB / (await probeDownload(node.host, circuit, FILE_BYTES)));
    }
    await useView(realView);
    const m = (key: string) => round(median(samples[key]!), 1);
    const figures = {
      raw_direct_upload_MiBps: m('rawDirectUp'),
      raw_direct_download_MiBps: m('rawDirectDown'),
      zhsm_direct_write_MiBps: m('zhsmDirectWrite'),
      zhsm_direct_read_MiBps: m('zhsmDirectRead'),
      bare_relay_upload_MiBps: m('rawRelayUp'),
      bare_relay_download_MiBps: m('rawRelayDown'),
      zhsm_relay_write_MiBps: m('zhsmRelayWrite'),
      zhsm_relay_read_MiBps: m('zhsmRelayRead'),
    };
    const ratios = {
      relay_write_vs_bare_hop: round(figures.zhsm_relay_write_MiBps / figures.bare_relay_upload_MiBps),
      relay_read_vs_bare_hop: round(figures.zhsm_relay_read_MiBps / figures.bare_relay_download_MiBps),
      relay_write_vs_direct: round(figures.zhsm_relay_write_MiBps / figures.zhsm_direct_write_MiBps),
      relay_read_vs_direct: round(figures.zhsm_relay_read_MiBps / figures.zhsm_direct_read_MiBps),
    };
    printTable(
      `client <-> storage server, ${FILE_BYTES / MiB} MiB per run, median of ${ROUNDS} (loopback; relay R)`,
      [
        {
          case: 'raw stream, direct',
          'write/up MiB/s': figures.raw_direct_upload_MiBps,
          'read/down MiB/s': figures.raw_direct_download_MiBps,
          ratio: '',
          target: '',
        },
        {
          case: 'zhsm file, direct',
          'write/up MiB/s': figures.zhsm_direct_write_MiBps,
          'read/down MiB/s': figures.zhsm_direct_read_MiBps,
          ratio: '',
          target: '',
        },
        {
          case: 'bare relay hop (raw stream)',
          'write/up MiB/s': figures.bare_relay_upload_MiBps,
          'read/down MiB/s': figures.bare_relay_download_MiBps,
          ratio: '',
          target: '',
        },
        {
          case: 'zhsm file, through the relay',
          'write/up MiB/s': figures.zhsm_relay_write_MiBps,
          'read/down MiB/s': figures.zhsm_relay_read_MiBps,
          ratio: `${ratios.relay_write_vs_bare_hop} / ${ratios.relay_read_vs_bare_hop} of the bare hop`,
          target: '>= 0.9',
        },
      ],
    );
    return { figures, ratios };
  } finally {
    await client?.stop().catch(() => {});
    await kill(relay, 'SIGTERM');
    await kill(server, 'SIGTERM');
    rmSync(base, { recursive: true, force: true });
  }
}
