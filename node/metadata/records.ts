/**
 * TypeScript shapes of proto/metadata.proto records and their codecs.
 * Decoded messages carry every field (protobufjs `defaults: true`); optional fields only when set.
 */
import { randomBytes } from 'node:crypto';
import { codec } from '../../proto/index.ts';
import type { Chains } from '../hsm/chains.ts';

export type NodeType =
  | 'NODE_TYPE_UNSPECIFIED'
  | 'FILE'
  | 'DIRECTORY'
  | 'SYMLINK'
  | 'CHAR_DEVICE'
  | 'BLOCK_DEVICE'
  | 'FIFO'
  | 'SOCKET';
export type PowerState =
  | 'POWER_STATE_UNSPECIFIED'
  | 'ON'
  | 'WAKING'
  | 'SLEEPING'
  | 'GOING_DOWN'
  | 'FAILED_TO_START'
  | 'FAILED_TO_STOP';
export type TokenMode = 'TOKEN_MODE_UNSPECIFIED' | 'READ' | 'WRITE' | 'READ_WRITE' | 'APPEND';
export type ResultCode =
  | 'OK'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'NOT_A_DIRECTORY'
  | 'IS_A_DIRECTORY'
  | 'NOT_EMPTY'
  | 'INVALID_ARGUMENT'
  | 'PERMISSION_DENIED'
  | 'NO_DATA'
  | 'STALE'
  | 'NAME_TOO_LONG'
  | 'NOT_PERMITTED';

export interface Xattr {
  name: string;
  value: Uint8Array;
}

export interface Chunk {
  id: Uint8Array;
  offset: number;
  size: number;
  hash: Uint8Array;
}

export interface Inode {
  id: Uint8Array;
  type: NodeType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  nlink: number;
  rdev: number;
  symlinkTarget: Uint8Array;
  xattrs: Xattr[];
  inlineData: Uint8Array;
  chunks: Chunk[];
  version: number;
  latestAcceptedMtimeMs: number;
  skipCount: number;
  parent: Uint8Array;
  name: string;
  entries: number;
  /** mtimes of the content versions this one replaced, newest first (at most 16). */
  contentHistory: number[];
  /**
   * The state machine keeps the chunk list apart (ChunkSegment values); inodes it hands out carry
   * their chunks all the same (except the answer to WriteChunks).
   */
  chunksApart?: boolean;
}

export interface ServerRecord {
  uuid: Uint8Array;
  peerId: string;
  name: string;
  addresses: string[];
  power: PowerState;
  registeredMs: number;
  lastSeenMs: number;
  online: boolean;
  /** The last data access the server reported (power management: idle time). */
  lastAccessMs?: number;
  /** When `power` last changed (set by the state machine). */
  powerChangedMs?: number;
  /** Why `power` last changed (or the driver's error). */
  powerReason?: string;
  /** Failed starts or stops in a row (retry backoff). */
  powerFailures?: number;
}

/** How the controllers switch a storage server on and off (key `p:<server uuid>`). */
export interface PowerConfig {
  serverUuid: Uint8Array;
  /** 'command' or 'sim'. */
  driver: string;
  onCommand?: string;
  offCommand?: string;
  statusCommand?: string;
  address?: string;
  outlet?: string;
  timeoutMs?: number;
  retries?: number;
  retryDelayMs?: number;
  simData?: string;
  simBootDelayMs?: number;
  simStopGraceMs?: number;
  updatedMs?: number;
}

/** The cell's power policy (key `meta:power`). */
export interface PowerPolicy {
  /** Power a server down after no access for this long (0: never). */
  idleTimeoutMs: number;
  /** A woken server must register within this long, or it is FAILED_TO_START. */
  wakeTimeoutMs: number;
  /** First retry of a failed start or stop after this long; doubled per further failure. */
  retryBackoffMs: number;
  retryBackoffMaxMs: number;
  updatedMs?: number;
}

/** One entry of the power event log (`pl:<sequence>`). */
export interface PowerEvent {
  sequence: number;
  timeMs: number;
  serverUuid: Uint8Array;
  serverName: string;
  from: PowerState;
  to: PowerState;
  reason: string;
}

export interface BackendRecord {
  uuid: Uint8Array;
  serverUuid: Uint8Array;
  path: string;
  capacityBytes: number;
  freeBytes: number;
  tags: string[];
  updatedMs: number;
}

export interface Location {
  outdated: boolean;
  current: boolean;
  target: boolean;
  mtimeMs: number;
}

export interface OpenToken {
  id: Uint8Array;
  object: Uint8Array;
  mode: TokenMode;
  holder: string;
  expiresMs: number;
  openedMs: number;
}

export interface JoinToken {
  id: Uint8Array;
  secretHash: Uint8Array;
  expiresMs: number;
  revoked: boolean;
  createdMs: number;
}

