/**
 * The run's trace: every event the simulator processes is folded into a 64-bit-ish rolling hash
 * (two 32-bit FNV-1a lanes with different bases), and optionally kept as text lines. The same
 * seed must give the same hash; that is what "replays the same run" means.
 */

export interface TraceOptions {
  /** Keep the text lines (for --trace); the hash is always computed. */
  readonly keepLines: boolean;
  /** Upper bound on kept lines; further lines are only hashed. */
  readonly linesMax: number;
}

export class Trace {
  #hashLow = 0x811c9dc5;
  #hashHigh = 0x050c5d1f;
  #count = 0;
  readonly #lines: string[] = [];
  readonly #options: TraceOptions;
  #linesDropped = 0;

  constructor(options: TraceOptions) {
    this.#options = options;
  }

  /** Record one line at a virtual time. */
  record(timeUs: number, line: string): void {
    this.#count++;
    let low = this.#hashLow ^ (timeUs >>> 0);
    let high = this.#hashHigh ^ Math.floor(timeUs / 0x1_0000_0000);
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      low = Math.imul(low ^ c, 0x01000193);
      high = Math.imul(high ^ c, 0x01000193) ^ (low >>> 15);
    }
    this.#hashLow = low >>> 0;
    this.#hashHigh = high >>> 0;
    if (this.#options.keepLines) {
      if (this.#lines.length < this.#options.linesMax) this.#lines.push(`${formatTime(timeUs)} ${line}`);
      else this.#linesDropped++;
    }
  }

  /**
   * Record an event given as small integers (hashed directly, cheaper than text); the text
   * line is only built when lines are kept. The hash does not depend on keepLines.
   */
  recordNumbers(timeUs: number, values: readonly number[], describe: () => string): void {
    this.#count++;
    let low = this.#hashLow ^ (timeUs >>> 0);
    let high = this.#hashHigh ^ Math.floor(timeUs / 0x1_0000_0000);
    for (let i = 0; i < values.length; i++) {
      const value = values[i]! | 0;
      low = Math.imul(low ^ value, 0x01000193);
      high = Math.imul(high ^ value, 0x01000193) ^ (low >>> 15);
    }
    this.#hashLow = low >>> 0;
    this.#hashHigh = high >>> 0;
    if (this.#options.keepLines) {
      if (this.#lines.length < this.#options.linesMax)
        this.#lines.push(`${formatTime(timeUs)} ${describe()}`);
      else this.#linesDropped++;
    }
  }

  get count(): number {
    return this.#count;
  }

  /** 16 hex digits. */
  get hash(): string {
    return this.#hashHigh.toString(16).padStart(8, '0') + this.#hashLow.toString(16).padStart(8, '0');
  }

  get lines(): readonly string[] {
    return this.#lines;
  }

  get linesDropped(): number {
    return this.#linesDropped;
  }
}

/** Virtual time as seconds with microsecond precision, fixed width. */
export function formatTime(timeUs: number): string {
  const seconds = Math.floor(timeUs / 1_000_000);
  const micros = timeUs % 1_000_000;
  return `${String(seconds).padStart(4, ' ')}.${String(micros).padStart(6, '0')}`;
}
