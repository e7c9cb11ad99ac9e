/**
 * Admin ops of the daemon's socket for `zhsm backends|tokens|token|controllers` (node/cli/zhsm.ts).
 * Reads and actions go to the primary through the node's RemoteCell; answers are plain JSON (ids
 * as hex).
 *
 *   backends                                every backend with its server, tags, capacity, free space
 *   tokens                                  open file tokens with the file's path (the first 256)
 *   join-tokens {all}                       join tokens without secrets (valid ones; all: every one)
 *   join-token-revoke {token}               a token id (32 hex) or a whole token
 *   controllers                             every controller: role, term, indexes, membership, lag
 *   controllers-transfer|pin|remove {id}    leadership and membership (node/daemon/controller-admin.ts)
 *   controllers-unpin
 *   controllers-add {peer}                  make a member a controller
 */
import { InvalidArgumentError, NotFoundError, ZhsmError } from '../common/errors.ts';
import type { OpenToken } from '../metadata/records.ts';
import type { JobRegistry, JobStatus } from './jobs.ts';
import type { ControllerStatus, ZhsmNode } from './node.ts';
import type { CellInfo, ControllerAnswer } from './protocols.ts';
import type { RemoteCell } from './remote-cell.ts';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** `zhsm tokens` resolves the path of at most this many tokens (the rest show the object only). */
export const TOKEN_PATHS_MAX = 256;
/** ... walking up at most this many parents per object. */
const PATH_DEPTH_MAX = 128;
/** A controller this many entries behind the primary's log (or more) is reported as lagging. */
export const LAG_ENTRIES_HEALTHY_MAX = 1_000;

export const OPS_ADMIN_OPS = new Set([
  'backends',
  'tokens',
  'join-tokens',
  'join-token-revoke',
  'controllers',
  'controllers-transfer',
  'controllers-pin',
  'controllers-unpin',
  'controllers-add',
  'controllers-remove',
]);

export interface BackendJson {
  uuid: string;
  server: string;
  serverUuid: string;
  serverPeerId: string;
  online: boolean;
  power: string;
  path: string;
  tags: string[];
  capacityBytes: number;
  freeBytes: number;
  /** Used share of the capacity in percent (one decimal), 0 when the capacity is unknown. */
  usedPercent: number;
  updatedMs: number;
}

export interface OpenTokenJson {
  id: string;
  object: string;
  /** The file's path in the cell; '-' when it cannot be followed (removed, or past the first 256). */
  path: string;
  mode: string;
  holder: string;
  openedMs: number;
  expiresMs: number;
}

export interface JoinTokenJson {
  id: string;
  createdMs: number;
  expiresMs: number;
  revoked: boolean;
  /** 'valid', 'expired' or 'revoked'. */
  state: string;
}

/** One row of `zhsm controllers` and of the status report's replication health. */
export interface ReplicationStatus {
  id: number;
  /** 'voter', 'learner', or 'none' (a controller id not in the consensus membership yet). */
  membership: 'voter' | 'learner' | 'none';
  /** The last log index the primary knows this controller holds (null: unknown). */
  matchIndex: number | null;
  /** Entries behind the primary's last index (null: unknown, e.g. no primary). */
  lag: number | null;
  /** It answered cell-info just now. */
  reachable: boolean;
  /** Reachable, in the membership and at most LAG_ENTRIES_HEALTHY_MAX entries behind. */
  healthy: boolean;
}

export interface ControllerRow extends ControllerStatus, ReplicationStatus {
  primary: boolean;
  pinned: boolean;
  lastIndex: number;
}

export interface ControllersReport {
  primary: { id: number; peerId: string } | null;
  term: number;
  commitIndex: number;
  lastIndex: number;
  /** Manual mode: the only controller that may lead (0: not pinned). */
  pinnedLeader: number;
  /** The cell's metadata level as the primary has it (records.ts METADATA_LEVEL; null: no primary). */
  metadataLevel: number | null;
  voters: number[];
  learners: number[];
  controllers: ControllerRow[];
}

/** Per controller: membership, what the primary knows it holds, and how far behind it is. */
export function replicationOf(
  controllers: readonly ControllerStatus[],
  primary: CellInfo | undefined,
): ReplicationStatus[] {
  const ids = new Set([
    ...controllers.map((c) => c.id),
    ...(primary?.voters ?? []),
    ...(primary?.learners ?? []),
  ]);
  return [...ids]
    .sort((a, b) => a - b)
    .map((id) => {
      const membership = primary?.voters.includes(id)
        ? 'voter'
        : primary?.learners.includes(id)
          ? 'learner'
          : 'none';
      let matchIndex: number | null = null;
      if (primary !== undefined) {
        if (id === primary.controllerId) matchIndex = primary.lastIndex;
        else matchIndex = primary.progress.find((p) => p.id === id)?.matchIndex ?? null;
      }
      const lag =
        primary === undefined || matchIndex === null ? null : Math.max(0, primary.lastIndex - matchIndex);
      const reachable = controllers.find((c) => c.id === id)?.reachable ?? false;
      return {
        id,
        membership,
        matchIndex,
        lag,
        reachable,
        healthy: reachable && membership !== 'none' && lag !== null && lag <= LAG_ENTRIES_HEALTHY_MAX,
      };
    });
}

