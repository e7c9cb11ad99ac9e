/**
 * `zhsm power`: power management of the storage servers (node/hsm/power-*.ts). Every command asks
 * the running daemon of `--data` (its admin socket), which forwards to the primary controller.
 */
import { type Command, InvalidArgumentError as UsageError } from 'commander';
import { parseDuration } from '../common/duration.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import type { PowerEventJson, PowerServerJson } from '../hsm/power-admin.ts';
import {
  formatPowerLog,
  formatPowerPolicy,
  formatPowerServer,
  formatPowerStatus,
  type PowerPolicyJson,
} from './zhsm-format.ts';

/** A duration option ("30s", "5m"); a bad one is a usage error (exit 2). */
function durationOption(text: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** --idle: a duration or "never". */
function idleOption(text: string): number {
  return text.trim() === 'never' ? 0 : durationOption(text);
}

function countOption(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value))
    throw new UsageError(`expected a non-negative integer, got ${JSON.stringify(text)}`);
  return value;
}

/** Report a usage error from an action (printed by commander, exit 2). */
function usage(command: Command, message: string): never {
  command.error(`error: ${message}`, { exitCode: 2, code: 'commander.usage' });
  throw new UsageError(message); // not reached: error() exits (or throws with exitOverride)
}

function print(json: boolean, value: unknown, human: () => string): void {
  console.log(json ? JSON.stringify(value, null, 2) : human());
}

const SERVER_HELP = 'a storage server: its name or a unique prefix of its uuid';

