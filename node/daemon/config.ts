/**
 * A node's data directory and its configuration file.
 *
 * Layout of `--data DIR`:
 *   node.json       this file: cell, roles, listen addresses (written atomically)
 *   identity.key    the libp2p private key (node/net/identity.ts)
 *   members.json    the cell's members as last known (peer ids, controller ids, addresses):
 *                   lets a restarted node find the cell without asking anyone
 *   raft/           controllers: the consensus log, term and vote (LevelDB)
 *   metadata/       controllers: the metadata state machine (LevelDB)
 *   server.uuid     storage servers: the server's UUID (in node.json)
 *   admin.sock      the running daemon's local admin socket (status, token create)
 *   metrics.url     while the daemon serves Prometheus metrics: their URL (node/daemon/metrics.ts)
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { InvalidArgumentError, IoError, NotFoundError } from '../common/errors.ts';
import type { Member, MemberNetwork, Route } from '../metadata/records.ts';
import { checkRoute } from './routing.ts';

export const CONFIG_FORMAT_VERSION = 1;

export interface NodeConfig {
  readonly formatVersion: number;
  readonly cell: string;
  /** A human name for status output (default: the host name). */
  readonly name: string;
  /** 0: not a controller; otherwise the id the cell assigned (the first controller is 1). */
  readonly controllerId: number;
  /** Absolute paths of this node's backend directories (a storage server when non-empty). */
  readonly backends: readonly string[];
  /**
   * Tags per backend path (placement chains pick backends by tag: `use tag:ssd`), from
   * `--tag PATH=TAG[,TAG]` or edited here; announced with the backend records.
   */
  readonly backendTags?: Readonly<Record<string, readonly string[]>>;
  /** The storage server's UUID (hex), present when `backends` is non-empty. */
  readonly serverUuid?: string;
  /** Multiaddrs to listen on; a tcp port 0 is replaced by the port actually bound on first start. */
  readonly listen: readonly string[];
  readonly announce?: readonly string[];
  /**
   * Routing (node/daemon/routing.ts): per destination subnet, the address peers there reach this
   * node at (`--route CIDR=MULTIADDR`). Announced to the cell with the node's own subnets.
   */
  readonly routes?: readonly Route[];
  /**
   * The consensus voters of a brand-new log: `[1]` on the node that created the cell, absent on
   * nodes that joined (they learn the membership from the primary's log). Used only while the
   * log holds no membership of its own, like etcd's initial cluster.
   */
  readonly initialVoters?: readonly number[];
  /**
   * The Prometheus metrics endpoint (node/daemon/metrics.ts): "HOST:PORT" (port 0: any free port,
   * see metrics.url) or "off"; absent: off. `zhsm-node start --metrics` overrides it.
   */
  readonly metrics?: string;
}

export const paths = (dataDirectory: string) => {
  const base = resolve(dataDirectory);
  return {
    base,
    config: join(base, 'node.json'),
    members: join(base, 'members.json'),
    raft: join(base, 'raft'),
    metadata: join(base, 'metadata'),
    adminSocket: join(base, 'admin.sock'),
    metricsUrl: join(base, 'metrics.url'),
  };
};

