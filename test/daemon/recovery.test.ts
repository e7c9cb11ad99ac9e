/**
 * Recovery of a running cell, with in-process daemons on loopback (test/daemon/_inprocess.ts):
 * - a controller that was down while the primary compacted its log catches up through an
 *   InstallSnapshot, keeps its listen port and votes again;
 * - a storage server that crashes (no deregistration): every file reads back from the surviving
 *   copies, new files are still written; restarted, it re-registers and serves its old chunks;
 * - a storage server that hangs (accepts connections, never answers) costs a client one dial
 *   timeout, not one per chunk: the client tries the other copies first and writes elsewhere;
 * - a storage server stopped in order is marked offline, new files avoid it, and it comes back
 *   online with the same UUID and backends;
 * - a change of primary makes the storage servers register with the new primary; the old primary,
 *   restarted, keeps its port, catches up and leads again.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { CellClient } from '../../node/client/cell-client.ts';
import { readConfig } from '../../node/daemon/config.ts';
import type { ZhsmNode } from '../../node/daemon/node.ts';
import { patternBytes } from '../helpers.ts';
import { joinNode, restartNode, startCell } from './_inprocess.ts';

const caller = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
const MiB = 1024 * 1024;
const PIECE = 4 * MiB;
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `probe` until it returns something other than undefined (errors count as not yet). */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError === undefined ? '' : `: ${(lastError as Error).message}`}`,
      );
    await sleep(50);
  }
}

/** The TCP port of a node's loopback address. */
function portOf(node: ZhsmNode): number {
  const address = node.host
    .multiaddrs()
    .map(String)
    .find((a) => a.includes('/ip4/127.0.0.1/tcp/'));
  const port = address?.match(/\/tcp\/(\d+)/)?.[1];
  assert.ok(port !== undefined, 'the node listens on loopback');
  return Number(port);
}

async function writeFile(fs: CellClient, path: string, bytes: Uint8Array): Promise<void> {
  const handle = await fs.create(path, 0o644, caller, { mode: 'write', exclusive: true });
  for (let offset = 0; offset < bytes.length; offset += PIECE)
    await handle.write(offset, bytes.subarray(offset, Math.min(bytes.length, offset + PIECE)));
  await handle.close();
}

async function readWhole(fs: CellClient, path: string): Promise<Buffer> {
  const handle = await fs.open(path, { mode: 'read' });
  try {
    const size = (await handle.attributes()).size;
    const parts: Uint8Array[] = [];
    for (let offset = 0; offset < size; offset += PIECE)
      parts.push(await handle.read(offset, Math.min(PIECE, size - offset)));
    return Buffer.concat(parts);
  } finally {
    await handle.close();
  }
}

/** Controllers 1..3 are voters and every one has applied what the primary committed. */
async function waitForVoters(primary: ZhsmNode, controllers: readonly ZhsmNode[]): Promise<void> {
  await waitFor('3 voters, all caught up', async () => {
    const status = primary.controller!.replica.status();
    if (status.membership.voters.length !== 3) return undefined;
    return controllers.every((c) => c.controller!.replica.machine.appliedIndex >= status.commitIndex)
      ? true
      : undefined;
  });
}

async function waitForServers(client: ZhsmNode, count: number): Promise<void> {
  await waitFor(`${count} storage servers online`, async () => {
    const found = await client.remote.refreshServers();
    return found.servers.filter((s) => s.online).length === count && found.backends.length === count
      ? true
      : undefined;
  });
}

/** A cell of one controller (no backend), `servers` storage servers and a client node. */
async function storageCell(t: TestContext, servers: number) {
  const cell = await startCell(t, { backend: false });
  const storage: ZhsmNode[] = [];
  for (let i = 1; i <= servers; i++) storage.push(await joinNode(t, cell, `s${i}`, { backend: true }));
  const client = await joinNode(t, cell, 'client');
  await waitForServers(client, servers);
  return { cell, storage, client, fs: new CellClient(client.remote) };
}

/** Write the test's files: small ones and some of several 4 MiB chunks. Returns path -> sha256. */
async function writeFiles(fs: CellClient, directory: string, seed: number): Promise<Map<string, string>> {
  const expected = new Map<string, string>();
  await fs.mkdir(directory, 0o755, caller);
  const sizes = [9 * MiB + 123, 12 * MiB, 1, 0, 4 * MiB, 70_000, 300_001, 8 * MiB + 1, 5_000];
  for (const [i, size] of sizes.entries()) {
    const bytes = patternBytes(size, seed + i);
    const path = `${directory}/f${i}`;
    await writeFile(fs, path, bytes);
    expected.set(path, sha256(bytes));
  }
  return expected;
}

/** Chunk id -> backends holding a current copy (from the primary's metadata). */
async function chunkCopies(client: ZhsmNode, fs: CellClient, paths: Iterable<string>) {
  const copies = new Map<string, { id: Uint8Array; size: number; hash: Uint8Array; backends: string[] }>();
  for (const path of paths) {
    for (const chunk of (await fs.resolve(path)).chunks) {
      const locations = await client.remote.metadata.locations(chunk.id);
      copies.set(hex(chunk.id), {
        id: chunk.id,
        size: chunk.size,
        hash: chunk.hash,
        backends: locations.filter((l) => l.location.current).map((l) => hex(l.backend)),
      });
    }
  }
  return copies;
}

const backendOf = (node: ZhsmNode) => [...node.storage!.backends.keys()][0]!;

test('a controller that was down catches up through an InstallSnapshot', { timeout: 60_000 }, async (t) => {
  // The primary and controller 2 compact every 50 entries; controller 3 never does in this test,
  // so a snapshot it holds came from the primary.
  const compacting = { snapshotEveryEntries: 50 };
  const cell = await startCell(t, { backend: false, start: compacting });
  const c1 = cell.first;
  const c2 = await joinNode(t, cell, 'c2', { controller: true, start: compacting });
  const c3 = await joinNode(t, cell, 'c3', { controller: true });
  await waitForVoters(c1, [c1, c2, c3]);
  const client = await joinNode(t, cell, 'client');
  const fs = new CellClient(client.remote);
  await fs.mkdir('/before', 0o755, caller);
  await waitForVoters(c1, [c1, c2, c3]);
  assert.equal(c3.controller!.replica.status().snapshotIndex, 0, 'controller 3 has no snapshot yet');

  const c3Data = join(cell.base, 'c3');
  const c3Port = portOf(c3);
  const listen = (await readConfig(c3Data)).listen;
  assert.ok(
    listen.some((address) => address.endsWith(`/tcp/${c3Port}`)),
    `node.json keeps the bound port: ${listen.join(' ')}`,
  );
  const c3LastIndex = c3.controller!.replica.status().lastIndex;
  await c3.stop();

  // ~300 metadata changes while controller 3 is away (c1 + c2 are a majority).
  const started = Date.now();
  await fs.mkdir('/many', 0o755, caller);
  const names: string[] = [];
  for (let i = 0; i < 150; i++) {
    await fs.mkdir(`/many/d${i}`, 0o755, caller);
    names.push(`d${i}`);
  }
  for (let i = 0; i < 50; i++) {
    await (await fs.create(`/many/f${i}`, 0o644, caller, { mode: 'write', exclusive: true })).close();
    names.push(`f${i}`);
  }
  const leader = c1.controller!.replica.status();
  t.diagnostic(
    `${leader.commitIndex - c3LastIndex} log entries in ${Date.now() - started} ms while controller 3 was down`,
  );
  assert.equal(leader.role, 'leader');
  assert.ok(
    leader.snapshotIndex > c3LastIndex,
    `the primary compacted its log (snapshot at ${leader.snapshotIndex}) past controller 3's last entry (${c3LastIndex})`,
  );

  const restartedAt = Date.now();
  const c3b = await restartNode(t, c3Data);
  assert.equal(portOf(c3b), c3Port, 'controller 3 listens on its old port');
  const target = c1.controller!.replica.status().commitIndex;
  await waitFor('controller 3 to catch up', async () =>
    c3b.controller!.replica.machine.appliedIndex >= target ? true : undefined,
  );
  t.diagnostic(`controller 3 caught up ${Date.now() - restartedAt} ms after its restart`);
  const c3Status = c3b.controller!.replica.status();
  assert.ok(
    c3Status.snapshotIndex > c3LastIndex,
    `controller 3 installed the primary's snapshot (snapshot index ${c3Status.snapshotIndex})`,
  );

  // Its own state machine has the latest entries.
  const machine = c3b.controller!.replica.machine;
  const root = (await machine.cell())!.rootId;
  const many = await machine.lookup(root, 'many');
  assert.ok(many !== undefined, '/many is in controller 3 state machine');
  const listed = (await machine.readdir(many.id)).map((entry) => entry.name);
  assert.deepEqual(listed.sort(), [...names].sort());
  assert.ok((await machine.lookup(root, 'before')) !== undefined);

  // It votes again: with controller 2 stopped, nothing commits without it.
  await waitFor('controller 3 acknowledged by the primary', async () => {
    const status = c1.controller!.replica.status();
    return status.membership.voters.includes(3) &&
      (status.progress.get(3)?.matchIndex ?? 0) >= status.commitIndex
      ? true
      : undefined;
  });
  await c2.stop();
  await fs.mkdir('/without-c2', 0o755, caller);
  await waitFor('controller 3 applied the write made without controller 2', async () =>
    (await machine.lookup(root, 'without-c2')) !== undefined ? true : undefined,
  );
});

