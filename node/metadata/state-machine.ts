/**
 * The metadata state machine of a cell: applies committed commands (entries of the consensus log)
 * to an ordered key-value store, deterministically — every value that could differ between
 * controllers (ids, times) is carried in the command. Every controller applies the same log and
 * ends with byte-identical state (checked by tests and, later, by the simulator).
 *
 * Key layout (strings, UTF-8 order):
 * ```
 * meta:cell                   InitCell (cell name, root and lost+found ids)
 * meta:applied                last applied log index (decimal)
 * meta:controllers            next controller id (decimal)
 * i:<id>                      Inode
 * d:<parent id>:<name>        child id (16 bytes)
 * l:<object id>:<backend id>  Location (outdated / current / target)
 * s:<server uuid>             ServerRecord
 * b:<backend uuid>            BackendRecord
 * t:<token id>                OpenToken
 * o:<object id>:<token id>    (empty) open tokens per object
 * orphan:<object id>          (empty) unlinked while open: deleted at the last release
 * j:<join token id>           JoinToken
 * m:<peer id>                 Member
 * a:<inode id>                AccessStats (opens of a file: a decaying count, the last open)
 * meta:chains                 Chains (placement; absent: the clients' default)
 * meta:queue                  last placement queue number (decimal)
 * q:<inode id>                placement queue: files (or directories) whose placement the mover
 *                             must check (decimal queue number)
 * c:<session>                 ClientSession (floor, last activity) of a client session
 * r:<session>:<sequence>      Result saved for a retry of that command (sequence: 16 digits)
 * p:<server uuid>             PowerConfig: the server's power driver (node/hsm/power-driver.ts)
 * meta:power                  PowerPolicy: idle timeout, wake timeout, retry backoff
 * meta:powerlog               next power event sequence (decimal)
 * pl:<sequence>               PowerEvent (sequence: 16 digits); the last POWER_EVENTS_MAX kept
 * ```
 * Ids are 32 lowercase hex digits.
 */

import { truncateChunks } from '../client/layout.ts';
import { parseSubnet } from '../common/cidr.ts';
import { assert } from '../common/errors.ts';
import { checkStructure } from '../hsm/chains.ts';
import type { KvOperation, KvStore } from './kv.ts';
import {
  type AccessStats,
  accessStatsCodec,
  type BackendRecord,
  backendCodec,
  type Chunk,
  type Command,
  type ConflictEvent,
  chainsCodec,
  chunkSegmentCodec,
  clientSessionCodec,
  commandCodec,
  commandLevel,
  conflictEventCodec,
  type InitCell,
  type Inode,
  initCellCodec,
  inodeCodec,
  type JoinToken,
  joinTokenCodec,
  type Location,
  locationCodec,
  type Member,
  type MemberNetwork,
  memberCodec,
  NO_OPERATION_MESSAGE,
  type OpenToken,
  openTokenCodec,
  type PowerConfig,
  type PowerEvent,
  type PowerPolicy,
  powerConfigCodec,
  powerEventCodec,
  powerPolicyCodec,
  type Result,
  type ResultCode,
  resultCodec,
  type ServerRecord,
  type StoredChains,
  serverCodec,
  snapshotCodec,
} from './records.ts';

export const NAME_BYTES_MAX = 255;
/** Largest file content kept inline in the inode. */
export const INLINE_BYTES_MAX = 64 * 1024;
/** Entries returned by one readdir page at most. */
export const READDIR_PAGE_MAX = 4096;
/** Copies of one object the cell tracks at most (one per S+B). */
export const LOCATIONS_PER_OBJECT_MAX = 4096;

const hex = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'hex'));
const EMPTY = new Uint8Array(0);
/** Bytes of a file per chunk segment (Inode.chunks_apart); also the largest chunk then. */
export const CHUNK_SEGMENT_BYTES = 2 ** 30;
/** The metadata level from which chunk lists are stored apart (records.ts METADATA_LEVEL). */
const CHUNKS_APART_LEVEL = 2;
const segmentOf = (offset: number) => Math.floor(offset / CHUNK_SEGMENT_BYTES);
const encoder = new TextEncoder();

export const keys = {
  cell: 'meta:cell',
  applied: 'meta:applied',
  controllers: 'meta:controllers',
  inode: (id: Uint8Array) => `i:${hex(id)}`,
  entry: (parent: Uint8Array, name: string) => `d:${hex(parent)}:${name}`,
  entries: (parent: Uint8Array) => `d:${hex(parent)}:`,
  location: (object: Uint8Array, backend: Uint8Array) => `l:${hex(object)}:${hex(backend)}`,
  locations: (object: Uint8Array) => `l:${hex(object)}:`,
  server: (uuid: Uint8Array) => `s:${hex(uuid)}`,
  backend: (uuid: Uint8Array) => `b:${hex(uuid)}`,
  token: (id: Uint8Array) => `t:${hex(id)}`,
  objectToken: (object: Uint8Array, token: Uint8Array) => `o:${hex(object)}:${hex(token)}`,
  objectTokens: (object: Uint8Array) => `o:${hex(object)}:`,
  orphan: (object: Uint8Array) => `orphan:${hex(object)}`,
  joinToken: (id: Uint8Array) => `j:${hex(id)}`,
  member: (peerId: string) => `m:${peerId}`,
  access: (id: Uint8Array) => `a:${hex(id)}`,
  chains: 'meta:chains',
  queueNumber: 'meta:queue',
  queued: (id: Uint8Array) => `q:${hex(id)}`,
  session: (session: Uint8Array) => `c:${hex(session)}`,
  sessionResult: (session: Uint8Array, sequence: number) =>
    `r:${hex(session)}:${String(sequence).padStart(16, '0')}`,
  sessionResults: (session: Uint8Array) => `r:${hex(session)}:`,
  powerConfig: (server: Uint8Array) => `p:${hex(server)}`,
  powerPolicy: 'meta:power',
  powerLogNext: 'meta:powerlog',
  pinnedLeader: 'meta:pin',
  /** The cell's metadata level (records.ts METADATA_LEVEL); absent: 0. */
  level: 'meta:level',
  /** A file's chunks starting in GiB `segment` of it (Inode.chunks_apart, metadata level 2). */
  chunkSegment: (id: Uint8Array, segment: number) => `k:${hex(id)}:${String(segment).padStart(12, '0')}`,
  chunkSegments: (id: Uint8Array) => `k:${hex(id)}:`,
  powerEvent: (sequence: number) => `pl:${String(sequence).padStart(16, '0')}`,
  /** The inode changed at this log index; its META objects are not written yet (node/recovery/). */
  header: (id: Uint8Array) => `h:${hex(id)}`,
  /** Every name of a file (not of directories: they have one): its META objects list them all. */
  name: (id: Uint8Array, parent: Uint8Array, name: string) => `nm:${hex(id)}:${hex(parent)}:${name}`,
  names: (id: Uint8Array) => `nm:${hex(id)}:`,
  /** A deleted inode as it was, until its META objects are replaced by tombstones. */
  deleted: (id: Uint8Array) => `dl:${hex(id)}`,
  conflictNext: 'meta:conflicts',
  conflict: (sequence: number) => `x:${String(sequence).padStart(16, '0')}`,
};

/** Split-brain conflict events kept. */
export const CONFLICT_EVENTS_MAX = 1000;
/** Content versions an inode remembers (content_history). */
export const CONTENT_HISTORY_MAX = 16;
/** Inodes per RestoreInodes command at most. */
export const RESTORE_INODES_MAX = 512;
/** Names of one file listed at most (its META objects carry them). */
export const NAMES_MAX = 1024;

/** Power events kept (older ones are dropped as new ones are logged). */
export const POWER_EVENTS_MAX = 1000;
/** The power policy of a cell that never set one: no idle power-down. */
export const POWER_POLICY_DEFAULT: PowerPolicy = {
  idleTimeoutMs: 0,
  wakeTimeoutMs: 5 * 60_000,
  retryBackoffMs: 30_000,
  retryBackoffMaxMs: 30 * 60_000,
  updatedMs: 0,
};
const POWER_STATES: ReadonlySet<unknown> = new Set([
  'ON',
  'WAKING',
  'SLEEPING',
  'GOING_DOWN',
  'FAILED_TO_START',
  'FAILED_TO_STOP',
]);
const POWER_COMMAND_BYTES_MAX = 4096;
const POWER_FIELD_BYTES_MAX = 255;
const HOUR_MS = 3_600_000;

/**
 * Saved results per client session at most: a client with more commands unanswered than this
 * loses exactly-once for the oldest (their retries fail with INVALID_ARGUMENT).
 */
export const SESSION_RESULTS_MAX = 4096;
/** A client session with no command for this long is dropped (by `expireTokens`). */
export const SESSION_IDLE_MS = 60 * 60 * 1000;

/** The end of a prefix range: every key starting with `prefix` is < rangeEnd(prefix). */
function rangeEnd(prefix: string): string {
  return `${prefix}\uffff`;
}

class Failure extends Error {
  readonly code: ResultCode;
  constructor(code: ResultCode, message: string) {
    super(message);
    this.code = code;
  }
}

function fail(code: ResultCode, message: string): never {
  throw new Failure(code, message);
}

function checkName(name: string): void {
  if (name.length === 0 || name === '.' || name === '..')
    fail('INVALID_ARGUMENT', `invalid name ${JSON.stringify(name)}`);
  if (name.includes('/') || name.includes('\0'))
    fail('INVALID_ARGUMENT', `name contains '/' or NUL: ${JSON.stringify(name)}`);
  if (encoder.encode(name).length > NAME_BYTES_MAX)
    fail('NAME_TOO_LONG', `name longer than ${NAME_BYTES_MAX} bytes`);
}

function checkId(id: Uint8Array | undefined, what: string): Uint8Array {
  if (id === undefined || id.length !== 16) fail('INVALID_ARGUMENT', `${what} must be a 16-byte id`);
  return id;
}

/** The node types a create may name (an unknown enum number decodes as a bare number). */
const NODE_TYPES: ReadonlySet<unknown> = new Set([
  'FILE',
  'DIRECTORY',
  'SYMLINK',
  'CHAR_DEVICE',
  'BLOCK_DEVICE',
  'FIFO',
  'SOCKET',
]);

/** Members announce at most this many addresses, each at most 1 KiB. */
const MEMBER_ADDRESSES_MAX = 32;
const MEMBER_ADDRESS_BYTES_MAX = 1024;

function checkAddresses(addresses: readonly string[]): string[] {
  if (addresses.length > MEMBER_ADDRESSES_MAX)
    fail('INVALID_ARGUMENT', `at most ${MEMBER_ADDRESSES_MAX} addresses per member`);
  for (const address of addresses) {
    if (!address.startsWith('/') || address.length > MEMBER_ADDRESS_BYTES_MAX)
      fail('INVALID_ARGUMENT', `invalid member address ${JSON.stringify(address.slice(0, 80))}`);
  }
  return [...addresses];
}

/** A metadata level (records.ts METADATA_LEVEL): a small non-negative integer. */
function checkLevel(level: number): number {
  if (!Number.isSafeInteger(level) || level < 0 || level > 0xffff)
    fail('INVALID_ARGUMENT', 'bad metadata level');
  return level;
}

const MEMBER_ROUTES_MAX = 64;
const MEMBER_SUBNETS_MAX = 64;

/** A member's routing facts: well-formed subnets, multiaddr-shaped route addresses, bounded sizes. */
function checkNetwork(network: MemberNetwork): MemberNetwork {
  const routes = network.routes ?? [];
  const subnets = network.subnets ?? [];
  if (routes.length > MEMBER_ROUTES_MAX)
    fail('INVALID_ARGUMENT', `at most ${MEMBER_ROUTES_MAX} routes per member`);
  if (subnets.length > MEMBER_SUBNETS_MAX)
    fail('INVALID_ARGUMENT', `at most ${MEMBER_SUBNETS_MAX} subnets per member`);
  const subnet = (text: string) => {
    try {
      parseSubnet(text);
    } catch (error) {
      fail('INVALID_ARGUMENT', (error as Error).message);
    }
  };
  for (const text of subnets) subnet(text);
  for (const route of routes) {
    subnet(route.subnet);
    checkAddresses([route.address]);
  }
  const hostname = network.hostname ?? '';
  if (hostname.length > 255) fail('INVALID_ARGUMENT', 'host name longer than 255 bytes');
  return {
    routes: routes.map((r) => ({ subnet: r.subnet, address: r.address })),
    subnets: [...subnets],
    hostname,
  };
}

/** A time or duration in ms: a non-negative safe integer. */
function checkTime(value: number | undefined, what: string): number {
  const ms = value ?? 0;
  if (!Number.isSafeInteger(ms) || ms < 0)
    fail('INVALID_ARGUMENT', `${what} must be a non-negative integer (ms)`);
  return ms;
}

