/**
 * The simulator's event queue: a binary min-heap ordered by (time, sequence number). Events at
 * the same virtual time run in insertion order, which keeps runs deterministic.
 */

export interface QueuedEvent<T> {
  readonly timeUs: number;
  readonly sequence: number;
  readonly payload: T;
}

export class EventQueue<T> {
  readonly #heap: QueuedEvent<T>[] = [];
  #sequence = 0;
  readonly #sizeMax: number;

  constructor(options: { sizeMax: number }) {
    this.#sizeMax = options.sizeMax;
  }

  get size(): number {
    return this.#heap.length;
  }

  push(timeUs: number, payload: T): void {
    if (!Number.isSafeInteger(timeUs) || timeUs < 0) throw new RangeError(`bad event time ${timeUs}`);
    if (this.#heap.length >= this.#sizeMax) throw new Error(`event queue over its limit (${this.#sizeMax})`);
    const heap = this.#heap;
    const event: QueuedEvent<T> = { timeUs, sequence: this.#sequence++, payload };
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = event;
  }

  peekTimeUs(): number | undefined {
    return this.#heap[0]?.timeUs;
  }

  pop(): QueuedEvent<T> | undefined {
    const heap = this.#heap;
    const top = heap[0];
    if (top === undefined) return undefined;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      const n = heap.length;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= n) break;
        const right = left + 1;
        const child = right < n && before(heap[right]!, heap[left]!) ? right : left;
        if (!before(heap[child]!, last)) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }

  clear(): void {
    this.#heap.length = 0;
  }
}

function before<T>(a: QueuedEvent<T>, b: QueuedEvent<T>): boolean {
  return a.timeUs < b.timeUs || (a.timeUs === b.timeUs && a.sequence < b.sequence);
}