test('a crashed storage server: files read from the other copies, writes go on, it comes back', {
  timeout: 60_000,
}, async (t) => {
  const { cell, storage, client, fs } = await storageCell(t, 3);
  const expected = await writeFiles(fs, '/data', 100);

  // Crash the server with the most chunk copies.
  const copies = await chunkCopies(client, fs, expected.keys());
  const count = (node: ZhsmNode) =>
    [...copies.values()].filter((c) => c.backends.includes(backendOf(node))).length;
  const victim = [...storage].sort((a, b) => count(b) - count(a))[0]!;
  const victimIndex = storage.indexOf(victim);
  const victimBackend = backendOf(victim);
  const victimUuid = hex(victim.storage!.serverUuid);
  t.diagnostic(`${copies.size} chunks; crashing s${victimIndex + 1}, which holds ${count(victim)} of them`);
  assert.ok(count(victim) > 0);
  for (const [id, chunk] of copies) {
    assert.equal(chunk.backends.length, 2, `chunk ${id} has 2 copies`);
    assert.ok(
      chunk.backends.some((b) => b !== victimBackend),
      `chunk ${id} has a copy on another server`,
    );
  }
  const baseline = new CellClient(client.remote);
  const baselineStarted = Date.now();
  for (const [path, digest] of expected) assert.equal(sha256(await readWhole(baseline, path)), digest, path);
  t.diagnostic(`read ${expected.size} files with every server up in ${Date.now() - baselineStarted} ms`);

  const crashedAt = Date.now();
  await victim.stop({ deregister: false });
  const servers = await client.remote.refreshServers();
  assert.equal(
    servers.servers.find((s) => hex(s.uuid) === victimUuid)?.online,
    true,
    'a crashed server stays listed as online',
  );

  // Every file reads back from the surviving copies (a fresh client: no cached locations).
  const reader = new CellClient(client.remote);
  let slowestMs = 0;
  const readStarted = Date.now();
  for (const [path, digest] of expected) {
    const started = Date.now();
    assert.equal(sha256(await readWhole(reader, path)), digest, path);
    slowestMs = Math.max(slowestMs, Date.now() - started);
  }
  t.diagnostic(
    `read ${expected.size} files with a dead replica in ${Date.now() - readStarted} ms (slowest ${slowestMs} ms)`,
  );
  assert.ok(slowestMs < 5_000, `a read does not wait long for the dead server (${slowestMs} ms)`);

  // New files are written on live servers.
  const writeStarted = Date.now();
  const after = await writeFiles(fs, '/after-crash', 200);
  t.diagnostic(
    `wrote ${after.size} files with a dead server listed online in ${Date.now() - writeStarted} ms`,
  );
  for (const chunk of (await chunkCopies(client, fs, after.keys())).values()) {
    assert.equal(chunk.backends.length, 2, 'new chunks have 2 copies');
    assert.ok(!chunk.backends.includes(victimBackend), 'no new chunk is on the dead server');
  }
  for (const [path, digest] of after) assert.equal(sha256(await readWhole(fs, path)), digest, path);

  // Restarted, it registers again and serves its old chunks.
  const back = await restartNode(t, join(cell.base, `s${victimIndex + 1}`));
  assert.equal(hex(back.storage!.serverUuid), victimUuid);
  await waitFor('the restarted server to register again', async () => {
    const found = await client.remote.refreshServers();
    const record = found.servers.find((s) => hex(s.uuid) === victimUuid);
    return record?.online === true && record.lastSeenMs >= crashedAt && record.peerId === back.peerId
      ? true
      : undefined;
  });
  let served = 0;
  for (const chunk of copies.values()) {
    if (!chunk.backends.includes(victimBackend)) continue;
    const bytes = await client.remote.readChunk(
      Buffer.from(victimBackend, 'hex'),
      chunk.id,
      0,
      chunk.size,
      chunk.hash,
    );
    assert.equal(bytes.length, chunk.size);
    served += 1;
  }
  assert.equal(served, count(victim));
  for (const [path, digest] of expected) assert.equal(sha256(await readWhole(reader, path)), digest, path);
});

