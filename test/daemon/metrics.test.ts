/**
 * Prometheus metrics (node/daemon/metrics.ts).
 *
 * Unit: the endpoint (GET /metrics, 404 elsewhere, 405, a port in use), address parsing, one
 * registry per node, the consensus/power/FUSE hooks' counting rules.
 *
 * A real cell of `zhsm-node` processes on loopback: c1 (controller 1, a backend tagged `cache`),
 * c2 (controller 2, mounting the cell with FUSE when this machine can), s1 (storage server, its
 * endpoint configured in node.json, with the `sim` power driver), a client node in this process.
 * A file is written and read; every node's /metrics is scraped over HTTP and checked: term,
 * indexes, role, replication lag to c2, elections, bytes per backend, served storage calls, cache
 * events, FUSE operation latencies. Then s1 sleeps when idle and a read wakes it: the primary's
 * power state changes and wake latency, and s1's endpoint again after its restart.
 *
 * Every process this test starts (and s1 as the sim driver restarts it) is killed at the end.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { type Metric, Registry } from 'prom-client';
import { CellClient } from '../../node/client/cell-client.ts';
import { parseConfig, parseMetricsAddress } from '../../node/daemon/config.ts';
import { NodeMetrics } from '../../node/daemon/metrics.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import { fuseSkipReason, isMounted } from '../fuse/harness.ts';
import { patternBytes, tempDirectory } from '../helpers.ts';
import { simProcesses } from '../hsm/_power.ts';
import {
  cli,
  initCell,
  joinNode,
  LOOPBACK,
  type NodeProcess,
  newNode,
  startNode,
  status,
  stopNode,
  waitFor,
  zhsmCli,
} from './_cell.ts';

const run = promisify(execFile);

interface Reply {
  status: number;
  type: string;
  body: string;
}

/** One HTTP request without connection reuse (nothing lingers after the test). */
function http(url: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, timeout: 10_000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (text: string) => {
        body += text;
      });
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, type: String(response.headers['content-type']), body }),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    assert.ok(match !== null, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const label of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[label[1]!] = label[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

class Scrape {
  readonly samples: Sample[];
  constructor(text: string) {
    this.samples = parseExposition(text);
  }
  /** Samples of `name` whose labels include `labels`. */
  all(name: string, labels: Record<string, string> = {}): Sample[] {
    return this.samples.filter(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
  }
  /** The sum of the matching samples; undefined when there are none. */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    const found = this.all(name, labels);
    return found.length === 0 ? undefined : found.reduce((sum, s) => sum + s.value, 0);
  }
}

async function scrape(url: string): Promise<Scrape> {
  const reply = await http(url);
  assert.equal(reply.status, 200, `GET ${url}: ${reply.body.slice(0, 200)}`);
  assert.match(reply.type, /^text\/plain; version=0\.0\.4/);
  return new Scrape(reply.body);
}

// ---- unit ---------------------------------------------------------------------------------------

test('metrics addresses: HOST:PORT or off, anything else refused with a clear message', async () => {
  assert.deepEqual(parseMetricsAddress('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.deepEqual(parseMetricsAddress('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
  assert.deepEqual(parseMetricsAddress('[::1]:9464'), { host: '::1', port: 9464 });
  assert.deepEqual(parseMetricsAddress('metrics.example.org:80'), { host: 'metrics.example.org', port: 80 });
  assert.equal(parseMetricsAddress('off'), undefined);
  for (const bad of [
    '9464',
    ':9464',
    '127.0.0.1',
    '127.0.0.1:70000',
    '999.1.1.1:80',
    '[zz]:80',
    'a b:1',
    '::1:80',
    '',
  ])
    assert.throws(() => parseMetricsAddress(bad), /invalid metrics address .*expected HOST:PORT/, bad);
  const config = (metrics: unknown) =>
    JSON.stringify({
      formatVersion: 1,
      cell: 'c',
      name: 'n',
      controllerId: 0,
      backends: [],
      listen: [],
      metrics,
    });
  assert.equal(parseConfig(config('127.0.0.1:0'), '/x/node.json').metrics, '127.0.0.1:0');
  assert.throws(
    () => parseConfig(config('localhost'), '/x/node.json'),
    /\/x\/node\.json: invalid metrics address/,
  );
  assert.throws(() => parseConfig(config(9464), '/x/node.json'), /metrics must be a string/);
  // The daemon refuses a bad --metrics before it starts anything: a usage error.
  await assert.rejects(
    cli(['start', '--data', '/nonexistent/zhsm-metrics', '--metrics', 'localhost']),
    (error: Error & { code?: number; stderr?: string }) =>
      error.code === 2 && /zhsm-node: invalid metrics address "localhost"/.test(error.stderr ?? ''),
  );
});

test('the endpoint: GET /metrics in the text format, 404 elsewhere, 405 for other methods', async (t) => {
  const base = tempDirectory(t, 'zhsm-metrics-');
  const one = new NodeMetrics();
  const two = new NodeMetrics();
  t.after(() => Promise.all([one.close(), two.close()]));
  const urlFile = join(base, 'metrics.url');
  const url = await one.serve({ host: '127.0.0.1', port: 0 }, { urlFile });
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  assert.equal(readFileSync(urlFile, 'utf8'), `${url}\n`);
  const other = await two.serve({ host: '127.0.0.1', port: 0 });

  // One registry per node: what one counts, the other does not show.
  one.backendBytes.inc({ backend: 'ab', path: '/b', direction: 'write' }, 5);
  one.fuseOperation('getattr', 0.002, 2);
  one.fuseOperation('read', 0.5, 0);
  const first = await scrape(url);
  assert.equal(first.value('zhsm_backend_bytes_total', { backend: 'ab', direction: 'write' }), 5);
  assert.equal(first.value('zhsm_fuse_operation_errors_total', { op: 'getattr', errno: 'ENOENT' }), 1);
  assert.equal(first.value('zhsm_fuse_operation_seconds_count', { op: 'read' }), 1);
  assert.ok((first.value('process_resident_memory_bytes') ?? 0) > 0, "Node's process metrics too");
  // No controller attached: no consensus metrics at all (not zeros).
  assert.equal(first.value('zhsm_raft_term'), undefined);
  assert.equal(first.value('zhsm_raft_elections_total'), undefined);
  assert.equal(first.value('zhsm_members'), 0);
  const second = await scrape(other);
  assert.equal(second.value('zhsm_backend_bytes_total'), undefined);

  assert.equal((await scrape(`${url}?x=1`)).value('zhsm_backend_bytes_total'), 5);
  for (const path of ['/', '/metric', '/metrics/', '/favicon.ico']) {
    const reply = await http(url.replace('/metrics', path));
    assert.equal(reply.status, 404, path);
  }
  assert.equal((await http(url, 'POST')).status, 405);
  const head = await http(url, 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');

  // A port in use: a clear error, nothing left listening.
  const port = Number(new URL(url).port);
  const third = new NodeMetrics();
  await assert.rejects(
    third.serve({ host: '127.0.0.1', port }),
    /cannot serve metrics on 127\.0\.0\.1:\d+: EADDRINUSE \(the port is in use/,
  );
  assert.equal(third.url, undefined);

  await one.close();
  assert.equal(existsSync(urlFile), false, 'close removes the URL file');
  assert.equal(one.url, undefined);
  await assert.rejects(http(url), /ECONNREFUSED/);
  // The port is free again.
  const probe = createServer();
  await new Promise<void>((resolve, reject) =>
    probe.once('error', reject).listen(port, '127.0.0.1', resolve),
  );
  await new Promise((resolve) => probe.close(resolve));
});

test('counting rules: elections, primaries, power changes and wake latency', async () => {
  const metrics = new NodeMetrics();
  // attach() registers these on controllers only: read them through a registry of their own.
  const registry = new Registry();
  for (const metric of [
    metrics.elections,
    metrics.leaderChanges,
    metrics.powerChanges,
    metrics.wakeSeconds,
    metrics.cacheEvents,
  ])
    registry.registerMetric(metric as Metric);
  const count = async (name: string, labels: Record<string, string> = {}) =>
    new Scrape(await registry.metrics()).value(name, labels);
  // A follower at term 3 after a restart: nothing counted.
  metrics.consensusChange({ hardState: { term: 3, votedFor: 1, commitIndex: 10 } });
  metrics.consensusChange({ softState: { role: 'preCandidate', leader: 0 } });
  // Pre-vote won: a candidate in term 4 (one election); a split vote: term 5 (another).
  metrics.consensusChange({
    softState: { role: 'candidate', leader: 0 },
    hardState: { term: 4, votedFor: 1, commitIndex: 10 },
  });
  metrics.consensusChange({ hardState: { term: 5, votedFor: 1, commitIndex: 10 } });
  metrics.consensusChange({ softState: { role: 'leader', leader: 1 } });
  assert.equal(await count('zhsm_raft_elections_total'), 2);
  assert.equal(await count('zhsm_raft_leader_changes_total'), 1);
  // Deposed by controller 2 at a higher term: a new primary, no election of this one.
  metrics.consensusChange({
    softState: { role: 'follower', leader: 2 },
    hardState: { term: 6, votedFor: 0, commitIndex: 11 },
  });
  // A single voter wins at once: leader and new term in one change.
  metrics.consensusChange({
    softState: { role: 'leader', leader: 1 },
    hardState: { term: 7, votedFor: 1, commitIndex: 11 },
  });
  assert.equal(await count('zhsm_raft_elections_total'), 3);
  assert.equal(await count('zhsm_raft_leader_changes_total'), 3);

  metrics.powerChange({ server: 's1', from: 'SLEEPING', to: 'WAKING' });
  metrics.powerChange({ server: 's1', from: 'WAKING', to: 'ON', wakeMs: 2_500 });
  assert.equal(await count('zhsm_power_state_changes_total', { server: 's1', to: 'ON' }), 1);
  assert.equal(await count('zhsm_power_state_changes_total', { to: 'WAKING' }), 1);
  assert.equal(await count('zhsm_power_wake_seconds_count'), 1);
  assert.equal(await count('zhsm_power_wake_seconds_sum'), 2.5);
  assert.equal(await count('zhsm_power_wake_seconds_bucket', { le: '2' }), 0);
  assert.equal(await count('zhsm_power_wake_seconds_bucket', { le: '5' }), 1);
  metrics.cacheEvent('hit');
  assert.equal(await count('zhsm_cache_events_total', { event: 'hit' }), 1);
});

// ---- a real cell ----------------------------------------------------------------------------------

/** The URL a daemon wrote to DIR/metrics.url (waits for it: written once the daemon serves). */
/** `promise`, or nothing after `ms`. */
function within(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function urlOf(node: NodeProcess, not?: string): Promise<string> {
  return waitFor(`${node.name}'s metrics.url`, async () => {
    const file = join(node.data, 'metrics.url');
    if (!existsSync(file)) return undefined;
    const url = readFileSync(file, 'utf8').trim();
    return url === '' || url === not ? undefined : url;
  });
}

test('a cell: every node serves metrics with plausible values', { timeout: 240_000 }, async (t) => {
  // One cleanup, registered first (after-hooks run in order): the mount goes before anything else
  // (removing the directory would walk into it), then the processes, then the directory.
  const base = mkdtempSync(join(tmpdir(), 'zhsm-metrics-cell-'));
  const cleanup: Array<() => Promise<unknown>> = [];
  t.after(async () => {
    for (const step of cleanup) await step().catch(() => {});
    rmSync(base, { recursive: true, force: true });
  });
  const METRICS = ['--metrics', '127.0.0.1:0'];
  const cacheDir = join(base, 'c1-cache');
  const { first: c1, token } = await initCell(base, 'metrics', [
    '--backend',
    cacheDir,
    '--tag',
    `${cacheDir}=cache`,
  ]);
  await startNode(t, c1, METRICS);
  const peer = c1.addresses.find((a) => a.includes('127.0.0.1'))!;

  const fuseSkip = await fuseSkipReason();
  const mountpoint = join(base, 'mnt');
  const c2 = newNode(base, 'c2');
  await joinNode(c2, peer, token, ['--controller']);
  await startNode(t, c2, [...METRICS, ...(fuseSkip === undefined ? ['--mount', mountpoint] : [])]);
  cleanup.push(async () => {
    // SIGTERM unmounts (bounded); a mount still there is detached lazily.
    await within(stopNode(c2), 20_000);
    if (isMounted(mountpoint)) await run('umount', ['-l', mountpoint], { timeout: 10_000 });
  });

  const s1 = newNode(base, 's1');
  await joinNode(s1, peer, token, ['--backend', join(base, 's1-backend'), '--name', 's1']);
  // s1's endpoint comes from node.json (the sim power driver restarts it without options).
  const s1Config = join(s1.data, 'node.json');
  writeFileSync(
    s1Config,
    JSON.stringify({ ...JSON.parse(readFileSync(s1Config, 'utf8')), metrics: '127.0.0.1:0' }),
  );
  await startNode(t, s1);
  const noteS1 = simProcesses(t, s1.data).note;

  await waitFor('2 voters, c1 and s1 online', async () => {
    const s = await status(c1);
    return s.voters.length === 2 && s.servers.filter((x) => x.online).length === 2 ? s : undefined;
  });

  const clientData = join(base, 'client');
  await ZhsmNode.join({ peer, token, data: clientData, listen: [LOOPBACK] });
  const client = await ZhsmNode.start(clientData, { metrics: '127.0.0.1:0' });
  cleanup.push(() => within(client.stop(), 20_000));
  cleanup.push(async () => {
    for (const node of [s1, c1]) await within(stopNode(node, 'SIGKILL'), 5_000);
  });
  assert.ok(client.metrics.url !== undefined);
  assert.equal((await client.status()).metrics, client.metrics.url, 'zhsm status shows the URL');

  // Write a file, read it three times (opens 1 and 2: misses, admitted; open 3: a hit).
  const cell = new CellClient(client.remote, { replicas: 2 });
  const owner = { uid: 0, gid: 0 };
  const bytes = Buffer.from(patternBytes(5 * 1024 * 1024 + 11, 7));
  const write = async (path: string, data: Buffer) => {
    const handle = await cell.create(path, 0o644, owner, { mode: 'write' });
    await handle.write(0, data);
    await handle.close();
  };
  const read = async (path: string, size: number) => {
    const handle = await cell.open(path, { mode: 'read' });
    try {
      return Buffer.from(await handle.read(0, size));
    } finally {
      await handle.close();
    }
  };
  await write('/f.bin', bytes);
  for (let i = 0; i < 2; i++) assert.ok((await read('/f.bin', bytes.length)).equals(bytes));

  const urls = { c1: await urlOf(c1), c2: await urlOf(c2), s1: await urlOf(s1) };
  t.diagnostic(`endpoints: ${JSON.stringify(urls)}`);
  assert.equal(new Set(Object.values(urls)).size, 3, 'one port per node on one machine');

  // c1: the primary. The cache fills in the background after the 2nd open; then a 3rd is a hit.
  await waitFor('the file cached on c1', async () => {
    const c = await scrape(urls.c1);
    return (c.value('zhsm_cache_files') ?? 0) >= 1 ? c : undefined;
  });
  assert.ok((await read('/f.bin', bytes.length)).equals(bytes));
  const primary = await waitFor('a cache hit counted', async () => {
    const c = await scrape(urls.c1);
    return (c.value('zhsm_cache_events_total', { event: 'hit' }) ?? 0) >= 1 ? c : undefined;
  });
  const term = primary.value('zhsm_raft_term')!;
  assert.ok(term >= 1, `term ${term}`);
  assert.equal(primary.value('zhsm_raft_leader'), 1);
  assert.equal(primary.value('zhsm_raft_role', { role: 'leader' }), 1);
  assert.equal(primary.value('zhsm_raft_role', { role: 'follower' }), 0);
  const commit = primary.value('zhsm_raft_commit_index')!;
  assert.ok(commit > 10, `commit index ${commit}`);
  assert.ok(primary.value('zhsm_raft_applied_index')! >= 1);
  assert.ok(primary.value('zhsm_raft_last_index')! >= commit);
  assert.ok(primary.value('zhsm_raft_elections_total')! >= 1, 'c1 campaigned after its start');
  assert.ok(primary.value('zhsm_raft_leader_changes_total')! >= 1);
  const lag = primary.all('zhsm_raft_replication_lag_entries');
  assert.deepEqual(
    lag.map((s) => s.labels.follower),
    ['2'],
    'a lag per follower',
  );
  assert.ok(lag[0]!.value >= 0 && lag[0]!.value < commit, `lag ${lag[0]!.value}`);
  assert.ok(primary.value('zhsm_cache_events_total', { event: 'miss' })! >= 2);
  assert.ok(primary.value('zhsm_cache_events_total', { event: 'admit' })! >= 1);
  assert.ok(primary.value('zhsm_cache_bytes')! >= bytes.length);
  // The cached copy went to c1's own cache backend.
  assert.ok(
    primary.value('zhsm_backend_bytes_total', { path: cacheDir, direction: 'write' })! >= bytes.length,
  );
  assert.equal(primary.value('zhsm_storage_servers', { power: 'ON', online: 'true' }), 2);
  assert.equal(primary.value('zhsm_node_info', { controller_id: '1', cell: 'metrics', storage: 'true' }), 1);
  assert.ok(primary.value('zhsm_rpc_served_total', { method: 'cell-info', code: 'OK' })! >= 1);

  // c2: a follower; no lag series (the primary's only).
  const follower = await scrape(urls.c2);
  assert.equal(follower.value('zhsm_raft_term'), term);
  assert.equal(follower.value('zhsm_raft_leader'), 0);
  assert.equal(follower.value('zhsm_raft_role', { role: 'follower' }), 1);
  assert.equal(follower.all('zhsm_raft_replication_lag_entries').length, 0);
  assert.ok(follower.value('zhsm_raft_commit_index')! >= 1);
  assert.equal(follower.value('zhsm_storage_servers'), undefined);

  // s1: bytes per backend, served storage calls.
  const server = await scrape(urls.s1);
  const s1Backend = join(base, 's1-backend');
  assert.ok(
    server.value('zhsm_backend_bytes_total', { path: s1Backend, direction: 'write' })! >= bytes.length,
  );
  assert.ok(
    server.value('zhsm_backend_bytes_total', { path: s1Backend, direction: 'read' })! >= bytes.length,
  );
  assert.ok(server.value('zhsm_rpc_served_total', { method: 'storage/write', code: 'OK' })! >= 2, '2 chunks');
  assert.ok(server.value('zhsm_rpc_served_total', { method: 'storage/read', code: 'OK' })! >= 2);
  assert.ok(server.value('zhsm_rpc_served_seconds_count', { method: 'storage/write' })! >= 2);
  assert.ok(server.value('zhsm_backend_free_bytes', { path: s1Backend })! > 0);
  assert.ok(server.value('zhsm_backend_capacity_bytes', { path: s1Backend })! > 0);
  assert.equal(server.value('zhsm_raft_term'), undefined, 'not a controller');

  // The client in this process.
  const own = await scrape(client.metrics.url!);
  assert.equal(own.value('zhsm_node_info', { controller_id: '0', storage: 'false' }), 1);
  assert.ok(own.value('zhsm_members')! >= 4);

  // FUSE: operations through c2's mount, from other processes.
  if (fuseSkip === undefined) {
    await run('ls', ['-la', mountpoint]);
    const { stdout } = await run('sha256sum', [join(mountpoint, 'f.bin')]);
    assert.match(stdout, /^[0-9a-f]{64} /);
    await assert.rejects(run('stat', [join(mountpoint, 'missing')]));
    const mounted = await scrape(urls.c2);
    assert.ok(mounted.value('zhsm_fuse_operation_seconds_count', { op: 'getattr' })! >= 1);
    assert.ok(mounted.value('zhsm_fuse_operation_seconds_count', { op: 'read' })! >= 1);
    assert.ok(mounted.value('zhsm_fuse_operation_seconds_count', { op: 'readdir' })! >= 1);
    assert.ok(mounted.value('zhsm_fuse_operation_errors_total', { op: 'getattr', errno: 'ENOENT' })! >= 1);
  } else {
    t.diagnostic(`FUSE part skipped: ${fuseSkip}`);
  }

  // Power: s1 sleeps when idle; a read of a file only s1 holds (not cached) wakes it.
  const cold = Buffer.from(patternBytes(300 * 1024 + 3, 8));
  await write('/cold.bin', cold);
  const zhsm = async (...args: string[]) =>
    run(process.execPath, [zhsmCli, ...args, '--data', c1.data], { timeout: 60_000 });
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
  await zhsm('power', 'policy', '--idle', '3s', '--wake-timeout', '30s');
  await waitFor(
    's1 asleep',
    async () => {
      const c = await scrape(urls.c1);
      return c.value('zhsm_storage_servers', { power: 'SLEEPING' }) === 1 ? c : undefined;
    },
    60_000,
  );
  assert.ok((await read('/cold.bin', cold.length)).equals(cold), 'the cold file reads after the wake');
  noteS1();
  const woken = await waitFor(
    'the wake observed',
    async () => {
      const c = await scrape(urls.c1);
      return (c.value('zhsm_power_wake_seconds_count') ?? 0) >= 1 ? c : undefined;
    },
    30_000,
  );
  for (const to of ['GOING_DOWN', 'SLEEPING', 'WAKING', 'ON'])
    assert.ok(woken.value('zhsm_power_state_changes_total', { server: 's1', to })! >= 1, to);
  const wakeSeconds = woken.value('zhsm_power_wake_seconds_sum')!;
  assert.ok(wakeSeconds >= 2 && wakeSeconds < 60, `wake took ${wakeSeconds} s (boot delay 2 s)`);
  t.diagnostic(`wake latency: ${wakeSeconds.toFixed(2)} s`);

  // The restarted s1 serves again (node.json), on a new URL, counting from zero.
  const again = await urlOf(s1, urls.s1);
  const restarted = await scrape(again);
  assert.equal(restarted.value('zhsm_node_info', { name: 's1' }), 1);
  assert.ok(restarted.value('zhsm_backend_bytes_total', { direction: 'read' })! >= cold.length);
});
