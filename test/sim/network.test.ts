import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RELIABLE_NETWORK, SimNetwork } from '../../sim/network.ts';
import { Prng } from '../../sim/prng.ts';

function network(faults = RELIABLE_NETWORK): SimNetwork {
  return new SimNetwork({ nodes: [1, 2, 3, 4, 5], faults, rng: new Prng(1) });
}

describe('SimNetwork', () => {
  test('a reliable network delivers one copy within the delay bounds', () => {
    const net = network();
    for (let i = 0; i < 200; i++) {
      const delays = net.plan(1, 2);
      assert.equal(delays.length, 1);
      assert.ok(delays[0]! >= RELIABLE_NETWORK.delayUsMin && delays[0]! <= RELIABLE_NETWORK.delayUsMax);
    }
  });

  test('symmetric partitions cut between groups and isolate unlisted nodes', () => {
    const net = network();
    net.partition([
      [1, 2],
      [3, 4],
    ]);
    assert.ok(net.connected(1, 2) && net.connected(2, 1) && net.connected(3, 4));
    assert.ok(!net.connected(1, 3) && !net.connected(4, 2));
    assert.ok(!net.connected(5, 1) && !net.connected(1, 5));
    assert.deepEqual(net.plan(1, 3), []);
    net.heal();
    assert.ok(net.connected(1, 3) && net.connected(5, 1));
    assert.throws(() => net.partition([[1], [1, 2]]), RangeError);
  });

  test('asymmetric cuts affect one direction only', () => {
    const net = network();
    net.cutOneWay(1, 2);
    assert.ok(!net.connected(1, 2));
    assert.ok(net.connected(2, 1));
    net.isolate(3);
    assert.ok(!net.connected(3, 4) && !net.connected(4, 3));
    net.reconnect(3);
    assert.ok(net.connected(3, 4) && net.connected(4, 3));
    assert.throws(() => net.cutOneWay(1, 1), RangeError);
  });

  test('drops, duplicates and reordering follow their probabilities', () => {
    const lossy = network({ ...RELIABLE_NETWORK, dropChance: 1 });
    assert.deepEqual(lossy.plan(1, 2), []);
    const doubled = network({ ...RELIABLE_NETWORK, duplicateChance: 1 });
    assert.equal(doubled.plan(1, 2).length, 2);
    const reordered = network({ ...RELIABLE_NETWORK, reorderChance: 1, reorderUsMax: 1_000_000 });
    const delays = Array.from({ length: 100 }, () => reordered.plan(1, 2)[0]!);
    assert.ok(delays.some((delay) => delay > RELIABLE_NETWORK.delayUsMax));
    const tenPercent = network({ ...RELIABLE_NETWORK, dropChance: 0.1 });
    let dropped = 0;
    for (let i = 0; i < 10_000; i++) if (tenPercent.plan(1, 2).length === 0) dropped++;
    assert.ok(dropped > 800 && dropped < 1_200, `dropped ${dropped}`);
  });

  test('rejects invalid fault settings', () => {
    assert.throws(() => network({ ...RELIABLE_NETWORK, dropChance: 2 }), RangeError);
    assert.throws(() => network({ ...RELIABLE_NETWORK, delayUsMax: 0, delayUsMin: 10 }), RangeError);
  });
});
