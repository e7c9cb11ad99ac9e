import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { LevelRaftStorage } from '../../consensus/storage-level.ts';
import { LocalNetwork } from '../../node/controller/local-transport.ts';
import { ControllerReplica } from '../../node/controller/replica.ts';
import { LevelKv } from '../../node/metadata/kv.ts';
import { tempDirectory } from '../helpers.ts';
import { id } from '../metadata/harness.ts';

const tickMs = 20; // fast ticks: election timeout 200 ms

interface Controller {
  replica: ControllerReplica;
  storage: LevelRaftStorage;
  kv: LevelKv;
}

async function startController(
  network: LocalNetwork,
  directory: string,
  controllerId: number,
  voters: number[],
): Promise<Controller> {
  const storage = await LevelRaftStorage.open(join(directory, `raft-${controllerId}`));
  const kv = await LevelKv.open(join(directory, `meta-${controllerId}`));
  const replica = await ControllerReplica.start({
    id: controllerId,
    storage,
    kv,
    transport: network.transport(controllerId),
    initialMembership: { voters, learners: [] },
    tickMs,
    snapshotEveryEntries: 150,
  });
  return { replica, storage, kv };
}

async function stopController(network: LocalNetwork, controller: Controller): Promise<void> {
  network.remove(controller.replica.id);
  await controller.replica.stop();
  await controller.storage.close();
  await controller.kv.close();
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Propose through whichever replica leads, retrying while leadership moves. */
async function proposeWithRetry(
  controllers: Controller[],
  command: Parameters<ControllerReplica['propose']>[0],
) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const leader = controllers.find((c) => c.replica.isLeader);
    if (leader !== undefined) {
      try {
        return await leader.replica.propose(command);
      } catch (error) {
        if (
          (error as { code?: string }).code !== 'NOT_LEADER' &&
          (error as { code?: string }).code !== 'CLOSED'
        )
          throw error;
      }
    }
    if (Date.now() > deadline) throw new Error('no primary accepted the proposal');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('three controllers: lowest id leads, metadata replicates, failover and return of the lowest id', {
  timeout: 60_000,
}, async (t) => {
  const directory = tempDirectory(t);
  const network = new LocalNetwork();
  const voters = [1, 2, 3];
  const controllers = await Promise.all(voters.map((v) => startController(network, directory, v, voters)));
  t.after(async () => {
    for (const c of controllers) await stopController(network, c).catch(() => {});
  });
  // Equal logs: the lowest id ends up primary (it may take a handoff if another id won first).
  const leader = await waitFor('controller 1 leads', () =>
    controllers.find((c) => c.replica.isLeader && c.replica.id === 1),
  );
  const rootId = id();
  const init = await proposeWithRetry(controllers, {
    initCell: { cell: 'c', rootId, uid: 0, gid: 0, mode: 0o755, lostFoundId: id() },
  });
  assert.equal(init.code, 'OK');
  const names: string[] = [];
  for (let i = 0; i < 200; i++) {
    const name = `file-${i}`;
    names.push(name);
    const result = await proposeWithRetry(controllers, {
      create: { parent: rootId, name, id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
    });
    assert.equal(result.code, 'OK');
  }
  // Every replica applies the same state.
  await waitFor('replicas caught up', () =>
    controllers.every((c) => c.replica.machine.appliedIndex === leader.replica.machine.appliedIndex),
  );
  const snapshots = await Promise.all(controllers.map((c) => c.replica.machine.snapshot()));
  for (const snapshot of snapshots) assert.ok(Buffer.from(snapshot).equals(Buffer.from(snapshots[0]!)));
  // Read barrier on the leader.
  const reader = await waitFor('a primary', () => controllers.find((c) => c.replica.isLeader));
  await reader.replica.readBarrier();
  assert.equal((await reader.replica.machine.readdir(rootId)).length, 201);
  await assert.rejects(controllers[1]!.replica.readBarrier(), { code: 'NOT_LEADER' });
  await assert.rejects(controllers[1]!.replica.propose({ expireTokens: { nowMs: 0 } }), {
    code: 'NOT_LEADER',
  });

  // Kill the primary: the lowest remaining id takes over and writes continue.
  await stopController(network, controllers[0]!);
  const killedAt = Date.now();
  const survivors = controllers.slice(1);
  await waitFor('a new primary', () => survivors.find((c) => c.replica.isLeader));
  const failover = await proposeWithRetry(survivors, {
    create: { parent: rootId, name: 'after-failover', id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
  });
  assert.equal(failover.code, 'OK');
  t.diagnostic(`failover (in-process, tick ${tickMs} ms): ${Date.now() - killedAt} ms to the first write`);
  await waitFor('the lowest remaining id (2) leads', () =>
    survivors.find((c) => c.replica.isLeader && c.replica.id === 2),
  );
  for (let i = 0; i < 100; i++) {
    await proposeWithRetry(survivors, {
      create: { parent: rootId, name: `more-${i}`, id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
    });
  }

  // Restart the old primary from its disk: it catches up (log or snapshot) and gets leadership back.
  controllers[0] = await startController(network, directory, 1, voters);
  await waitFor('controller 1 leads again', () => controllers[0]!.replica.isLeader || undefined, 20_000);
  await controllers[0]!.replica.readBarrier();
  assert.equal((await controllers[0]!.replica.machine.readdir(rootId)).length, 302, 'nothing lost');
  await waitFor('all caught up', () =>
    controllers.every((c) => c.replica.machine.appliedIndex === controllers[0]!.replica.machine.appliedIndex),
  );
  const final = await Promise.all(controllers.map((c) => c.replica.machine.snapshot()));
  for (const snapshot of final) assert.ok(Buffer.from(snapshot).equals(Buffer.from(final[0]!)));
});

test('a single controller commits alone and survives a restart', async (t) => {
  const directory = tempDirectory(t);
  const network = new LocalNetwork();
  let controller = await startController(network, directory, 1, [1]);
  t.after(() => stopController(network, controller).catch(() => {}));
  await waitFor('leader', () => controller.replica.isLeader || undefined);
  const rootId = id();
  await controller.replica.propose({
    initCell: { cell: 'solo', rootId, uid: 0, gid: 0, mode: 0o755, lostFoundId: id() },
  });
  const created = await controller.replica.propose({
    create: { parent: rootId, name: 'x', id: id(), type: 'DIRECTORY', mode: 0o755, uid: 0, gid: 0 },
  });
  assert.equal(created.code, 'OK');
  await stopController(network, controller);
  controller = await startController(network, directory, 1, [1]);
  await waitFor('leader after restart', () => controller.replica.isLeader || undefined);
  await controller.replica.readBarrier();
  assert.equal((await controller.replica.machine.lookup(rootId, 'x'))?.type, 'DIRECTORY');
  assert.equal((await controller.replica.machine.cell())?.cell, 'solo');
});
