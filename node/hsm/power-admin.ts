/**
 * The admin side of power management: the `power-*` ops of a daemon's admin socket
 * (node/daemon/node.ts), which `zhsm power ...` (node/cli/zhsm-power.ts) sends. Every op goes to
 * the primary through the node's RemoteCell; answers are plain JSON (ids as hex).
 *
 *   power-status                         servers with power state, configuration, last access; policy
 *   power-on | power-off {server, force} switch a server (name or uuid prefix)
 *   power-log {limit}                    the last power events
 *   power-config {server, remove | driver, ...}   set or remove a server's power driver
 *   power-policy {idleTimeoutMs?, wakeTimeoutMs?, retryBackoffMs?, retryBackoffMaxMs?}
 */
import { InvalidArgumentError, NotFoundError, ZhsmError } from '../common/errors.ts';
import type { PowerConfig, PowerEvent, PowerPolicy, ServerRecord } from '../metadata/records.ts';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** What the admin ops need of the node's connection to the cell (RemoteCell has it). */
export interface PowerAdminCell {
  request(request: { read: { power: { events: number } } }): Promise<{
    power?: { servers: ServerRecord[]; configs: PowerConfig[]; policy: PowerPolicy; events: PowerEvent[] };
  }>;
  propose(command: {
    setPowerConfig?: { config: PowerConfig; remove?: boolean };
    setPowerPolicy?: { policy: PowerPolicy };
  }): Promise<{ code: string; message: string }>;
  power(
    serverUuid: Uint8Array,
    action: 'wake' | 'on' | 'off',
    options?: { force?: boolean },
  ): Promise<{ server: ServerRecord; waitMs: number }>;
}

export interface PowerServerJson {
  uuid: string;
  name: string;
  peerId: string;
  online: boolean;
  power: string;
  powerChangedMs: number;
  powerReason: string;
  powerFailures: number;
  lastAccessMs: number;
  lastSeenMs: number;
  driver: string;
  config: Record<string, unknown> | null;
}

export interface PowerEventJson {
  sequence: number;
  timeMs: number;
  server: string;
  name: string;
  from: string;
  to: string;
  reason: string;
}

/** A server named by its name or a unique prefix of its uuid (hex). */
export function resolveServer(servers: readonly ServerRecord[], text: string): ServerRecord {
  const wanted = text.trim();
  if (wanted === '') throw new InvalidArgumentError('name a server (name or uuid prefix)');
  const byName = servers.filter((s) => s.name === wanted);
  if (byName.length === 1) return byName[0]!;
  if (byName.length > 1)
    throw new InvalidArgumentError(`${byName.length} servers are named ${wanted}: use a uuid prefix`);
  const prefix = wanted.toLowerCase();
  if (!/^[0-9a-f]+$/.test(prefix)) throw new NotFoundError(`no storage server named ${wanted}`);
  const byUuid = servers.filter((s) => hex(s.uuid).startsWith(prefix));
  if (byUuid.length === 1) return byUuid[0]!;
  if (byUuid.length > 1)
    throw new InvalidArgumentError(`uuid prefix ${wanted} matches ${byUuid.length} servers`);
  throw new NotFoundError(`no storage server named ${wanted} or with a uuid starting ${wanted}`);
}

function configJson(config: PowerConfig | undefined): Record<string, unknown> | null {
  if (config === undefined) return null;
  if (config.driver === 'sim')
    return {
      driver: 'sim',
      data: config.simData ?? '',
      bootDelayMs: config.simBootDelayMs ?? 0,
      stopGraceMs: config.simStopGraceMs ?? 0,
    };
  return {
    driver: config.driver,
    on: config.onCommand ?? '',
    off: config.offCommand ?? '',
    status: config.statusCommand ?? '',
    address: config.address ?? '',
    outlet: config.outlet ?? '',
    timeoutMs: config.timeoutMs ?? 0,
    retries: config.retries ?? 0,
    retryDelayMs: config.retryDelayMs ?? 0,
  };
}

export function serverJson(server: ServerRecord, config?: PowerConfig): PowerServerJson {
  return {
    uuid: hex(server.uuid),
    name: server.name,
    peerId: server.peerId,
    online: server.online,
    power: server.power,
    powerChangedMs: server.powerChangedMs ?? 0,
    powerReason: server.powerReason ?? '',
    powerFailures: server.powerFailures ?? 0,
    lastAccessMs: server.lastAccessMs ?? 0,
    lastSeenMs: server.lastSeenMs,
    driver: config?.driver ?? '',
    config: configJson(config),
  };
}

export function eventJson(event: PowerEvent): PowerEventJson {
  return {
    sequence: event.sequence,
    timeMs: event.timeMs,
    server: hex(event.serverUuid),
    name: event.serverName,
    from: event.from,
    to: event.to,
    reason: event.reason,
  };
}

