/**
 * The daemon's protocols (schemas in proto/daemon.proto) and the join token format.
 *
 * - `/zhsm/meta/1.0.0` (session, controllers): propose commands and read the metadata at the
 *   primary. Any other controller answers NOT_LEADER.
 * - `/zhsm/cell-info/1.0.0` (unary, every node): who answers, its consensus view, the members.
 * - `/zhsm/join/1.0.0` (unary, every node, the only protocol open to non-members): present a join
 *   token, become a member.
 *
 * A join token is `zhsm1.<token id: 32 hex>.<secret: 64 hex>`. The cell stores only the token id
 * and the SHA-256 of the secret, with an expiry and a revoked flag.
 */
import { createHash, randomBytes } from 'node:crypto';
import { codec } from '../../proto/index.ts';
import { InvalidArgumentError } from '../common/errors.ts';
import type { CacheStatus } from '../hsm/cache.ts';
import type { MoverStatus, PlacementPlan } from '../hsm/mover.ts';
import type {
  BackendRecord,
  Command,
  InitCell,
  Inode,
  JoinToken,
  Location,
  Member,
  OpenToken,
  PowerConfig,
  PowerEvent,
  PowerPolicy,
  Result,
  ServerRecord,
  StoredChains,
} from '../metadata/records.ts';
import { defineMethod } from '../net/rpc.ts';

export type Empty = Record<string, never>;

export interface ReadQuery {
  root?: Empty;
  inode?: Uint8Array;
  lookup?: { parent: Uint8Array; name: string };
  /** A path walk from `start` (see MetadataReader.resolve). */
  resolve?: { start: Uint8Array; names: string[] };
  readdir?: { parent: Uint8Array; after?: string; limit?: number };
  locations?: Uint8Array;
  backends?: Empty;
  servers?: Empty;
  members?: Empty;
  tokens?: Empty;
  /** Join tokens (every one, revoked and expired too). */
  joinTokens?: Empty;
  cell?: Empty;
  /** Power management: servers, power configurations, the policy and the last `events` events. */
  power?: { events: number };
  /** Placement: the chains, a dry run of new chains, the mover's progress. */
  chains?: Empty;
  plan?: StoredChains;
  mover?: Empty;
  cache?: Empty;
}

/** Power management at the primary (node/hsm/power-manager.ts). */
export interface PowerRequest {
  serverUuid: Uint8Array;
  /** 'wake' (a reader needs the server), 'on' or 'off' (an administrator). */
  action: string;
  /** 'off': even when pending writes or migrations target the server. */
  force?: boolean;
  /** 'wake': why (shown in the power log); default "woken for a read". */
  reason?: string;
}

export interface PowerView {
  servers: ServerRecord[];
  configs: PowerConfig[];
  policy: PowerPolicy;
  events: PowerEvent[];
}

/** Consensus membership and leadership at the primary (node/daemon/controller-admin.ts). */
export interface ControllerRequest {
  /** 'transfer', 'pin', 'unpin', 'add' (peerId), 'remove'. */
  action: string;
  controllerId?: number;
  peerId?: string;
}

export interface ControllerAnswer {
  done: boolean;
  message: string;
  leaderId: number;
  pinnedLeader: number;
  controllerId: number;
  voters: number[];
  learners: number[];
}

export interface MetaRequest {
  propose?: Command;
  read?: ReadQuery;
  proposeBatch?: { commands: Command[] };
  power?: PowerRequest;
  controller?: ControllerRequest;
}

export interface MetaResponse {
  result?: Result;
  root?: Uint8Array;
  inode?: Inode;
  none?: Empty;
  entries?: { entries: Array<{ name: string; id: Uint8Array }> };
  locations?: { entries: Array<{ backend: Uint8Array; location: Location }> };
  backends?: { backends: BackendRecord[] };
  servers?: { servers: ServerRecord[] };
  members?: { members: Member[] };
  tokens?: { tokens: OpenToken[] };
  cell?: InitCell;
  results?: { results: Result[] };
  chains?: StoredChains;
  plan?: PlacementPlan;
  mover?: MoverStatus;
  cache?: CacheStatus;
  resolved?: { inode: Inode | null; depth: number };
  powerAnswer?: { server: ServerRecord; waitMs: number };
  power?: PowerView;
  controllerAnswer?: ControllerAnswer;
  joinTokens?: { tokens: JoinToken[] };
}