export interface Member {
  peerId: string;
  controllerId: number;
  joinedMs: number;
  joinToken: Uint8Array;
  /** Multiaddrs the member listens on (each ending in `/p2p/<peer id>`). */
  addresses: string[];
  /** Where the member sits and how other subnets reach it (absent until it announces it). */
  network?: MemberNetwork;
  /** The metadata level its software applies, as it last reported it (0: older software). */
  softwareLevel?: number;
}

/** Routing facts of a member (node/daemon/routing.ts). */
export interface MemberNetwork {
  /** Per destination subnet (CIDR), the multiaddr peers in that subnet reach this member at. */
  routes: Route[];
  /** CIDRs of the member's own interfaces (address/prefix). */
  subnets: string[];
  hostname: string;
}

export interface Route {
  subnet: string;
  address: string;
}

export interface Attributes {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atimeMs?: number;
  mtimeMs?: number;
}

export interface InitCell {
  cell: string;
  rootId: Uint8Array;
  uid: number;
  gid: number;
  mode: number;
  lostFoundId: Uint8Array;
  /** The new cell's metadata level (0: a cell made before levels). */
  level?: number;
}

/** A command; exactly one operation field is set. */
export interface Command {
  timeMs: number;
  /** Client session (16 bytes) for exactly-once retries; see proto/metadata.proto. */
  session?: Uint8Array;
  sequence?: number;
  acknowledged?: number;
  create?: {
    parent: Uint8Array;
    name: string;
    id: Uint8Array;
    type: NodeType;
    mode: number;
    uid: number;
    gid: number;
    rdev?: number;
    symlinkTarget?: Uint8Array;
  };
  /** restore: a rebuild restoring a hard link (the file's and the directory's times are kept). */
  link?: { id: Uint8Array; parent: Uint8Array; name: string; restore?: boolean };
  unlink?: { parent: Uint8Array; name: string; directory: boolean };
  rename?: { parent: Uint8Array; name: string; newParent: Uint8Array; newName: string; noReplace?: boolean };
  setAttributes?: { id: Uint8Array; attributes: Attributes };
  setXattr?: { id: Uint8Array; name: string; value: Uint8Array; createOnly?: boolean; replaceOnly?: boolean };
  removeXattr?: { id: Uint8Array; name: string };
  commitWrite?: {
    id: Uint8Array;
    size: number;
    chunks: Chunk[];
    inlineData?: Uint8Array;
    mtimeMs: number;
    expectedVersion?: number;
    checkVersion?: boolean;
    storedOn?: Uint8Array[];
  };
  /** proto WriteChunks: new chunks merged into the file's list as the cell has it. */
  writeChunks?: {
    id: Uint8Array;
    sizeFloor: number;
    chunks: Chunk[];
    mtimeMs: number;
    storedOn?: Uint8Array[];
  };
  setLocation?: { object: Uint8Array; backend: Uint8Array; location?: Location; remove?: boolean };
  registerServer?: { server: ServerRecord };
  registerBackends?: { serverUuid: Uint8Array; backends: BackendRecord[] };
  deregisterServer?: { serverUuid: Uint8Array };
  open?: { token: OpenToken; truncate?: boolean };
  renew?: { id: Uint8Array; expiresMs: number };
  release?: { id: Uint8Array };
  expireTokens?: { nowMs: number };
  createJoinToken?: { token: JoinToken };
  revokeJoinToken?: { id: Uint8Array };
  admitMember?: {
    peerId: string;
    tokenId: Uint8Array;
    secretHash: Uint8Array;
    controller: boolean;
    addresses?: string[];
    /** The joiner's metadata level; a controller older than the cell's level is refused. */
    softwareLevel?: number;
  };
  initCell?: InitCell;
  setMemberAddresses?: {
    peerId: string;
    addresses: string[];
    network?: MemberNetwork;
    softwareLevel?: number;
  };
  setChains?: { chains: StoredChains; expectedVersion?: number; checkVersion?: boolean };
  placeCopy?: { object: Uint8Array; backend: Uint8Array; location?: Location; remove?: boolean };
  placementDone?: { files: Array<{ id: Uint8Array; queued: number }> };
  reportBadCopy?: { inode: Uint8Array; object: Uint8Array; backend: Uint8Array; reason?: string };
  /** Recovery (node/recovery/). */
  headersDone?: { files: Array<{ id: Uint8Array; queued: number }> };
  restoreInodes?: { inodes: RestoredInode[] };
  restoreMembers?: { members: Member[] };
  logConflict?: { event: ConflictEvent };
  setPowerConfig?: { config: PowerConfig; remove?: boolean };
  setPowerPolicy?: { policy: PowerPolicy };
  setPowerState?: {
    serverUuid: Uint8Array;
    state: PowerState;
    /** Refused (STALE) unless the server's state is one of these (when given). */
    expected?: PowerState[];
    reason?: string;
    /** The new count of failed starts or stops in a row. */
    failures?: number;
  };
  reportAccess?: { serverUuid: Uint8Array; lastAccessMs: number };
  /** Manual leadership (`zhsm controllers pin`; 0: unpin). */
  setPinnedLeader?: { controllerId: number };
  /** The member stops being a controller (`zhsm controllers remove`). */
  retireController?: { peerId: string };
  /** The cell's metadata level goes up (the primary, once every controller runs software for it). */
  setMetadataLevel?: { level: number };
}

