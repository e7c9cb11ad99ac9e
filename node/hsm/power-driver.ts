/**
 * Power drivers: how a controller switches one storage server on and off.
 *
 * - `command`: shell command templates (`/bin/sh -c`), e.g. `zs-apc-spdu-ctl on {outlet}`,
 *   `ipmitool -H {address} chassis power off`, `wakeonlan {address}`. Placeholders `{name}`,
 *   `{uuid}`, `{address}`, `{outlet}` are replaced by shell-quoted values. Every attempt runs in
 *   its own process group and is killed (SIGTERM, then SIGKILL) at the timeout; a failed attempt
 *   is retried after a delay that doubles. The status command prints `on` or `off` (its last
 *   line is searched for the word; IPMI's "Chassis Power is on" works).
 * - `sim` (tests, the simulator's real twin): really starts and stops a storage server's daemon
 *   process, `node/cli/node.ts start --data DIR` on this Node binary, detached. `on()` waits the
 *   boot delay (a RAID that needs minutes), then spawns it; `off()` sends SIGTERM (the daemon
 *   deregisters and exits) and SIGKILL after a grace period. The daemon's pid comes from its admin
 *   socket (`pid` op) or, for a process this driver started, from `DIR/sim-power.pid`.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { access, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { daemonStartArgs } from '../common/daemon-flags.ts';
import { InvalidArgumentError, ZhsmError } from '../common/errors.ts';
import { packageRoot } from '../common/package-root.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import type { PowerConfig } from '../metadata/records.ts';

export type PowerStatus = 'on' | 'off' | 'unknown';

export interface PowerDriver {
  /**
   * Switch the server on (resolves when the driver did its part; the server registers later).
   * `signal` aborts waits between steps (the manager is stopping).
   */
  on(signal?: AbortSignal): Promise<void>;
  /** Switch the server off (resolves when it is off as far as the driver can tell). */
  off(signal?: AbortSignal): Promise<void>;
  status(): Promise<PowerStatus>;
}

/** What the templates may name about a server. */
export interface PowerTarget {
  readonly name: string;
  readonly uuid: string;
  /** The configured address, or the host of the server's first multiaddr. */
  readonly address: string;
  readonly outlet: string;
}

export const COMMAND_TIMEOUT_MS_DEFAULT = 60_000;
export const COMMAND_RETRY_DELAY_MS_DEFAULT = 2_000;
export const SIM_STOP_GRACE_MS_DEFAULT = 10_000;
/** Output kept per command attempt (for the error message). */
const OUTPUT_BYTES_MAX = 4096;
/** A SIGTERMed command gets this long before SIGKILL. */
const KILL_GRACE_MS = 1_000;

export class PowerDriverError extends ZhsmError {
  constructor(message: string) {
    super('IO_ERROR', message);
  }
}

/** `text` as one single-quoted shell word. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** Replace `{name}`, `{uuid}`, `{address}`, `{outlet}` by shell-quoted values; others are errors. */
export function expandTemplate(template: string, target: PowerTarget): string {
  return template.replace(/\{([a-z]+)\}/g, (_match, key: string) => {
    if (key === 'name' || key === 'uuid' || key === 'address' || key === 'outlet')
      return shellQuote(target[key]);
    throw new InvalidArgumentError(
      `unknown placeholder {${key}} in power command (name, uuid, address, outlet)`,
    );
  });
}

export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
  readonly timedOut: boolean;
}

/** Run one shell command in its own process group; kill the group at the timeout. */
export function runCommand(command: string, timeoutMs: number): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let timedOut = false;
    let killTimer: ReturnType<typeof setTimeout> | undefined;
    const keep = (text: Buffer) => {
      output = (output + text.toString('utf8')).slice(-OUTPUT_BYTES_MAX);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const killGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // the group is gone already
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS);
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      // Whatever the shell left behind in its group goes too.
      if (timedOut) killGroup('SIGKILL');
      resolve({ code, signal, output: output.trim(), timedOut });
    });
  });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function checkAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new PowerDriverError(`${what} aborted: the power manager stopped`);
}