/** What `zhsm status` adds to the report: replication health, the pin, open tokens, jobs. */
export async function statusExtras(
  node: { remote: RemoteCell; jobs: JobRegistry },
  controllers: readonly ControllerStatus[],
  primary: CellInfo | undefined,
): Promise<{
  replication: ReplicationStatus[];
  pinnedLeader: number;
  openTokens: number | null;
  jobs: JobStatus[];
}> {
  let openTokens: number | null = null;
  if (primary !== undefined)
    openTokens = await node.remote
      .tokens()
      .then((tokens) => tokens.length)
      .catch(() => null);
  return {
    replication: replicationOf(controllers, primary),
    pinnedLeader: primary?.pinnedLeader ?? 0,
    openTokens,
    jobs: node.jobs.all(),
  };
}

/** Every controller as the cell sees it: each asked directly, the primary's view of replication. */
export async function controllersReport(node: ZhsmNode): Promise<ControllersReport> {
  const members = node.directory.controllers();
  const infos = await Promise.all(
    members.map(async (member) => {
      try {
        return { member, info: await node.remote.cellInfoOf(member.peerId, member.addresses) };
      } catch (error) {
        return { member, error: (error as Error).message };
      }
    }),
  );
  const leader = infos
    .map((entry) => entry.info)
    .filter((info): info is CellInfo => info !== undefined && info.role === 'leader')
    .sort((a, b) => b.term - a.term)[0];
  const statuses: Array<ControllerStatus & { lastIndex: number }> = infos.map(({ member, info, error }) =>
    info === undefined
      ? {
          id: member.controllerId,
          peerId: member.peerId,
          reachable: false,
          role: 'unreachable',
          term: 0,
          commitIndex: 0,
          appliedIndex: 0,
          lastIndex: 0,
          softwareLevel: member.softwareLevel ?? 0,
          ...(error === undefined ? {} : { error }),
        }
      : {
          id: member.controllerId,
          peerId: member.peerId,
          reachable: true,
          // A member the cell made a controller whose daemon has not restarted yet answers as a
          // plain node.
          role: info.controllerId === 0 ? 'not running' : info.role,
          term: info.term,
          commitIndex: info.commitIndex,
          appliedIndex: info.appliedIndex,
          lastIndex: info.lastIndex,
          softwareLevel: member.softwareLevel ?? 0,
        },
  );
  const replication = replicationOf(statuses, leader);
  const pinnedLeader = leader?.pinnedLeader ?? 0;
  const rows: ControllerRow[] = replication.map((health) => {
    const known = statuses.find((s) => s.id === health.id);
    return {
      ...(known ?? {
        id: health.id,
        peerId: '',
        reachable: false,
        role: 'unknown member',
        term: 0,
        commitIndex: 0,
        appliedIndex: 0,
        lastIndex: 0,
        softwareLevel: 0,
      }),
      ...health,
      primary: leader !== undefined && leader.controllerId === health.id,
      pinned: pinnedLeader === health.id,
    };
  });
  return {
    primary: leader === undefined ? null : { id: leader.controllerId, peerId: leader.peerId },
    term: leader?.term ?? Math.max(0, ...statuses.map((s) => s.term)),
    commitIndex: leader?.commitIndex ?? 0,
    lastIndex: leader?.lastIndex ?? 0,
    pinnedLeader,
    metadataLevel: leader === undefined ? null : (leader.metadataLevel ?? 0),
    voters: [...(leader?.voters ?? [])].sort((a, b) => a - b),
    learners: [...(leader?.learners ?? [])].sort((a, b) => a - b),
    controllers: rows,
  };
}

/** The path of each object in the cell, following parent/name links (cached for one listing). */
export async function objectPaths(
  remote: RemoteCell,
  objects: readonly Uint8Array[],
  max = TOKEN_PATHS_MAX,
): Promise<string[]> {
  const rootId = hex(await remote.metadata.root());
  const links = new Map<string, { parent: string; name: string } | undefined>();
  const pathOf = async (object: Uint8Array): Promise<string> => {
    const names: string[] = [];
    let current = hex(object);
    for (let depth = 0; current !== rootId; depth++) {
      if (depth >= PATH_DEPTH_MAX) return '-';
      if (!links.has(current)) {
        const inode = await remote.metadata.inode(Buffer.from(current, 'hex'));
        links.set(
          current,
          inode === undefined || inode.parent.length === 0
            ? undefined
            : { parent: hex(inode.parent), name: inode.name },
        );
      }
      const link = links.get(current);
      if (link === undefined) return '-';
      names.unshift(link.name);
      current = link.parent;
    }
    return `/${names.join('/')}`;
  };
  return Promise.all(
    objects.map((object, index) => (index < max ? pathOf(object).catch(() => '-') : Promise.resolve('-'))),
  );
}

