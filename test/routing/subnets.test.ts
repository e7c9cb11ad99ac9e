/**
 * Routing across real separate networks (issue #7), with network namespaces on one machine:
 *
 *   subnet 1 (10.71.1.0/24): the client `cli` (mounts the cell), controller `c2`
 *   subnet 2 (10.71.2.0/24): storage servers `s1`, `s2`, controller `c3`
 *   both:                    controller `ctl` (id 1) and the relay member `rly`
 *
 * No host forwards packets, so subnet 1 cannot route to subnet 2: every byte between them goes
 * through a zhsm member acting as a libp2p circuit relay. The client writes and reads a 512 MiB
 * file stored only on servers of subnet 2; `rly` is killed in the middle of a read and the read
 * completes through the controller; with `rly` back, the primary is killed and `c2` (subnet 1)
 * and `c3` (subnet 2) carry on with consensus through the relay. Skips only where namespaces
 * cannot be created (not root, no iproute2).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { daemonStartArgs } from '../../node/common/daemon-flags.ts';
import { nodeCli, waitFor, zhsmCli } from '../daemon/_cell.ts';
import { fuseSkipReason, isMounted } from '../fuse/harness.ts';
import { Netns, netnsSkipReason } from './_netns.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const FILE_MIB = 512;
const skip = (await netnsSkipReason()) ?? (await fuseSkipReason());

interface Proc {
  readonly name: string;
  readonly data: string;
  peerId: string;
  controllerId: number;
  child?: ChildProcess;
  stderr: string;
}

interface PathStatus {
  peerId: string;
  path: 'direct' | 'relayed' | 'none';
  via?: string;
}
interface Status {
  primary: { id: number; peerId: string } | null;
  controllers: Array<{ id: number; role: string; appliedIndex: number; commitIndex: number }>;
  voters: number[];
  servers: Array<{ name: string; peerId: string; online: boolean }>;
  paths: PathStatus[];
  relayReservations: string[];
}

describe('routing across subnets (network namespaces)', { skip, timeout: 600_000 }, () => {
  const net = new Netns();
  let base: string;
  let mountpoint: string;
  const procs = new Map<string, Proc>();
  const proc = (name: string) => procs.get(name)!;

  const inNs = async (host: string, args: string[]) => {
    const { stdout } = await run(
      net.enter(host)[0]!,
      [...net.enter(host).slice(1), process.execPath, ...args],
      {
        timeout: 120_000,
        maxBuffer: 16 * MiB,
      },
    );
    return stdout;
  };

  const start = async (name: string, extra: string[] = []) => {
    const p = proc(name);
    if (p.child !== undefined && p.child.exitCode === null && p.child.signalCode === null)
      throw new Error(`${name} is still running`);
    const [command, ...prefix] = net.enter(name);
    const child = spawn(
      command!,
      [
        ...prefix,
        process.execPath,
        ...daemonStartArgs({ cli: nodeCli, data: p.data, args: ['--log-level', 'warn', ...extra] }),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    p.child = child;
    p.stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      p.stderr = (p.stderr + text).slice(-20_000);
    });
    await new Promise<void>((resolve, reject) => {
      let buffered = '';
      const timer = setTimeout(() => reject(new Error(`${name} did not start: ${p.stderr}`)), 60_000);
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (text: string) => {
        buffered += text;
        if (!buffered.includes('"event":"started"')) return;
        clearTimeout(timer);
        resolve();
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${code ?? signal}) while starting: ${p.stderr}`));
      });
    });
  };

  const kill = async (name: string, signal: NodeJS.Signals) => {
    const child = proc(name).child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
  };

  const status = async (name: string): Promise<Status> => {
    const { stdout } = await run(process.execPath, [zhsmCli, 'status', '--json', '--data', proc(name).data], {
      timeout: 60_000,
    });
    return JSON.parse(stdout) as Status;
  };

  const reservationsOf = async (name: string, relays: string[]) => {
    const s = await status(name);
    return relays.every((r) => s.relayReservations.includes(proc(r).peerId)) ? s : undefined;
  };

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'zhsm-routing-'));
    fs.chmodSync(base, 0o755);
    mountpoint = join(base, 'mnt');
    await net.create([
      { name: 'ctl', legs: { 1: 1, 2: 1 } },
      { name: 'rly', legs: { 1: 3, 2: 3 } },
      { name: 'cli', legs: { 1: 2 } },
      { name: 'c2', legs: { 1: 5 } },
      { name: 's1', legs: { 2: 2 } },
      { name: 's2', legs: { 2: 4 } },
      { name: 'c3', legs: { 2: 5 } },
    ]);
    for (const name of ['ctl', 'rly', 'cli', 'c2', 's1', 's2', 'c3'])
      procs.set(name, { name, data: join(base, name), peerId: '', controllerId: 0, stderr: '' });
    const listen = ['--listen', '/ip4/0.0.0.0/tcp/0'];
    const init = JSON.parse(
      await inNs('ctl', [
        nodeCli,
        'init',
        '--data',
        proc('ctl').data,
        '--cell',
        'routing',
        ...listen,
        '--json',
      ]),
    ) as { peerId: string; addresses: string[]; token: string };
    proc('ctl').peerId = init.peerId;
    proc('ctl').controllerId = 1;
    const on = (subnet: number) => init.addresses.find((a) => a.includes(`/ip4/${net.ip(subnet, 1)}/`))!;
    assert.ok(on(1) && on(2), `the controller listens on both legs: ${init.addresses.join(' ')}`);
    await start('ctl');
    const joins: Array<[string, number, string[]]> = [
      ['rly', 1, []],
      ['cli', 1, []],
      ['c2', 1, ['--controller']],
      ['s1', 2, ['--backend', join(base, 's1', 'b1')]],
      ['s2', 2, ['--backend', join(base, 's2', 'b1')]],
      ['c3', 2, ['--controller']],
    ];
    for (const [name, subnet, extra] of joins) {
      const out = JSON.parse(
        await inNs(name, [
          nodeCli,
          'join',
          on(subnet),
          '--token',
          init.token,
          '--data',
          proc(name).data,
          ...listen,
          '--json',
          ...extra,
        ]),
      ) as { peerId: string; controllerId: number };
      proc(name).peerId = out.peerId;
      proc(name).controllerId = out.controllerId;
    }
    assert.deepEqual(
      ['c2', 'c3'].map((n) => proc(n).controllerId),
      [2, 3],
    );
    await Promise.all(['rly', 's1', 's2', 'c2', 'c3'].map((name) => start(name)));
    // Storage servers (subnet 2 only) reserve a slot on both members that bridge to subnet 1.
    await Promise.all(
      ['s1', 's2'].map((name) =>
        waitFor(`${name}'s relay reservations`, () => reservationsOf(name, ['ctl', 'rly'])),
      ),
    );
    // The client starts once they can be reached: its first dials choose the preferred relay.
    await start('cli', ['--mount', mountpoint]);
    // Both new controllers become voters (c3 is reached by the primary directly).
    await waitFor('three voters', async () => ((await status('ctl')).voters.length === 3 ? true : undefined));
  });

  afterEach((t) => {
    // A failure is explained by the daemons' logs.
    if ((t as { passed?: boolean }).passed === false || process.env.ZHSM_TEST_LOGS !== undefined)
      for (const p of procs.values())
        if (p.stderr !== '') t.diagnostic(`${p.name}: ${p.stderr.slice(-4000)}`);
  });

  after(async () => {
    await kill('cli', 'SIGTERM').catch(() => {});
    if (mountpoint !== undefined && isMounted(mountpoint))
      await run('umount', ['-l', mountpoint]).catch(() => {});
    for (const p of procs.values()) await kill(p.name, 'SIGKILL').catch(() => {});
    await net.destroy();
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  /** Deterministic content: a random MiB, each copy stamped with its index. */
  const block = randomBytes(MiB);
  const blockAt = (index: number) => {
    const copy = Buffer.from(block);
    copy.writeUInt32BE(index, 0);
    return copy;
  };

  /** sha256 of a file's first `mib` MiB (all of it by default), calling onMiB after each MiB. */
  const hashFile = async (path: string, onMiB?: (mib: number) => void, mib?: number) => {
    const hash = createHash('sha256');
    let total = 0;
    const range = mib === undefined ? {} : { start: 0, end: mib * MiB - 1 };
    for await (const chunk of fs.createReadStream(path, { highWaterMark: MiB, ...range })) {
      hash.update(chunk as Buffer);
      const before = Math.floor(total / MiB);
      total += (chunk as Buffer).length;
      if (onMiB !== undefined && Math.floor(total / MiB) > before) onMiB(Math.floor(total / MiB));
    }
    return { sha: hash.digest('hex'), bytes: total };
  };
  const dropCache = (path: string) => run('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);

  let expected = '';
  /** The second transfer (relay killed at 64 MiB) reads the first PREFIX_MIB MiB. */
  const PREFIX_MIB = 192;
  let expectedPrefix = '';
  const bigFile = () => join(mountpoint, 'big.bin');

  test('the client in subnet 1 writes and reads a 512 MiB file stored only in subnet 2, through a relay', async () => {
    const hash = createHash('sha256');
    const fd = fs.openSync(bigFile(), 'w');
    const started = performance.now();
    for (let i = 0; i < FILE_MIB; i++) {
      const data = blockAt(i);
      hash.update(data);
      if (i === PREFIX_MIB - 1) expectedPrefix = hash.copy().digest('hex');
      fs.writeSync(fd, data, 0, MiB, i * MiB);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const writeSeconds = (performance.now() - started) / 1000;
    expected = hash.digest('hex');
    await dropCache(bigFile());
    const readStarted = performance.now();
    const read = await hashFile(bigFile());
    const readSeconds = (performance.now() - readStarted) / 1000;
    assert.equal(read.bytes, FILE_MIB * MiB);
    assert.equal(read.sha, expected);
    console.log(
      `# 512 MiB through a relay: write ${(FILE_MIB / writeSeconds).toFixed(0)} MiB/s, read ${(FILE_MIB / readSeconds).toFixed(0)} MiB/s`,
    );
    // The client's paths: the controller directly (shared subnet), the storage servers relayed
    // through `rly` (a non-controller member is preferred as the relay).
    const s = await status('cli');
    const path = (name: string) => s.paths.find((p) => p.peerId === proc(name).peerId);
    assert.equal(path('ctl')?.path, 'direct');
    for (const name of ['s1', 's2']) {
      assert.equal(path(name)?.path, 'relayed', `${name}: ${JSON.stringify(path(name))}`);
      assert.equal(path(name)?.via, proc('rly').peerId);
    }
    // The data lives only on the servers of subnet 2.
    assert.deepEqual(
      s.servers.map((server) => server.peerId).sort(),
      [proc('s1').peerId, proc('s2').peerId].sort(),
    );
  });

  test('a peer that is not a member cannot use a member as a relay', async () => {
    const rly = await status('rly');
    const relayAddress = (rly as unknown as { node: { addresses: string[] } }).node.addresses.find(
      (a) => a.includes(`/ip4/${net.ip(1, 3)}/`) && !a.includes('/p2p-circuit'),
    );
    assert.ok(relayAddress !== undefined, 'the relay listens on subnet 1');
    const out = JSON.parse(
      await inNs('cli', [join(import.meta.dirname, '_stranger.ts'), relayAddress, proc('s1').peerId]),
    ) as Record<'reservation' | 'relayed' | 'direct', { refused: boolean; error?: string }>;
    assert.equal(out.reservation.refused, true, 'no reservation for a non-member');
    assert.equal(out.relayed.refused, true, 'no relayed connection for a non-member');
    assert.equal(out.direct.refused, true, "the relay's own protocols refuse a non-member");
  });

  test('the relay dies in the middle of a read: the read completes through the controller', async () => {
    await dropCache(bigFile());
    let killed: Promise<void> | undefined;
    const read = await hashFile(
      bigFile(),
      (mib) => {
        if (mib === 64 && killed === undefined) killed = kill('rly', 'SIGKILL');
      },
      PREFIX_MIB,
    );
    await killed;
    assert.ok(killed !== undefined, 'the relay was killed mid-read');
    assert.equal(read.bytes, PREFIX_MIB * MiB);
    assert.equal(read.sha, expectedPrefix);
    const s = await status('cli');
    for (const name of ['s1', 's2']) {
      const path = s.paths.find((p) => p.peerId === proc(name).peerId);
      assert.ok(
        path?.path !== 'relayed' || path.via === proc('ctl').peerId,
        `${name}: ${JSON.stringify(path)}`,
      );
    }
    // A write now also goes through the controller.
    fs.writeFileSync(join(mountpoint, 'after-relay-death.txt'), 'still here\n');
    assert.equal(fs.readFileSync(join(mountpoint, 'after-relay-death.txt'), 'utf8'), 'still here\n');
  });

  test('controllers in different subnets keep consensus through a relay when the primary dies', async () => {
    await start('rly');
    await Promise.all(
      ['s1', 's2', 'c3'].map((name) =>
        waitFor(`${name}'s reservation on rly`, () => reservationsOf(name, ['rly'])),
      ),
    );
    await kill('ctl', 'SIGKILL');
    // c2 (subnet 1) and c3 (subnet 2) share no subnet: the new primary replicates through rly.
    const s = await waitFor(
      'a new primary',
      async () => {
        const current = await status('c2');
        return current.primary !== null && current.primary.id !== 1 ? current : undefined;
      },
      60_000,
    );
    assert.equal(s.primary!.id, 2, 'the lowest-id up-to-date controller leads');
    fs.writeFileSync(join(mountpoint, 'after-failover.txt'), 'consensus through a relay\n');
    assert.equal(
      fs.readFileSync(join(mountpoint, 'after-failover.txt'), 'utf8'),
      'consensus through a relay\n',
    );
    const committed = await status('c2');
    const c3 = await waitFor('c3 to apply the new entries', async () => {
      const current = await status('c3');
      const mine = current.controllers.find((c) => c.id === 3);
      return mine !== undefined &&
        mine.appliedIndex >= committed.controllers.find((c) => c.id === 2)!.commitIndex
        ? current
        : undefined;
    });
    const toC2 = c3.paths.find((p) => p.peerId === proc('c2').peerId);
    assert.equal(toC2?.path, 'relayed', `c3 -> c2: ${JSON.stringify(toC2)}`);
    assert.equal(toC2?.via, proc('rly').peerId);
  });
});
