/** A counting semaphore: at most `limit` holders; the rest wait in order (abortable). */
export class Semaphore {
  readonly #limit: number;
  #held = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** No holder and no waiter. */
  get idle(): boolean {
    return this.#held === 0 && this.#waiting.length === 0;
  }

  /** Wait for a slot; rejects with the signal's reason if it aborts first. */
  async acquire(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    if (this.#held < this.#limit) {
      this.#held += 1;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const index = this.#waiting.indexOf(grant);
        if (index >= 0) this.#waiting.splice(index, 1);
        reject(signal.reason);
      };
      this.#waiting.push(grant);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Give a slot back (it passes to the next waiter, if any). */
  release(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next();
    else this.#held -= 1;
  }

  /** acquire(), then a release function that may be called more than once. */
  async hold(signal: AbortSignal): Promise<() => void> {
    await this.acquire(signal);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release();
    };
  }
}