function describe(result: CommandResult, timeoutMs: number): string {
  const how = result.timedOut
    ? `timed out after ${timeoutMs} ms (killed)`
    : result.signal !== null
      ? `killed by ${result.signal}`
      : `exit code ${result.code}`;
  const last = result.output.split('\n').at(-1) ?? '';
  return last === '' ? how : `${how}: ${last.slice(0, 300)}`;
}

export interface CommandDriverOptions {
  readonly onCommand: string;
  readonly offCommand: string;
  readonly statusCommand?: string;
  readonly timeoutMs?: number;
  readonly retries?: number;
  readonly retryDelayMs?: number;
}

/** The `command` driver. */
export class CommandPowerDriver implements PowerDriver {
  readonly #options: CommandDriverOptions;
  readonly #target: PowerTarget;

  constructor(options: CommandDriverOptions, target: PowerTarget) {
    if (options.onCommand === '' || options.offCommand === '')
      throw new InvalidArgumentError('the command driver needs an on and an off command');
    this.#options = options;
    this.#target = target;
    // Templates are checked now: a bad placeholder fails the configuration, not a power-down.
    expandTemplate(options.onCommand, target);
    expandTemplate(options.offCommand, target);
    if (options.statusCommand) expandTemplate(options.statusCommand, target);
  }

