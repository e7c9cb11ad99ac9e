/**
 * The peer daemon end to end, with real processes on loopback: 3 controllers and 3 storage
 * servers started with `zhsm-node init/join/start`, a client node in the test process.
 * Writes 200 files (one of 256 MiB), SIGKILLs the primary, measures the failover (kill to the
 * first successful metadata write), checks every file, restarts the old primary and checks that
 * it catches up and takes the lead back (lowest id).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { CellClient } from '../../node/client/cell-client.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import { tempDirectory } from '../helpers.ts';
import {
  initCell,
  joinNode,
  LOOPBACK,
  type NodeProcess,
  newNode,
  startNode,
  status,
  stopNode,
  waitFor,
} from './_cell.ts';

const caller = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
const MiB = 1024 * 1024;
const BIG_BYTES = 256 * MiB;
const PIECE = 8 * MiB;

/** Deterministic pseudo-random bytes for file `seed` at `offset` (xorshift on 32-bit words). */
function contentPiece(seed: number, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, Math.floor(length / 4));
  let x = (seed * 0x9e3779b1 + Math.floor(offset / 4) * 0x85ebca6b + 1) >>> 0;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < length; i++) out[i] = (seed + i) & 0xff;
  return out;
}

async function writeFile(fs: CellClient, path: string, seed: number, size: number): Promise<string> {
  const hash = createHash('sha256');
  const handle = await fs.create(path, 0o644, caller, { mode: 'write', exclusive: true });
  for (let offset = 0; offset < size; offset += PIECE) {
    const piece = contentPiece(seed, offset, Math.min(PIECE, size - offset));
    hash.update(piece);
    await handle.write(offset, piece);
  }
  await handle.close();
  return hash.digest('hex');
}

async function hashFile(fs: CellClient, path: string): Promise<string> {
  const hash = createHash('sha256');
  const handle = await fs.open(path, { mode: 'read' });
  const size = (await handle.attributes()).size;
  for (let offset = 0; offset < size; offset += PIECE) {
    hash.update(await handle.read(offset, Math.min(PIECE, size - offset)));
  }
  await handle.close();
  return hash.digest('hex');
}

test('a cell of 3 controllers and 3 storage servers survives the loss of its primary', {
  timeout: 480_000,
}, async (t) => {
  const base = tempDirectory(t, 'zhsm-cell-');
  const { first: c1, token } = await initCell(base, 'itest');
  await startNode(t, c1);
  const peer = c1.addresses.find((a) => a.includes('127.0.0.1'))!;
  const controllers: NodeProcess[] = [c1];
  for (const name of ['c2', 'c3']) {
    const node = newNode(base, name);
    const joined = await joinNode(node, peer, token, ['--controller']);
    assert.equal(joined.controllerId, controllers.length + 1, 'controller ids in join order');
    await startNode(t, node);
    controllers.push(node);
  }
  const servers: NodeProcess[] = [];
  for (const name of ['s1', 's2', 's3']) {
    const node = newNode(base, name);
    await joinNode(node, peer, token, ['--backend', join(base, `${name}-backend`)]);
    await startNode(t, node);
    servers.push(node);
  }
  const ready = await waitFor('3 voters and 3 online storage servers', async () => {
    const s = await status(c1);
    return s.voters.length === 3 && s.servers.filter((x) => x.online).length === 3 ? s : undefined;
  });
  assert.equal(ready.primary?.id, 1);
  assert.ok(ready.servers.every((s) => s.backends.length === 1 && s.backends[0]!.capacityBytes > 0));

  // The client: a member node in this process.
  const clientData = join(base, 'client');
  await ZhsmNode.join({ peer, token, data: clientData, listen: [LOOPBACK] });
  const client = await ZhsmNode.start(clientData);
  t.after(() => client.stop());
  const fs = new CellClient(client.remote);

  const expected = new Map<string, string>();
  await fs.mkdir('/data', 0o755, caller);
  const started = Date.now();
  expected.set('/data/big', await writeFile(fs, '/data/big', 1_000, BIG_BYTES));
  const bigSeconds = (Date.now() - started) / 1000;
  for (let i = 0; i < 199; i++) {
    const size = i % 10 === 0 ? 5 * MiB + i : (i * 7919) % 200_000;
    expected.set(`/data/f${i}`, await writeFile(fs, `/data/f${i}`, i, size));
  }
  t.diagnostic(
    `wrote 200 files; the 256 MiB one in ${bigSeconds.toFixed(1)} s (${(256 / bigSeconds).toFixed(0)} MiB/s, 2 replicas)`,
  );

  // Kill the primary.
  const killedAt = Date.now();
  await stopNode(c1, 'SIGKILL');
  await fs.mkdir('/after-failover', 0o755, caller);
  const failoverMs = Date.now() - killedAt;
  t.diagnostic(
    `failover: ${failoverMs} ms from SIGKILL of the primary to the first successful metadata write`,
  );
  console.log(`failover time: ${failoverMs} ms`);
  const after = await status(controllers[1]!);
  assert.equal(after.primary?.id, 2, 'the lowest remaining id leads');

  for (const [path, digest] of expected) assert.equal(await hashFile(fs, path), digest, path);
  for (let i = 0; i < 20; i++)
    expected.set(
      `/after-failover/g${i}`,
      await writeFile(fs, `/after-failover/g${i}`, 5000 + i, 100_000 + i),
    );

  // The old primary returns: it catches up and takes the lead back.
  await startNode(t, c1);
  const back = await waitFor(
    'controller 1 leads again, caught up',
    async () => {
      const s = await status(c1);
      const self = s.controllers.find((c) => c.id === 1);
      return s.primary?.id === 1 && self !== undefined && self.appliedIndex >= s.commitIndex - 5
        ? s
        : undefined;
    },
    60_000,
  );
  assert.equal(back.voters.length, 3);
  for (const [path, digest] of expected) assert.equal(await hashFile(fs, path), digest, path);
  expected.set('/final', await writeFile(fs, '/final', 9999, 12345));
  assert.equal(await hashFile(fs, '/final'), expected.get('/final'));
  assert.equal((await fs.readdir('/data')).length, 200);

  for (const node of [...servers, ...controllers])
    assert.equal(await stopNode(node), 0, `${node.name} stops cleanly`);
  await client.stop();
  await rm(base, { recursive: true, force: true });
});
