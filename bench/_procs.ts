/**
 * `zhsm-node` child processes for the benchmarks: the same commands a user types, every child
 * killed when the benchmark process exits.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { daemonStartArgs } from '../node/common/daemon-flags.ts';

const execFileAsync = promisify(execFile);
export const nodeCli = join(import.meta.dirname, '..', 'node', 'cli', 'node.ts');
export const LOOPBACK = '/ip4/127.0.0.1/tcp/0';

export interface Proc {
  name: string;
  data: string;
  child?: ChildProcess;
  peerId: string;
  addresses: string[];
}

const children: ChildProcess[] = [];

/**
 * Extra Node flags for the daemons this benchmark starts, from `ZHSM_BENCH_NODE_ARGS` (split on
 * spaces), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile them (Node refuses those flags
 * in NODE_OPTIONS).
 */
const nodeArgs = (process.env.ZHSM_BENCH_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '');

/** SIGKILL every child still running (also done when this process exits). */
export function killAll(): void {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
process.on('exit', killAll);

/** `zhsm-node ARGS --json`, parsed. */
export async function cli(args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await execFileAsync(process.execPath, [nodeCli, ...args, '--json'], {
    timeout: 120_000,
  });
  return JSON.parse(stdout) as Record<string, unknown>;
}

/** `zhsm-node start --data`, resolved on its "started" line (peer id and addresses filled in). */
export async function start(proc: Proc, extra: string[] = []): Promise<void> {
  const child = spawn(
    process.execPath,
    daemonStartArgs({ cli: nodeCli, data: proc.data, args: ['--log-level', 'error', ...extra], nodeArgs }),
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  children.push(child);
  proc.child = child;
  await new Promise<void>((resolve, reject) => {
    let buffered = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      buffered += text;
      const line = buffered.split('\n').find((l) => l.includes('"event":"started"'));
      if (line === undefined) return;
      const started = JSON.parse(line) as { peerId: string; addresses: string[] };
      proc.peerId = started.peerId;
      proc.addresses = started.addresses;
      resolve();
    });
    child.once('exit', (code) => reject(new Error(`${proc.name} exited with ${code} while starting`)));
  });
}

export function kill(proc: Proc, signal: NodeJS.Signals): Promise<void> {
  const child = proc.child;
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
