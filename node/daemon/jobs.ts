/**
 * Long operations a node runs (rebuild, scrub, fsck, ...): their progress, for `zhsm status`
 * and the CLI's progress bars. A job is registered when it starts and stays listed (finished or
 * failed) until a newer job of the same kind replaces it.
 */

export type JobState = 'running' | 'done' | 'failed' | 'interrupted';

export interface JobStatus {
  /** What kind of job: 'rebuild', 'scrub', 'fsck', ... */
  readonly kind: string;
  readonly id: string;
  state: JobState;
  /** The current phase, e.g. 'scan', 'restore'. */
  phase: string;
  /** Units done and the total known so far (0: unknown). */
  done: number;
  total: number;
  /** The unit of done/total, e.g. 'objects', 'bytes'. */
  unit: string;
  readonly startedMs: number;
  updatedMs: number;
  finishedMs?: number;
  /** Counters the job reports (repaired, conflicts, ...). */
  counters: Record<string, number>;
  error?: string;
  /** The job's report (JSON), complete once the job is done. */
  result?: Record<string, unknown>;
}

export class JobRegistry {
  readonly #jobs = new Map<string, JobStatus>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Start a job of `kind`; refused while another job of that kind runs. */
  start(kind: string, unit: string): JobStatus {
    const running = this.#jobs.get(kind);
    if (running?.state === 'running') throw new Error(`a ${kind} job is already running (${running.id})`);
    const now = this.#now();
    const job: JobStatus = {
      kind,
      id: `${kind}-${now.toString(36)}`,
      state: 'running',
      phase: 'starting',
      done: 0,
      total: 0,
      unit,
      startedMs: now,
      updatedMs: now,
      counters: {},
    };
    this.#jobs.set(kind, job);
    return job;
  }

  update(job: JobStatus, change: Partial<Pick<JobStatus, 'phase' | 'done' | 'total' | 'unit'>>): void {
    Object.assign(job, change);
    job.updatedMs = this.#now();
  }

  count(job: JobStatus, counter: string, by = 1): void {
    job.counters[counter] = (job.counters[counter] ?? 0) + by;
    job.updatedMs = this.#now();
  }

  finish(job: JobStatus, error?: unknown): void {
    job.state = error === undefined ? 'done' : 'failed';
    if (error !== undefined) job.error = error instanceof Error ? error.message : String(error);
    job.finishedMs = this.#now();
    job.updatedMs = job.finishedMs;
  }

  get(kind: string): JobStatus | undefined {
    return this.#jobs.get(kind);
  }

  /** Every job, running ones first, then by start time (newest first). */
  all(): JobStatus[] {
    return [...this.#jobs.values()].sort(
      (a, b) => Number(b.state === 'running') - Number(a.state === 'running') || b.startedMs - a.startedMs,
    );
  }
}
