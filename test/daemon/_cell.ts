/**
 * Real multi-process cells for the daemon tests: every node is a `zhsm-node` child process on
 * loopback, started with the same commands a user types. Every child is killed when the test ends.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { daemonStartArgs } from '../../node/common/daemon-flags.ts';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
export const nodeCli = join(root, 'node', 'cli', 'node.ts');
export const zhsmCli = join(root, 'node', 'cli', 'zhsm.ts');
export const LOOPBACK = '/ip4/127.0.0.1/tcp/0';

export interface NodeProcess {
  readonly name: string;
  readonly data: string;
  peerId: string;
  controllerId: number;
  addresses: string[];
  child: ChildProcess | undefined;
  stderr: string;
}

export async function cli(args: string[], options: { timeoutMs?: number } = {}): Promise<string> {
  const { stdout } = await run(process.execPath, [nodeCli, ...args], {
    timeout: options.timeoutMs ?? 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

export async function zhsm(args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [zhsmCli, ...args], { timeout: 60_000 });
  return stdout;
}

/** Run `zhsm ARGS` and report how it ended (a nonzero exit is an outcome, not a rejection). */
export async function zhsmOutcome(
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [zhsmCli, ...args], {
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

/** Start `zhsm-node start --data` and wait for its "started" line. */
export async function startNode(t: TestContext, node: NodeProcess, extra: string[] = []): Promise<void> {
  const child = spawn(
    process.execPath,
    daemonStartArgs({ cli: nodeCli, data: node.data, args: ['--log-level', 'warn', ...extra] }),
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  node.child = child;
  node.stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => {
    node.stderr = (node.stderr + text).slice(-20_000);
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`${node.name} did not start: ${node.stderr}`)), 30_000);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      buffered += text;
      const line = buffered.split('\n').find((l) => l.includes('"event":"started"'));
      if (line === undefined) return;
      clearTimeout(timer);
      const started = JSON.parse(line) as { peerId: string; controllerId: number; addresses: string[] };
      node.peerId = started.peerId;
      node.controllerId = started.controllerId;
      node.addresses = started.addresses;
      resolve();
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${node.name} exited (${code ?? signal}) while starting: ${node.stderr}`));
    });
  });
}

export async function stopNode(
  node: NodeProcess,
  signal: NodeJS.Signals = 'SIGTERM',
): Promise<number | null> {
  const child = node.child;
  if (child === undefined || child.exitCode !== null || child.signalCode !== null)
    return child?.exitCode ?? null;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill(signal);
  return exited;
}

export function newNode(base: string, name: string): NodeProcess {
  return {
    name,
    data: join(base, name),
    peerId: '',
    controllerId: 0,
    addresses: [],
    child: undefined,
    stderr: '',
  };
}

/** init the first controller (not started). */
export async function initCell(base: string, cell: string, extra: string[] = []) {
  const first = newNode(base, 'c1');
  const out = JSON.parse(
    await cli(['init', '--data', first.data, '--cell', cell, '--listen', LOOPBACK, '--json', ...extra]),
  ) as { peerId: string; addresses: string[]; token: string };
  first.peerId = out.peerId;
  first.controllerId = 1;
  first.addresses = out.addresses;
  return { first, token: out.token };
}

export async function joinNode(
  node: NodeProcess,
  peer: string,
  token: string,
  extra: string[] = [],
): Promise<{ controllerId: number; peerId: string }> {
  const out = JSON.parse(
    await cli([
      'join',
      peer,
      '--token',
      token,
      '--data',
      node.data,
      '--listen',
      LOOPBACK,
      '--json',
      ...extra,
    ]),
  ) as { controllerId: number; peerId: string };
  node.controllerId = out.controllerId;
  node.peerId = out.peerId;
  return out;
}

export interface StatusJson {
  primary: { id: number; peerId: string } | null;
  term: number;
  commitIndex: number;
  voters: number[];
  learners: number[];
  controllers: Array<{
    id: number;
    role: string;
    reachable: boolean;
    appliedIndex: number;
    commitIndex: number;
  }>;
  servers: Array<{
    name: string;
    online: boolean;
    backends: Array<{ capacityBytes: number; freeBytes: number }>;
  }>;
}

export async function status(node: NodeProcess): Promise<StatusJson> {
  return JSON.parse(await zhsm(['status', '--data', node.data, '--json'])) as StatusJson;
}

/** Poll `check` until it returns a value (not undefined) or the time is up. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
