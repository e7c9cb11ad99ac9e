/**
 * The clock interface. Real code takes a Clock; the simulator supplies a virtual one.
 * Nothing outside `systemClock` reads the wall clock.
 */

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Wall-clock time in milliseconds since the Unix epoch (may jump). */
  nowMs(): number;
  /** Monotonic milliseconds since an arbitrary origin (never goes backwards). */
  monotonicMs(): number;
  /** Run `callback` once after `delayMs`. */
  setTimer(delayMs: number, callback: () => void): TimerHandle;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  monotonicMs: () => performance.now(),
  setTimer(delayMs, callback) {
    const handle = setTimeout(callback, delayMs);
    return { cancel: () => clearTimeout(handle) };
  },
};

/**
 * A manually advanced clock for unit tests: timers fire only inside `advance()`.
 * The simulator has its own event-queue clock; this one is for small tests.
 */
export class ManualClock implements Clock {
  #nowMs: number;
  #timers: Array<{ atMs: number; sequence: number; callback: () => void; cancelled: boolean }> = [];
  #sequence = 0;

  constructor(startMs = 0) {
    this.#nowMs = startMs;
  }

  nowMs(): number {
    return this.#nowMs;
  }

  monotonicMs(): number {
    return this.#nowMs;
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const timer = {
      atMs: this.#nowMs + Math.max(0, delayMs),
      sequence: this.#sequence++,
      callback,
      cancelled: false,
    };
    this.#timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Advance time by `deltaMs`, firing due timers in order. */
  advance(deltaMs: number): void {
    const targetMs = this.#nowMs + deltaMs;
    for (;;) {
      this.#timers = this.#timers.filter((timer) => !timer.cancelled);
      this.#timers.sort((a, b) => a.atMs - b.atMs || a.sequence - b.sequence);
      const next = this.#timers[0];
      if (next === undefined || next.atMs > targetMs) break;
      this.#timers.shift();
      this.#nowMs = next.atMs;
      next.callback();
    }
    this.#nowMs = targetMs;
  }
}