/** An inode recovered from the META headers on the backends (rebuild). */
export interface RestoredInode {
  inode: Inode;
  locations: Array<{ object: Uint8Array; backend: Uint8Array; location: Location }>;
  changeIndex: number;
}

/** A split-brain conflict: two versions of one file; the loser was saved at `kept`. */
export interface ConflictEvent {
  sequence: number;
  timeMs: number;
  inode: Uint8Array;
  path: string;
  winnerMtimeMs: number;
  winnerServer: string;
  loserMtimeMs: number;
  loserServer: string;
  kept: string;
}

/**
 * The metadata level this software applies. A command that older controllers would not apply
 * (they see no operation in it) has a level above theirs (`commandLevel`); every controller
 * refuses it alike, with NO_OPERATION_MESSAGE, while the cell's recorded level is below it, so
 * that controllers of different versions never diverge during a rolling upgrade. The primary
 * raises the cell's level once every controller reported software of the new level
 * (node/daemon/controller.ts); a controller that joins or is promoted with older software is
 * refused after that, and levels never go down (no downgrade below it).
 * - 0: the commands before levels existed.
 * - 1: WriteChunks.
 * - 2: chunk lists stored apart from their inodes, a segment per GiB of file (Inode.chunks_apart):
 *   a controller of level 1 would read such a file as empty.
 */
export const METADATA_LEVEL = 2;

/** The metadata level a command needs (see METADATA_LEVEL). */
export function commandLevel(command: Omit<Command, 'timeMs'>): number {
  return command.writeChunks != null ? 1 : 0;
}

/** The answer's message to a command a controller does not know (a newer client's): INVALID_ARGUMENT. */
export const NO_OPERATION_MESSAGE = 'command has no operation';

export interface Result {
  code: ResultCode;
  message: string;
  inode?: Inode;
  token?: OpenToken;
  member?: Member;
  releasedObjects: Uint8Array[];
  /** create, link, unlink: the directory as the change left it. */
  parent?: Inode;
}

export const inodeCodec = codec<Inode>('zhsm.metadata.Inode');
export const chunkSegmentCodec = codec<{ chunks: Chunk[] }>('zhsm.metadata.ChunkSegment');
export const conflictEventCodec = codec<ConflictEvent>('zhsm.metadata.ConflictEvent');
export const serverCodec = codec<ServerRecord>('zhsm.metadata.ServerRecord');
export const backendCodec = codec<BackendRecord>('zhsm.metadata.BackendRecord');
export const locationCodec = codec<Location>('zhsm.metadata.Location');
export const openTokenCodec = codec<OpenToken>('zhsm.metadata.OpenToken');
export const joinTokenCodec = codec<JoinToken>('zhsm.metadata.JoinToken');
export const memberCodec = codec<Member>('zhsm.metadata.Member');
export const initCellCodec = codec<InitCell>('zhsm.metadata.InitCell');
export const powerConfigCodec = codec<PowerConfig>('zhsm.metadata.PowerConfig');
export const powerPolicyCodec = codec<PowerPolicy>('zhsm.metadata.PowerPolicy');
export const powerEventCodec = codec<PowerEvent>('zhsm.metadata.PowerEvent');
export const commandCodec = codec<Command>('zhsm.metadata.Command');
export const resultCodec = codec<Result>('zhsm.metadata.Result');
export const clientSessionCodec = codec<{ floor: number; lastMs: number }>('zhsm.metadata.ClientSession');
/** Opens of a file (a decaying count; see proto/metadata.proto AccessStats). */
export interface AccessStats {
  openedMs: number;
  opens: number;
  windowMs: number;
}
export const accessStatsCodec = codec<AccessStats>('zhsm.metadata.AccessStats');

/** The chains as stored: node/hsm/chains.ts's Chains plus a version. */
export interface StoredChains extends Chains {
  version: number;
  updatedMs: number;
}
export const chainsCodec = codec<StoredChains>('zhsm.metadata.Chains');

export const snapshotCodec = codec<{
  appliedIndex: number;
  entries: Array<{ key: string; value: Uint8Array }>;
}>('zhsm.metadata.StateSnapshot');

/**
 * The command that creates a cell: new root and lost+found ids, the root owned by the calling
 * process's user (mode 0755).
 */
export function initCellCommand(cell: string): InitCell {
  return {
    cell,
    rootId: new Uint8Array(randomBytes(16)),
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    mode: 0o755,
    lostFoundId: new Uint8Array(randomBytes(16)),
    level: METADATA_LEVEL,
  };
}
