/**
 * The controller role of a daemon: a consensus replica (consensus/ + node/controller/replica.ts)
 * on LevelDB, talking to the other controllers over `/zhsm/raft/1.0.0`, serving the metadata
 * session `/zhsm/meta/1.0.0` to the cell.
 *
 * Duties of the primary (checked every DUTY_INTERVAL_MS, only while it leads):
 * - a member that the cell made a controller but that is not in the consensus membership joins
 *   it as a learner; a learner that has caught up is promoted to voter (the core refuses while it
 *   is behind);
 * - open tokens of clients that went away expire (`expireTokens` every TOKEN_EXPIRY_INTERVAL_MS);
 * - power management (node/hsm/power-manager.ts): idle storage servers are powered down, servers
 *   are woken on request (`power` metadata requests), failed starts are retried.
 * The lowest-id rule (a lower-id voter that is caught up takes the lead back) is in the core.
 */
import { LevelRaftStorage } from '../../consensus/storage-level.ts';
import type { Membership } from '../../consensus/types.ts';
import { InvalidArgumentError, NotLeaderError, UnsupportedFormatError } from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import { createNetReplicaTransport } from '../controller/net-transport.ts';
import { ControllerReplica, type ReplicaOptions } from '../controller/replica.ts';
import { type CacheOptions, ControllerCache } from '../hsm/cache.ts';
import { Mover, type MoverIo } from '../hsm/mover.ts';
import { PowerManager, type PowerManagerOptions, type PowerRequestAction } from '../hsm/power-manager.ts';
import { LevelKv } from '../metadata/kv.ts';
import { type Command, METADATA_LEVEL, type Member } from '../metadata/records.ts';
import { readMetadataLevel } from '../metadata/state-machine.ts';
import type { Host } from '../net/host.ts';
import { type Service, serveSession } from '../net/session.ts';
import { HeaderWriter, type HeaderWriterIo } from '../recovery/header-writer.ts';
import { controllerAction, syncPinnedLeader } from './controller-admin.ts';
import type { MemberDirectory } from './directory.ts';
import { type CellInfo, type MetaRequest, type MetaResponse, metaMethod } from './protocols.ts';
import type { LocalController } from './remote-cell.ts';

const DUTY_INTERVAL_MS = 500;
const TOKEN_EXPIRY_INTERVAL_MS = 5_000;
/**
 * A storage server not heard from for this long is marked offline by the primary (servers
 * re-register every 30 s; the margin covers clock skew between controllers and a slow primary).
 */
export const SERVER_STALE_MS_DEFAULT = 120_000;
/** Reads per readdir page at most. */
const READDIR_PAGE_MAX = 10_000;
/** Commands per proposeBatch request at most. */
const BATCH_COMMANDS_MAX = 4_096;
/** Names per path walk (a 4 KiB path has at most 2,048). */
const RESOLVE_NAMES_MAX = 4_096;

export interface ControllerRoleOptions {
  readonly id: number;
  readonly cell: string;
  readonly host: Host;
  readonly directory: MemberDirectory;
  readonly raftPath: string;
  readonly metadataPath: string;
  /** Consensus membership of a brand-new log (the first controller: itself; a joiner: empty). */
  readonly initialMembership: Membership;
  readonly tickMs?: number;
  /** Mark storage servers offline when not heard from for this long (default 120 s). */
  readonly serverStaleMs?: number;
  /** Compact the log into a state-machine snapshot after this many entries (default 10,000). */
  readonly snapshotEveryEntries?: number;
  /** Power management decisions this often (default 1 s). */
  readonly powerIntervalMs?: number;
  readonly logger?: Logger;
  /** Hooks for metrics (node/daemon/metrics.ts); each optional. */
  readonly observer?: ControllerObserver;
}

export interface ControllerObserver {
  readonly raft?: ReplicaOptions['onStateChange'];
  readonly power?: PowerManagerOptions['onStateChange'];
  readonly cache?: CacheOptions['onEvent'];
}