function checkText(value: string | undefined, what: string, max: number): string {
  const text = value ?? '';
  if (Buffer.byteLength(text) > max) fail('INVALID_ARGUMENT', `${what} longer than ${max} bytes`);
  if (text.includes('\0')) fail('INVALID_ARGUMENT', `${what} contains NUL`);
  return text;
}

/** A power driver configuration: a known driver with what it needs, bounded sizes and times. */
function checkPowerConfig(config: PowerConfig): PowerConfig {
  const checked: PowerConfig = {
    serverUuid: config.serverUuid,
    driver: config.driver,
    onCommand: checkText(config.onCommand, 'on command', POWER_COMMAND_BYTES_MAX),
    offCommand: checkText(config.offCommand, 'off command', POWER_COMMAND_BYTES_MAX),
    statusCommand: checkText(config.statusCommand, 'status command', POWER_COMMAND_BYTES_MAX),
    address: checkText(config.address, 'address', POWER_FIELD_BYTES_MAX),
    outlet: checkText(config.outlet, 'outlet', POWER_FIELD_BYTES_MAX),
    timeoutMs: checkTime(config.timeoutMs, 'timeout'),
    retries: checkTime(config.retries, 'retries'),
    retryDelayMs: checkTime(config.retryDelayMs, 'retry delay'),
    simData: checkText(config.simData, 'sim data directory', POWER_COMMAND_BYTES_MAX),
    simBootDelayMs: checkTime(config.simBootDelayMs, 'boot delay'),
    simStopGraceMs: checkTime(config.simStopGraceMs, 'stop grace'),
  };
  if (checked.timeoutMs! > HOUR_MS) fail('INVALID_ARGUMENT', 'timeout must be at most 1 h');
  if (checked.retries! > 10) fail('INVALID_ARGUMENT', 'at most 10 retries');
  if (checked.retryDelayMs! > HOUR_MS) fail('INVALID_ARGUMENT', 'retry delay must be at most 1 h');
  if (checked.simBootDelayMs! > HOUR_MS) fail('INVALID_ARGUMENT', 'boot delay must be at most 1 h');
  if (checked.simStopGraceMs! > HOUR_MS) fail('INVALID_ARGUMENT', 'stop grace must be at most 1 h');
  if (config.driver === 'command') {
    if (checked.onCommand === '' || checked.offCommand === '')
      fail('INVALID_ARGUMENT', 'the command driver needs an on and an off command');
  } else if (config.driver === 'sim') {
    if (!checked.simData!.startsWith('/'))
      fail('INVALID_ARGUMENT', 'the sim driver needs the absolute data directory of the server');
  } else {
    fail('INVALID_ARGUMENT', `unknown power driver ${JSON.stringify(config.driver)} (command or sim)`);
  }
  return checked;
}