const CELL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkCellName(name: string): string {
  if (!CELL_NAME.test(name))
    throw new InvalidArgumentError(
      `invalid cell name ${JSON.stringify(name)}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  return name;
}

export function defaultNodeName(): string {
  return hostname();
}

export function newServerUuid(): string {
  return randomBytes(16).toString('hex');
}

function fail(path: string, problem: string): never {
  throw new InvalidArgumentError(`${path}: ${problem}`, { path });
}

/** Parse and check a node.json; every problem is a clear InvalidArgumentError naming the file. */
export function parseConfig(text: string, path: string): NodeConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    fail(path, `not valid JSON (${(error as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(path, 'expected a JSON object');
  const value = raw as Record<string, unknown>;
  if (value.formatVersion !== CONFIG_FORMAT_VERSION)
    fail(path, `unsupported formatVersion ${JSON.stringify(value.formatVersion)} (expected 1)`);
  if (typeof value.cell !== 'string') fail(path, 'cell must be a string');
  try {
    checkCellName(value.cell);
  } catch (error) {
    fail(path, (error as Error).message);
  }
  if (typeof value.name !== 'string' || value.name.length === 0 || value.name.length > 255)
    fail(path, 'name must be a non-empty string');
  if (!Number.isSafeInteger(value.controllerId) || (value.controllerId as number) < 0)
    fail(path, 'controllerId must be a non-negative integer');
  const strings = (key: string, required: boolean): string[] | undefined => {
    const list = value[key];
    if (list === undefined && !required) return undefined;
    if (!Array.isArray(list) || !list.every((item) => typeof item === 'string' && item.length > 0))
      fail(path, `${key} must be an array of strings`);
    return list as string[];
  };
  const backends = strings('backends', true) ?? [];
  const listen = strings('listen', true) ?? [];
  const announce = strings('announce', false);
  if (
    value.serverUuid !== undefined &&
    !(typeof value.serverUuid === 'string' && /^[0-9a-f]{32}$/.test(value.serverUuid))
  )
    fail(path, 'serverUuid must be 32 hex digits');
  if (backends.length > 0 && value.serverUuid === undefined) fail(path, 'a storage server needs serverUuid');
  let routes: Route[] | undefined;
  if (value.routes !== undefined) {
    if (!Array.isArray(value.routes)) fail(path, 'routes must be an array of {"subnet", "address"}');
    routes = [];
    for (const [i, item] of (value.routes as unknown[]).entries()) {
      const route = item as Record<string, unknown>;
      if (
        typeof route !== 'object' ||
        route === null ||
        typeof route.subnet !== 'string' ||
        typeof route.address !== 'string'
      )
        fail(path, `routes[${i}] must be {"subnet": CIDR, "address": MULTIADDR}`);
      try {
        routes.push(checkRoute({ subnet: route.subnet, address: route.address }));
      } catch (error) {
        fail(path, `routes[${i}]: ${(error as Error).message}`);
      }
    }
  }
  let backendTags: Record<string, string[]> | undefined;
  if (value.backendTags !== undefined) {
    const tags = value.backendTags as Record<string, unknown>;
    if (typeof tags !== 'object' || tags === null || Array.isArray(tags))
      fail(path, 'backendTags must be an object {"<backend path>": ["tag", ...]}');
    backendTags = {};
    for (const [backend, list] of Object.entries(tags)) {
      if (!backends.includes(backend))
        fail(path, `backendTags names ${JSON.stringify(backend)}, not a backend`);
      try {
        backendTags[backend] = checkTags(list);
      } catch (error) {
        fail(path, `backendTags[${JSON.stringify(backend)}]: ${(error as Error).message}`);
      }
    }
  }
  const initialVoters = value.initialVoters;
  if (
    initialVoters !== undefined &&
    !(Array.isArray(initialVoters) && initialVoters.every((id) => Number.isSafeInteger(id) && id > 0))
  )
    fail(path, 'initialVoters must be an array of positive integers');
  if (value.metrics !== undefined) {
    if (typeof value.metrics !== 'string') fail(path, 'metrics must be a string "HOST:PORT" or "off"');
    try {
      parseMetricsAddress(value.metrics);
    } catch (error) {
      fail(path, (error as Error).message);
    }
  }
  return {
    formatVersion: CONFIG_FORMAT_VERSION,
    cell: value.cell,
    name: value.name,
    controllerId: value.controllerId as number,
    backends,
    ...(value.serverUuid === undefined ? {} : { serverUuid: value.serverUuid as string }),
    listen,
    ...(announce === undefined ? {} : { announce }),
    ...(routes === undefined ? {} : { routes }),
    ...(backendTags === undefined ? {} : { backendTags }),
    ...(initialVoters === undefined ? {} : { initialVoters: initialVoters as number[] }),
    ...(value.metrics === undefined ? {} : { metrics: value.metrics as string }),
  };
}

const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** Where the metrics endpoint listens. */
export interface MetricsAddress {
  /** An IP address or host name (IPv6 without brackets). */
  readonly host: string;
  /** 0: any free port. */
  readonly port: number;
}

/**
 * `HOST:PORT` (`127.0.0.1:9464`, `0.0.0.0:9464`, `[::1]:9464`, `localhost:0`) or `off`
 * (undefined). Anything else is an InvalidArgumentError that says what is expected.
 */
export function parseMetricsAddress(text: string): MetricsAddress | undefined {
  if (text === 'off') return undefined;
  const bad = (why: string): never => {
    throw new InvalidArgumentError(
      `invalid metrics address ${JSON.stringify(text)}: ${why} (expected HOST:PORT such as 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464, or "off")`,
    );
  };
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  if (match === null) return bad('not HOST:PORT');
  const host = match[1] ?? match[2]!;
  const valid =
    match[1] !== undefined
      ? isIP(host) === 6
      : /^[\d.]+$/.test(host)
        ? isIP(host) === 4
        : HOST_NAME.test(host);
  if (!valid) return bad(`bad host ${JSON.stringify(host)}`);
  const port = Number(match[3]);
  if (port > 65_535) return bad('the port must be 0..65535');
  return { host, port };
}

export async function readConfig(dataDirectory: string): Promise<NodeConfig> {
  const path = paths(dataDirectory).config;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new NotFoundError(
        `${dataDirectory} is not a zhsm node directory (no node.json): run 'zhsm-node init' or 'zhsm-node join' first`,
        { path },
      );
    throw new IoError(`cannot read ${path}: ${(error as Error).message}`, { path }, { cause: error });
  }
  return parseConfig(text, path);
}

/** Write a file atomically: temp file, fsync, rename. */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const handle = await open(temp, 'w', 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
}

export async function writeConfig(dataDirectory: string, config: NodeConfig): Promise<void> {
  await mkdir(paths(dataDirectory).base, { recursive: true, mode: 0o700 });
  await writeFileAtomic(paths(dataDirectory).config, `${JSON.stringify(config, null, 2)}\n`);
}

/** The members cache (best effort: a damaged file only costs a slower start). */
export async function readMembersCache(dataDirectory: string): Promise<Member[]> {
  try {
    const raw = JSON.parse(await readFile(paths(dataDirectory).members, 'utf8')) as unknown;
    if (!Array.isArray(raw)) return [];
    return raw
      .filter(
        (
          item,
        ): item is {
          peerId: string;
          controllerId: number;
          addresses: string[];
          joinedMs?: number;
          network?: MemberNetwork;
        } =>
          typeof item === 'object' &&
          item !== null &&
          typeof item.peerId === 'string' &&
          Number.isSafeInteger(item.controllerId) &&
          Array.isArray(item.addresses) &&
          item.addresses.every((a: unknown) => typeof a === 'string'),
      )
      .map((item) => ({
        peerId: item.peerId,
        controllerId: item.controllerId,
        addresses: item.addresses,
        joinedMs: item.joinedMs ?? 0,
        joinToken: new Uint8Array(0),
        ...(isNetwork(item.network) ? { network: item.network } : {}),
      }));
  } catch {
    return [];
  }
}

export async function writeMembersCache(dataDirectory: string, members: readonly Member[]): Promise<void> {
  const plain = members.map((m) => ({
    peerId: m.peerId,
    controllerId: m.controllerId,
    addresses: m.addresses,
    joinedMs: m.joinedMs,
    ...(m.network == null ? {} : { network: m.network }),
  }));
  await writeFileAtomic(paths(dataDirectory).members, `${JSON.stringify(plain, null, 2)}\n`);
}

function isNetwork(value: unknown): value is MemberNetwork {
  if (typeof value !== 'object' || value === null) return false;
  const network = value as Record<string, unknown>;
  return (
    typeof network.hostname === 'string' &&
    Array.isArray(network.subnets) &&
    network.subnets.every((s) => typeof s === 'string') &&
    Array.isArray(network.routes) &&
    network.routes.every(
      (r) =>
        typeof r === 'object' &&
        r !== null &&
        typeof (r as Route).subnet === 'string' &&
        typeof (r as Route).address === 'string',
    )
  );
}

/** Tags of one backend: at most 16 names of letters, digits, _ . - (at most 64 characters). */
export function checkTags(list: unknown): string[] {
  if (!Array.isArray(list) || list.length > 16)
    throw new InvalidArgumentError('tags are a list of at most 16 names');
  for (const tag of list) {
    if (typeof tag !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(tag))
      throw new InvalidArgumentError(`bad tag ${JSON.stringify(tag)} (letters, digits, _ . -; at most 64)`);
  }
  return [...new Set(list as string[])];
}

/** `--tag PATH=TAG[,TAG...]`: the backend path (absolute) and its tags. */
export function parseTagArgument(argument: string): { path: string; tags: string[] } {
  const at = argument.lastIndexOf('=');
  if (at <= 0)
    throw new InvalidArgumentError(`--tag takes PATH=TAG[,TAG...], not ${JSON.stringify(argument)}`);
  return { path: resolve(argument.slice(0, at)), tags: checkTags(argument.slice(at + 1).split(',')) };
}

/** The backendTags of a config from `--tag` arguments; every path must be one of `backends`. */
export function backendTagsOf(
  backends: readonly string[],
  tags: ReadonlyArray<{ path: string; tags: string[] }> = [],
): Record<string, string[]> | undefined {
  if (tags.length === 0) return undefined;
  const found: Record<string, string[]> = {};
  for (const entry of tags) {
    if (!backends.includes(entry.path))
      throw new InvalidArgumentError(`--tag names ${entry.path}, which is not a --backend of this node`);
    found[entry.path] = [...new Set([...(found[entry.path] ?? []), ...entry.tags])];
  }
  return found;
}