export class ControllerRole implements LocalController {
  readonly id: number;
  readonly peerId: string;
  readonly replica: ControllerReplica;
  readonly #cell: string;
  readonly #directory: MemberDirectory;
  readonly #log: Logger;
  readonly #closers: Array<() => Promise<void>>;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** The cell's metadata level in this copy (read on every duty round). */
  #metadataLevel = 0;
  #lastExpiry = 0;
  readonly #serverStaleMs: number;
  #refreshing: Promise<void> | undefined;
  #refreshAgain = false;
  #stopped = false;
  readonly power: PowerManager;
  #mover: Mover | undefined;
  #headerWriter: HeaderWriter | undefined;
  #cache: ControllerCache | undefined;
  readonly #observer: ControllerObserver | undefined;

  private constructor(
    options: ControllerRoleOptions,
    replica: ControllerReplica,
    closers: Array<() => Promise<void>>,
  ) {
    this.id = options.id;
    this.peerId = options.host.peerId.toString();
    this.replica = replica;
    this.#cell = options.cell;
    this.#directory = options.directory;
    this.#log = (options.logger ?? silentLogger()).child({ role: 'controller', controller: options.id });
    this.#closers = closers;
    this.#serverStaleMs = options.serverStaleMs ?? SERVER_STALE_MS_DEFAULT;
    this.#observer = options.observer;
    this.power = new PowerManager({
      controller: {
        isLeader: () => replica.isLeader,
        propose: (command) => replica.propose(command),
        machine: replica.machine,
        controllerPeers: () => [this.peerId, ...options.directory.controllers().map((m) => m.peerId)],
      },
      ...(options.powerIntervalMs === undefined ? {} : { intervalMs: options.powerIntervalMs }),
      ...(options.observer?.power === undefined ? {} : { onStateChange: options.observer.power }),
      logger: this.#log,
    });
  }