test('a hung storage server costs one dial timeout, not one per chunk', { timeout: 60_000 }, async (t) => {
  const { storage, client, fs } = await storageCell(t, 3);
  const expected = await writeFiles(fs, '/data', 500);
  // The server listed first (tried first) for the most chunks.
  const copies = await chunkCopies(client, fs, expected.keys());
  const first = (node: ZhsmNode) =>
    [...copies.values()].filter((c) => c.backends[0] === backendOf(node)).length;
  const victim = [...storage].sort((a, b) => first(b) - first(a))[0]!;
  const victimBackend = backendOf(victim);
  assert.ok(first(victim) > 1, 'the hung server is the first copy of several chunks');
  const port = portOf(victim);
  await victim.stop({ deregister: false });
  // Its port now accepts connections and never answers (a hung host, or one whose packets vanish).
  const sockets = new Set<Socket>();
  const hung = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => hung.listen(port, '127.0.0.1', resolve));
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => hung.close(resolve));
  });

  const reader = new CellClient(client.remote);
  const latencies: number[] = [];
  for (const [path, digest] of expected) {
    const started = Date.now();
    assert.equal(sha256(await readWhole(reader, path)), digest, path);
    latencies.push(Date.now() - started);
  }
  t.diagnostic(`read latencies with a hung replica (ms, in order): ${latencies.join(' ')}`);
  const slow = latencies.filter((ms) => ms > 4_000);
  assert.equal(slow.length, 1, 'only the first read that meets the hung server waits for it');
  assert.ok(slow[0]! < 20_000, 'that read ends within a dial timeout');

  const writeLatencies: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    await writeFile(fs, `/data/new${i}`, patternBytes(5 * MiB, 600 + i));
    writeLatencies.push(Date.now() - started);
  }
  t.diagnostic(`write latencies with a hung server listed online (ms): ${writeLatencies.join(' ')}`);
  assert.ok(
    writeLatencies.slice(1).every((ms) => ms < 3_000),
    'later writes do not wait for it',
  );
  const newCopies = await chunkCopies(client, fs, ['/data/new0', '/data/new1', '/data/new2']);
  for (const chunk of newCopies.values()) {
    assert.equal(chunk.backends.length, 2);
    assert.ok(!chunk.backends.includes(victimBackend));
  }
});

