/**
 * The client history: every operation's call and return time (virtual µs), its input and its
 * output. Operations that certainly had no effect (refused before proposing, or overwritten
 * in the log) are removed; timed-out writes stay with an unknown outcome (return = +Infinity).
 */
import type { KvInput, KvOperation } from './linearizability.ts';

export type OperationState = 'pending' | 'ok' | 'unknown' | 'failed';

interface Recorded {
  client: number;
  input: KvInput;
  output: string | undefined;
  callUs: number;
  returnUs: number;
  state: OperationState;
}

/** Operations one run may record (a limit on everything). */
export const operationsMax = 200_000;

export class History {
  readonly #ops: Recorded[] = [];

  call(client: number, input: KvInput, callUs: number): number {
    if (this.#ops.length >= operationsMax) throw new Error('history over its limit');
    this.#ops.push({
      client,
      input,
      output: undefined,
      callUs,
      returnUs: Number.POSITIVE_INFINITY,
      state: 'pending',
    });
    return this.#ops.length - 1;
  }

  state(id: number): OperationState {
    return this.#get(id).state;
  }

  ok(id: number, returnUs: number, output: string | undefined): void {
    const op = this.#pending(id);
    op.state = 'ok';
    op.returnUs = returnUs;
    op.output = output;
  }

  /** The outcome is unknown (timeout): a write may or may not have taken effect. */
  unknown(id: number): void {
    this.#pending(id).state = 'unknown';
  }

  /** Certainly no effect: dropped from the checked history. */
  failed(id: number): void {
    this.#pending(id).state = 'failed';
  }

  counts(): Record<OperationState, number> {
    const counts: Record<OperationState, number> = { pending: 0, ok: 0, unknown: 0, failed: 0 };
    for (const op of this.#ops) counts[op.state]++;
    return counts;
  }

  /** The history to check; still-pending operations count as unknown. */
  operations(): KvOperation[] {
    const out: KvOperation[] = [];
    for (const op of this.#ops) {
      if (op.state === 'failed') continue;
      if (op.state === 'ok') {
        const entry: KvOperation =
          op.output === undefined
            ? { client: op.client, input: op.input, callUs: op.callUs, returnUs: op.returnUs }
            : {
                client: op.client,
                input: op.input,
                output: op.output,
                callUs: op.callUs,
                returnUs: op.returnUs,
              };
        out.push(entry);
      } else {
        out.push({
          client: op.client,
          input: op.input,
          callUs: op.callUs,
          returnUs: Number.POSITIVE_INFINITY,
        });
      }
    }
    return out;
  }

  #get(id: number): Recorded {
    const op = this.#ops[id];
    if (op === undefined) throw new RangeError(`no operation ${id}`);
    return op;
  }

  #pending(id: number): Recorded {
    const op = this.#get(id);
    if (op.state !== 'pending') throw new Error(`operation ${id} already ${op.state}`);
    return op;
  }
}