/** Register `zhsm power ...` on the zhsm program. */
export function registerPowerCommands(program: Command): void {
  const power = program
    .command('power')
    .description('power management of storage servers: state, on/off, power log, drivers, policy')
    .addHelpText(
      'after',
      `
States: ON, WAKING, SLEEPING, GOING_DOWN, FAILED_TO_START, FAILED_TO_STOP. The primary controller
powers a server down after the idle timeout without data access (never a server that runs a
controller, never while pending writes or migrations target it), wakes it when a read needs data
only it holds (the read waits up to the wake timeout), and retries failed starts and stops with
backoff. A server that cannot be stopped is reported (FAILED_TO_STOP) and kept marked on.

Examples:
  zhsm power status --data /var/lib/zhsm
  zhsm power policy --idle 30m --wake-timeout 5m --data /var/lib/zhsm
  zhsm power config s1 --driver command --on 'zs-apc-spdu-ctl on {outlet}' \\
      --off 'zs-apc-spdu-ctl off {outlet}' --outlet 4 --timeout 30s --retries 2 --data /var/lib/zhsm
  zhsm power off s1 --data /var/lib/zhsm
  zhsm power log --limit 20 --data /var/lib/zhsm`,
    );

  power
    .command('status')
    .description('every storage server: power state and since when, online, last data access, driver')
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--json', 'print JSON')
    .action(async (options) => {
      const reply = await adminRequest<{
        nowMs: number;
        policy: PowerPolicyJson;
        servers: PowerServerJson[];
      }>(options.data, { op: 'power-status' });
      const { ok: _ok, ...report } = reply as typeof reply & { ok?: boolean };
      print(options.json === true, report, () => formatPowerStatus(reply));
    });

  for (const action of ['on', 'off'] as const) {
    const command = power
      .command(`${action} <server>`)
      .description(
        action === 'on'
          ? 'power a server up (WAKING until it registers, then ON)'
          : 'power a server down now (refused for controllers and while pending work targets it)',
      )
      .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
      .option('--json', 'print JSON');
    if (action === 'off') command.option('--force', 'even when pending writes or migrations target it');
    command.addHelpText('after', `\n<server>: ${SERVER_HELP}.`).action(async (server: string, options) => {
      const reply = await adminRequest<{ server: PowerServerJson; waitMs: number }>(
        options.data,
        { op: `power-${action}`, server, force: options.force === true },
        60_000,
      );
      print(options.json === true, { server: reply.server, waitMs: reply.waitMs }, () => {
        const wait =
          reply.waitMs > 0 ? `\nit should register within ${Math.round(reply.waitMs / 1000)} s` : '';
        return formatPowerServer(reply.server) + wait;
      });
    });
  }

  const log = power
    .command('log')
    .description('the last power events (state changes with reasons), oldest first')
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--limit <n>', 'how many events (1-1000)', countOption, 50)
    .option('--json', 'print JSON')
    .action(async (options) => {
      if (options.limit < 1 || options.limit > 1000) usage(log, '--limit must be between 1 and 1000');
      const reply = await adminRequest<{ events: PowerEventJson[] }>(options.data, {
        op: 'power-log',
        limit: options.limit,
      });
      print(options.json === true, reply.events, () => formatPowerLog(reply.events));
    });

  const config = power
    .command('config <server>')
    .description("set (or remove) a server's power driver")
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--driver <kind>', 'command | sim')
    .option('--on <command>', 'command: shell command that powers the server on')
    .option('--off <command>', 'command: shell command that powers it off')
    .option('--status <command>', 'command: prints "on" or "off"')
    .option('--address <text>', "command: {address} (default: the host of the server's address)")
    .option('--outlet <text>', 'command: {outlet} (e.g. a PDU outlet)')
    .option(
      '--timeout <duration>',
      'command: per attempt, then the process group is killed (default 60s)',
      durationOption,
    )
    .option('--retries <n>', 'command: further attempts after a failure (default 0)', countOption)
    .option(
      '--retry-delay <duration>',
      'command: before the first retry, doubling (default 2s)',
      durationOption,
    )
    .option('--sim-data <dir>', "sim: the server's data directory (zhsm-node start --data DIR)")
    .option(
      '--boot-delay <duration>',
      'sim: wait this long before starting the daemon (a RAID)',
      durationOption,
    )
    .option('--stop-grace <duration>', 'sim: SIGKILL after this long (default 10s)', durationOption)
    .option('--remove', 'remove the power configuration (the server is never switched)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
<server>: ${SERVER_HELP}.
Command templates may use {name}, {uuid}, {address} and {outlet}; each is replaced by a
shell-quoted value, and the command runs with /bin/sh -c in its own process group.
The sim driver (tests) starts and stops "zhsm-node start --data DIR" on the primary's machine.`,
    )
    .action(async (server: string, options) => {
      let request: Record<string, unknown>;
      if (options.remove) {
        request = { op: 'power-config', server, remove: true };
      } else {
        if (options.driver !== 'command' && options.driver !== 'sim')
          usage(config, '--driver must be "command" or "sim" (or use --remove)');
        if (options.driver === 'command' && (options.on === undefined || options.off === undefined))
          usage(config, 'the command driver needs --on and --off');
        if (options.driver === 'sim' && options.simData === undefined)
          usage(config, 'the sim driver needs --sim-data');
        request = {
          op: 'power-config',
          server,
          driver: options.driver,
          onCommand: options.on,
          offCommand: options.off,
          statusCommand: options.status,
          address: options.address,
          outlet: options.outlet,
          timeoutMs: options.timeout,
          retries: options.retries,
          retryDelayMs: options.retryDelay,
          simData: options.simData,
          bootDelayMs: options.bootDelay,
          stopGraceMs: options.stopGrace,
        };
      }
      const reply = await adminRequest<{ server: PowerServerJson; removed?: boolean }>(options.data, request);
      print(options.json === true, { server: reply.server, removed: reply.removed === true }, () =>
        reply.removed ? `${reply.server.name}: power configuration removed` : formatPowerServer(reply.server),
      );
    });

  power
    .command('policy')
    .description('show or change the power policy of the cell')
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option(
      '--idle <duration>',
      'power a server down after no access for this long ("never": off)',
      idleOption,
    )
    .option('--wake-timeout <duration>', 'a woken server must register within this long', durationOption)
    .option('--retry-backoff <duration>', 'first retry of a failed start or stop (doubles)', durationOption)
    .option('--retry-backoff-max <duration>', 'the backoff at most', durationOption)
    .option('--json', 'print JSON')
    .action(async (options) => {
      const reply = await adminRequest<{ policy: PowerPolicyJson; changed: boolean }>(options.data, {
        op: 'power-policy',
        idleTimeoutMs: options.idle,
        wakeTimeoutMs: options.wakeTimeout,
        retryBackoffMs: options.retryBackoff,
        retryBackoffMaxMs: options.retryBackoffMax,
      });
      print(options.json === true, { policy: reply.policy, changed: reply.changed }, () =>
        formatPowerPolicy(reply.policy),
      );
    });
}