export async function openTokensJson(
  remote: RemoteCell,
  tokens: readonly OpenToken[],
): Promise<OpenTokenJson[]> {
  const sorted = [...tokens].sort((a, b) => a.openedMs - b.openedMs);
  const paths = await objectPaths(
    remote,
    sorted.map((t) => t.object),
  );
  return sorted.map((t, i) => ({
    id: hex(t.id),
    object: hex(t.object),
    path: paths[i]!,
    mode: t.mode,
    holder: t.holder,
    openedMs: t.openedMs,
    expiresMs: t.expiresMs,
  }));
}

function controllerId(request: Record<string, unknown>): number {
  const id = request.id;
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0)
    throw new InvalidArgumentError('id must be a controller id (a positive integer)');
  return id;
}

async function controllerRequest(
  node: ZhsmNode,
  action: string,
  fields: { controllerId?: number; peerId?: string },
): Promise<Record<string, unknown>> {
  // Retried at a new primary (NOT_LEADER) for a short while only: an action is not repeated long.
  const response = await node.remote.request({ controller: { action, ...fields } }, { retryMs: 5_000 });
  const answer: ControllerAnswer | undefined = response.controllerAnswer ?? undefined;
  if (answer === undefined)
    throw new ZhsmError('DECODE_ERROR', 'the primary answered without a controller answer');
  return { answer };
}

/** Serve one of OPS_ADMIN_OPS. */
export async function opsAdmin(
  node: ZhsmNode,
  request: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const op = request.op;
  if (op === 'backends') {
    const [servers, backends] = await Promise.all([
      node.remote.metadata.servers(),
      node.remote.metadata.backends(),
    ]);
    const rows: BackendJson[] = backends.map((backend) => {
      const server = servers.find((s) => hex(s.uuid) === hex(backend.serverUuid));
      const capacity = backend.capacityBytes;
      return {
        uuid: hex(backend.uuid),
        server: server?.name ?? '',
        serverUuid: hex(backend.serverUuid),
        serverPeerId: server?.peerId ?? '',
        online: server?.online ?? false,
        power: server?.power ?? '',
        path: backend.path,
        tags: [...(backend.tags ?? [])],
        capacityBytes: capacity,
        freeBytes: backend.freeBytes,
        usedPercent: capacity > 0 ? Math.round((1000 * (capacity - backend.freeBytes)) / capacity) / 10 : 0,
        updatedMs: backend.updatedMs,
      };
    });
    rows.sort((a, b) => a.server.localeCompare(b.server) || a.path.localeCompare(b.path));
    return { backends: rows };
  }
  if (op === 'tokens') {
    const tokens = await node.remote.tokens();
    return { nowMs: Date.now(), tokens: await openTokensJson(node.remote, tokens) };
  }
  if (op === 'join-tokens') {
    const now = Date.now();
    const response = await node.remote.request({ read: { joinTokens: {} } });
    const tokens: JoinTokenJson[] = (response.joinTokens?.tokens ?? [])
      .map((t) => ({
        id: hex(t.id),
        createdMs: t.createdMs,
        expiresMs: t.expiresMs,
        revoked: t.revoked,
        state: t.revoked ? 'revoked' : t.expiresMs <= now ? 'expired' : 'valid',
      }))
      .filter((t) => request.all === true || t.state === 'valid')
      .sort((a, b) => a.createdMs - b.createdMs);
    return { nowMs: now, tokens };
  }
  if (op === 'join-token-revoke') {
    const text = typeof request.token === 'string' ? request.token.trim() : '';
    const match = /^(?:zhsm1\.)?([0-9a-f]{32})(?:\.[0-9a-f]{64})?$/.exec(text);
    if (match === null)
      throw new InvalidArgumentError(
        'a join token id is 32 hex digits (or give the whole token zhsm1.<id>.<secret>)',
      );
    const result = await node.remote.propose({
      revokeJoinToken: { id: new Uint8Array(Buffer.from(match[1]!, 'hex')) },
    });
    if (result.code === 'NOT_FOUND') throw new NotFoundError(`no join token ${match[1]}`);
    if (result.code !== 'OK')
      throw new ZhsmError('IO_ERROR', `cannot revoke the join token: ${result.message}`);
    return { id: match[1] };
  }
  if (op === 'controllers') return { report: await controllersReport(node) };
  if (op === 'controllers-transfer' || op === 'controllers-pin' || op === 'controllers-remove')
    return controllerRequest(node, op.slice('controllers-'.length), { controllerId: controllerId(request) });
  if (op === 'controllers-unpin') return controllerRequest(node, 'unpin', {});
  if (op === 'controllers-add') {
    if (typeof request.peer !== 'string' || request.peer.trim() === '')
      throw new InvalidArgumentError('peer must be the peer id of a member');
    return controllerRequest(node, 'add', { peerId: request.peer.trim() });
  }
  throw new InvalidArgumentError(`unknown admin request ${JSON.stringify(op)}`);
}