test('a storage server stopped in order is offline, avoided, and returns with the same identity', {
  timeout: 60_000,
}, async (t) => {
  const { cell, storage, client, fs } = await storageCell(t, 3);
  const expected = await writeFiles(fs, '/data', 300);
  // Stop the server with the most chunk copies.
  const copies = await chunkCopies(client, fs, expected.keys());
  const count = (node: ZhsmNode) =>
    [...copies.values()].filter((c) => c.backends.includes(backendOf(node))).length;
  const s2 = [...storage].sort((a, b) => count(b) - count(a))[0]!;
  const s2Name = `s${storage.indexOf(s2) + 1}`;
  const uuid = hex(s2.storage!.serverUuid);
  const backends = [...s2.storage!.backends.keys()].sort();
  const before = await client.remote.refreshServers();
  const registeredMs = before.servers.find((s) => hex(s.uuid) === uuid)!.registeredMs;

  const stoppedAt = Date.now();
  await s2.stop();
  const stopped = await client.remote.refreshServers();
  assert.equal(stopped.servers.find((s) => hex(s.uuid) === uuid)?.online, false, 'deregistered: offline');

  for (const [path, digest] of expected) assert.equal(sha256(await readWhole(fs, path)), digest, path);
  const during = await writeFiles(fs, '/during', 400);
  for (const chunk of (await chunkCopies(client, fs, during.keys())).values())
    assert.ok(!chunk.backends.includes(backends[0]!), 'no new chunk is on the offline server');

  const back = await restartNode(t, join(cell.base, s2Name));
  await waitFor(`${s2Name} online again`, async () => {
    const found = await client.remote.refreshServers();
    const record = found.servers.find((s) => hex(s.uuid) === uuid);
    if (record?.online !== true || record.lastSeenMs < stoppedAt) return undefined;
    assert.equal(record.peerId, s2.peerId, 'same peer id');
    assert.equal(record.registeredMs, registeredMs, 'the same server record, registered again');
    assert.deepEqual(
      found.backends
        .filter((b) => hex(b.serverUuid) === uuid)
        .map((b) => hex(b.uuid))
        .sort(),
      backends,
      'same backends',
    );
    return true;
  });
  assert.equal(hex(back.storage!.serverUuid), uuid);
  // It serves its old chunks.
  let served = 0;
  for (const chunk of copies.values()) {
    if (!chunk.backends.includes(backends[0]!)) continue;
    const bytes = await client.remote.readChunk(
      Buffer.from(backends[0]!, 'hex'),
      chunk.id,
      0,
      chunk.size,
      chunk.hash,
    );
    assert.equal(bytes.length, chunk.size);
    served += 1;
  }
  t.diagnostic(`the restarted server served ${served} old chunks`);
  assert.equal(served, count(s2));
  assert.ok(served > 0);
});