function sameId(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

interface Reader {
  get(key: string): Promise<Uint8Array | undefined>;
  keysWithPrefix(prefix: string, limit: number): Promise<string[]>;
}

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** The committed store as a Reader. */
class StoreReader implements Reader {
  readonly #kv: KvStore;
  constructor(kv: KvStore) {
    this.#kv = kv;
  }
  get(key: string): Promise<Uint8Array | undefined> {
    return this.#kv.get(key);
  }
  async keysWithPrefix(prefix: string, limit: number): Promise<string[]> {
    const found: string[] = [];
    for await (const [key] of this.#kv.range({ gte: prefix, lt: rangeEnd(prefix), limit })) found.push(key);
    return found;
  }
}

/**
 * Pending writes layered over a Reader: the batch of commands over the store, and each command
 * over the batch, so that a failing command leaves no partial writes (its layer is dropped).
 */
class Transaction implements Reader {
  readonly #base: Reader;
  readonly #pending = new Map<string, Uint8Array | null>();

  constructor(base: Reader) {
    this.#base = base;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const pending = this.#pending.get(key);
    if (pending !== undefined) return pending ?? undefined;
    return this.#base.get(key);
  }

  put(key: string, value: Uint8Array): void {
    this.#pending.set(key, value);
  }

  del(key: string): void {
    this.#pending.set(key, null);
  }

  /** Keys with `prefix` (the base merged with pending writes), in key order, up to `limit`. */
  async keysWithPrefix(prefix: string, limit: number): Promise<string[]> {
    const found = new Set(await this.#base.keysWithPrefix(prefix, limit + this.#pending.size));
    for (const [key, value] of this.#pending) {
      if (!key.startsWith(prefix)) continue;
      if (value === null) found.delete(key);
      else found.add(key);
    }
    return [...found].sort(compareUtf8).slice(0, limit);
  }

  /** Move this layer's writes into `parent`. */
  commitInto(parent: Transaction): void {
    for (const [key, value] of this.#pending) {
      if (value === null) parent.del(key);
      else parent.put(key, value);
    }
  }

  operations(): KvOperation[] {
    return [...this.#pending].map(([key, value]) =>
      value === null ? { type: 'del', key } : { type: 'put', key, value },
    );
  }
}

export interface ReaddirEntry {
  readonly name: string;
  readonly id: Uint8Array;
}

export class MetadataStateMachine {
  readonly #kv: KvStore;
  #appliedIndex = 0;
  #membersVersion = 0;

  private constructor(kv: KvStore, appliedIndex: number) {
    this.#kv = kv;
    this.#appliedIndex = appliedIndex;
  }

  static async open(kv: KvStore): Promise<MetadataStateMachine> {
    const applied = await kv.get(keys.applied);
    return new MetadataStateMachine(
      kv,
      applied === undefined ? 0 : Number(Buffer.from(applied).toString('utf8')),
    );
  }

  get appliedIndex(): number {
    return this.#appliedIndex;
  }

  /**
   * Bumped whenever a command that may change the members is applied (or a snapshot restored):
   * readers of `members()` re-read only when it moved. Not part of the replicated state.
   */
  get membersVersion(): number {
    return this.#membersVersion;
  }

  /**
   * Apply committed entries (in log order, contiguous after appliedIndex) in one atomic batch.
   * Entries whose data is empty (no-ops, config changes) only advance the applied index.
   * Returns one Result per entry.
   */
  /** The log index of the command being applied (META header marks carry it). */
  #applyingIndex = 0;
  /** Whether the command being applied keeps chunk lists apart (the cell's level >= 2). */
  #chunksApart = false;

  async apply(
    entries: ReadonlyArray<{ index: number; data: Uint8Array }>,
    options: { sync?: boolean } = {},
  ): Promise<Result[]> {
    const results: Result[] = [];
    if (entries.length === 0) return results;
    const transaction = new Transaction(new StoreReader(this.#kv));
    let index = this.#appliedIndex;
    for (const entry of entries) {
      assert(entry.index === index + 1, `apply out of order: ${entry.index} after ${index}`);
      index = entry.index;
      if (entry.data.length === 0) {
        results.push({ code: 'OK', message: '', releasedObjects: [] });
        continue;
      }
      let command: Command;
      try {
        command = commandCodec.decode(entry.data);
      } catch (error) {
        results.push({ code: 'INVALID_ARGUMENT', message: (error as Error).message, releasedObjects: [] });
        continue;
      }
      this.#applyingIndex = index;
      results.push(await this.#applyOnce(transaction, command));
    }
    transaction.put(keys.applied, encoder.encode(String(index)));
    await this.#kv.write(transaction.operations(), { sync: options.sync ?? false });
    this.#appliedIndex = index;
    return results;
  }

  /**
   * Apply a command at most once per (session, sequence): a retry of a command this state machine
   * already applied gets the saved result (the first attempt's answer may have been lost with a
   * primary that failed after committing it). Commands without a session are applied as they come.
   */
  async #applyOnce(batch: Transaction, command: Command): Promise<Result> {
    const session = command.session;
    const sequence = command.sequence ?? 0;
    if (session === undefined || session.length === 0) return this.#applyOne(batch, command);
    if (session.length !== 16 || !Number.isSafeInteger(sequence) || sequence < 1)
      return { code: 'INVALID_ARGUMENT', message: 'invalid client session or sequence', releasedObjects: [] };
    const sessionKey = keys.session(session);
    const stateBytes = await batch.get(sessionKey);
    const state = stateBytes === undefined ? { floor: 1, lastMs: 0 } : clientSessionCodec.decode(stateBytes);
    const saved = await batch.get(keys.sessionResult(session, sequence));
    if (saved !== undefined) return savedResult(saved);
    if (sequence < state.floor) {
      return {
        code: 'INVALID_ARGUMENT',
        message: `command ${sequence} of this client session was answered already (its result is gone)`,
        releasedObjects: [],
      };
    }
    const result = await this.#applyOne(batch, command);
    batch.put(keys.sessionResult(session, sequence), resultCodec.encode(result));
    const acknowledged = Math.min(command.acknowledged ?? 0, sequence);
    const floor = Math.max(state.floor, acknowledged, sequence - SESSION_RESULTS_MAX + 1);
    await this.#dropSessionResults(batch, session, state.floor, floor);
    batch.put(
      sessionKey,
      clientSessionCodec.encode({ floor, lastMs: Math.max(state.lastMs, command.timeMs) }),
    );
    return result;
  }

  /** Drop the saved results of `session` with sequences in [from, to). */
  async #dropSessionResults(tx: Transaction, session: Uint8Array, from: number, to: number): Promise<void> {
    if (to <= from) return;
    if (to - from <= SESSION_RESULTS_MAX) {
      for (let sequence = from; sequence < to; sequence++) tx.del(keys.sessionResult(session, sequence));
      return;
    }
    // Every saved result lies in [floor, floor + SESSION_RESULTS_MAX): a scan finds them all.
    const end = keys.sessionResult(session, to);
    for (const key of await tx.keysWithPrefix(keys.sessionResults(session), SESSION_RESULTS_MAX + 1))
      if (key < end) tx.del(key);
  }

  async #applyOne(batch: Transaction, command: Command): Promise<Result> {
    const tx = new Transaction(batch);
    try {
      const result = await this.#execute(tx, command);
      // An answer's file carries its chunks, as it did before lists were kept apart (the answer
      // to WriteChunks leaves them out on purpose: see WriteChunks).
      // CommitWrite's answer has the list already: the command's own, set by #setChunks.
      if (result.inode?.chunksApart === true && command.writeChunks == null && command.commitWrite == null)
        result.inode = await this.#withChunks(tx, { ...result.inode });
      tx.commitInto(batch);
      return { code: 'OK', message: '', releasedObjects: [], ...result };
    } catch (error) {
      if (error instanceof Failure) return { code: error.code, message: error.message, releasedObjects: [] };
      throw error;
    }
  }

  async #execute(tx: Transaction, command: Command): Promise<Partial<Result>> {
    const time = command.timeMs;
    // A command of a newer level than the cell's: refused as a controller of an older version
    // refuses it (it sees no operation), so controllers of both versions agree.
    const level = await this.#level(tx);
    const needed = commandLevel(command);
    if (needed > 0 && needed > level) fail('INVALID_ARGUMENT', NO_OPERATION_MESSAGE);
    this.#chunksApart = level >= CHUNKS_APART_LEVEL;
    if (command.initCell !== undefined) return this.#initCell(tx, command.initCell, time);
    if (command.create !== undefined) return this.#create(tx, command.create, time);
    if (command.link !== undefined) return this.#link(tx, command.link, time);
    if (command.unlink !== undefined) return this.#unlink(tx, command.unlink, time);
    if (command.rename !== undefined) return this.#rename(tx, command.rename, time);
    if (command.setAttributes !== undefined) return this.#setAttributes(tx, command.setAttributes, time);
    if (command.setXattr !== undefined) return this.#setXattr(tx, command.setXattr, time);
    if (command.removeXattr !== undefined) return this.#removeXattr(tx, command.removeXattr, time);
    if (command.commitWrite !== undefined) return this.#commitWrite(tx, command.commitWrite, time);
    if (command.writeChunks != null) return this.#writeChunks(tx, command.writeChunks, time);
    if (command.setLocation !== undefined) return this.#setLocation(tx, command.setLocation);
    if (command.registerServer !== undefined)
      return this.#registerServer(tx, command.registerServer.server, time);
    if (command.registerBackends !== undefined)
      return this.#registerBackends(tx, command.registerBackends, time);
    if (command.deregisterServer !== undefined)
      return this.#deregisterServer(tx, command.deregisterServer.serverUuid);
    if (command.open !== undefined) return this.#open(tx, command.open, time);
    if (command.renew !== undefined) return this.#renew(tx, command.renew);
    if (command.release !== undefined) return this.#release(tx, command.release.id);
    if (command.expireTokens !== undefined) return this.#expireTokens(tx, command.expireTokens.nowMs);
    if (command.createJoinToken !== undefined)
      return this.#createJoinToken(tx, command.createJoinToken.token);
    if (command.revokeJoinToken !== undefined) return this.#revokeJoinToken(tx, command.revokeJoinToken.id);
    if (
      command.admitMember !== undefined ||
      command.setMemberAddresses !== undefined ||
      command.retireController != null
    )
      this.#membersVersion += 1;
    if (command.admitMember !== undefined) return this.#admitMember(tx, command.admitMember, time);
    if (command.setMemberAddresses !== undefined)
      return this.#setMemberAddresses(tx, command.setMemberAddresses);
    if (command.setPowerConfig != null) return this.#setPowerConfig(tx, command.setPowerConfig, time);
    if (command.setPowerPolicy != null) return this.#setPowerPolicy(tx, command.setPowerPolicy, time);
    if (command.setPowerState != null) return this.#setPowerState(tx, command.setPowerState, time);
    if (command.reportAccess != null) return this.#reportAccess(tx, command.reportAccess);
    if (command.setChains !== undefined) return this.#setChains(tx, command.setChains, time);
    if (command.placeCopy !== undefined) return this.#placeCopy(tx, command.placeCopy);
    if (command.placementDone !== undefined) return this.#placementDone(tx, command.placementDone);
    if (command.reportBadCopy !== undefined) return this.#reportBadCopy(tx, command.reportBadCopy);
    if (command.setPinnedLeader != null)
      return this.#setPinnedLeader(tx, command.setPinnedLeader.controllerId);
    if (command.retireController != null) return this.#retireController(tx, command.retireController.peerId);
    if (command.setMetadataLevel != null) return this.#setMetadataLevel(tx, command.setMetadataLevel.level);
    if (command.headersDone != null) return this.#headersDone(tx, command.headersDone);
    if (command.restoreInodes != null) return this.#restoreInodes(tx, command.restoreInodes.inodes);
    if (command.restoreMembers != null) {
      this.#membersVersion += 1;
      return this.#restoreMembers(tx, command.restoreMembers.members);
    }
    if (command.logConflict != null) return this.#logConflict(tx, command.logConflict.event, time);
    fail('INVALID_ARGUMENT', NO_OPERATION_MESSAGE);
  }

  // ---- records -------------------------------------------------------------------------------

  /**
   * The inode as stored: a file whose chunks are kept apart comes without them (`chunks` empty;
   * `#withChunks` loads them). Commands that do not change the content never read the list.
   */
  async #inode(tx: Transaction, id: Uint8Array): Promise<Inode> {
    const bytes = await tx.get(keys.inode(id));
    if (bytes === undefined) fail('NOT_FOUND', `no inode ${hex(id)}`);
    return inodeCodec.decode(bytes);
  }

  /** Set a file's size (see `truncate`), its chunk list kept apart or not; the released chunks. */
  async #truncate(tx: Transaction, inode: Inode, size: number): Promise<Uint8Array[]> {
    if (inode.chunksApart && size >= inode.size) {
      // Growing leaves every chunk as it is: no need to read the list.
      inode.size = size;
      return [];
    }
    await this.#withChunks(tx, inode);
    const released = truncate(inode, size);
    await this.#setChunks(tx, inode, inode.chunks);
    return released;
  }

  /** `inode` with its chunk list (loaded from its segments when kept apart). */
  async #withChunks(tx: Reader, inode: Inode): Promise<Inode> {
    // An empty file has no chunks: no scan of its segments (each create's answer).
    if (inode.chunksApart) inode.chunks = inode.size === 0 ? [] : await loadChunks(tx, inode.id);
    return inode;
  }

  /**
   * Replace a file's whole chunk list. Kept apart from metadata level 2 on: every segment is
   * rewritten (a whole-list commit, a truncate, a restore carry or change the whole list anyway).
   */
  async #setChunks(tx: Transaction, inode: Inode, chunks: Chunk[]): Promise<void> {
    inode.chunks = chunks;
    if (!this.#chunksApart && !inode.chunksApart) return;
    for (const key of await tx.keysWithPrefix(keys.chunkSegments(inode.id), Number.POSITIVE_INFINITY))
      tx.del(key);
    putSegments(tx, inode.id, chunks);
    inode.chunksApart = true;
  }

  async #directory(tx: Transaction, id: Uint8Array): Promise<Inode> {
    const inode = await this.#inode(tx, id);
    if (inode.type !== 'DIRECTORY') fail('NOT_A_DIRECTORY', `${hex(id)} is not a directory`);
    return inode;
  }

  async #child(tx: Transaction, parent: Uint8Array, name: string): Promise<Uint8Array | undefined> {
    return tx.get(keys.entry(parent, name));
  }

  #putInode(tx: Transaction, inode: Inode): void {
    if (inode.type === 'FILE' && this.#chunksApart && !inode.chunksApart) {
      // A file of a cell from before level 2, written again: its list moves apart (it has no
      // segments yet; a restore, which may replace segments, goes through #setChunks first).
      putSegments(tx, inode.id, inode.chunks);
      inode.chunksApart = true;
    }
    tx.put(keys.inode(inode.id), inodeCodec.encode(inode.chunksApart ? { ...inode, chunks: [] } : inode));
    // Every change of an inode is written to its META objects on the backends (the header
    // writer on the primary drains these marks; node/recovery/header-writer.ts).
    tx.put(keys.header(inode.id), encoder.encode(String(this.#applyingIndex)));
  }

  // ---- namespace -----------------------------------------------------------------------------

  async #initCell(tx: Transaction, init: InitCell, time: number): Promise<Partial<Result>> {
    if ((await tx.get(keys.cell)) !== undefined) fail('ALREADY_EXISTS', 'the cell is already initialized');
    if (init.cell.length === 0) fail('INVALID_ARGUMENT', 'cell name is empty');
    const rootId = checkId(init.rootId, 'root id');
    const lostFoundId = checkId(init.lostFoundId, 'lost+found id');
    tx.put(keys.cell, initCellCodec.encode(init));
    const level = checkLevel(init.level ?? 0);
    if (level > 0) tx.put(keys.level, encoder.encode(String(level)));
    const root = newInode({
      id: rootId,
      type: 'DIRECTORY',
      mode: init.mode,
      uid: init.uid,
      gid: init.gid,
      time,
      parent: rootId,
      name: '',
    });
    root.nlink = 3;
    root.entries = 1;
    this.#putInode(tx, root);
    const lostFound = newInode({
      id: lostFoundId,
      type: 'DIRECTORY',
      mode: 0o700,
      uid: init.uid,
      gid: init.gid,
      time,
      parent: rootId,
      name: 'lost+found',
    });
    this.#putInode(tx, lostFound);
    tx.put(keys.entry(rootId, 'lost+found'), lostFoundId);
    return { inode: root };
  }

  async #create(tx: Transaction, op: NonNullable<Command['create']>, time: number): Promise<Partial<Result>> {
    checkName(op.name);
    const id = checkId(op.id, 'new inode id');
    if (!NODE_TYPES.has(op.type)) fail('INVALID_ARGUMENT', `invalid node type ${JSON.stringify(op.type)}`);
    const parent = await this.#directory(tx, checkId(op.parent, 'parent'));
    if ((await this.#child(tx, parent.id, op.name)) !== undefined)
      fail('ALREADY_EXISTS', `${op.name} exists`);
    if ((await tx.get(keys.inode(id))) !== undefined) fail('ALREADY_EXISTS', `inode ${hex(id)} exists`);
    if (op.type === 'SYMLINK' && (op.symlinkTarget?.length ?? 0) === 0)
      fail('INVALID_ARGUMENT', 'symlink without target');
    const inode = newInode({
      id,
      type: op.type,
      mode: op.mode & 0o7777,
      uid: op.uid,
      gid: op.gid,
      time,
      parent: parent.id,
      name: op.name,
    });
    inode.rdev = op.rdev ?? 0;
    if (op.type === 'SYMLINK') {
      inode.symlinkTarget = op.symlinkTarget ?? EMPTY;
      inode.size = inode.symlinkTarget.length;
    }
    this.#putInode(tx, inode);
    tx.put(keys.entry(parent.id, op.name), id);
    if (op.type !== 'DIRECTORY') tx.put(keys.name(id, parent.id, op.name), EMPTY);
    parent.entries++;
    if (op.type === 'DIRECTORY') parent.nlink++;
    parent.mtimeMs = time;
    parent.ctimeMs = time;
    this.#putInode(tx, parent);
    return { inode, parent };
  }

  async #link(tx: Transaction, op: NonNullable<Command['link']>, time: number): Promise<Partial<Result>> {
    checkName(op.name);
    const inode = await this.#inode(tx, checkId(op.id, 'inode'));
    if (inode.type === 'DIRECTORY') fail('NOT_PERMITTED', 'hard links to directories are not allowed');
    const parent = await this.#directory(tx, checkId(op.parent, 'parent'));
    if ((await this.#child(tx, parent.id, op.name)) !== undefined)
      fail('ALREADY_EXISTS', `${op.name} exists`);
    tx.put(keys.entry(parent.id, op.name), inode.id);
    tx.put(keys.name(inode.id, parent.id, op.name), EMPTY);
    inode.nlink++;
    if (!op.restore) inode.ctimeMs = time;
    this.#putInode(tx, inode);
    parent.entries++;
    if (!op.restore) {
      parent.mtimeMs = time;
      parent.ctimeMs = time;
    }
    this.#putInode(tx, parent);
    return { inode, parent };
  }

  async #unlink(tx: Transaction, op: NonNullable<Command['unlink']>, time: number): Promise<Partial<Result>> {
    checkName(op.name);
    const parent = await this.#directory(tx, checkId(op.parent, 'parent'));
    const childId = await this.#child(tx, parent.id, op.name);
    if (childId === undefined) fail('NOT_FOUND', `${op.name} does not exist`);
    const child = await this.#inode(tx, childId);
    if (op.directory && child.type !== 'DIRECTORY') fail('NOT_A_DIRECTORY', `${op.name} is not a directory`);
    if (!op.directory && child.type === 'DIRECTORY') fail('IS_A_DIRECTORY', `${op.name} is a directory`);
    if (child.type === 'DIRECTORY' && child.entries > 0) fail('NOT_EMPTY', `${op.name} is not empty`);
    if (child.type === 'DIRECTORY' && sameId(child.id, await this.#rootId(tx)))
      fail('NOT_PERMITTED', 'cannot remove the root');
    tx.del(keys.entry(parent.id, op.name));
    await this.#dropName(tx, child, parent.id, op.name);
    parent.entries--;
    if (child.type === 'DIRECTORY') parent.nlink--;
    parent.mtimeMs = time;
    parent.ctimeMs = time;
    this.#putInode(tx, parent);
    const releasedObjects = await this.#dropLink(tx, child, time);
    return { releasedObjects, parent };
  }

  /**
   * The name (parent, name) of a file is gone: drop it from the names index, and when it was the
   * name the inode records (its META objects' parent and name), record another of its names.
   */
  async #dropName(tx: Transaction, inode: Inode, parent: Uint8Array, name: string): Promise<void> {
    if (inode.type === 'DIRECTORY') return;
    tx.del(keys.name(inode.id, parent, name));
    if (!sameId(inode.parent, parent) || inode.name !== name) return;
    const [other] = await tx.keysWithPrefix(keys.names(inode.id), 1);
    if (other === undefined) return;
    const rest = other.slice(keys.names(inode.id).length);
    inode.parent = fromHex(rest.slice(0, 32));
    inode.name = rest.slice(33);
  }

  /** One name of `inode` is gone: delete it when no name and no open token is left. */
  async #dropLink(tx: Transaction, inode: Inode, time: number): Promise<Uint8Array[]> {
    inode.nlink = inode.type === 'DIRECTORY' ? 0 : inode.nlink - 1;
    inode.ctimeMs = time;
    if (inode.nlink > 0) {
      this.#putInode(tx, inode);
      return [];
    }
    const openTokens = await tx.keysWithPrefix(keys.objectTokens(inode.id), 1);
    if (openTokens.length > 0) {
      // Unlinked while open: keep it until the last token goes (POSIX semantics).
      this.#putInode(tx, inode);
      tx.put(keys.orphan(inode.id), EMPTY);
      return [];
    }
    return this.#deleteInode(tx, inode);
  }

  async #deleteInode(tx: Transaction, inode: Inode): Promise<Uint8Array[]> {
    await this.#withChunks(tx, inode);
    if (inode.chunksApart) {
      for (const key of await tx.keysWithPrefix(keys.chunkSegments(inode.id), Number.POSITIVE_INFINITY))
        tx.del(key);
    }
    tx.del(keys.inode(inode.id));
    tx.del(keys.orphan(inode.id));
    tx.del(keys.access(inode.id));
    // The header writer replaces the inode's META objects with tombstones (a rebuild must not
    // bring it back from a stale copy); the chunks are released.
    tx.put(keys.deleted(inode.id), inodeCodec.encode({ ...inode, chunksApart: false }));
    for (const key of await tx.keysWithPrefix(keys.names(inode.id), NAMES_MAX)) tx.del(key);
    tx.put(keys.header(inode.id), encoder.encode(String(this.#applyingIndex)));
    return this.#forget(
      tx,
      inode.chunks.map((chunk) => chunk.id),
    );
  }

  /** Objects no longer referenced: drop their locations; the caller deletes them from backends. */
  async #forget(tx: Transaction, objects: Uint8Array[]): Promise<Uint8Array[]> {
    for (const object of objects) {
      for (const key of await tx.keysWithPrefix(keys.locations(object), LOCATIONS_PER_OBJECT_MAX))
        tx.del(key);
    }
    return objects;
  }

  async #rootId(tx: Transaction): Promise<Uint8Array> {
    const bytes = await tx.get(keys.cell);
    if (bytes === undefined) fail('NOT_FOUND', 'the cell is not initialized');
    return initCellCodec.decode(bytes).rootId;
  }

  async #rename(tx: Transaction, op: NonNullable<Command['rename']>, time: number): Promise<Partial<Result>> {
    checkName(op.name);
    checkName(op.newName);
    const parent = await this.#directory(tx, checkId(op.parent, 'parent'));
    const newParent = sameId(op.parent, op.newParent)
      ? parent
      : await this.#directory(tx, checkId(op.newParent, 'new parent'));
    const sourceId = await this.#child(tx, parent.id, op.name);
    if (sourceId === undefined) fail('NOT_FOUND', `${op.name} does not exist`);
    const source = await this.#inode(tx, sourceId);
    const targetId = await this.#child(tx, newParent.id, op.newName);
    if (targetId !== undefined && sameId(targetId, sourceId)) return { inode: source }; // same file: nothing to do
    if (source.type === 'DIRECTORY') {
      // A directory may not move into its own subtree.
      for (let at = newParent; ; ) {
        if (sameId(at.id, source.id)) fail('INVALID_ARGUMENT', 'cannot move a directory into itself');
        if (sameId(at.parent, at.id) || at.parent.length === 0) break;
        at = await this.#inode(tx, at.parent);
      }
    }
    let releasedObjects: Uint8Array[] = [];
    if (targetId !== undefined) {
      if (op.noReplace) fail('ALREADY_EXISTS', `${op.newName} exists`);
      const target = await this.#inode(tx, targetId);
      if (source.type === 'DIRECTORY' && target.type !== 'DIRECTORY')
        fail('NOT_A_DIRECTORY', `${op.newName} is not a directory`);
      if (source.type !== 'DIRECTORY' && target.type === 'DIRECTORY')
        fail('IS_A_DIRECTORY', `${op.newName} is a directory`);
      if (target.type === 'DIRECTORY' && target.entries > 0) fail('NOT_EMPTY', `${op.newName} is not empty`);
      newParent.entries--;
      if (target.type === 'DIRECTORY') newParent.nlink--;
      await this.#dropName(tx, target, newParent.id, op.newName);
      releasedObjects = await this.#dropLink(tx, target, time);
    }
    tx.del(keys.entry(parent.id, op.name));
    tx.put(keys.entry(newParent.id, op.newName), source.id);
    parent.entries--;
    newParent.entries++;
    if (source.type === 'DIRECTORY' && !sameId(parent.id, newParent.id)) {
      parent.nlink--;
      newParent.nlink++;
    }
    for (const directory of sameId(parent.id, newParent.id) ? [parent] : [parent, newParent]) {
      directory.mtimeMs = time;
      directory.ctimeMs = time;
      this.#putInode(tx, directory);
    }
    if (source.type !== 'DIRECTORY') {
      tx.del(keys.name(source.id, parent.id, op.name));
      tx.put(keys.name(source.id, newParent.id, op.newName), EMPTY);
    }
    source.parent = newParent.id;
    source.name = op.newName;
    source.ctimeMs = time;
    this.#putInode(tx, source);
    // Its path changed: chains with path conditions may place it (or, for a directory, its
    // subtree) elsewhere.
    await this.#enqueue(tx, source.id);
    return { inode: source, releasedObjects };
  }

  async #setAttributes(
    tx: Transaction,
    op: NonNullable<Command['setAttributes']>,
    time: number,
  ): Promise<Partial<Result>> {
    const inode = await this.#inode(tx, checkId(op.id, 'inode'));
    const attributes = op.attributes ?? {};
    let releasedObjects: Uint8Array[] = [];
    if (attributes.mode !== undefined) inode.mode = attributes.mode & 0o7777;
    if (attributes.uid !== undefined) inode.uid = attributes.uid;
    if (attributes.gid !== undefined) inode.gid = attributes.gid;
    if (attributes.atimeMs !== undefined) inode.atimeMs = attributes.atimeMs;
    if (attributes.mtimeMs !== undefined) inode.mtimeMs = attributes.mtimeMs;
    if (attributes.size !== undefined && attributes.size !== inode.size) {
      if (inode.type === 'DIRECTORY') fail('IS_A_DIRECTORY', 'cannot truncate a directory');
      if (inode.type !== 'FILE') fail('INVALID_ARGUMENT', 'only regular files have a size to set');
      releasedObjects = await this.#forget(tx, await this.#truncate(tx, inode, attributes.size));
      inode.version++;
      if (attributes.mtimeMs === undefined) inode.mtimeMs = time;
    }
    if (inode.type === 'FILE' && (attributes.size !== undefined || attributes.mtimeMs !== undefined))
      await this.#enqueue(tx, inode.id);
    inode.ctimeMs = time;
    this.#putInode(tx, inode);
    return { inode, releasedObjects };
  }

  async #setXattr(
    tx: Transaction,
    op: NonNullable<Command['setXattr']>,
    time: number,
  ): Promise<Partial<Result>> {
    const inode = await this.#inode(tx, checkId(op.id, 'inode'));
    if (op.name.length === 0 || op.name.length > 255) fail('INVALID_ARGUMENT', 'invalid xattr name');
    const existing = inode.xattrs.findIndex((xattr) => xattr.name === op.name);
    if (existing >= 0 && op.createOnly) fail('ALREADY_EXISTS', `xattr ${op.name} exists`);
    if (existing < 0 && op.replaceOnly) fail('NO_DATA', `no xattr ${op.name}`);
    if (existing >= 0) inode.xattrs[existing] = { name: op.name, value: op.value };
    else inode.xattrs.push({ name: op.name, value: op.value });
    inode.xattrs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    inode.ctimeMs = time;
    this.#putInode(tx, inode);
    return { inode };
  }

  async #removeXattr(
    tx: Transaction,
    op: NonNullable<Command['removeXattr']>,
    time: number,
  ): Promise<Partial<Result>> {
    const inode = await this.#inode(tx, checkId(op.id, 'inode'));
    const existing = inode.xattrs.findIndex((xattr) => xattr.name === op.name);
    if (existing < 0) fail('NO_DATA', `no xattr ${op.name}`);
    inode.xattrs.splice(existing, 1);
    inode.ctimeMs = time;
    this.#putInode(tx, inode);
    return { inode };
  }

  /** A regular file's inode (IS_A_DIRECTORY / INVALID_ARGUMENT for anything else). */
  async #fileInode(tx: Transaction, id: Uint8Array): Promise<Inode> {
    const inode = await this.#inode(tx, checkId(id, 'inode'));
    if (inode.type !== 'FILE')
      fail(inode.type === 'DIRECTORY' ? 'IS_A_DIRECTORY' : 'INVALID_ARGUMENT', 'not a regular file');
    return inode;
  }

  async #commitWrite(
    tx: Transaction,
    op: NonNullable<Command['commitWrite']>,
    time: number,
  ): Promise<Partial<Result>> {
    const inode = await this.#fileInode(tx, op.id);
    if (op.checkVersion && op.expectedVersion !== inode.version) {
      fail('STALE', `version is ${inode.version}, expected ${op.expectedVersion}`);
    }
    await this.#withChunks(tx, inode);
    const inlineData = op.inlineData ?? EMPTY;
    if (inlineData.length > INLINE_BYTES_MAX) fail('INVALID_ARGUMENT', 'inline data too large');
    if (inlineData.length > 0 && op.chunks.length > 0)
      fail('INVALID_ARGUMENT', 'inline data and chunks are exclusive');
    const end = checkChunkOrder(op.chunks, this.#chunksApart);
    if (end > op.size || inlineData.length > op.size)
      fail('INVALID_ARGUMENT', 'chunks extend past the file size');
    const kept = new Set(op.chunks.map((chunk) => hex(chunk.id)));
    const releasedObjects = inode.chunks.filter((chunk) => !kept.has(hex(chunk.id))).map((chunk) => chunk.id);
    const known = new Set(inode.chunks.map((chunk) => hex(chunk.id)));
    return this.#replaceContent(tx, inode, {
      chunks: op.chunks,
      added: op.chunks.filter((chunk) => !known.has(hex(chunk.id))),
      inlineData,
      size: op.size,
      mtimeMs: op.mtimeMs || time,
      time,
      releasedObjects,
      storedOn: op.storedOn ?? [],
    });
  }

  async #writeChunks(
    tx: Transaction,
    op: NonNullable<Command['writeChunks']>,
    time: number,
  ): Promise<Partial<Result>> {
    const inode = await this.#fileInode(tx, op.id);
    const written = op.chunks ?? [];
    checkChunkOrder(written, this.#chunksApart);
    if (inode.inlineData.length > 0 && written[0]?.offset !== 0)
      fail('STALE', 'the file holds inline data: commit its whole content');
    if (inode.chunksApart) return this.#writeSegments(tx, inode, op, time);
    const byOffset = new Map(inode.chunks.map((chunk) => [chunk.offset, chunk]));
    const releasedObjects: Uint8Array[] = [];
    const added: Chunk[] = [];
    for (const chunk of written) {
      const replaced = byOffset.get(chunk.offset);
      if (replaced === undefined || !sameId(replaced.id, chunk.id)) added.push(chunk);
      if (replaced !== undefined && !sameId(replaced.id, chunk.id)) releasedObjects.push(replaced.id);
      byOffset.set(chunk.offset, chunk);
    }
    const chunks = [...byOffset.values()].sort((a, b) => a.offset - b.offset);
    let end = 0;
    for (const chunk of chunks) {
      if (chunk.offset < end) fail('INVALID_ARGUMENT', 'a new chunk overlaps a chunk of the file');
      end = chunk.offset + chunk.size;
    }
    const size = Math.max(inode.size, op.sizeFloor);
    if (end > size) fail('INVALID_ARGUMENT', 'chunks extend past the file size');
    return this.#chunksMerged(tx, inode, op, time, { chunks, added, releasedObjects, size });
  }

  /** WriteChunks' new content recorded (`chunks` absent: its segments are written already). */
  async #chunksMerged(
    tx: Transaction,
    inode: Inode,
    op: NonNullable<Command['writeChunks']>,
    time: number,
    change: { chunks?: Chunk[]; added: Chunk[]; releasedObjects: Uint8Array[]; size: number },
  ): Promise<Partial<Result>> {
    const result = await this.#replaceContent(tx, inode, {
      ...change,
      inlineData: EMPTY,
      mtimeMs: op.mtimeMs || time,
      time,
      storedOn: op.storedOn ?? [],
    });
    // The answer's inode without its chunk list (the proposer has it: see WriteChunks).
    return { ...result, inode: { ...inode, chunks: [] } };
  }

  /**
   * WriteChunks on a file whose list is kept apart: only the segments the new chunks start in are
   * read and written, and their neighbours read (a chunk may reach into the next segment).
   */
  async #writeSegments(
    tx: Transaction,
    inode: Inode,
    op: NonNullable<Command['writeChunks']>,
    time: number,
  ): Promise<Partial<Result>> {
    const written = op.chunks ?? [];
    const size = Math.max(inode.size, op.sizeFloor);
    const segments = new Map<number, Chunk[]>();
    const segment = async (index: number) => {
      let chunks = segments.get(index);
      if (chunks === undefined) {
        chunks = await loadSegment(tx, inode.id, index);
        segments.set(index, chunks);
      }
      return chunks;
    };
    const releasedObjects: Uint8Array[] = [];
    const added: Chunk[] = [];
    const touched = new Set<number>();
    for (const chunk of written) {
      if (chunk.offset + chunk.size > size) fail('INVALID_ARGUMENT', 'chunks extend past the file size');
      const index = segmentOf(chunk.offset);
      touched.add(index);
      const chunks = await segment(index);
      const at = chunks.findIndex((c) => c.offset >= chunk.offset);
      const replaced = at >= 0 && chunks[at]!.offset === chunk.offset ? chunks[at] : undefined;
      if (replaced === undefined || !sameId(replaced.id, chunk.id)) added.push(chunk);
      if (replaced !== undefined && !sameId(replaced.id, chunk.id)) releasedObjects.push(replaced.id);
      if (replaced !== undefined) chunks[at] = chunk;
      else if (at < 0) chunks.push(chunk);
      else chunks.splice(at, 0, chunk);
    }
    // No overlap within a touched segment, nor with the last chunk before it or the first after.
    for (const index of [...touched].sort((a, b) => a - b)) {
      // A chunk is at most a segment long: only the previous segment's last one can reach here.
      const last = index > 0 ? (await segment(index - 1)).at(-1) : undefined;
      let end = last === undefined ? 0 : last.offset + last.size;
      const chunks = await segment(index);
      for (const chunk of chunks) {
        if (chunk.offset < end) fail('INVALID_ARGUMENT', 'a new chunk overlaps a chunk of the file');
        end = chunk.offset + chunk.size;
      }
      const next = (await segment(index + 1))[0];
      if (next !== undefined && next.offset < end)
        fail('INVALID_ARGUMENT', 'a new chunk overlaps a chunk of the file');
    }
    for (const index of touched) putSegment(tx, inode.id, index, segments.get(index)!);
    return this.#chunksMerged(tx, inode, op, time, { added, releasedObjects, size });
  }

  /**
   * A file's new content (commitWrite, writeChunks): its chunks (absent: written to their
   * segments by the caller), released objects, new locations.
   */
  async #replaceContent(
    tx: Transaction,
    inode: Inode,
    change: {
      chunks?: Chunk[];
      /** Chunks new to the file: stored on `storedOn` (their location records). */
      added: readonly Chunk[];
      inlineData: Uint8Array;
      size: number;
      mtimeMs: number;
      time: number;
      releasedObjects: Uint8Array[];
      storedOn: readonly Uint8Array[];
    },
  ): Promise<Partial<Result>> {
    inode.contentHistory = [inode.mtimeMs, ...(inode.contentHistory ?? [])].slice(0, CONTENT_HISTORY_MAX);
    if (change.chunks !== undefined) await this.#setChunks(tx, inode, change.chunks);
    inode.inlineData = change.inlineData;
    inode.size = change.size;
    inode.version++;
    inode.mtimeMs = change.mtimeMs;
    inode.ctimeMs = change.time;
    inode.latestAcceptedMtimeMs = Math.max(inode.latestAcceptedMtimeMs, inode.mtimeMs);
    this.#putInode(tx, inode);
    await this.#forget(tx, change.releasedObjects);
    await this.#enqueue(tx, inode.id);
    for (const chunk of change.added) {
      for (const backend of change.storedOn) {
        tx.put(
          keys.location(chunk.id, backend),
          locationCodec.encode({ outdated: false, current: true, target: true, mtimeMs: inode.mtimeMs }),
        );
      }
    }
    return { inode, releasedObjects: change.releasedObjects };
  }

  async #setLocation(tx: Transaction, op: NonNullable<Command['setLocation']>): Promise<Partial<Result>> {
    checkId(op.object, 'object');
    checkId(op.backend, 'backend');
    if (op.remove) tx.del(keys.location(op.object, op.backend));
    else
      tx.put(
        keys.location(op.object, op.backend),
        locationCodec.encode(op.location ?? { outdated: false, current: false, target: false, mtimeMs: 0 }),
      );
    return {};
  }

  // ---- recovery: META headers, rebuild, split brain (node/recovery/) ---------------------------

  async #headersDone(tx: Transaction, op: NonNullable<Command['headersDone']>): Promise<Partial<Result>> {
    for (const file of op.files) {
      const key = keys.header(checkId(file.id, 'inode'));
      const mark = await tx.get(key);
      if (mark !== undefined && Number(Buffer.from(mark).toString('utf8')) === file.queued) {
        tx.del(key);
        tx.del(keys.deleted(file.id));
      }
    }
    return {};
  }

  /**
   * Inodes recovered from the backends' META headers, parents before children. One is skipped
   * when the cell has it at the same or a newer change (ctime): a rebuild can run again, and a
   * live cell keeps what is newer. A name taken by another inode puts the recovered one into
   * lost+found as NAME.<id prefix>.
   */
  async #restoreInodes(
    tx: Transaction,
    restored: NonNullable<Command['restoreInodes']>['inodes'],
  ): Promise<Partial<Result>> {
    if (restored.length > RESTORE_INODES_MAX)
      fail('INVALID_ARGUMENT', `at most ${RESTORE_INODES_MAX} inodes per restore`);
    const cellBytes = await tx.get(keys.cell);
    if (cellBytes === undefined) fail('NOT_FOUND', 'the cell is not initialized');
    const cell = initCellCodec.decode(cellBytes);
    const releasedObjects: Uint8Array[] = [];
    for (const item of restored) {
      const inode = item.inode;
      if (inode == null) fail('INVALID_ARGUMENT', 'restored inode missing');
      const id = checkId(inode.id, 'restored inode id');
      if (!NODE_TYPES.has(inode.type)) fail('INVALID_ARGUMENT', `invalid node type ${inode.type}`);
      if (sameId(id, cell.rootId) || sameId(id, cell.lostFoundId)) {
        // The root and lost+found keep their ids (a fresh cell's); only their attributes come back.
        const existing = await this.#inode(tx, id);
        Object.assign(existing, pick(inode, ['mode', 'uid', 'gid', 'atimeMs', 'mtimeMs', 'xattrs']));
        // ctime only moves forward (the META objects on the backends order versions by it).
        existing.ctimeMs = Math.max(existing.ctimeMs, inode.ctimeMs);
        this.#putInode(tx, existing);
        continue;
      }
      const existingBytes = await tx.get(keys.inode(id));
      const existing = existingBytes === undefined ? undefined : inodeCodec.decode(existingBytes);
      if (existing !== undefined && existing.ctimeMs >= inode.ctimeMs) continue;
      if (existing !== undefined) await this.#withChunks(tx, existing);
      let parent = await this.#directory(tx, checkId(inode.parent, 'restored parent'));
      let name = inode.name;
      checkName(name);
      const taken = await this.#child(tx, parent.id, name);
      if (taken !== undefined && !sameId(taken, id)) {
        parent = await this.#directory(tx, cell.lostFoundId);
        name = `${name}.${hex(id).slice(0, 8)}`;
        if ((await this.#child(tx, parent.id, name)) !== undefined) continue;
      }
      const next: Inode = {
        ...inode,
        id,
        mode: inode.mode & 0o7777,
        parent: parent.id,
        name,
        nlink: inode.type === 'DIRECTORY' ? 2 : 1,
        entries: 0,
        skipCount: 0,
        latestAcceptedMtimeMs: inode.mtimeMs,
        contentHistory: (inode.contentHistory ?? []).slice(0, CONTENT_HISTORY_MAX),
        // The recovered list replaces what the cell has (its segments when kept apart).
        chunksApart: existing?.chunksApart === true && inode.type === 'FILE',
      };
      if (existing !== undefined) {
        next.nlink = existing.nlink;
        next.entries = existing.entries;
        // Moved: drop the old name.
        if (!sameId(existing.parent, parent.id) || existing.name !== name) {
          const oldEntry = await this.#child(tx, existing.parent, existing.name);
          if (oldEntry !== undefined && sameId(oldEntry, id)) {
            tx.del(keys.entry(existing.parent, existing.name));
            if (existing.type !== 'DIRECTORY') tx.del(keys.name(id, existing.parent, existing.name));
            const oldParent = await this.#directory(tx, existing.parent);
            oldParent.entries--;
            if (existing.type === 'DIRECTORY') oldParent.nlink--;
            this.#putInode(tx, oldParent);
            if (sameId(oldParent.id, parent.id)) parent = oldParent;
          }
        }
        const kept = new Set(next.chunks.map((chunk) => hex(chunk.id)));
        const gone = existing.chunks.filter((chunk) => !kept.has(hex(chunk.id))).map((chunk) => chunk.id);
        releasedObjects.push(...(await this.#forget(tx, gone)));
      }
      const entry = await this.#child(tx, parent.id, name);
      if (entry === undefined) {
        tx.put(keys.entry(parent.id, name), id);
        parent.entries++;
        if (inode.type === 'DIRECTORY') parent.nlink++;
        this.#putInode(tx, parent);
      }
      if (next.type === 'FILE') await this.#setChunks(tx, next, next.chunks ?? []);
      this.#putInode(tx, next);
      if (next.type !== 'DIRECTORY') tx.put(keys.name(id, parent.id, name), EMPTY);
      for (const { object, backend, location } of item.locations) {
        tx.put(
          keys.location(checkId(object, 'object'), checkId(backend, 'backend')),
          locationCodec.encode(location ?? { outdated: false, current: true, target: true, mtimeMs: 0 }),
        );
      }
      if (next.type === 'FILE') await this.#enqueue(tx, id);
    }
    return { releasedObjects };
  }

  /** Members a recovering controller knew (its members cache), stored as they were. */
  async #restoreMembers(tx: Transaction, members: Member[]): Promise<Partial<Result>> {
    let highest = 0;
    for (const member of members) {
      if (member.peerId.length === 0) fail('INVALID_ARGUMENT', 'peer id missing');
      if (!Number.isSafeInteger(member.controllerId) || member.controllerId < 0)
        fail('INVALID_ARGUMENT', 'bad controller id');
      highest = Math.max(highest, member.controllerId);
      if ((await tx.get(keys.member(member.peerId))) !== undefined) continue;
      const stored: Member = {
        peerId: member.peerId,
        controllerId: member.controllerId,
        joinedMs: member.joinedMs,
        joinToken: member.joinToken ?? EMPTY,
        addresses: checkAddresses(member.addresses ?? []),
      };
      if (member.network != null) stored.network = checkNetwork(member.network);
      if ((member.softwareLevel ?? 0) > 0) stored.softwareLevel = checkLevel(member.softwareLevel ?? 0);
      tx.put(keys.member(member.peerId), memberCodec.encode(stored));
    }
    const bytes = await tx.get(keys.controllers);
    const next = bytes === undefined ? 1 : Number(Buffer.from(bytes).toString('utf8'));
    if (highest + 1 > next) tx.put(keys.controllers, encoder.encode(String(highest + 1)));
    return {};
  }

  async #logConflict(tx: Transaction, event: ConflictEvent, time: number): Promise<Partial<Result>> {
    if (event == null) fail('INVALID_ARGUMENT', 'conflict event missing');
    const bytes = await tx.get(keys.conflictNext);
    const sequence = bytes === undefined ? 1 : Number(Buffer.from(bytes).toString('utf8'));
    tx.put(keys.conflictNext, encoder.encode(String(sequence + 1)));
    tx.put(keys.conflict(sequence), conflictEventCodec.encode({ ...event, sequence, timeMs: time }));
    if (sequence > CONFLICT_EVENTS_MAX) tx.del(keys.conflict(sequence - CONFLICT_EVENTS_MAX));
    return {};
  }

  // ---- placement -------------------------------------------------------------------------------

  /** Queue a file (or a directory: its subtree) for the mover to check its placement. */
  async #enqueue(tx: Transaction, id: Uint8Array): Promise<void> {
    const last = await tx.get(keys.queueNumber);
    const next = (last === undefined ? 0 : Number(Buffer.from(last).toString('utf8'))) + 1;
    const text = encoder.encode(String(next));
    tx.put(keys.queueNumber, text);
    tx.put(keys.queued(id), text);
  }

  async #setChains(
    tx: Transaction,
    op: NonNullable<Command['setChains']>,
    time: number,
  ): Promise<Partial<Result>> {
    const chains = op.chains;
    if (chains == null) fail('INVALID_ARGUMENT', 'no chains given');
    const stored = await tx.get(keys.chains);
    const version = stored === undefined ? 0 : chainsCodec.decode(stored).version;
    if (op.checkVersion && op.expectedVersion !== version)
      fail('STALE', `the chains are at version ${version}, not ${op.expectedVersion}`);
    const rows = chains.rows.map((row) => ({
      chain: row.chain,
      action: row.action,
      destination: row.destination,
      attribute: row.attribute,
      operator: row.operator,
      value: row.value,
      strict: row.strict,
    }));
    const problems = checkStructure({ copies: chains.copies, rows });
    if (problems.length > 0) fail('INVALID_ARGUMENT', problems.join('; '));
    tx.put(
      keys.chains,
      chainsCodec.encode({ copies: chains.copies, rows, version: version + 1, updatedMs: time }),
    );
    return {};
  }

  async #placeCopy(tx: Transaction, op: NonNullable<Command['placeCopy']>): Promise<Partial<Result>> {
    checkId(op.object, 'object');
    checkId(op.backend, 'backend');
    const copies: Array<{ key: string; location: Location }> = [];
    for (const key of await tx.keysWithPrefix(keys.locations(op.object), LOCATIONS_PER_OBJECT_MAX)) {
      const bytes = await tx.get(key);
      if (bytes !== undefined) copies.push({ key, location: locationCodec.decode(bytes) });
    }
    // Released objects lose their locations: a copy of one must not be recorded (it is garbage).
    if (copies.length === 0) fail('NOT_FOUND', `object ${hex(op.object)} is not referenced any more`);
    const key = keys.location(op.object, op.backend);
    if (op.remove) {
      const others = copies.filter(
        (copy) => copy.key !== key && copy.location.current && !copy.location.outdated,
      );
      if (others.length === 0) fail('NOT_PERMITTED', 'the last current copy of an object cannot be removed');
      tx.del(key);
      return {};
    }
    const location = op.location ?? { outdated: false, current: false, target: false, mtimeMs: 0 };
    if (!location.current && !location.target) {
      fail('INVALID_ARGUMENT', 'a copy that is neither current nor a target is removed, not set');
    }
    if (!location.current) {
      const others = copies.filter(
        (copy) => copy.key !== key && copy.location.current && !copy.location.outdated,
      );
      if (others.length === 0) fail('NOT_PERMITTED', 'the last current copy of an object cannot be dropped');
    }
    tx.put(key, locationCodec.encode(location));
    return {};
  }

  async #reportBadCopy(tx: Transaction, op: NonNullable<Command['reportBadCopy']>): Promise<Partial<Result>> {
    checkId(op.object, 'object');
    checkId(op.backend, 'backend');
    const inode = await this.#withChunks(tx, await this.#inode(tx, checkId(op.inode, 'inode')));
    if (!inode.chunks.some((chunk) => sameId(chunk.id, op.object)))
      fail('NOT_FOUND', 'the file has no such chunk (rewritten since?)');
    const key = keys.location(op.object, op.backend);
    const bytes = await tx.get(key);
    if (bytes === undefined) fail('NOT_FOUND', 'no copy of the chunk is recorded on that backend');
    const location = locationCodec.decode(bytes);
    if (!location.current || location.outdated) return {}; // reported already
    let others = 0;
    for (const other of await tx.keysWithPrefix(keys.locations(op.object), LOCATIONS_PER_OBJECT_MAX)) {
      if (other === key) continue;
      const copy = await tx.get(other);
      if (copy !== undefined && locationCodec.decode(copy).current && !locationCodec.decode(copy).outdated)
        others++;
    }
    // The only copy stays current: readers keep trying it (a transient error), nothing to copy from.
    if (others === 0) fail('NOT_PERMITTED', 'the only current copy is not marked bad');
    tx.put(key, locationCodec.encode({ ...location, current: false, outdated: true }));
    inode.skipCount += 1;
    this.#putInode(tx, inode);
    await this.#enqueue(tx, inode.id);
    return {};
  }

  async #placementDone(tx: Transaction, op: NonNullable<Command['placementDone']>): Promise<Partial<Result>> {
    for (const file of op.files) {
      checkId(file.id, 'queued file');
      const queued = await tx.get(keys.queued(file.id));
      if (queued !== undefined && Number(Buffer.from(queued).toString('utf8')) === file.queued)
        tx.del(keys.queued(file.id));
    }
    return {};
  }

  /** How often a file was opened (undefined: never since it was created). */
  async access(id: Uint8Array): Promise<AccessStats | undefined> {
    const bytes = await this.#kv.get(keys.access(id));
    return bytes === undefined ? undefined : accessStatsCodec.decode(bytes);
  }

  /** The chains (undefined: none set). */
  async chains(): Promise<StoredChains | undefined> {
    const bytes = await this.#kv.get(keys.chains);
    return bytes === undefined ? undefined : chainsCodec.decode(bytes);
  }

  /** Files (or directories) queued for the mover, oldest first by id order, up to `limit`. */
  async queuedFiles(limit: number): Promise<Array<{ id: Uint8Array; queued: number }>> {
    const found: Array<{ id: Uint8Array; queued: number }> = [];
    for await (const [key, value] of this.#kv.range({ gte: 'q:', lt: rangeEnd('q:'), limit }))
      found.push({ id: fromHex(key.slice(2)), queued: Number(Buffer.from(value).toString('utf8')) });
    return found;
  }

  /** Inodes whose META objects are not written yet, with the log index of their last change. */
  async headerMarks(limit: number): Promise<Array<{ id: Uint8Array; queued: number }>> {
    const found: Array<{ id: Uint8Array; queued: number }> = [];
    for await (const [key, value] of this.#kv.range({ gte: 'h:', lt: rangeEnd('h:'), limit }))
      found.push({ id: fromHex(key.slice(2)), queued: Number(Buffer.from(value).toString('utf8')) });
    return found;
  }

  /** Every name of a file (parent, name), up to NAMES_MAX. */
  async names(id: Uint8Array): Promise<Array<{ parent: Uint8Array; name: string }>> {
    const prefix = keys.names(id);
    const found: Array<{ parent: Uint8Array; name: string }> = [];
    for await (const [key] of this.#kv.range({ gte: prefix, lt: rangeEnd(prefix), limit: NAMES_MAX })) {
      const rest = key.slice(prefix.length);
      found.push({ parent: fromHex(rest.slice(0, 32)), name: rest.slice(33) });
    }
    return found;
  }

  /** A deleted inode whose tombstones are not written yet. */
  async deletedInode(id: Uint8Array): Promise<Inode | undefined> {
    const bytes = await this.#kv.get(keys.deleted(id));
    return bytes === undefined ? undefined : inodeCodec.decode(bytes);
  }

  /** The split-brain conflicts logged (newest last), up to `limit`. */
  async conflicts(limit: number): Promise<ConflictEvent[]> {
    const bytes = await this.#kv.get(keys.conflictNext);
    const next = bytes === undefined ? 1 : Number(Buffer.from(bytes).toString('utf8'));
    const first = Math.max(1, next - Math.min(limit, CONFLICT_EVENTS_MAX));
    const found: ConflictEvent[] = [];
    for await (const [, value] of this.#kv.range({ gte: keys.conflict(first), lt: rangeEnd('x:') }))
      found.push(conflictEventCodec.decode(value));
    return found;
  }

  /** Every inode, in id order, from after `after` (hex), up to `limit` (the mover's scan). */
  async inodesAfter(after: string, limit: number): Promise<Inode[]> {
    const found: Inode[] = [];
    // The first key after `i:<after>` (ids have a fixed length, so NUL sorts right after it).
    const gte = after === '' ? 'i:' : `i:${after}\u0000`;
    for await (const [, value] of this.#kv.range({ gte, lt: rangeEnd('i:'), limit }))
      found.push(inodeCodec.decode(value));
    for (const inode of found) await this.#whole(inode);
    return found;
  }

  // ---- servers and backends -------------------------------------------------------------------

  async #registerServer(tx: Transaction, server: ServerRecord, time: number): Promise<Partial<Result>> {
    checkId(server.uuid, 'server uuid');
    const bytes = await tx.get(keys.server(server.uuid));
    const existing = bytes === undefined ? undefined : serverCodec.decode(bytes);
    // The power state is the controllers' (power management), not the server's: a registration
    // keeps it (a woken server registering is how the primary learns it came up).
    const record: ServerRecord = {
      ...server,
      registeredMs: existing?.registeredMs ?? time,
      lastSeenMs: time,
      // A server being powered down stays out of placements until it is down (or kept on).
      online: existing?.power !== 'GOING_DOWN',
      power: existing?.power ?? 'ON',
      powerChangedMs: existing?.powerChangedMs ?? time,
      powerReason: existing?.powerReason ?? 'registered',
      powerFailures: existing?.powerFailures ?? 0,
      lastAccessMs: Math.max(existing?.lastAccessMs ?? 0, checkTime(server.lastAccessMs ?? 0, 'last access')),
    };
    if (record.power === 'POWER_STATE_UNSPECIFIED') record.power = 'ON';
    tx.put(keys.server(server.uuid), serverCodec.encode(record));
    return {};
  }

  async #registerBackends(
    tx: Transaction,
    op: NonNullable<Command['registerBackends']>,
    time: number,
  ): Promise<Partial<Result>> {
    checkId(op.serverUuid, 'server uuid');
    if ((await tx.get(keys.server(op.serverUuid))) === undefined)
      fail('NOT_FOUND', 'register the server first');
    for (const backend of op.backends) {
      checkId(backend.uuid, 'backend uuid');
      const existing = await tx.get(keys.backend(backend.uuid));
      if (existing !== undefined && !sameId(backendCodec.decode(existing).serverUuid, op.serverUuid)) {
        fail('ALREADY_EXISTS', `backend ${hex(backend.uuid)} belongs to another server`);
      }
      tx.put(
        keys.backend(backend.uuid),
        backendCodec.encode({ ...backend, serverUuid: op.serverUuid, updatedMs: time }),
      );
    }
    return {};
  }

  async #deregisterServer(tx: Transaction, serverUuid: Uint8Array): Promise<Partial<Result>> {
    const bytes = await tx.get(keys.server(checkId(serverUuid, 'server uuid')));
    if (bytes === undefined) fail('NOT_FOUND', 'no such server');
    tx.put(keys.server(serverUuid), serverCodec.encode({ ...serverCodec.decode(bytes), online: false }));
    return {};
  }

  // ---- power management ----------------------------------------------------------------------

  async #server(tx: Transaction, uuid: Uint8Array | undefined): Promise<ServerRecord> {
    const bytes = await tx.get(keys.server(checkId(uuid, 'server uuid')));
    if (bytes === undefined) fail('NOT_FOUND', `no storage server ${hex(uuid!)}`);
    return serverCodec.decode(bytes);
  }

  async #setPowerConfig(
    tx: Transaction,
    op: NonNullable<Command['setPowerConfig']>,
    time: number,
  ): Promise<Partial<Result>> {
    if (op.config == null) fail('INVALID_ARGUMENT', 'setPowerConfig needs a config');
    const server = await this.#server(tx, op.config.serverUuid);
    if (op.remove) {
      tx.del(keys.powerConfig(server.uuid));
      return {};
    }
    tx.put(
      keys.powerConfig(server.uuid),
      powerConfigCodec.encode({ ...checkPowerConfig(op.config), updatedMs: time }),
    );
    return {};
  }

  async #setPowerPolicy(
    tx: Transaction,
    op: NonNullable<Command['setPowerPolicy']>,
    time: number,
  ): Promise<Partial<Result>> {
    if (op.policy == null) fail('INVALID_ARGUMENT', 'setPowerPolicy needs a policy');
    const policy = op.policy;
    const idle = checkTime(policy.idleTimeoutMs, 'idle timeout');
    if (idle !== 0 && (idle < 1000 || idle > 30 * 24 * HOUR_MS))
      fail('INVALID_ARGUMENT', 'idle timeout must be 0 (never) or between 1 s and 30 days');
    const wake = checkTime(policy.wakeTimeoutMs, 'wake timeout');
    if (wake < 1000 || wake > 24 * HOUR_MS)
      fail('INVALID_ARGUMENT', 'wake timeout must be between 1 s and 24 h');
    const backoff = checkTime(policy.retryBackoffMs, 'retry backoff');
    if (backoff < 100 || backoff > 24 * HOUR_MS)
      fail('INVALID_ARGUMENT', 'retry backoff must be between 100 ms and 24 h');
    const backoffMax = checkTime(policy.retryBackoffMaxMs, 'maximum retry backoff');
    if (backoffMax < backoff || backoffMax > 7 * 24 * HOUR_MS)
      fail('INVALID_ARGUMENT', 'maximum retry backoff must be at least the retry backoff and at most 7 days');
    tx.put(
      keys.powerPolicy,
      powerPolicyCodec.encode({
        idleTimeoutMs: idle,
        wakeTimeoutMs: wake,
        retryBackoffMs: backoff,
        retryBackoffMaxMs: backoffMax,
        updatedMs: time,
      }),
    );
    return {};
  }

  async #setPowerState(
    tx: Transaction,
    op: NonNullable<Command['setPowerState']>,
    time: number,
  ): Promise<Partial<Result>> {
    if (!POWER_STATES.has(op.state))
      fail('INVALID_ARGUMENT', `invalid power state ${JSON.stringify(op.state)}`);
    const expected = op.expected ?? [];
    for (const state of expected)
      if (!POWER_STATES.has(state))
        fail('INVALID_ARGUMENT', `invalid expected power state ${JSON.stringify(state)}`);
    const reason = op.reason ?? '';
    if (reason.length > POWER_COMMAND_BYTES_MAX) fail('INVALID_ARGUMENT', 'power reason too long');
    const failures = op.failures ?? 0;
    if (!Number.isSafeInteger(failures) || failures < 0 || failures > 1_000_000)
      fail('INVALID_ARGUMENT', 'invalid failure count');
    const server = await this.#server(tx, op.serverUuid);
    if (expected.length > 0 && !expected.includes(server.power))
      fail('STALE', `server ${server.name} is ${server.power}, not ${expected.join(' or ')}`);
    const from = server.power;
    if (from === op.state && (server.powerFailures ?? 0) === failures) return {};
    const updated: ServerRecord = {
      ...server,
      power: op.state,
      powerChangedMs: from === op.state ? (server.powerChangedMs ?? time) : time,
      powerReason: reason,
      powerFailures: failures,
    };
    // A server going down or asleep serves nothing: no new writes go to it, readers wake it
    // first. One that could not be stopped (or stays on after all) is kept marked on.
    if (op.state === 'SLEEPING' || op.state === 'GOING_DOWN') updated.online = false;
    else if (from === 'GOING_DOWN' && (op.state === 'FAILED_TO_STOP' || op.state === 'ON'))
      updated.online = true;
    tx.put(keys.server(server.uuid), serverCodec.encode(updated));
    await this.#logPowerEvent(tx, {
      timeMs: time,
      serverUuid: server.uuid,
      serverName: server.name,
      from,
      to: op.state,
      reason,
    });
    return {};
  }

  async #logPowerEvent(tx: Transaction, event: Omit<PowerEvent, 'sequence'>): Promise<void> {
    const bytes = await tx.get(keys.powerLogNext);
    const sequence = bytes === undefined ? 1 : Number(Buffer.from(bytes).toString('utf8'));
    tx.put(keys.powerEvent(sequence), powerEventCodec.encode({ ...event, sequence }));
    tx.put(keys.powerLogNext, encoder.encode(String(sequence + 1)));
    if (sequence > POWER_EVENTS_MAX) tx.del(keys.powerEvent(sequence - POWER_EVENTS_MAX));
  }

  async #reportAccess(tx: Transaction, op: NonNullable<Command['reportAccess']>): Promise<Partial<Result>> {
    const server = await this.#server(tx, op.serverUuid);
    const reported = checkTime(op.lastAccessMs, 'last access');
    if (reported <= (server.lastAccessMs ?? 0)) return {};
    tx.put(keys.server(server.uuid), serverCodec.encode({ ...server, lastAccessMs: reported }));
    return {};
  }

  // ---- open tokens ---------------------------------------------------------------------------

  async #open(tx: Transaction, op: NonNullable<Command['open']>, time: number): Promise<Partial<Result>> {
    const token = op.token;
    checkId(token.id, 'token id');
    if (token.mode === 'TOKEN_MODE_UNSPECIFIED') fail('INVALID_ARGUMENT', 'token mode missing');
    if ((await tx.get(keys.token(token.id))) !== undefined) fail('ALREADY_EXISTS', 'token id in use');
    const inode = await this.#inode(tx, checkId(token.object, 'object'));
    if (inode.nlink === 0) fail('NOT_FOUND', 'file was deleted');
    let releasedObjects: Uint8Array[] = [];
    if (op.truncate && inode.type === 'FILE' && inode.size > 0) {
      releasedObjects = await this.#forget(tx, await this.#truncate(tx, inode, 0));
      inode.version++;
      inode.mtimeMs = time;
      inode.ctimeMs = time;
      this.#putInode(tx, inode);
    }
    const stored: OpenToken = { ...token, openedMs: time };
    if (inode.type === 'FILE') {
      const bytes = await tx.get(keys.access(inode.id));
      const before = bytes === undefined ? undefined : accessStatsCodec.decode(bytes);
      tx.put(keys.access(inode.id), accessStatsCodec.encode(countOpen(before, time)));
    }
    tx.put(keys.token(token.id), openTokenCodec.encode(stored));
    tx.put(keys.objectToken(token.object, token.id), EMPTY);
    return { token: stored, inode, releasedObjects };
  }

  async #renew(tx: Transaction, op: NonNullable<Command['renew']>): Promise<Partial<Result>> {
    const bytes = await tx.get(keys.token(checkId(op.id, 'token id')));
    if (bytes === undefined) fail('NOT_FOUND', 'token expired or released');
    const token = openTokenCodec.decode(bytes);
    token.expiresMs = Math.max(token.expiresMs, op.expiresMs);
    tx.put(keys.token(op.id), openTokenCodec.encode(token));
    return { token };
  }

  async #release(tx: Transaction, id: Uint8Array): Promise<Partial<Result>> {
    const bytes = await tx.get(keys.token(checkId(id, 'token id')));
    if (bytes === undefined) fail('NOT_FOUND', 'token expired or released');
    return { releasedObjects: await this.#dropToken(tx, openTokenCodec.decode(bytes)) };
  }

  async #dropToken(tx: Transaction, token: OpenToken): Promise<Uint8Array[]> {
    tx.del(keys.token(token.id));
    tx.del(keys.objectToken(token.object, token.id));
    if ((await tx.get(keys.orphan(token.object))) === undefined) return [];
    if ((await tx.keysWithPrefix(keys.objectTokens(token.object), 1)).length > 0) return [];
    const inodeBytes = await tx.get(keys.inode(token.object));
    if (inodeBytes === undefined) return [];
    return this.#deleteInode(tx, inodeCodec.decode(inodeBytes));
  }

  async #expireTokens(tx: Transaction, nowMs: number): Promise<Partial<Result>> {
    const released: Uint8Array[] = [];
    for (const key of await tx.keysWithPrefix('t:', 1_000_000)) {
      const bytes = await tx.get(key);
      if (bytes === undefined) continue;
      const token = openTokenCodec.decode(bytes);
      if (token.expiresMs < nowMs) released.push(...(await this.#dropToken(tx, token)));
    }
    for (const key of await tx.keysWithPrefix('c:', 1_000_000)) {
      const bytes = await tx.get(key);
      if (bytes === undefined) continue;
      const state = clientSessionCodec.decode(bytes);
      if (state.lastMs + SESSION_IDLE_MS >= nowMs) continue;
      const session = fromHex(key.slice(2));
      await this.#dropSessionResults(tx, session, state.floor, state.floor + 2 * SESSION_RESULTS_MAX + 1);
      tx.del(key);
    }
    return { releasedObjects: released };
  }

  // ---- membership ----------------------------------------------------------------------------

  async #createJoinToken(tx: Transaction, token: JoinToken): Promise<Partial<Result>> {
    checkId(token.id, 'join token id');
    if (token.secretHash.length !== 32) fail('INVALID_ARGUMENT', 'join token needs a sha256 secret hash');
    if ((await tx.get(keys.joinToken(token.id))) !== undefined) fail('ALREADY_EXISTS', 'join token exists');
    tx.put(keys.joinToken(token.id), joinTokenCodec.encode(token));
    return {};
  }

  async #revokeJoinToken(tx: Transaction, id: Uint8Array): Promise<Partial<Result>> {
    const bytes = await tx.get(keys.joinToken(checkId(id, 'join token id')));
    if (bytes === undefined) fail('NOT_FOUND', 'no such join token');
    tx.put(keys.joinToken(id), joinTokenCodec.encode({ ...joinTokenCodec.decode(bytes), revoked: true }));
    return {};
  }

  async #admitMember(
    tx: Transaction,
    op: NonNullable<Command['admitMember']>,
    time: number,
  ): Promise<Partial<Result>> {
    if (op.peerId.length === 0) fail('INVALID_ARGUMENT', 'peer id missing');
    const bytes = await tx.get(keys.joinToken(checkId(op.tokenId, 'join token id')));
    if (bytes === undefined) fail('PERMISSION_DENIED', 'unknown join token');
    const token = joinTokenCodec.decode(bytes);
    if (token.revoked) fail('PERMISSION_DENIED', 'join token revoked');
    if (token.expiresMs <= time) fail('PERMISSION_DENIED', 'join token expired');
    if (!sameId(token.secretHash, op.secretHash)) fail('PERMISSION_DENIED', 'wrong join token secret');
    const existing = await tx.get(keys.member(op.peerId));
    const known = existing === undefined ? undefined : memberCodec.decode(existing);
    const softwareLevel = checkLevel(op.softwareLevel ?? 0) || (known?.softwareLevel ?? 0);
    if (op.controller && (known === undefined || known.controllerId === 0)) {
      // A controller applies every command: one whose software is older than the cell's level
      // would see no operation in commands the others apply.
      const level = await this.#level(tx);
      if (softwareLevel < level)
        fail(
          'INVALID_ARGUMENT',
          `the node's zhsm applies metadata level ${softwareLevel}, older than the cell's ` +
            `level ${level}: upgrade zhsm on it before it becomes a controller`,
        );
    }
    if (known !== undefined) {
      const member = known;
      if (op.controller && member.controllerId === 0) member.controllerId = await this.#nextControllerId(tx);
      if ((op.addresses ?? []).length > 0) member.addresses = checkAddresses(op.addresses ?? []);
      if (softwareLevel > 0) member.softwareLevel = softwareLevel;
      tx.put(keys.member(op.peerId), memberCodec.encode(member));
      return { member };
    }
    const member: Member = {
      peerId: op.peerId,
      controllerId: op.controller ? await this.#nextControllerId(tx) : 0,
      joinedMs: time,
      joinToken: op.tokenId,
      addresses: checkAddresses(op.addresses ?? []),
    };
    if (softwareLevel > 0) member.softwareLevel = softwareLevel;
    tx.put(keys.member(op.peerId), memberCodec.encode(member));
    return { member };
  }

  async #setMemberAddresses(
    tx: Transaction,
    op: NonNullable<Command['setMemberAddresses']>,
  ): Promise<Partial<Result>> {
    const bytes = await tx.get(keys.member(op.peerId));
    if (bytes === undefined) fail('NOT_FOUND', 'no such member');
    const member: Member = { ...memberCodec.decode(bytes), addresses: checkAddresses(op.addresses) };
    if (op.network != null) member.network = checkNetwork(op.network);
    if ((op.softwareLevel ?? 0) > 0) member.softwareLevel = checkLevel(op.softwareLevel ?? 0);
    tx.put(keys.member(op.peerId), memberCodec.encode(member));
    return { member };
  }

  /** The cell's metadata level goes up to `level`; refused while a controller's software is older. */
  async #setMetadataLevel(tx: Transaction, level: number): Promise<Partial<Result>> {
    if (checkLevel(level) === 0) fail('INVALID_ARGUMENT', 'metadata level missing');
    const current = await this.#level(tx);
    if (level <= current) return {};
    for (const key of await tx.keysWithPrefix('m:', Number.POSITIVE_INFINITY)) {
      const member = memberCodec.decode((await tx.get(key))!);
      if (member.controllerId > 0 && (member.softwareLevel ?? 0) < level)
        fail(
          'INVALID_ARGUMENT',
          `controller ${member.controllerId} (${member.peerId}) runs zhsm of metadata level ` +
            `${member.softwareLevel ?? 0}, older than ${level}`,
        );
    }
    tx.put(keys.level, encoder.encode(String(level)));
    return {};
  }

  #level(tx: Transaction): Promise<number> {
    return readMetadataLevel(tx);
  }

  /** Manual mode (node/daemon/controller-admin.ts checks that the id is a voter): 0 unpins. */
  #setPinnedLeader(tx: Transaction, controllerId: number): Partial<Result> {
    if (!Number.isSafeInteger(controllerId) || controllerId < 0)
      fail('INVALID_ARGUMENT', 'bad controller id');
    if (controllerId === 0) tx.del(keys.pinnedLeader);
    else tx.put(keys.pinnedLeader, encoder.encode(String(controllerId)));
    return {};
  }

  /** The member is no controller any more (its id is not reused: ids come from a counter). */
  async #retireController(tx: Transaction, peerId: string): Promise<Partial<Result>> {
    const bytes = await tx.get(keys.member(peerId));
    if (bytes === undefined) fail('NOT_FOUND', 'no such member');
    const member = memberCodec.decode(bytes);
    if (member.controllerId === 0) fail('INVALID_ARGUMENT', 'the member is not a controller');
    member.controllerId = 0;
    tx.put(keys.member(peerId), memberCodec.encode(member));
    return { member };
  }

  async #nextControllerId(tx: Transaction): Promise<number> {
    const bytes = await tx.get(keys.controllers);
    const next = bytes === undefined ? 1 : Number(Buffer.from(bytes).toString('utf8'));
    tx.put(keys.controllers, encoder.encode(String(next + 1)));
    return next;
  }

  // ---- reads (serve after a linearizable read index) -----------------------------------------

  /** The cell's metadata level (records.ts METADATA_LEVEL). */
  metadataLevel(): Promise<number> {
    return readMetadataLevel(this.#kv);
  }

  async cell(): Promise<InitCell | undefined> {
    const bytes = await this.#kv.get(keys.cell);
    return bytes === undefined ? undefined : initCellCodec.decode(bytes);
  }

  /** An inode with its chunk list (every reader outside the state machine gets it whole). */
  async inode(id: Uint8Array): Promise<Inode | undefined> {
    const bytes = await this.#kv.get(keys.inode(id));
    return bytes === undefined ? undefined : this.#whole(inodeCodec.decode(bytes));
  }

  async #whole(inode: Inode): Promise<Inode> {
    if (!inode.chunksApart) return inode;
    const chunks: Chunk[] = [];
    if (inode.size > 0) {
      // One pass over the segments (a get per segment is twice as slow for a long list).
      const prefix = keys.chunkSegments(inode.id);
      for await (const [, value] of this.#kv.range({ gte: prefix, lt: rangeEnd(prefix) }))
        for (const chunk of chunkSegmentCodec.decode(value).chunks) chunks.push(chunk);
    }
    inode.chunks = chunks;
    return inode;
  }

  async lookup(parent: Uint8Array, name: string): Promise<Inode | undefined> {
    const id = await this.#kv.get(keys.entry(parent, name));
    return id === undefined ? undefined : this.inode(id);
  }

  /**
   * Walk `names` from the inode `start`: the deepest inode reached (undefined: `start` is gone)
   * and how many names it took. Fewer than all: the next name is missing, or the inode reached is
   * not a directory.
   */
  async resolve(start: Uint8Array, names: readonly string[]): Promise<{ inode?: Inode; depth: number }> {
    let inode = await this.inode(start);
    if (inode === undefined) return { depth: 0 };
    let depth = 0;
    for (const name of names) {
      if (inode.type !== 'DIRECTORY') break;
      const child: Inode | undefined = await this.lookup(inode.id, name);
      if (child === undefined) break;
      inode = child;
      depth++;
    }
    return { inode, depth };
  }

  /** One page of a directory, in name (UTF-8 byte) order, after `after` (exclusive). */
  async readdir(
    parent: Uint8Array,
    options: { after?: string; limit?: number } = {},
  ): Promise<ReaddirEntry[]> {
    const limit = Math.min(options.limit ?? READDIR_PAGE_MAX, READDIR_PAGE_MAX);
    const prefix = keys.entries(parent);
    const gte = options.after === undefined ? prefix : `${prefix}${options.after}\u0000`;
    const entries: ReaddirEntry[] = [];
    for await (const [key, value] of this.#kv.range({ gte, lt: rangeEnd(prefix), limit })) {
      entries.push({ name: key.slice(prefix.length), id: value });
    }
    return entries;
  }

  async locations(object: Uint8Array): Promise<Array<{ backend: Uint8Array; location: Location }>> {
    const prefix = keys.locations(object);
    const found: Array<{ backend: Uint8Array; location: Location }> = [];
    for await (const [key, value] of this.#kv.range({ gte: prefix, lt: rangeEnd(prefix) })) {
      found.push({ backend: fromHex(key.slice(prefix.length)), location: locationCodec.decode(value) });
    }
    return found;
  }

  async servers(): Promise<ServerRecord[]> {
    return this.#all('s:', serverCodec.decode);
  }

  async backends(): Promise<BackendRecord[]> {
    return this.#all('b:', backendCodec.decode);
  }

  async tokens(): Promise<OpenToken[]> {
    return this.#all('t:', openTokenCodec.decode);
  }

  async members(): Promise<Member[]> {
    return this.#all('m:', memberCodec.decode);
  }

  async member(peerId: string): Promise<Member | undefined> {
    const bytes = await this.#kv.get(keys.member(peerId));
    return bytes === undefined ? undefined : memberCodec.decode(bytes);
  }

  async powerConfigs(): Promise<PowerConfig[]> {
    return this.#all('p:', powerConfigCodec.decode);
  }

  async powerPolicy(): Promise<PowerPolicy> {
    const bytes = await this.#kv.get(keys.powerPolicy);
    return bytes === undefined ? { ...POWER_POLICY_DEFAULT } : powerPolicyCodec.decode(bytes);
  }

  /** The last `limit` power events, oldest first. */
  async powerEvents(limit: number): Promise<PowerEvent[]> {
    const bytes = await this.#kv.get(keys.powerLogNext);
    const next = bytes === undefined ? 1 : Number(Buffer.from(bytes).toString('utf8'));
    const first = Math.max(1, next - Math.min(limit, POWER_EVENTS_MAX));
    const found: PowerEvent[] = [];
    for await (const [, value] of this.#kv.range({ gte: keys.powerEvent(first), lt: rangeEnd('pl:') }))
      found.push(powerEventCodec.decode(value));
    return found;
  }

  /** Every location in key order (object, backend); `visit` returns false to stop the scan. */
  async scanLocations(
    visit: (object: Uint8Array, backend: Uint8Array, location: Location) => boolean,
  ): Promise<void> {
    for await (const [key, value] of this.#kv.range({ gte: 'l:', lt: rangeEnd('l:') })) {
      if (!visit(fromHex(key.slice(2, 34)), fromHex(key.slice(35)), locationCodec.decode(value))) return;
    }
  }

  /** Manual mode: the only controller that may lead (0: not pinned). */
  async pinnedLeader(): Promise<number> {
    const bytes = await this.#kv.get(keys.pinnedLeader);
    return bytes === undefined ? 0 : Number(Buffer.from(bytes).toString('utf8'));
  }

  async joinTokens(): Promise<JoinToken[]> {
    return this.#all('j:', joinTokenCodec.decode);
  }

  async #all<T>(prefix: string, decode: (bytes: Uint8Array) => T): Promise<T[]> {
    const found: T[] = [];
    for await (const [, value] of this.#kv.range({ gte: prefix, lt: rangeEnd(prefix) }))
      found.push(decode(value));
    return found;
  }

  // ---- snapshots -----------------------------------------------------------------------------

  /** The whole state as one message (sent to lagging controllers with InstallSnapshot). */
  async snapshot(): Promise<Uint8Array> {
    const entries: Array<{ key: string; value: Uint8Array }> = [];
    for await (const [key, value] of this.#kv.range({ gte: '', lt: '\uffff' })) {
      if (key !== keys.applied) entries.push({ key, value });
    }
    return snapshotCodec.encode({ appliedIndex: this.#appliedIndex, entries });
  }

  /** Replace the whole state with a snapshot's. */
  async restore(bytes: Uint8Array): Promise<void> {
    this.#membersVersion += 1;
    const snapshot = snapshotCodec.decode(bytes);
    const operations: KvOperation[] = [];
    for await (const [key] of this.#kv.range({ gte: '', lt: '\uffff' }))
      operations.push({ type: 'del', key });
    for (const entry of snapshot.entries)
      operations.push({ type: 'put', key: entry.key, value: entry.value });
    operations.push({ type: 'put', key: keys.applied, value: encoder.encode(String(snapshot.appliedIndex)) });
    await this.#kv.write(operations, { sync: true });
    this.#appliedIndex = snapshot.appliedIndex;
  }
}

/** The metadata level stored in `store` (the state machine's, or its database before it opens). */
export async function readMetadataLevel(store: { get(key: string): Promise<Uint8Array | undefined> }) {
  const bytes = await store.get(keys.level);
  return bytes === undefined ? 0 : Number(Buffer.from(bytes).toString('utf8'));
}

/** A file's chunks kept apart (Inode.chunks_apart), from all its segments in order. */
async function loadChunks(reader: Reader, id: Uint8Array): Promise<Chunk[]> {
  const chunks: Chunk[] = [];
  for (const key of await reader.keysWithPrefix(keys.chunkSegments(id), Number.POSITIVE_INFINITY)) {
    const bytes = await reader.get(key);
    if (bytes !== undefined) chunks.push(...chunkSegmentCodec.decode(bytes).chunks);
  }
  return chunks;
}

/** One segment's chunks (none: an empty list). */
async function loadSegment(reader: Reader, id: Uint8Array, segment: number): Promise<Chunk[]> {
  const bytes = await reader.get(keys.chunkSegment(id, segment));
  return bytes === undefined ? [] : chunkSegmentCodec.decode(bytes).chunks;
}

function putSegment(tx: Transaction, id: Uint8Array, segment: number, chunks: readonly Chunk[]): void {
  if (chunks.length === 0) tx.del(keys.chunkSegment(id, segment));
  else tx.put(keys.chunkSegment(id, segment), chunkSegmentCodec.encode({ chunks: [...chunks] }));
}

/** Write `chunks` (in offset order) into their segments (none of which holds anything yet). */
function putSegments(tx: Transaction, id: Uint8Array, chunks: readonly Chunk[]): void {
  let start = 0;
  while (start < chunks.length) {
    const segment = segmentOf(chunks[start]!.offset);
    let end = start + 1;
    while (end < chunks.length && segmentOf(chunks[end]!.offset) === segment) end++;
    putSegment(tx, id, segment, chunks.slice(start, end));
    start = end;
  }
}

/**
 * Checks a chunk list's ids and order (ascending, not overlapping); returns where the last ends.
 * `apart`: chunk lists are kept apart (each chunk 1 byte to a segment long).
 */
function checkChunkOrder(chunks: readonly Chunk[], apart: boolean): number {
  let end = 0;
  for (const chunk of chunks) {
    checkId(chunk.id, 'chunk id');
    // Kept apart, a chunk reaches at most into the next segment (the overlap checks rely on it).
    if (apart && (chunk.size > CHUNK_SEGMENT_BYTES || chunk.size === 0))
      fail('INVALID_ARGUMENT', `a chunk must hold 1 to ${CHUNK_SEGMENT_BYTES} bytes`);
    if (chunk.offset < end) fail('INVALID_ARGUMENT', 'chunks overlap or are out of order');
    end = chunk.offset + chunk.size;
  }
  return end;
}

/** Opens halve for every window that passed: a file read daily stays hot, a burst fades. */
export const OPENS_WINDOW_MS = 24 * 60 * 60 * 1000;

/** The opens of a file as of `nowMs` (the decayed count). */
export function opensAt(stats: AccessStats | undefined, nowMs: number): number {
  if (stats === undefined) return 0;
  const windows = Math.floor(Math.max(0, nowMs - stats.windowMs) / OPENS_WINDOW_MS);
  return windows >= 32 ? 0 : Math.floor(stats.opens / 2 ** windows);
}

/** The stats after one more open at `time`. */
function countOpen(before: AccessStats | undefined, time: number): AccessStats {
  if (before === undefined) return { openedMs: time, opens: 1, windowMs: time };
  const windows = Math.floor(Math.max(0, time - before.windowMs) / OPENS_WINDOW_MS);
  const opens = Math.min(opensAt(before, time) + 1, 0xffffffff);
  return { openedMs: time, opens, windowMs: before.windowMs + windows * OPENS_WINDOW_MS };
}

/** A saved result as `#applyOne` returned it (absent messages decode as null). */
function savedResult(bytes: Uint8Array): Result {
  const decoded = resultCodec.decode(bytes);
  const result: Result = {
    code: decoded.code,
    message: decoded.message,
    releasedObjects: decoded.releasedObjects,
  };
  if (decoded.inode != null) result.inode = decoded.inode;
  if (decoded.token != null) result.token = decoded.token;
  if (decoded.member != null) result.member = decoded.member;
  return result;
}

/** A new inode of `type` (its link count and times set; empty content). */
export function newInode(init: {
  id: Uint8Array;
  type: Inode['type'];
  mode: number;
  uid: number;
  gid: number;
  time: number;
  parent: Uint8Array;
  name: string;
}): Inode {
  return {
    id: init.id,
    type: init.type,
    mode: init.mode & 0o7777,
    uid: init.uid,
    gid: init.gid,
    size: 0,
    atimeMs: init.time,
    mtimeMs: init.time,
    ctimeMs: init.time,
    nlink: init.type === 'DIRECTORY' ? 2 : 1,
    rdev: 0,
    symlinkTarget: EMPTY,
    xattrs: [],
    inlineData: EMPTY,
    chunks: [],
    contentHistory: [],
    version: 0,
    latestAcceptedMtimeMs: init.time,
    skipCount: 0,
    parent: init.parent,
    name: init.name,
    entries: 0,
  };
}

/** Set a file's size: drop or trim chunks past the end, cut or zero-extend inline data. */
function truncate(inode: Inode, size: number): Uint8Array[] {
  const { kept, released } = truncateChunks(inode.chunks, size);
  inode.chunks = kept;
  if (inode.inlineData.length > size) inode.inlineData = inode.inlineData.subarray(0, size);
  inode.size = size;
  return released;
}

function pick<T extends object, K extends keyof T>(from: T, fields: readonly K[]): Pick<T, K> {
  const picked = {} as Pick<T, K>;
  for (const field of fields) picked[field] = from[field];
  return picked;
}