export interface CellInfo {
  cell: string;
  peerId: string;
  controllerId: number;
  role: string;
  leaderId: number;
  leaderPeerId: string;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  members: Member[];
  voters: number[];
  learners: number[];
  progress: Array<{ id: number; matchIndex: number }>;
  /** Manual mode: the only controller that may lead (0 or absent: not pinned). */
  pinnedLeader?: number;
  /** The cell's metadata level in this controller's copy (records.ts METADATA_LEVEL). */
  metadataLevel?: number;
}

export interface JoinRequest {
  tokenId: Uint8Array;
  secret: Uint8Array;
  controller: boolean;
  addresses: string[];
  /** The metadata level the joiner's software applies (0: older software; records.ts). */
  softwareLevel?: number;
}

export interface JoinResponse {
  cell: string;
  member: Member;
  members: Member[];
}

/** Metadata frames: a proposal batch or a large readdir page stays well below this. */
const META_FRAME_BYTES_MAX = 64 * 1024 * 1024;

export const metaMethod = defineMethod<MetaRequest, MetaResponse>({
  name: 'meta',
  requestCodec: codec<MetaRequest>('zhsm.daemon.MetaRequest'),
  responseCodec: codec<MetaResponse>('zhsm.daemon.MetaResponse'),
  frameBytesMax: META_FRAME_BYTES_MAX,
});

export const cellInfoMethod = defineMethod<Empty, CellInfo>({
  name: 'cell-info',
  requestCodec: codec<Empty>('zhsm.daemon.CellInfoRequest'),
  responseCodec: codec<CellInfo>('zhsm.daemon.CellInfo'),
});

/** The admin socket's requests from another member (`zhsm --node MULTIADDR`). */
export const adminMethod = defineMethod<{ json: string }, { json: string }>({
  name: 'admin',
  requestCodec: codec<{ json: string }>('zhsm.daemon.AdminRequest'),
  responseCodec: codec<{ json: string }>('zhsm.daemon.AdminResponse'),
});

export const joinMethod = defineMethod<JoinRequest, JoinResponse>({
  name: 'join',
  requestCodec: codec<JoinRequest>('zhsm.daemon.JoinRequest'),
  responseCodec: codec<JoinResponse>('zhsm.daemon.JoinResponse'),
  frameBytesMax: 4 * 1024 * 1024,
});

// ---- join tokens ------------------------------------------------------------------------------

export interface JoinTokenParts {
  readonly id: Uint8Array;
  readonly secret: Uint8Array;
}

const TOKEN_PATTERN = /^zhsm1\.([0-9a-f]{32})\.([0-9a-f]{64})$/;

export function newJoinToken(): JoinTokenParts {
  return { id: new Uint8Array(randomBytes(16)), secret: new Uint8Array(randomBytes(32)) };
}

export function formatJoinToken(token: JoinTokenParts): string {
  return `zhsm1.${Buffer.from(token.id).toString('hex')}.${Buffer.from(token.secret).toString('hex')}`;
}

export function parseJoinToken(text: string): JoinTokenParts {
  const match = TOKEN_PATTERN.exec(text.trim());
  if (match === null)
    throw new InvalidArgumentError(
      'malformed join token: expected zhsm1.<32 hex>.<64 hex> (from "zhsm-node init" or "zhsm-node token create")',
    );
  return {
    id: new Uint8Array(Buffer.from(match[1]!, 'hex')),
    secret: new Uint8Array(Buffer.from(match[2]!, 'hex')),
  };
}

export function secretHash(secret: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(secret).digest());
}

// ---- durations ----------------------------------------------------------------------------------

/** "90s", "15m", "24h", "7d", "500ms" -> milliseconds (node/common/duration.ts). */
export { parseDuration } from '../common/duration.ts';