  /**
   * Run the mover (node/hsm/mover.ts) while this controller is the primary; `io` moves the data
   * (the node's cell connection reaches the storage servers).
   */
  attachMover(io: MoverIo, options: { scanIntervalMs?: number; bytesPerSecond?: number } = {}): void {
    this.#cache ??= new ControllerCache({
      state: this.replica.machine,
      io,
      wake: (server, reason) => this.power.request(server, 'wake', { reason }),
      ...(this.#observer?.cache === undefined ? {} : { onEvent: this.#observer.cache }),
      logger: this.#log,
    });
    const cache = this.#cache;
    this.#mover ??= new Mover({
      state: this.replica.machine,
      io,
      logger: this.#log,
      cacheTracks: (object, backend) => cache.tracks(object, backend),
      wake: (server, reason) => this.power.request(server, 'wake', { reason }),
      ...options,
    });
  }

  get cache(): ControllerCache | undefined {
    return this.#cache;
  }

  /**
   * Keep the inodes' META objects on the backends current (node/recovery/header-writer.ts)
   * while this controller is the primary.
   */
  attachHeaderWriter(io: HeaderWriterIo): void {
    this.#headerWriter ??= new HeaderWriter({ state: this.replica.machine, io, logger: this.#log });
  }

  get headerWriter(): HeaderWriter | undefined {
    return this.#headerWriter;
  }

  get mover(): Mover | undefined {
    return this.#mover;
  }

  static async start(options: ControllerRoleOptions): Promise<ControllerRole> {
    const closers: Array<() => Promise<void>> = [];
    try {
      return await ControllerRole.#start(options, closers);
    } catch (error) {
      // A role that did not start leaves nothing open: a running daemon tries again
      // (controller-admin.ts reconcileControllerRole), and LevelDB allows one opener.
      for (const close of closers) await close().catch(() => {});
      throw error;
    }
  }

  static async #start(
    options: ControllerRoleOptions,
    closers: Array<() => Promise<void>>,
  ): Promise<ControllerRole> {
    const storage = await LevelRaftStorage.open(options.raftPath);
    closers.push(() => storage.close());
    const kv = await LevelKv.open(options.metadataPath);
    closers.push(() => kv.close());
    // Metadata of a newer level than this software's: applying its log would diverge from the
    // controllers that understand it (records.ts METADATA_LEVEL). No downgrade below it.
    const level = await readMetadataLevel(kv);
    if (level > METADATA_LEVEL) {
      throw new UnsupportedFormatError(
        `this cell's metadata is at level ${level}, newer than this zhsm (level ${METADATA_LEVEL}): ` +
          'run the newer zhsm on this node',
        { level, softwareLevel: METADATA_LEVEL },
      );
    }
    const self = options.host.peerId.toString();
    const transport = await createNetReplicaTransport({
      host: options.host,
      selfId: options.id,
      resolve: (id) =>
        id === options.id ? { peerId: self, addresses: [] } : options.directory.controller(id),
      logger: options.logger,
    });
    closers.unshift(() => transport.close());
    const replica = await ControllerReplica.start({
      id: options.id,
      storage,
      kv,
      transport,
      initialMembership: options.initialMembership,
      tickMs: options.tickMs,
      // Bigger appends than the core's default (64): a busy primary replicates a whole batch of
      // proposals in one message per follower.
      raft: { maxEntriesPerMessage: 1024 },
      ...(options.snapshotEveryEntries === undefined
        ? {}
        : { snapshotEveryEntries: options.snapshotEveryEntries }),
      ...(options.observer?.raft === undefined ? {} : { onStateChange: options.observer.raft }),
      logger: options.logger,
    });
    closers.unshift(() => replica.stop());
    const role = new ControllerRole(options, replica, closers);
    role.#metadataLevel = await replica.machine.metadataLevel();
    let seenMembersVersion = -1;
    replica.onApplied(() => {
      if (replica.machine.membersVersion === seenMembersVersion) return;
      seenMembersVersion = replica.machine.membersVersion;
      void role.#refreshDirectory();
    });
    await role.#refreshDirectory();
    const service: Service = await serveSession(options.host, {
      ...metaMethod,
      handler: (request) => role.handleMeta(request),
    });
    closers.unshift(() => service.stop());
    await syncPinnedLeader(replica);
    // Nothing can fail after this.
    role.#timer = setInterval(() => void role.#duties(), DUTY_INTERVAL_MS);
    role.power.start();
    return role;
  }

  isLeader(): boolean {
    return this.replica.isLeader;
  }

  /** The members as this controller's metadata has them. */
  #refreshDirectory(): Promise<void> {
    if (this.#refreshing !== undefined) {
      this.#refreshAgain = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      try {
        do {
          this.#refreshAgain = false;
          this.#directory.fromMetadata(await this.replica.machine.members(), this.peerId);
        } while (this.#refreshAgain && !this.#stopped);
      } catch (error) {
        if (!this.#stopped) this.#log.warn({ err: error }, 'cannot refresh the member directory');
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  info(): CellInfo {
    const status = this.replica.status();
    const leader = status.leader === 0 ? undefined : this.#directory.controller(status.leader);
    return {
      cell: this.#cell,
      peerId: this.peerId,
      controllerId: this.id,
      role: status.role,
      leaderId: status.leader,
      leaderPeerId: status.leader === this.id ? this.peerId : (leader?.peerId ?? ''),
      term: status.term,
      commitIndex: status.commitIndex,
      appliedIndex: this.replica.machine.appliedIndex,
      lastIndex: status.lastIndex,
      members: this.#directory.all(),
      voters: [...status.membership.voters],
      learners: [...status.membership.learners],
      progress: [...status.progress].map(([id, p]) => ({ id, matchIndex: p.matchIndex })),
      pinnedLeader: status.pinnedLeader,
      metadataLevel: this.#metadataLevel,
    };
  }

  #notLeader(): never {
    const status = this.replica.status();
    const leader = status.leader === 0 ? undefined : this.#directory.controller(status.leader);
    throw new NotLeaderError(
      `controller ${this.id} is not the primary${leader === undefined ? '' : `; the primary is controller ${status.leader} (${leader.peerId})`}`,
      { leader: status.leader },
    );
  }

  /** Serve one metadata request (the primary only). */
  async handleMeta(request: MetaRequest): Promise<MetaResponse> {
    if (!this.replica.isLeader) this.#notLeader();
    if (request.propose !== undefined) {
      const result = await this.replica.propose(withoutTime(request.propose));
      const open = request.propose.open;
      // Reads feed the cache (and pre-wake); the open is answered first.
      if (open != null && result.code === 'OK' && open.token.mode === 'READ')
        this.#cache?.noteOpen(open.token.object);
      return { result };
    }
    if (request.proposeBatch !== undefined) {
      const commands = request.proposeBatch.commands;
      if (commands.length > BATCH_COMMANDS_MAX)
        throw new InvalidArgumentError(`at most ${BATCH_COMMANDS_MAX} commands per batch`);
      const results = await Promise.all(
        commands.map((command) => this.replica.propose(withoutTime(command))),
      );
      return { results: { results } };
    }
    if (request.controller != null) {
      const context = { id: this.id, replica: this.replica, directory: this.#directory, log: this.#log };
      return { controllerAnswer: await controllerAction(context, request.controller) };
    }
    if (request.power != null) {
      const { serverUuid, action, force, reason } = request.power;
      if (action !== 'wake' && action !== 'on' && action !== 'off')
        throw new InvalidArgumentError(`unknown power action ${JSON.stringify(action)} (wake, on, off)`);
      const answer = await this.power.request(serverUuid, action as PowerRequestAction, {
        force: force === true,
        ...(typeof reason === 'string' && reason !== '' ? { reason: reason.slice(0, 200) } : {}),
      });
      return { powerAnswer: answer };
    }
    const read = request.read;
    if (read === undefined) throw new InvalidArgumentError('empty metadata request');
    await this.replica.readBarrier();
    const machine = this.replica.machine;
    if (read.root !== undefined) {
      const cell = await machine.cell();
      return cell === undefined ? { none: {} } : { root: cell.rootId };
    }
    if (read.cell !== undefined) {
      const cell = await machine.cell();
      return cell === undefined ? { none: {} } : { cell };
    }
    if (read.inode !== undefined) {
      const inode = await machine.inode(read.inode);
      return inode === undefined ? { none: {} } : { inode };
    }
    if (read.lookup !== undefined) {
      const inode = await machine.lookup(read.lookup.parent, read.lookup.name);
      return inode === undefined ? { none: {} } : { inode };
    }
    if (read.resolve != null) {
      const { start, names } = read.resolve;
      if (names.length > RESOLVE_NAMES_MAX)
        throw new InvalidArgumentError(`at most ${RESOLVE_NAMES_MAX} names per path walk`);
      const found = await machine.resolve(start, names);
      return { resolved: { inode: found.inode ?? null, depth: found.depth } };
    }
    if (read.readdir !== undefined) {
      const limit = Math.min(read.readdir.limit || READDIR_PAGE_MAX, READDIR_PAGE_MAX);
      const after = read.readdir.after === '' ? undefined : read.readdir.after;
      const entries = await machine.readdir(read.readdir.parent, { after, limit });
      return { entries: { entries: entries.map((e) => ({ name: e.name, id: e.id })) } };
    }
    if (read.locations !== undefined)
      return { locations: { entries: await machine.locations(read.locations) } };
    if (read.backends !== undefined) return { backends: { backends: await machine.backends() } };
    if (read.servers !== undefined) return { servers: { servers: await machine.servers() } };
    if (read.members !== undefined) return { members: { members: await machine.members() } };
    if (read.tokens !== undefined) return { tokens: { tokens: await machine.tokens() } };
    if (read.joinTokens != null) return { joinTokens: { tokens: await machine.joinTokens() } };
    if (read.chains != null) {
      const chains = await machine.chains();
      return chains === undefined ? { none: {} } : { chains };
    }
    if (read.plan != null) {
      if (this.#mover === undefined) throw new InvalidArgumentError('this controller runs no mover');
      return { plan: await this.#mover.plan(read.plan) };
    }
    if (read.cache != null) {
      if (this.#cache === undefined) throw new InvalidArgumentError('this controller runs no cache');
      return { cache: this.#cache.status() };
    }
    if (read.mover != null) {
      if (this.#mover === undefined) throw new InvalidArgumentError('this controller runs no mover');
      return { mover: this.#mover.status() };
    }
    if (read.power != null) {
      const [servers, configs, policy, events] = await Promise.all([
        machine.servers(),
        machine.powerConfigs(),
        machine.powerPolicy(),
        machine.powerEvents(Math.min(read.power.events ?? 0, 1000)),
      ]);
      return { power: { servers, configs, policy, events } };
    }
    throw new InvalidArgumentError('unknown metadata read');
  }

  async #duties(): Promise<void> {
    this.#metadataLevel = await this.replica.machine.metadataLevel().catch(() => this.#metadataLevel);
    if (this.#headerWriter !== undefined && !this.#stopped) {
      if (this.replica.isLeader) this.#headerWriter.start();
      else void this.#headerWriter.stop();
    }
    if (this.#mover !== undefined && !this.#stopped) {
      if (this.replica.isLeader) {
        this.#mover.start();
        this.#cache?.start();
      } else {
        void this.#mover.stop();
        void this.#cache?.stop();
      }
    }
    if (!this.#stopped) await syncPinnedLeader(this.replica).catch(() => {});
    if (this.#stopped || !this.replica.isLeader) return;
    try {
      const status = this.replica.status();
      const inConsensus = new Set([...status.membership.voters, ...status.membership.learners]);
      for (const member of this.#directory.controllers()) {
        if (inConsensus.has(member.controllerId)) continue;
        const result = this.replica.proposeConfigChange({ kind: 'addLearner', node: member.controllerId });
        if (result.ok) this.#log.info({ learner: member.controllerId }, 'adding a controller as a learner');
        break; // one membership change at a time
      }
      for (const learner of status.membership.learners) {
        // Promote only a learner that acknowledged everything committed (the core's own check
        // allows a small gap, which a learner that never answered also meets).
        const matched = status.progress.get(learner)?.matchIndex ?? 0;
        if (matched < status.commitIndex) continue;
        const result = this.replica.proposeConfigChange({ kind: 'promote', node: learner });
        if (result.ok) this.#log.info({ learner }, 'promoting a caught-up learner to voter');
      }
      await this.#raiseMetadataLevel(status.membership);
      const now = Date.now();
      if (now - this.#lastExpiry >= TOKEN_EXPIRY_INTERVAL_MS) {
        this.#lastExpiry = now;
        await this.replica.propose({ expireTokens: { nowMs: now } });
        await this.#markStaleServers(now);
      }
    } catch (error) {
      this.#log.debug({ err: error }, 'primary duties deferred');
    }
  }

  /**
   * The cell's metadata level up to the highest that every controller's software applies (at most
   * this node's), once each reported it: commands of that level are applied from then on
   * (records.ts METADATA_LEVEL). A consensus member without a controller record (one being
   * removed) holds the level back: it still applies the log.
   */
  async #raiseMetadataLevel(membership: { voters: readonly number[]; learners: readonly number[] }) {
    const current = this.#metadataLevel;
    if (current >= METADATA_LEVEL) return;
    const level = metadataLevelToRaise(current, await this.replica.machine.members(), membership);
    if (level === undefined) return;
    const result = await this.replica.propose({ setMetadataLevel: { level } });
    if (result.code === 'OK') this.#log.info({ from: current, to: level }, 'metadata level raised');
    else this.#log.debug({ code: result.code, message: result.message }, 'metadata level not raised yet');
  }

  /** Storage servers that stopped re-registering (crashed, cut off) are marked offline. */
  async #markStaleServers(now: number): Promise<void> {
    for (const server of await this.replica.machine.servers()) {
      if (!server.online || now - server.lastSeenMs < this.#serverStaleMs) continue;
      const result = await this.replica.propose({ deregisterServer: { serverUuid: server.uuid } });
      if (result.code === 'OK')
        this.#log.warn(
          { server: server.name, peer: server.peerId, lastSeenMs: server.lastSeenMs },
          'storage server not heard from; marked offline',
        );
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    this.power.stop();
    await this.#mover?.stop();
    await this.#headerWriter?.stop();
    await this.#cache?.stop();
    await this.#refreshing;
    for (const close of this.#closers) {
      try {
        await close();
      } catch (error) {
        this.#log.warn({ err: error }, 'error while stopping the controller');
      }
    }
  }
}

/**
 * The metadata level a cell at `current` can go up to (undefined: none above it): the lowest that
 * every controller's software applies (as its member record says), at most this software's
 * METADATA_LEVEL. A consensus member without a controller record (one being removed) counts as
 * level 0: it still applies the log.
 */
export function metadataLevelToRaise(
  current: number,
  members: readonly Member[],
  membership: { voters: readonly number[]; learners: readonly number[] },
  softwareLevel = METADATA_LEVEL,
): number | undefined {
  const controllers = new Map(members.filter((m) => m.controllerId > 0).map((m) => [m.controllerId, m]));
  let level = softwareLevel;
  for (const id of [...membership.voters, ...membership.learners, ...controllers.keys()])
    level = Math.min(level, controllers.get(id)?.softwareLevel ?? 0);
  return level > current ? level : undefined;
}

function withoutTime(command: Command): Omit<Command, 'timeMs'> {
  const { timeMs: _ignored, ...rest } = command;
  return rest;
}