test('storage servers register with a new primary; the old primary returns on its port', {
  timeout: 60_000,
}, async (t) => {
  const cell = await startCell(t, { backend: false });
  const c1 = cell.first;
  const c2 = await joinNode(t, cell, 'c2', { controller: true });
  const c3 = await joinNode(t, cell, 'c3', { controller: true });
  await waitForVoters(c1, [c1, c2, c3]);
  const servers = [
    await joinNode(t, cell, 's1', { backend: true }),
    await joinNode(t, cell, 's2', { backend: true }),
  ];
  const client = await joinNode(t, cell, 'client');
  await waitForServers(client, 2);
  const fs = new CellClient(client.remote);
  const expected = new Map<string, string>();
  await fs.mkdir('/data', 0o755, caller);
  for (let i = 0; i < 4; i++) {
    const bytes = patternBytes(i === 0 ? 9 * MiB : 50_000 + i, 500 + i);
    await writeFile(fs, `/data/f${i}`, bytes);
    expected.set(`/data/f${i}`, sha256(bytes));
  }
  const c1Port = portOf(c1);
  const uuids = servers.map((s) => hex(s.storage!.serverUuid));

  const stoppedAt = Date.now();
  await c1.stop();
  const registered = await waitFor('both servers registered with the new primary', async () => {
    if (!c2.controller!.replica.isLeader) return undefined;
    const records = await c2.controller!.replica.machine.servers();
    const fresh = uuids.every((uuid) => {
      const record = records.find((r) => hex(r.uuid) === uuid);
      return record?.online === true && record.lastSeenMs >= stoppedAt;
    });
    const told = servers.every((s) => s.storage!.registeredWith?.startsWith(`${c2.peerId}/`) === true);
    return fresh && told ? Date.now() : undefined;
  });
  t.diagnostic(`storage servers registered with controller 2 ${registered - stoppedAt} ms after stopping c1`);
  for (const [path, digest] of expected) assert.equal(sha256(await readWhole(fs, path)), digest, path);
  await fs.mkdir('/after-failover', 0o755, caller);

  // The old primary returns on its port, catches up and (lowest id) leads again.
  const c1b = await restartNode(t, join(cell.base, 'c1'));
  assert.equal(portOf(c1b), c1Port, 'controller 1 listens on its old port');
  const back = await waitFor('controller 1 leads again, caught up', async () => {
    const status = c1b.controller!.replica.status();
    return status.role === 'leader' && c1b.controller!.replica.machine.appliedIndex >= status.commitIndex
      ? Date.now()
      : undefined;
  });
  t.diagnostic(`controller 1 leads again ${back - stoppedAt} ms after it was stopped`);
  assert.equal(c1b.controller!.replica.status().membership.voters.length, 3);
  await waitFor('both servers registered with controller 1 again', async () =>
    servers.every((s) => s.storage!.registeredWith?.startsWith(`${c1b.peerId}/`) === true) ? true : undefined,
  );
  await fs.mkdir('/after-return', 0o755, caller);
  const root = (await c1b.controller!.replica.machine.cell())!.rootId;
  assert.ok((await c1b.controller!.replica.machine.lookup(root, 'after-failover')) !== undefined);
});

