import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { EventQueue } from '../../sim/event-queue.ts';

describe('EventQueue', () => {
  test('pops by time, then by insertion order', () => {
    const queue = new EventQueue<string>({ sizeMax: 100 });
    queue.push(5, 'c');
    queue.push(1, 'a');
    queue.push(5, 'd');
    queue.push(1, 'b');
    queue.push(0, 'first');
    const out: string[] = [];
    for (let event = queue.pop(); event !== undefined; event = queue.pop()) out.push(event.payload);
    assert.deepEqual(out, ['first', 'a', 'b', 'c', 'd']);
  });

  test('enforces its size limit and rejects bad times', () => {
    const queue = new EventQueue<number>({ sizeMax: 2 });
    queue.push(1, 1);
    queue.push(2, 2);
    assert.throws(() => queue.push(3, 3), /limit/);
    assert.throws(() => new EventQueue<number>({ sizeMax: 2 }).push(-1, 0), RangeError);
    assert.throws(() => new EventQueue<number>({ sizeMax: 2 }).push(1.5, 0), RangeError);
  });

  test('matches a stable sort (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 200 }), (times) => {
        const queue = new EventQueue<number>({ sizeMax: 1_000 });
        for (const [i, time] of times.entries()) queue.push(time, i);
        const expected = times.map((time, i) => ({ time, i })).sort((a, b) => a.time - b.time || a.i - b.i);
        for (const { time, i } of expected) {
          const event = queue.pop()!;
          assert.equal(event.timeUs, time);
          assert.equal(event.payload, i);
        }
        assert.equal(queue.pop(), undefined);
      }),
    );
  });
});
