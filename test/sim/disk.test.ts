import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import type { Entry, Snapshot } from '../../consensus/types.ts';
import { type DiskFaults, SimDisk } from '../../sim/disk.ts';
import { EventQueue } from '../../sim/event-queue.ts';
import { Prng } from '../../sim/prng.ts';

function entry(index: number, term: number, text = `e${index}`): Entry {
  return { index, term, type: 'normal', data: new TextEncoder().encode(text) };
}

function harness(faults: Partial<DiskFaults> = {}) {
  const queue = new EventQueue<() => void>({ sizeMax: 1_000 });
  let now = 0;
  const disk = new SimDisk({
    node: 1,
    rng: new Prng(3),
    faults: { writeUsMin: 100, writeUsMax: 100, crashLoseChance: 0, crashTearChance: 0, ...faults },
    schedule: (delayUs, fn) => queue.push(now + delayUs, fn),
    onResolve: () => {},
  });
  const runAll = async (): Promise<void> => {
    for (let event = queue.pop(); event !== undefined; event = queue.pop()) {
      now = event.timeUs;
      event.payload();
      await nextMacrotask();
    }
  };
  return { disk, runAll, pending: () => queue.size };
}

describe('SimDisk', () => {
  test('a save resolves after its fsync latency and is durable', async () => {
    const { disk, runAll } = harness();
    let done = false;
    void disk
      .save({ hardState: { term: 1, votedFor: 2, commitIndex: 0 }, entries: [entry(1, 1)] })
      .then(() => {
        done = true;
      });
    await nextMacrotask();
    assert.equal(done, false);
    assert.equal(disk.durable.entries.length, 0);
    await runAll();
    assert.equal(done, true);
    const loaded = await disk.load();
    assert.deepEqual(loaded.hardState, { term: 1, votedFor: 2, commitIndex: 0 });
    assert.deepEqual(
      loaded.entries.map((e) => [e.index, e.term]),
      [[1, 1]],
    );
  });

  test('a crash keeps completed writes and loses the write in flight (lose)', async () => {
    const { disk, runAll } = harness({ crashLoseChance: 1 });
    await Promise.all([disk.save({ entries: [entry(1, 1)] }), runAll()]);
    void disk.save({ entries: [entry(2, 1)], hardState: { term: 2, votedFor: 0, commitIndex: 1 } });
    void disk.save({ entries: [entry(3, 1)] });
    assert.equal(disk.crash(), 'lost');
    const loaded = await disk.load();
    assert.deepEqual(
      loaded.entries.map((e) => e.index),
      [1],
    );
    assert.equal(loaded.hardState.term, 0);
    assert.equal(disk.writesLost, 2);
  });

  test('a torn last record fails its checksum at load and is cut off', async () => {
    const { disk, runAll } = harness({ crashTearChance: 1 });
    await Promise.all([
      disk.save({ entries: [entry(1, 1)], hardState: { term: 1, votedFor: 1, commitIndex: 1 } }),
      runAll(),
    ]);
    void disk.save({ entries: [entry(2, 1, 'x'.repeat(100))] });
    assert.equal(disk.crash(), 'torn');
    const loaded = await disk.load();
    assert.equal(disk.tornRecordsRepaired, 1);
    assert.deepEqual(
      loaded.entries.map((e) => e.index),
      [1],
    );
    assert.deepEqual(loaded.hardState, { term: 1, votedFor: 1, commitIndex: 1 });
  });

  test('a write in flight may also complete at the crash', async () => {
    const { disk } = harness();
    void disk.save({ entries: [entry(1, 1)] });
    assert.equal(disk.crash(), 'completed');
    assert.deepEqual(
      (await disk.load()).entries.map((e) => e.index),
      [1],
    );
  });

  test('a crashed process never completes writes until it loads again', async () => {
    const { disk, runAll } = harness();
    disk.crash();
    let done = false;
    void disk.save({ entries: [entry(1, 1)] }).then(() => {
      done = true;
    });
    await runAll();
    assert.equal(done, false);
    await disk.load();
    await Promise.all([disk.save({ entries: [entry(1, 1)] }), runAll()]);
    assert.equal(disk.durable.entries.length, 1);
  });

  test('entries replace a conflicting suffix; gaps and writes below the snapshot are refused', async () => {
    const { disk, runAll } = harness();
    await Promise.all([disk.save({ entries: [entry(1, 1), entry(2, 1), entry(3, 1)] }), runAll()]);
    await Promise.all([disk.save({ entries: [entry(2, 2)] }), runAll()]);
    assert.deepEqual(
      disk.durable.entries.map((e) => [e.index, e.term]),
      [
        [1, 1],
        [2, 2],
      ],
    );
    void disk.save({ entries: [entry(5, 2)] });
    await assert.rejects(runAll(), /gap/);
  });

  test('compaction drops the prefix; a snapshot from the leader drops every entry', async () => {
    const { disk, runAll } = harness();
    await Promise.all([disk.save({ entries: [entry(1, 1), entry(2, 1), entry(3, 2)] }), runAll()]);
    const membership = { voters: [1, 2, 3], learners: [] };
    const compacted: Snapshot = { meta: { index: 2, term: 1, membership }, data: new Uint8Array([1, 2]) };
    await Promise.all([disk.compact(compacted), runAll()]);
    assert.equal(disk.durable.snapshot?.meta.index, 2);
    assert.deepEqual(
      disk.durable.entries.map((e) => e.index),
      [3],
    );
    const installed: Snapshot = { meta: { index: 10, term: 3, membership }, data: new Uint8Array([9]) };
    await Promise.all([disk.save({ entries: [entry(11, 3)], snapshot: installed }), runAll()]);
    const loaded = await disk.load();
    assert.equal(loaded.snapshot?.meta.index, 10);
    assert.deepEqual(loaded.snapshot?.data, new Uint8Array([9]));
    assert.deepEqual(
      loaded.entries.map((e) => e.index),
      [11],
    );
  });

  test('writes complete one at a time, in order', async () => {
    const { disk, runAll } = harness();
    const order: number[] = [];
    void disk.save({ entries: [entry(1, 1)] }).then(() => order.push(1));
    void disk.save({ entries: [entry(2, 1)] }).then(() => order.push(2));
    void disk.save({ entries: [entry(3, 1)] }).then(() => order.push(3));
    await runAll();
    assert.deepEqual(order, [1, 2, 3]);
  });
});