test('the primary marks a storage server offline once it stops re-registering', {
  timeout: 60_000,
}, async (t) => {
  // Short windows for the test: servers re-register every 300 ms, the primary gives up after 3 s.
  const cell = await startCell(t, { backend: false, start: { serverStaleMs: 3_000 } });
  const fast = { storageHeartbeatMs: 300 };
  const alive = await joinNode(t, cell, 's1', { backend: true, start: fast });
  const victim = await joinNode(t, cell, 's2', { backend: true, start: fast });
  const client = await joinNode(t, cell, 'client');
  await waitForServers(client, 2);
  const victimUuid = hex(victim.storage!.serverUuid);
  const aliveUuid = hex(alive.storage!.serverUuid);
  const crashedAt = Date.now();
  await victim.stop({ deregister: false });
  for (;;) {
    const servers = await client.remote.metadata.servers();
    const record = servers.find((s) => hex(s.uuid) === victimUuid);
    if (record !== undefined && !record.online) break;
    assert.ok(Date.now() - crashedAt < 20_000, 'the crashed server is marked offline within 20 s');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  t.diagnostic(`the crashed server was marked offline ${Date.now() - crashedAt} ms after it stopped`);
  // The live one keeps re-registering and stays online well past the stale window.
  await new Promise((resolve) => setTimeout(resolve, 4_000));
  const servers = await client.remote.metadata.servers();
  assert.equal(servers.find((s) => hex(s.uuid) === aliveUuid)?.online, true);
});
