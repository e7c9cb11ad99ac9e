import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { History } from '../../sim/history.ts';

describe('History', () => {
  test('records calls and returns; unknown and pending writes have no return, failed ones vanish', () => {
    const history = new History();
    const a = history.call(1, { kind: 'put', key: 'x', value: '1' }, 10);
    const b = history.call(2, { kind: 'get', key: 'x' }, 11);
    const c = history.call(3, { kind: 'append', key: 'x', value: '2' }, 12);
    const d = history.call(4, { kind: 'put', key: 'x', value: '3' }, 13);
    const e = history.call(5, { kind: 'put', key: 'y', value: '4' }, 14);
    history.ok(a, 20, undefined);
    history.ok(b, 21, '1');
    history.unknown(c);
    history.failed(d);
    assert.deepEqual(history.counts(), { pending: 1, ok: 2, unknown: 1, failed: 1 });
    const ops = history.operations();
    assert.equal(ops.length, 4);
    assert.deepEqual(ops[1], {
      client: 2,
      input: { kind: 'get', key: 'x' },
      output: '1',
      callUs: 11,
      returnUs: 21,
    });
    assert.equal(ops[2]!.returnUs, Number.POSITIVE_INFINITY);
    assert.equal(ops[3]!.returnUs, Number.POSITIVE_INFINITY);
    assert.equal(history.state(e), 'pending');
  });

  test('an operation completes once', () => {
    const history = new History();
    const a = history.call(1, { kind: 'put', key: 'x', value: '1' }, 10);
    history.ok(a, 20, undefined);
    assert.throws(() => history.unknown(a), /already ok/);
    assert.throws(() => history.ok(99, 1, undefined), RangeError);
  });
});