  get #timeoutMs(): number {
    return this.#options.timeoutMs || COMMAND_TIMEOUT_MS_DEFAULT;
  }

  async #run(what: string, template: string, signal?: AbortSignal): Promise<CommandResult> {
    const command = expandTemplate(template, this.#target);
    const attempts = 1 + (this.#options.retries ?? 0);
    let delayMs = this.#options.retryDelayMs || COMMAND_RETRY_DELAY_MS_DEFAULT;
    let last = '';
    for (let attempt = 1; attempt <= attempts; attempt++) {
      checkAborted(signal, `power ${what}`);
      const result = await runCommand(command, this.#timeoutMs);
      if (result.code === 0 && !result.timedOut) return result;
      last = describe(result, this.#timeoutMs);
      if (attempt < attempts) {
        await sleep(delayMs, signal);
        delayMs *= 2;
      }
    }
    throw new PowerDriverError(
      `power ${what} command for ${this.#target.name} failed${attempts > 1 ? ` ${attempts} times` : ''}: ${last}`,
    );
  }

  async on(signal?: AbortSignal): Promise<void> {
    await this.#run('on', this.#options.onCommand, signal);
  }

  async off(signal?: AbortSignal): Promise<void> {
    await this.#run('off', this.#options.offCommand, signal);
  }

  async status(): Promise<PowerStatus> {
    if (!this.#options.statusCommand) return 'unknown';
    const result = await runCommand(
      expandTemplate(this.#options.statusCommand, this.#target),
      this.#timeoutMs,
    );
    if (result.code !== 0 || result.timedOut) return 'unknown';
    const last = (result.output.split('\n').at(-1) ?? '').toLowerCase();
    const word = /\b(on|off)\b/.exec(last)?.[1];
    return word === 'on' ? 'on' : word === 'off' ? 'off' : 'unknown';
  }
}

export interface SimDriverOptions {
  /** The storage server's data directory (`zhsm-node start --data DIR`). */
  readonly data: string;
  readonly bootDelayMs?: number;
  readonly stopGraceMs?: number;
  /** The daemon's CLI (default: node/cli/node.ts of this checkout). */
  readonly nodeCli?: string;
}

const NODE_CLI = join(packageRoot, 'node', 'cli', 'node.ts');
const PID_FILE = 'sim-power.pid';
const LOG_FILE = 'sim-power.log';
/** The pid answer of a daemon's admin socket must come this fast. */
const ADMIN_TIMEOUT_MS = 3_000;
/** A freshly spawned daemon that exits within this long failed to start. */
const EARLY_EXIT_MS = 1_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The `sim` driver: starts and stops a real daemon process. */
export class SimPowerDriver implements PowerDriver {
  readonly #options: SimDriverOptions;

  constructor(options: SimDriverOptions) {
    if (!options.data.startsWith('/'))
      throw new InvalidArgumentError('the sim driver needs an absolute data directory');
    this.#options = options;
  }

  /** The running daemon's pid: asked on its admin socket, else the pid this driver started. */
  async pid(): Promise<number | undefined> {
    try {
      const reply = await adminRequest<{ pid: number }>(this.#options.data, { op: 'pid' }, ADMIN_TIMEOUT_MS);
      if (Number.isSafeInteger(reply.pid) && alive(reply.pid)) return reply.pid;
    } catch {
      // not answering: maybe still starting, maybe hung
    }
    try {
      const pid = Number((await readFile(join(this.#options.data, PID_FILE), 'utf8')).trim());
      if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) return pid;
    } catch {
      // no pid file
    }
    return undefined;
  }

  async status(): Promise<PowerStatus> {
    return (await this.pid()) === undefined ? 'off' : 'on';
  }

  async on(signal?: AbortSignal): Promise<void> {
    if ((await this.pid()) !== undefined) return;
    try {
      await access(join(this.#options.data, 'node.json'));
    } catch {
      throw new PowerDriverError(`no zhsm node in ${this.#options.data} (node.json is missing)`);
    }
    await sleep(this.#options.bootDelayMs ?? 0, signal);
    checkAborted(signal, 'power on');
    const logPath = join(this.#options.data, LOG_FILE);
    const log = openSync(logPath, 'a');
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(
        process.execPath,
        daemonStartArgs({
          cli: this.#options.nodeCli ?? NODE_CLI,
          data: this.#options.data,
          args: ['--log-level', 'warn'],
        }),
        { detached: true, stdio: ['ignore', log, log] },
      );
    } finally {
      closeSync(log);
    }
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', (error) => resolve(error));
    });
    if (spawned !== undefined) throw new PowerDriverError(`cannot start the daemon: ${spawned.message}`);
    child.unref();
    await writeFile(join(this.#options.data, PID_FILE), `${child.pid}\n`);
    const early = await Promise.race([exited, sleep(EARLY_EXIT_MS).then(() => 'running' as const)]);
    if (early !== 'running')
      throw new PowerDriverError(`the daemon exited at once (code ${early}); see ${logPath}`);
  }

  async off(_signal?: AbortSignal): Promise<void> {
    const pid = await this.pid();
    if (pid === undefined) return;
    process.kill(pid, 'SIGTERM');
    const graceMs = this.#options.stopGraceMs || SIM_STOP_GRACE_MS_DEFAULT;
    const deadline = Date.now() + graceMs;
    while (alive(pid) && Date.now() < deadline) await sleep(50);
    if (alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
      const killDeadline = Date.now() + 5_000;
      while (alive(pid) && Date.now() < killDeadline) await sleep(50);
      if (alive(pid)) throw new PowerDriverError(`daemon ${pid} survived SIGKILL`);
    }
    await rm(join(this.#options.data, PID_FILE), { force: true });
  }
}

/** The driver a stored configuration describes. */
export function powerDriverFor(config: PowerConfig, target: PowerTarget): PowerDriver {
  if (config.driver === 'command')
    return new CommandPowerDriver(
      {
        onCommand: config.onCommand ?? '',
        offCommand: config.offCommand ?? '',
        statusCommand: config.statusCommand ?? '',
        timeoutMs: config.timeoutMs ?? 0,
        retries: config.retries ?? 0,
        retryDelayMs: config.retryDelayMs ?? 0,
      },
      target,
    );
  if (config.driver === 'sim')
    return new SimPowerDriver({
      data: config.simData ?? '',
      bootDelayMs: config.simBootDelayMs ?? 0,
      stopGraceMs: config.simStopGraceMs ?? 0,
    });
  throw new InvalidArgumentError(`unknown power driver ${JSON.stringify(config.driver)}`);
}
