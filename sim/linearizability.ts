/**
 * A linearizability checker for key-value histories in the style of Wing & Gong with the
 * memoization of Lowe and porcupine: operations are partitioned per key (a KV map is
 * linearizable iff each key's sub-history is), then a depth-first search over the call/return
 * list lifts operations into a linearization, caching (linearized set, state) pairs it has
 * already explored. Operations whose outcome is unknown (client timeout) get a return time of
 * +Infinity: they may take effect at any point after their call, or never observably.
 */

export type KvInput =
  | { readonly kind: 'put'; readonly key: string; readonly value: string }
  | { readonly kind: 'append'; readonly key: string; readonly value: string }
  | { readonly kind: 'get'; readonly key: string };

export interface KvOperation {
  readonly client: number;
  readonly input: KvInput;
  /** get: the value read; put/append: undefined. Ignored when the outcome is unknown. */
  readonly output?: string;
  readonly callUs: number;
  /** Infinity when the outcome is unknown. */
  readonly returnUs: number;
}

export type LinearizabilityResult =
  | { readonly ok: true; readonly keys: number; readonly operations: number }
  | {
      readonly ok: false;
      readonly reason: 'violation';
      readonly key: string;
      readonly operations: readonly KvOperation[];
    }
  | { readonly ok: false; readonly reason: 'budget'; readonly key: string };

/** Search steps per key before the checker gives up (reported, never silently passed). */
export const searchStepsMax = 2_000_000;

interface Node {
  readonly isCall: boolean;
  readonly id: number;
  readonly time: number;
  /** For a call: its return node. */
  match: Node | undefined;
  prev: Node | undefined;
  next: Node | undefined;
}

export function checkLinearizable(
  history: readonly KvOperation[],
  options?: { stepsMax?: number },
): LinearizabilityResult {
  const byKey = new Map<string, KvOperation[]>();
  for (const op of history) {
    if (!(op.returnUs >= op.callUs))
      throw new RangeError(`operation returns before its call: ${JSON.stringify(op)}`);
    // A read with an unknown outcome constrains nothing.
    if (op.input.kind === 'get' && op.returnUs === Number.POSITIVE_INFINITY) continue;
    const list = byKey.get(op.input.key);
    if (list === undefined) byKey.set(op.input.key, [op]);
    else list.push(op);
  }
  let operations = 0;
  for (const key of [...byKey.keys()].sort()) {
    const ops = byKey.get(key)!;
    operations += ops.length;
    const result = checkKey(ops, options?.stepsMax ?? searchStepsMax);
    if (result === 'budget') return { ok: false, reason: 'budget', key };
    if (!result) return { ok: false, reason: 'violation', key, operations: ops };
  }
  return { ok: true, keys: byKey.size, operations };
}

/** The register model of one key: put sets, append concatenates, get must read the state. */
function step(state: string, op: KvOperation): string | undefined {
  switch (op.input.kind) {
    case 'put':
      return op.input.value;
    case 'append':
      return state + op.input.value;
    case 'get':
      return op.output === state ? state : undefined;
  }
}

function checkKey(ops: readonly KvOperation[], stepsMax: number): boolean | 'budget' {
  // Build the event list: calls and returns sorted by time; at equal times calls first
  // (treating touching operations as concurrent, which only allows more linearizations).
  const events: { time: number; isCall: boolean; id: number }[] = [];
  ops.forEach((op, id) => {
    events.push({ time: op.callUs, isCall: true, id });
    events.push({ time: op.returnUs, isCall: false, id });
  });
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1));
  const head: Node = { isCall: false, id: -1, time: -1, match: undefined, prev: undefined, next: undefined };
  const calls = new Map<number, Node>();
  let tail = head;
  for (const event of events) {
    const node: Node = {
      isCall: event.isCall,
      id: event.id,
      time: event.time,
      match: undefined,
      prev: tail,
      next: undefined,
    };
    tail.next = node;
    tail = node;
    if (event.isCall) calls.set(event.id, node);
    else calls.get(event.id)!.match = node;
  }

  const lift = (call: Node): void => {
    call.prev!.next = call.next;
    if (call.next !== undefined) call.next.prev = call.prev;
    const ret = call.match!;
    ret.prev!.next = ret.next;
    if (ret.next !== undefined) ret.next.prev = ret.prev;
  };
  const unlift = (call: Node): void => {
    const ret = call.match!;
    ret.prev!.next = ret;
    if (ret.next !== undefined) ret.next.prev = ret;
    call.prev!.next = call;
    if (call.next !== undefined) call.next.prev = call;
  };

  const words = Math.ceil(ops.length / 32);
  const linearized = new Uint32Array(words);
  const cache = new Set<string>();
  const cacheKey = (state: string): string => `${linearized.join(',')}|${state}`;
  const stack: { call: Node; state: string }[] = [];
  let state = '';
  let entry = head.next;
  let steps = 0;
  while (head.next !== undefined) {
    if (++steps > stepsMax) return 'budget';
    if (entry === undefined) throw new Error('linearizability: ran off the event list');
    if (entry.isCall) {
      const next = step(state, ops[entry.id]!);
      if (next !== undefined) {
        const word = entry.id >>> 5;
        const bit = 1 << (entry.id & 31);
        linearized[word] = linearized[word]! | bit;
        const key = cacheKey(next);
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ call: entry, state });
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized[word] = linearized[word]! & ~bit;
      }
      entry = entry.next;
    } else {
      // A return whose call is not linearized yet: backtrack.
      const top = stack.pop();
      if (top === undefined) return false;
      state = top.state;
      const word = top.call.id >>> 5;
      linearized[word] = linearized[word]! & ~(1 << (top.call.id & 31));
      unlift(top.call);
      entry = top.call.next;
    }
  }
  return true;
}
