/**
 * A real cell of `zhsm-node` child processes on loopback for the mount tests: controllers, storage
 * servers and client peers, each a daemon started with the commands a user types; client peers
 * mount the cell (`start --mount`, or `zhsm-node mount` on the running daemon). The test process
 * only ever touches the mounts, never from the process that serves them.
 *
 * `stop()` (register it with t.after) always runs the whole teardown, even after a failure:
 * SIGTERM every daemon (they unmount), SIGKILL after 10 s, then clear any mount still there
 * (fusectl abort + `umount -l`, see fuse/stuck-mount.ts). A process exit handler clears mounts too.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { clearStuckMount, listFuseMounts } from '../../fuse/stuck-mount.ts';
import {
  cli,
  initCell,
  joinNode,
  type NodeProcess,
  newNode,
  type StatusJson,
  startNode,
  status,
  stopNode,
  waitFor,
} from '../daemon/_cell.ts';

export interface Peer extends NodeProcess {
  readonly mountpoint: string;
}

export interface DaemonCell {
  readonly base: string;
  readonly controllers: NodeProcess[];
  readonly servers: NodeProcess[];
  readonly peers: Peer[];
  /** The current primary (from `zhsm status --json` of any live controller). */
  primary(): Promise<NodeProcess>;
  status(): Promise<StatusJson>;
  /** Join and start `count` more controllers; resolves once all are voters. */
  addControllers(count: number): Promise<void>;
  /** Tear everything down (idempotent); leaves no mount behind. */
  stop(): Promise<void>;
}

const mountedHere = new Set<string>();
process.on('exit', () => {
  // Last resort (a test process that dies early): detach what is still mounted.
  for (const mountpoint of mountedHere)
    if (listFuseMounts().some((entry) => entry.mountpoint === mountpoint))
      try {
        execFileSync('umount', ['-l', mountpoint], { stdio: 'ignore' });
      } catch {
        try {
          execFileSync('fusermount', ['-u', '-z', mountpoint], { stdio: 'ignore' });
        } catch {}
      }
});

/** Collects the cleanups that test/daemon/_cell.ts registers with t.after, to run them in order. */
function afterList() {
  const cleanups: Array<() => unknown> = [];
  const context = { after: (fn: () => unknown) => cleanups.push(fn) } as unknown as TestContext;
  return { context, cleanups };
}

/**
 * Start a cell: `controllers` controllers (c1..), `servers` storage servers (s1.., one backend
 * each), and `peers` client peers (a, b, ...). Peer i mounts with `start --mount` unless
 * `mountWithCommand` lists its index: that one starts plain and mounts with `zhsm-node mount`.
 */
export async function startDaemonCell(
  t: TestContext,
  options: { controllers: number; servers: number; peers: number; mountWithCommand?: number[] },
): Promise<DaemonCell> {
  const base = mkdtempSync(join(tmpdir(), 'zhsm-peers-'));
  const { context, cleanups } = afterList();
  const controllers: NodeProcess[] = [];
  const servers: NodeProcess[] = [];
  const peers: Peer[] = [];
  let stopped: Promise<void> | undefined;

  const stop = () => {
    stopped ??= (async () => {
      // Peers first (their mounts), then the rest; SIGTERM, SIGKILL after 10 s.
      for (const group of [peers, servers, controllers])
        await Promise.all(
          group.map(async (node) => {
            const child = node.child;
            if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
            const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
            await stopNode(node, 'SIGTERM');
            clearTimeout(timer);
          }),
        );
      for (const cleanup of cleanups) await cleanup();
      for (const peer of peers) {
        if (listFuseMounts().some((entry) => entry.mountpoint === peer.mountpoint)) {
          t.diagnostic(`${peer.name}: the mount was still there after its daemon exited; clearing it`);
          await clearStuckMount(peer.mountpoint).catch(() =>
            execFileSync('fusermount', ['-u', '-z', peer.mountpoint], { stdio: 'ignore' }),
          );
        }
        mountedHere.delete(peer.mountpoint);
      }
      rmSync(base, { recursive: true, force: true });
    })();
    return stopped;
  };
  t.after(stop);

  const { first, token } = await initCell(base, 'peers');
  await startNode(context, first);
  controllers.push(first);
  const entry = first.addresses.find((a) => a.includes('127.0.0.1'))!;
  const waitForVoters = (count: number) =>
    waitFor(`${count} voters and ${options.servers} online storage servers`, async () => {
      const s = await status(first);
      return s.voters.length === count && s.servers.filter((x) => x.online).length === options.servers
        ? s
        : undefined;
    });
  const addControllers = async (count: number) => {
    for (let i = 0; i < count; i++) {
      const node = newNode(base, `c${controllers.length + 1}`);
      await joinNode(node, entry, token, ['--controller']);
      await startNode(context, node);
      controllers.push(node);
    }
    await waitForVoters(controllers.length);
  };
  for (let i = 1; i <= options.servers; i++) servers.push(newNode(base, `s${i}`));
  for (let i = 0; i < options.peers; i++) {
    const name = String.fromCharCode(0x61 + i);
    peers.push({ ...newNode(base, name), mountpoint: join(base, `mnt-${name}`) });
  }
  // Storage servers and peers join and start in parallel (only controllers' ids depend on order).
  await Promise.all([
    ...servers.map((node, i) => joinNode(node, entry, token, ['--backend', join(base, `s${i + 1}-backend`)])),
    ...peers.map((peer) => joinNode(peer, entry, token)),
  ]);
  await Promise.all(servers.map((node) => startNode(context, node)));
  await addControllers(options.controllers - 1);
  await Promise.all(
    peers.map(async (peer, i) => {
      const byCommand = options.mountWithCommand?.includes(i) === true;
      mountedHere.add(peer.mountpoint);
      await startNode(context, peer, byCommand ? [] : ['--mount', peer.mountpoint]);
      if (byCommand) await cli(['mount', peer.mountpoint, '--data', peer.data]);
    }),
  );

  const statusOfAnyController = async () => {
    let last: unknown;
    for (const node of controllers) {
      if (node.child === undefined || node.child.exitCode !== null || node.child.signalCode !== null)
        continue;
      try {
        return await status(node);
      } catch (error) {
        last = error;
      }
    }
    throw last ?? new Error('no live controller');
  };
  return {
    base,
    controllers,
    servers,
    peers,
    status: statusOfAnyController,
    addControllers,
    async primary() {
      const s = await waitFor('a primary', async () => {
        const found = await statusOfAnyController();
        return found.primary === null ? undefined : found;
      });
      const node = controllers.find((c) => c.controllerId === s.primary!.id);
      if (node === undefined)
        throw new Error(`primary ${s.primary!.id} is not one of this cell's controllers`);
      return node;
    },
    stop,
  };
}
