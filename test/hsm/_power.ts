/** Helpers of the real-process power tests: processes the `sim` power driver starts. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The processes the controller's sim driver starts for a storage server (its pid file in the
 * server's data directory): `note()` records the current one; all are killed by pid at the end.
 */
export function simProcesses(t: TestContext, serverData: string): { note: () => void } {
  const pids = new Set<number>();
  const note = () => {
    try {
      const pid = Number(readFileSync(join(serverData, 'sim-power.pid'), 'utf8'));
      if (pid > 0) pids.add(pid);
    } catch {}
  };
  // Noted every 250 ms as well: a test that fails early may never call note(), and its data
  // directory (with the pid file) can be gone before this cleanup runs.
  const timer = setInterval(note, 250);
  timer.unref();
  t.after(() => {
    clearInterval(timer);
    note();
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  return { note };
}
