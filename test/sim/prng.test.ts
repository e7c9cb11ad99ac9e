import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { hashLabel, Prng } from '../../sim/prng.ts';

describe('Prng', () => {
  test('the same seed gives the same sequence, another seed another one', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const c = new Prng(43);
    const seqA = Array.from({ length: 100 }, () => a.nextUint32());
    const seqB = Array.from({ length: 100 }, () => b.nextUint32());
    const seqC = Array.from({ length: 100 }, () => c.nextUint32());
    assert.deepEqual(seqA, seqB);
    assert.notDeepEqual(seqA, seqC);
  });

  test('high bits of large seeds matter', () => {
    assert.notEqual(new Prng(1).nextUint32(), new Prng(1 + 2 ** 32).nextUint32());
  });

  test('int stays in [0, bound) and covers it roughly uniformly', () => {
    const rng = new Prng(7);
    const counts = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[rng.int(10)]++;
    for (const count of counts) assert.ok(count > 9_000 && count < 11_000, `bucket ${count}`);
  });

  test('range is inclusive, float is in [0, 1), chance honours 0 and 1', () => {
    const rng = new Prng(9);
    const seen = new Set<number>();
    for (let i = 0; i < 1_000; i++) {
      const value = rng.range(3, 5);
      assert.ok(value >= 3 && value <= 5);
      seen.add(value);
      const f = rng.float();
      assert.ok(f >= 0 && f < 1);
      assert.equal(rng.chance(0), false);
      assert.equal(rng.chance(1), true);
    }
    assert.deepEqual([...seen].sort(), [3, 4, 5]);
  });

  test('rejects bad bounds and seeds', () => {
    const rng = new Prng(1);
    assert.throws(() => rng.int(0), RangeError);
    assert.throws(() => rng.int(1.5), RangeError);
    assert.throws(() => rng.range(5, 3), RangeError);
    assert.throws(() => rng.pick([]), RangeError);
    assert.throws(() => new Prng(0.5), RangeError);
  });

  test('fork is deterministic and independent of the label only through the label', () => {
    const a = new Prng(5).fork('network');
    const b = new Prng(5).fork('network');
    const c = new Prng(5).fork('disk');
    assert.equal(a.nextUint32(), b.nextUint32());
    assert.notEqual(new Prng(5).fork('network').nextUint32(), c.nextUint32());
    assert.notEqual(hashLabel('a'), hashLabel('b'));
  });

  test('shuffle is a permutation (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.array(fc.integer(), { maxLength: 50 }),
        (seed, items) => {
          const shuffled = new Prng(seed).shuffle(items);
          assert.deepEqual(
            shuffled.slice().sort((x, y) => x - y),
            items.slice().sort((x, y) => x - y),
          );
        },
      ),
    );
  });

  test('int(bound) is within bound for any seed (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 50 }),
        fc.integer({ min: 1, max: 2 ** 32 }),
        (seed, bound) => {
          const value = new Prng(seed).int(bound);
          return Number.isInteger(value) && value >= 0 && value < bound;
        },
      ),
    );
  });
});