function policyJson(policy: PowerPolicy) {
  return {
    idleTimeoutMs: policy.idleTimeoutMs,
    wakeTimeoutMs: policy.wakeTimeoutMs,
    retryBackoffMs: policy.retryBackoffMs,
    retryBackoffMaxMs: policy.retryBackoffMaxMs,
  };
}

function optionalNumber(request: Record<string, unknown>, key: string): number | undefined {
  const value = request[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    throw new InvalidArgumentError(`${key} must be a non-negative integer`);
  return value;
}

function optionalString(request: Record<string, unknown>, key: string): string | undefined {
  const value = request[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new InvalidArgumentError(`${key} must be a string`);
  return value;
}

function check(result: { code: string; message: string }, what: string): void {
  if (result.code !== 'OK')
    throw new ZhsmError(
      result.code === 'INVALID_ARGUMENT' ? 'INVALID_ARGUMENT' : 'IO_ERROR',
      `${what}: ${result.message}`,
    );
}

async function view(cell: PowerAdminCell, events = 0) {
  const answer = await cell.request({ read: { power: { events } } });
  if (answer.power == null) throw new ZhsmError('DECODE_ERROR', 'the primary answered without a power view');
  return answer.power;
}

/** Serve one `power-*` admin op. */
export async function powerAdmin(
  cell: PowerAdminCell,
  request: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const op = request.op;
  if (op === 'power-status') {
    const { servers, configs, policy } = await view(cell);
    const configOf = (s: ServerRecord) => configs.find((c) => hex(c.serverUuid) === hex(s.uuid));
    return {
      nowMs: Date.now(),
      policy: policyJson(policy),
      servers: servers.map((s) => serverJson(s, configOf(s))),
    };
  }
  if (op === 'power-log') {
    const limit = optionalNumber(request, 'limit') ?? 50;
    if (limit < 1 || limit > 1000) throw new InvalidArgumentError('limit must be between 1 and 1000');
    return { events: (await view(cell, limit)).events.map(eventJson) };
  }
  if (op === 'power-policy') {
    const current = (await view(cell)).policy;
    const policy: PowerPolicy = {
      idleTimeoutMs: optionalNumber(request, 'idleTimeoutMs') ?? current.idleTimeoutMs,
      wakeTimeoutMs: optionalNumber(request, 'wakeTimeoutMs') ?? current.wakeTimeoutMs,
      retryBackoffMs: optionalNumber(request, 'retryBackoffMs') ?? current.retryBackoffMs,
      retryBackoffMaxMs: optionalNumber(request, 'retryBackoffMaxMs') ?? current.retryBackoffMaxMs,
    };
    const changed = (Object.keys(policy) as Array<keyof PowerPolicy>).some((k) => policy[k] !== current[k]);
    if (changed) check(await cell.propose({ setPowerPolicy: { policy } }), 'cannot set the power policy');
    return { policy: policyJson(policy), changed };
  }
  const name = optionalString(request, 'server');
  if (name === undefined) throw new InvalidArgumentError(`${String(op)} needs a server`);
  const { servers, configs } = await view(cell);
  const server = resolveServer(servers, name);
  const configOf = () => configs.find((c) => hex(c.serverUuid) === hex(server.uuid));
  if (op === 'power-on' || op === 'power-off') {
    const answer = await cell.power(server.uuid, op === 'power-on' ? 'on' : 'off', {
      force: request.force === true,
    });
    return { server: serverJson(answer.server, configOf()), waitMs: answer.waitMs };
  }
  if (op === 'power-config') {
    if (request.remove === true) {
      check(
        await cell.propose({
          setPowerConfig: { config: { serverUuid: server.uuid, driver: '' }, remove: true },
        }),
        'cannot remove the power configuration',
      );
      return { server: serverJson(server), removed: true };
    }
    const driver = optionalString(request, 'driver');
    if (driver !== 'command' && driver !== 'sim')
      throw new InvalidArgumentError('driver must be "command" or "sim"');
    const config: PowerConfig = {
      serverUuid: server.uuid,
      driver,
      onCommand: optionalString(request, 'onCommand') ?? '',
      offCommand: optionalString(request, 'offCommand') ?? '',
      statusCommand: optionalString(request, 'statusCommand') ?? '',
      address: optionalString(request, 'address') ?? '',
      outlet: optionalString(request, 'outlet') ?? '',
      timeoutMs: optionalNumber(request, 'timeoutMs') ?? 0,
      retries: optionalNumber(request, 'retries') ?? 0,
      retryDelayMs: optionalNumber(request, 'retryDelayMs') ?? 0,
      simData: optionalString(request, 'simData') ?? '',
      simBootDelayMs: optionalNumber(request, 'bootDelayMs') ?? 0,
      simStopGraceMs: optionalNumber(request, 'stopGraceMs') ?? 0,
    };
    check(await cell.propose({ setPowerConfig: { config } }), 'cannot set the power configuration');
    return { server: serverJson(server, config) };
  }
  throw new InvalidArgumentError(`unknown admin request ${JSON.stringify(op)}`);
}
