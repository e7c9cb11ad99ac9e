import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkLinearizable, type KvOperation } from '../../sim/linearizability.ts';

const INF = Number.POSITIVE_INFINITY;

function put(key: string, value: string, callUs: number, returnUs: number, client = 1): KvOperation {
  return { client, input: { kind: 'put', key, value }, callUs, returnUs };
}
function append(key: string, value: string, callUs: number, returnUs: number, client = 1): KvOperation {
  return { client, input: { kind: 'append', key, value }, callUs, returnUs };
}
function get(key: string, output: string, callUs: number, returnUs: number, client = 2): KvOperation {
  return { client, input: { kind: 'get', key }, output, callUs, returnUs };
}

describe('checkLinearizable', () => {
  test('a sequential history is linearizable', () => {
    const result = checkLinearizable([
      put('x', '1', 0, 10),
      get('x', '1', 20, 30),
      append('x', '2', 40, 50),
      get('x', '12', 60, 70),
    ]);
    assert.equal(result.ok, true);
  });

  test('a stale read after a completed write is not linearizable', () => {
    const result = checkLinearizable([put('x', '1', 0, 10), put('x', '2', 20, 30), get('x', '1', 40, 50)]);
    assert.deepEqual(result.ok === false && result.reason, 'violation');
  });

  test('a read concurrent with a write may see either value', () => {
    assert.equal(
      checkLinearizable([put('x', '1', 0, 10), put('x', '2', 20, 40), get('x', '1', 25, 30)]).ok,
      true,
    );
    assert.equal(
      checkLinearizable([put('x', '1', 0, 10), put('x', '2', 20, 40), get('x', '2', 25, 30)]).ok,
      true,
    );
  });

  test('two readers must not see two writes in different orders (new-old inversion)', () => {
    // Both writes overlap both reads, but r1 finishes before r2 starts: r1 sees 2 then r2 sees 1
    // would need 1 to be written after 2, and r1 says 2 came first.
    const history = [
      put('x', '1', 0, 100, 1),
      put('x', '2', 0, 100, 2),
      get('x', '2', 10, 20, 3),
      get('x', '1', 30, 40, 4),
      get('x', '2', 50, 60, 3),
    ];
    assert.equal(checkLinearizable(history).ok, false);
  });

  test('appends must be applied in one order that every read agrees with', () => {
    const ok = [append('x', 'a', 0, 50, 1), append('x', 'b', 0, 50, 2), get('x', 'ba', 60, 70)];
    assert.equal(checkLinearizable(ok).ok, true);
    const bad = [append('x', 'a', 0, 10, 1), append('x', 'b', 20, 30, 2), get('x', 'ba', 40, 50)];
    assert.equal(checkLinearizable(bad).ok, false);
    const lost = [append('x', 'a', 0, 10, 1), append('x', 'b', 20, 30, 2), get('x', 'b', 40, 50)];
    assert.equal(checkLinearizable(lost).ok, false);
  });

  test('a write with an unknown outcome may take effect late or never', () => {
    const never = [put('x', '1', 0, 10), put('x', '2', 20, INF), get('x', '1', 30, 40)];
    assert.equal(checkLinearizable(never).ok, true);
    const late = [
      put('x', '1', 0, 10),
      put('x', '2', 20, INF),
      get('x', '1', 30, 40),
      get('x', '2', 50, 60),
      get('x', '2', 70, 80),
    ];
    assert.equal(checkLinearizable(late).ok, true);
    // ...but not undo itself once seen.
    const flip = [put('x', '1', 0, 10), put('x', '2', 20, INF), get('x', '2', 30, 40), get('x', '1', 50, 60)];
    assert.equal(checkLinearizable(flip).ok, false);
    // ...and not before it was called.
    const early = [put('x', '1', 0, 10), get('x', '2', 12, 15), put('x', '2', 20, INF)];
    assert.equal(checkLinearizable(early).ok, false);
  });

  test('reads with unknown outcome are ignored; keys are checked separately', () => {
    const history: KvOperation[] = [
      put('x', '1', 0, 10),
      { client: 2, input: { kind: 'get', key: 'x' }, callUs: 20, returnUs: INF },
      put('y', '1', 0, 10),
      get('y', '', 20, 30),
    ];
    const result = checkLinearizable(history);
    assert.equal(result.ok, false);
    assert.equal(result.ok === false && result.reason === 'violation' && result.key, 'y');
  });

  test('a read of a never-written key sees the empty value', () => {
    assert.equal(checkLinearizable([get('z', '', 0, 1)]).ok, true);
    assert.equal(checkLinearizable([get('z', 'ghost', 0, 1)]).ok, false);
  });

  test('gives up with "budget" instead of passing when the search is too large', () => {
    const history: KvOperation[] = [];
    for (let i = 0; i < 30; i++) history.push(append('x', String.fromCharCode(65 + i), 0, INF, i));
    history.push(get('x', 'impossible', 1, 2));
    const result = checkLinearizable(history, { stepsMax: 1_000 });
    assert.equal(result.ok, false);
    assert.equal(result.ok === false && result.reason, 'budget');
  });

  test('rejects an operation that returns before its call', () => {
    assert.throws(() => checkLinearizable([put('x', '1', 10, 5)]), RangeError);
  });

  /**
   * Generate a real linearizable execution: every operation takes effect at one instant inside
   * its [call, return] interval, applied to a sequential model; reads record what they saw.
   */
  const executions = fc
    .array(
      fc.record({
        kind: fc.constantFrom('put', 'append', 'get'),
        key: fc.constantFrom('a', 'b'),
        before: fc.integer({ min: 0, max: 30 }),
        after: fc.integer({ min: 0, max: 30 }),
        unknown: fc.boolean(),
      }),
      { minLength: 1, maxLength: 25 },
    )
    .map((specs) => {
      const state = new Map<string, string>();
      return specs.map((spec, i): KvOperation => {
        const point = i * 10 + 100;
        const callUs = point - spec.before;
        const returnUs = spec.unknown && spec.kind !== 'get' ? INF : point + spec.after;
        const value = `${i};`;
        if (spec.kind === 'get') return get(spec.key, state.get(spec.key) ?? '', callUs, returnUs, i);
        if (spec.kind === 'put') state.set(spec.key, value);
        else state.set(spec.key, (state.get(spec.key) ?? '') + value);
        return spec.kind === 'put'
          ? put(spec.key, value, callUs, returnUs, i)
          : append(spec.key, value, callUs, returnUs, i);
      });
    });

  test('every generated linearizable execution is accepted (property)', () => {
    fc.assert(
      fc.property(executions, (history) => {
        const result = checkLinearizable(history);
        assert.equal(result.ok, true, JSON.stringify(history));
      }),
      { numRuns: 300 },
    );
  });

  test('a read that returns a value nobody wrote is rejected (property)', () => {
    fc.assert(
      fc.property(executions, fc.nat(), (history, pick) => {
        const reads = history.map((op, i) => [op, i] as const).filter(([op]) => op.input.kind === 'get');
        fc.pre(reads.length > 0);
        const [op, i] = reads[pick % reads.length]!;
        const mutated = history.slice();
        mutated[i] = { ...op, output: `${op.output ?? ''}never-written` };
        assert.equal(checkLinearizable(mutated).ok, false);
      }),
      { numRuns: 300 },
    );
  });
});
