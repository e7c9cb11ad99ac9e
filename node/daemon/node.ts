/**
 * The peer daemon `zhsm-node`: one libp2p host per machine with any combination of roles —
 * controller (node/daemon/controller.ts), storage server (storage-role.ts), client (every node:
 * remote-cell.ts). See docs/ARCHITECTURE.md ("The peer daemon") for the data flow.
 *
 * Lifecycle: `ZhsmNode.init` creates a cell (this node: controller 1) and `ZhsmNode.join` makes a
 * node a member of an existing cell with a join token; both write `node.json` and exit. `start`
 * runs the daemon until `stop` (SIGINT/SIGTERM in the CLI).
 *
 * Membership: every zhsm protocol refuses peers that are not members (node/net/rpc.ts), except
 * `/zhsm/join`. A node that does not know a peer yet asks the cell again before refusing
 * (`confirmMember`), so a brand-new member is served at once.
 */

import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnavailableError,
  ZhsmError,
} from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import { placementAdmin } from '../hsm/placement-admin.ts';
import { powerAdmin } from '../hsm/power-admin.ts';
import { initCellCommand, METADATA_LEVEL, type Member, type Route } from '../metadata/records.ts';
import { createHost, type Host } from '../net/host.ts';
import { loadOrCreateIdentity } from '../net/identity.ts';
import { probeProtocol, serveProbe } from '../net/probe.ts';
import { call, type Service, serve } from '../net/rpc.ts';
import {
  type ConflictsSummary,
  conflictsSummary,
  RECOVERY_OPS,
  recoveryAdmin,
} from '../recovery/recovery-admin.ts';
import { BLAKE3_IMPLEMENTATION } from '../store/content-hash.ts';
import {
  backendTagsOf,
  CONFIG_FORMAT_VERSION,
  checkCellName,
  defaultNodeName,
  type NodeConfig,
  newServerUuid,
  paths,
  readConfig,
  readMembersCache,
  writeConfig,
  writeMembersCache,
} from './config.ts';
import { ControllerRole } from './controller.ts';
import { reconcileControllerRole } from './controller-admin.ts';
import { MemberDirectory, sameNetwork } from './directory.ts';
import type { JobStatus } from './jobs.ts';
import { JobRegistry } from './jobs.ts';
import { NodeMetrics } from './metrics.ts';
import type { NodeMount } from './mount.ts';
import { OPS_ADMIN_OPS, opsAdmin, type ReplicationStatus, statusExtras } from './ops-admin.ts';
import {
  adminMethod,
  type CellInfo,
  cellInfoMethod,
  formatJoinToken,
  joinMethod,
  newJoinToken,
  parseJoinToken,
  secretHash,
} from './protocols.ts';
import { RemoteCell } from './remote-cell.ts';
import { checkRoute, localNetwork, type Paths } from './routing.ts';
import { openOrCreateBackend, StorageRole } from './storage-role.ts';

export const LISTEN_DEFAULT = '/ip4/0.0.0.0/tcp/0';
export const JOIN_TOKEN_TTL_MS_DEFAULT = 24 * 3_600_000;
/** Non-controllers refresh the member list from the primary this often. */
const DIRECTORY_REFRESH_MS = 2_000;
/** Admin ops that act on this machine itself: served on the local admin socket only. */
const LOCAL_ADMIN_OPS: ReadonlySet<string> = new Set(['mount', 'unmount', 'mounts', 'pid']);
/** A failed relay reservation is retried after this long. */
const RESERVATION_RETRY_MS = 10_000;
/** An unknown peer makes this node re-check the members at most this often. */
const CONFIRM_INTERVAL_MS = 250;
/** Join attempts answered per second and peer, and in all (token guessing is pointless, but cheap to limit). */
const JOINS_PER_PEER_SECOND_MAX = 10;
const JOINS_PER_SECOND_MAX = 100;

export interface StartOptions {
  readonly logger?: Logger;
  readonly tickMs?: number;
  /** Controllers: compact the log after this many entries (default 10,000). */
  readonly snapshotEveryEntries?: number;
  /** Controllers: mark storage servers offline after this long without a registration (120 s). */
  readonly serverStaleMs?: number;
  /** Storage servers: re-register this often (30 s). */
  readonly storageHeartbeatMs?: number;
  /** Serve Prometheus metrics: "HOST:PORT" or "off" (default: node.json's `metrics`, else off). */
  readonly metrics?: string;
}

export interface ControllerStatus {
  id: number;
  peerId: string;
  reachable: boolean;
  role: string;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  /** The metadata level its software reported (records.ts METADATA_LEVEL; 0: older software). */
  softwareLevel: number;
  error?: string;
}

export interface StatusReport {
  cell: string;
  node: { peerId: string; name: string; controllerId: number; storage: boolean; addresses: string[] };
  primary: { id: number; peerId: string } | null;
  term: number;
  commitIndex: number;
  controllers: ControllerStatus[];
  voters: number[];
  learners: number[];
  servers: Array<{
    uuid: string;
    name: string;
    peerId: string;
    online: boolean;
    power: string;
    /** When `power` last changed, and why (power management). */
    powerChangedMs?: number;
    powerReason?: string;
    /** While WAKING: the cell's wake timeout (the wake-up's progress is now - powerChangedMs). */
    wakeTimeoutMs?: number;
    backends: Array<{ uuid: string; path: string; capacityBytes: number; freeBytes: number }>;
  }>;
  /** Per controller: membership, what the primary knows it holds, lag (ops-admin.ts). */
  replication?: ReplicationStatus[];
  /** Manual mode: the only controller that may lead (0: not pinned). */
  pinnedLeader?: number;
  /** The cell's metadata level, as the primary has it (records.ts METADATA_LEVEL; absent: no primary). */
  metadataLevel?: number;
  /** Open file tokens in the cell (null: the metadata is not reachable). */
  openTokens?: number | null;
  /** Long operations of this node (jobs.ts). */
  jobs?: JobStatus[];
  /** Split-brain conflicts logged (on a controller: its copy of the metadata). */
  conflicts?: ConflictsSummary;
  members: number;
  /** How this node reaches every other member right now (routing: direct or through a relay). */
  paths: PathStatus[];
  /** Members this node holds a relay reservation on (reachable through them from other subnets). */
  relayReservations: string[];
  /** The URL of this node's Prometheus metrics, when it serves them. */
  metrics?: string;
}

export interface RouteReport {
  peerId: string;
  controllerId: number;
  /** This node itself. */
  self: boolean;
  addresses: string[];
  subnets: string[];
  hostname: string;
  routes: Route[];
  /** How this node would dial the member (routing.ts); absent for itself. */
  paths: Paths | undefined;
  connection: PathStatus | undefined;
}

export interface PathStatus {
  peerId: string;
  controllerId: number;
  /** 'direct', 'relayed' (through `via`), or 'none' (no open connection). */
  path: 'direct' | 'relayed' | 'none';
  via?: string;
  /** The remote address of the connection in use. */
  address?: string;
}

export class ZhsmNode {
  readonly data: string;
  /** node.json as this daemon runs it (controllerId changes when the cell makes it a controller). */
  config: NodeConfig;
  readonly host: Host;
  readonly directory: MemberDirectory;
  readonly remote: RemoteCell;
  /** The controller role, while this node is a controller (started and stopped while running). */
  controller: ControllerRole | undefined;
  storage: StorageRole | undefined;
  readonly log: Logger;
  /** Prometheus metrics (metrics.ts); served when configured (`--metrics`, node.json). */
  readonly metrics: NodeMetrics;
  /** Long operations this node runs (rebuild, scrub, fsck): listed by `zhsm status`. */
  readonly jobs = new JobRegistry();
  readonly #services: Service[] = [];
  #timers: Array<ReturnType<typeof setInterval>> = [];
  /** When a reservation on each relay was last attempted. */
  readonly #reservationAttempts = new Map<string, number>();
  #admin: Server | undefined;
  #lastConfirm = 0;
  #confirming: Promise<void> | undefined;
  #joinWindow = { start: 0, count: 0, perPeer: new Map<string, number>() };
  #stopped = false;
  /** This daemon's FUSE mounts by mountpoint (a pending entry while mounting). */
  readonly #mounts = new Map<string, Promise<NodeMount>>();
  /** The options it was started with (a controller role started later uses them too). */
  #options: StartOptions = {};

  private constructor(init: {
    data: string;
    config: NodeConfig;
    host: Host;
    directory: MemberDirectory;
    remote: RemoteCell;
    controller: ControllerRole | undefined;
    log: Logger;
    metrics: NodeMetrics;
  }) {
    this.data = init.data;
    this.config = init.config;
    this.host = init.host;
    this.directory = init.directory;
    this.remote = init.remote;
    this.controller = init.controller;
    this.log = init.log;
    this.metrics = init.metrics;
    this.metrics.attach(this);
  }

  get peerId(): string {
    return this.host.peerId.toString();
  }

  /**
   * The cell made this running node controller `id` (`zhsm controllers add`): start the role
   * (an empty log: the primary adds it as a learner and sends it the metadata), no restart.
   */
  async startControllerRole(id: number): Promise<void> {
    if (this.controller !== undefined || this.#stopped) return;
    const config = { ...this.config, controllerId: id };
    const controller = await openControllerRole({
      config: { ...config, initialVoters: [] },
      data: this.data,
      host: this.host,
      directory: this.directory,
      metrics: this.metrics,
      log: this.log,
      options: this.#options,
    });
    attachControllerDuties(controller, this.remote);
    this.config = config;
    this.controller = controller;
    this.remote.setLocal(controller);
    this.metrics.attach(this);
    this.log.info({ controller: id }, 'this node is a controller now: controller role started');
  }

  /** The cell retired this node's controller (`zhsm controllers remove`): stop the role. */
  async stopControllerRole(): Promise<void> {
    const controller = this.controller;
    if (controller === undefined) return;
    this.remote.setLocal(undefined);
    this.controller = undefined;
    this.config = { ...this.config, controllerId: 0 };
    await controller.stop();
    this.log.info('this node is no longer a controller: controller role stopped');
  }

  /** Start the daemon on an initialized data directory. */
  static async start(data: string, options: StartOptions = {}): Promise<ZhsmNode> {
    const log = options.logger ?? silentLogger();
    const where = paths(data);
    let config = await readConfig(data);
    const identity = await loadOrCreateIdentity(where.base);
    const directory = new MemberDirectory(await readMembersCache(data));
    directory.setSelf(identity.peerId.toString(), localNetwork(config.routes));
    let node: ZhsmNode | undefined;
    const host = await createHost({
      privateKey: identity.privateKey,
      listen: config.listen,
      ...(config.announce === undefined ? {} : { announce: config.announce }),
      isMember: (peerId) => directory.isMember(peerId),
      confirmMember: async (peerId) => (node === undefined ? false : node.#confirm(peerId)),
      logger: log.child({ module: 'net' }),
    });
    const closeOnError: Array<() => Promise<unknown>> = [() => host.stop()];
    try {
      const bound = boundListen(config.listen, host);
      if (bound !== undefined) {
        config = { ...config, listen: bound };
        await writeConfig(data, config);
      }
      const metrics = new NodeMetrics();
      let controller: ControllerRole | undefined;
      if (config.controllerId > 0) {
        controller = await openControllerRole({ config, data, host, directory, metrics, log, options });
        closeOnError.unshift(() => controller!.stop());
      }
      const remote = new RemoteCell({
        host,
        directory,
        local: controller,
        logger: log.child({ module: 'cell' }),
      });
      if (controller !== undefined) attachControllerDuties(controller, remote);
      node = new ZhsmNode({ data, config, host, directory, remote, controller, log, metrics });
      node.#options = options;
      closeOnError.unshift(() => node!.stop());
      await node.#serve();
      if (config.backends.length > 0) {
        node.storage = await StorageRole.start({
          cell: config.cell,
          name: config.name,
          serverUuid: new Uint8Array(Buffer.from(config.serverUuid ?? '', 'hex')),
          backendPaths: config.backends,
          backendTags: config.backendTags ?? {},
          host,
          remote,
          heartbeatMs: options.storageHeartbeatMs,
          onBackendIo: (backend, kind, bytes) => metrics.backendIo(backend, kind, bytes),
          logger: log,
        });
      }
      if (node.storage !== undefined) {
        const storage = node.storage;
        remote.useLocalBackends(() => storage.backends);
      }
      node.#startLoops();
      await node.#startAdmin();
      await metrics.serveConfigured(options.metrics ?? config.metrics, where.metricsUrl, log);
      log.info(
        {
          peerId: node.peerId,
          cell: config.cell,
          controller: config.controllerId,
          backends: config.backends.length,
          addresses: host.multiaddrs().map(String),
        },
        'zhsm node started',
      );
      if (BLAKE3_IMPLEMENTATION !== 'native')
        log.warn(
          'no native BLAKE3 on this platform (@napi-rs/blake-hash): new objects get sha256 content hashes; BLAKE3 ones are verified in pure JS (slow)',
        );
      return node;
    } catch (error) {
      for (const close of closeOnError) await close().catch(() => {});
      throw error;
    }
  }

  async #serve(): Promise<void> {
    const probe = await serveProbe(this.host);
    this.#services.push({ protocol: probeProtocol, stop: () => probe.stop() });
    this.#services.push(
      await serve(this.host, {
        ...cellInfoMethod,
        handler: async () => this.info(),
      }),
    );
    this.#services.push(
      await serve(this.host, {
        ...adminMethod,
        handler: async (request, context) => ({
          json: JSON.stringify(await this.#adminRequest(request.json, context.peerId)),
        }),
      }),
    );
    this.#services.push(
      await serve(this.host, {
        ...joinMethod,
        openToNonMembers: true,
        handler: async (request, context) => {
          this.#limitJoins(context.peerId);
          if (request.tokenId.length !== 16 || request.secret.length !== 32)
            throw new PermissionDeniedError('malformed join token');
          const result = await this.remote.propose({
            admitMember: {
              peerId: context.peerId,
              tokenId: request.tokenId,
              secretHash: secretHash(request.secret),
              controller: request.controller,
              addresses: request.addresses,
              softwareLevel: request.softwareLevel ?? 0,
            },
          });
          if (result.code !== 'OK' || result.member === undefined) {
            this.log.warn({ peer: context.peerId, code: result.code }, `join refused: ${result.message}`);
            throw new PermissionDeniedError(`join refused: ${result.message}`);
          }
          this.directory.upsert(result.member);
          this.log.info(
            { peer: context.peerId, controller: result.member.controllerId },
            'a new member joined the cell',
          );
          return { cell: this.config.cell, member: result.member, members: await this.remote.members() };
        },
      }),
    );
  }

  #limitJoins(peerId: string): void {
    const now = Date.now();
    if (now - this.#joinWindow.start >= 1_000)
      this.#joinWindow = { start: now, count: 0, perPeer: new Map() };
    this.#joinWindow.count += 1;
    const mine = (this.#joinWindow.perPeer.get(peerId) ?? 0) + 1;
    this.#joinWindow.perPeer.set(peerId, mine);
    if (mine > JOINS_PER_PEER_SECOND_MAX || this.#joinWindow.count > JOINS_PER_SECOND_MAX)
      throw new UnavailableError('too many join attempts; try again in a second');
  }

  /** This node's cell-info answer. */
  info(): CellInfo {
    if (this.controller !== undefined) return this.controller.info();
    const primary = this.remote.primary;
    const leader = primary === undefined ? undefined : this.directory.member(primary.peerId);
    return {
      cell: this.config.cell,
      peerId: this.peerId,
      controllerId: 0,
      role: '',
      leaderId: leader?.controllerId ?? 0,
      leaderPeerId: primary?.peerId ?? '',
      term: primary?.term ?? 0,
      commitIndex: 0,
      appliedIndex: 0,
      lastIndex: 0,
      members: this.directory.all(),
      voters: [],
      learners: [],
      progress: [],
    };
  }

  /** Is `peerId` a member after all? (Re-reads the members, at most every CONFIRM_INTERVAL_MS.) */
  async #confirm(peerId: string): Promise<boolean> {
    if (this.directory.isMember(peerId)) return true;
    if (this.#confirming === undefined && Date.now() - this.#lastConfirm >= CONFIRM_INTERVAL_MS) {
      this.#lastConfirm = Date.now();
      this.#confirming = this.#refreshDirectory().finally(() => {
        this.#confirming = undefined;
      });
    }
    await this.#confirming;
    return this.directory.isMember(peerId);
  }

  async #refreshDirectory(): Promise<void> {
    try {
      if (this.controller !== undefined) {
        this.directory.fromMetadata(await this.controller.replica.machine.members(), this.peerId);
      } else {
        await this.remote.probe();
      }
    } catch (error) {
      this.log.debug({ err: error }, 'cannot refresh the member list');
    }
  }

  #startLoops(): void {
    let cachedVersion = -1;
    const loop = async () => {
      if (this.#stopped) return;
      if (this.controller === undefined) await this.#refreshDirectory();
      if (this.directory.version !== cachedVersion && this.directory.all().length > 0) {
        cachedVersion = this.directory.version;
        await writeMembersCache(this.data, this.directory.all()).catch((error: unknown) =>
          this.log.warn({ err: error }, 'cannot write members.json'),
        );
      }
      await this.#announceAddresses();
      await this.#reserveRelays();
      await reconcileControllerRole(this).catch((error: unknown) =>
        this.log.debug({ err: error }, "cannot check this node's controller role"),
      );
    };
    this.#timers.push(setInterval(() => void loop(), DIRECTORY_REFRESH_MS));
    void loop();
  }

  /**
   * Make the cell's record of this node current: its addresses (after a restart on another port)
   * and the metadata level its software applies (after an upgrade; records.ts METADATA_LEVEL).
   */
  async #announceAddresses(): Promise<void> {
    const self = this.directory.member(this.peerId);
    if (self === undefined) return;
    // Relayed listen addresses are paths, not places: routing derives them from the relays.
    const addresses = this.host
      .multiaddrs()
      .map(String)
      .filter((a) => !a.includes('/p2p-circuit'));
    const network = localNetwork(this.config.routes);
    const same =
      (self.softwareLevel ?? 0) === METADATA_LEVEL &&
      addresses.length === self.addresses.length &&
      addresses.every((a, i) => a === self.addresses[i]) &&
      sameNetwork(network, self.network);
    if (same) return;
    this.directory.setSelf(this.peerId, network);
    try {
      const result = await this.remote.propose({
        setMemberAddresses: { peerId: this.peerId, addresses, network, softwareLevel: METADATA_LEVEL },
      });
      if (result.code === 'OK' && result.member !== undefined) this.directory.upsert(result.member);
    } catch (error) {
      this.log.debug({ err: error }, "cannot announce this node's addresses yet");
    }
  }

  /**
   * Hold a relay reservation on every member that reaches subnets this node is not on (routing.ts),
   * so peers there can reach this node through it. Re-made after a relay restarts.
   */
  async #reserveRelays(): Promise<void> {
    const listening = this.host.multiaddrs().map(String);
    const now = Date.now();
    for (const relay of this.directory.relaysToReserve()) {
      if (listening.some((a) => a.includes(`/p2p/${relay.peerId}/p2p-circuit`))) continue;
      if (this.#stopped) return;
      if (now - (this.#reservationAttempts.get(relay.peerId) ?? 0) < RESERVATION_RETRY_MS) continue;
      this.#reservationAttempts.set(relay.peerId, now);
      try {
        await this.host.listenViaRelay(relay.address);
        this.log.info({ relay: relay.peerId }, 'relay reservation made');
      } catch (error) {
        this.log.debug({ relay: relay.peerId, err: error }, 'cannot make a relay reservation yet');
      }
    }
  }

  // ---- operations -----------------------------------------------------------------------------

  /** Issue a join token (valid for `ttlMs`). */
  async createJoinToken(ttlMs: number): Promise<{ token: string; expiresMs: number }> {
    const parts = newJoinToken();
    const now = Date.now();
    const result = await this.remote.propose({
      createJoinToken: {
        token: {
          id: parts.id,
          secretHash: secretHash(parts.secret),
          expiresMs: now + ttlMs,
          revoked: false,
          createdMs: now,
        },
      },
    });
    if (result.code !== 'OK')
      throw new ZhsmError('IO_ERROR', `cannot create a join token: ${result.message}`);
    return { token: formatJoinToken(parts), expiresMs: now + ttlMs };
  }

  async revokeJoinToken(token: string): Promise<void> {
    const parts = parseJoinToken(token);
    const result = await this.remote.propose({ revokeJoinToken: { id: parts.id } });
    if (result.code !== 'OK')
      throw new ZhsmError('IO_ERROR', `cannot revoke the join token: ${result.message}`);
  }

  async status(): Promise<StatusReport> {
    const controllers = await Promise.all(
      this.directory.controllers().map(async (member): Promise<ControllerStatus> => {
        try {
          const info = await this.remote.cellInfoOf(member.peerId, member.addresses);
          return {
            id: member.controllerId,
            peerId: member.peerId,
            reachable: true,
            role: info.role,
            term: info.term,
            commitIndex: info.commitIndex,
            appliedIndex: info.appliedIndex,
            softwareLevel: member.softwareLevel ?? 0,
          };
        } catch (error) {
          return {
            id: member.controllerId,
            peerId: member.peerId,
            reachable: false,
            role: 'unreachable',
            term: 0,
            commitIndex: 0,
            appliedIndex: 0,
            softwareLevel: member.softwareLevel ?? 0,
            error: (error as Error).message,
          };
        }
      }),
    );
    const leaders = controllers.filter((c) => c.role === 'leader').sort((a, b) => b.term - a.term);
    const primary = leaders[0];
    let servers: StatusReport['servers'] = [];
    let voters: number[] = [];
    let learners: number[] = [];
    let primaryInfo: CellInfo | undefined;
    try {
      const found = await this.remote.refreshServers();
      const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
      servers = found.servers.map((server) => ({
        uuid: hex(server.uuid),
        name: server.name,
        peerId: server.peerId,
        online: server.online,
        power: server.power,
        powerChangedMs: server.powerChangedMs ?? 0,
        powerReason: server.powerReason ?? '',
        backends: found.backends
          .filter((b) => hex(b.serverUuid) === hex(server.uuid))
          .map((b) => ({
            uuid: hex(b.uuid),
            path: b.path,
            capacityBytes: b.capacityBytes,
            freeBytes: b.freeBytes,
          })),
      }));
      if (servers.some((server) => server.power === 'WAKING')) {
        const power = await this.remote.request({ read: { power: { events: 0 } } });
        for (const server of servers)
          if (server.power === 'WAKING' && power.power != null)
            server.wakeTimeoutMs = power.power.policy.wakeTimeoutMs;
      }
      if (primary !== undefined) {
        const info = await this.remote.cellInfoOf(
          primary.peerId,
          this.directory.member(primary.peerId)?.addresses,
        );
        voters = info.voters;
        learners = info.learners;
        primaryInfo = info;
      }
    } catch (error) {
      this.log.debug({ err: error }, 'status: the metadata is not reachable');
    }
    return {
      cell: this.config.cell,
      node: {
        peerId: this.peerId,
        name: this.config.name,
        controllerId: this.config.controllerId,
        storage: this.config.backends.length > 0,
        addresses: this.host.multiaddrs().map(String),
      },
      primary: primary === undefined ? null : { id: primary.id, peerId: primary.peerId },
      term: primary?.term ?? Math.max(0, ...controllers.map((c) => c.term)),
      commitIndex: primary?.commitIndex ?? 0,
      ...(primaryInfo === undefined ? {} : { metadataLevel: primaryInfo.metadataLevel ?? 0 }),
      controllers,
      voters,
      learners,
      servers,
      ...(await statusExtras(this, controllers, primaryInfo)),
      ...(this.controller === undefined
        ? {}
        : { conflicts: await conflictsSummary(this.controller.replica.machine).catch(() => undefined) }),
      members: this.directory.all().length,
      paths: this.#paths(),
      relayReservations: this.host
        .multiaddrs()
        .map(String)
        .map((a) => /\/p2p\/([^/]+)\/p2p-circuit/.exec(a)?.[1])
        .filter((id): id is string => id !== undefined)
        .filter((id, i, all) => all.indexOf(id) === i),
      ...(this.metrics.url === undefined ? {} : { metrics: this.metrics.url }),
    };
  }

  /**
   * Routing as this node sees it: every member's subnets and route table, the paths this node
   * would dial (direct addresses, relays) and the connection it uses now.
   */
  routes(): RouteReport[] {
    const now = new Map(this.#paths().map((p) => [p.peerId, p]));
    return this.directory.all().map((member) => ({
      peerId: member.peerId,
      controllerId: member.controllerId,
      self: member.peerId === this.peerId,
      addresses: member.addresses,
      subnets: member.network?.subnets ?? [],
      hostname: member.network?.hostname ?? '',
      routes: member.network?.routes ?? [],
      paths: member.peerId === this.peerId ? undefined : this.directory.pathsTo(member.peerId),
      connection: now.get(member.peerId),
    }));
  }

  /** The connection this node uses to each member: direct, relayed (through whom) or none. */
  #paths(): PathStatus[] {
    const connections = this.host.libp2p.getConnections();
    return this.directory
      .all()
      .filter((member) => member.peerId !== this.peerId)
      .map((member): PathStatus => {
        const open = connections.filter(
          (c) => c.remotePeer.toString() === member.peerId && c.status === 'open',
        );
        const chosen = open.find((c) => !c.remoteAddr.toString().includes('/p2p-circuit')) ?? open[0];
        const base = { peerId: member.peerId, controllerId: member.controllerId };
        if (chosen === undefined) return { ...base, path: 'none' };
        const address = chosen.remoteAddr.toString();
        const via = /\/p2p\/([^/]+)\/p2p-circuit/.exec(address)?.[1];
        return via === undefined
          ? { ...base, path: 'direct', address }
          : { ...base, path: 'relayed', via, address };
      });
  }

  // ---- FUSE mounts ------------------------------------------------------------------------------

  /**
   * Mount the cell at `mountpoint` with FUSE (created if missing; a dead mount left there by a
   * crash is replaced, a live one refused). The mount lives until `unmount` or `stop`. Returns the
   * absolute mountpoint.
   */
  async mount(mountpoint: string, options: { replicas?: number } = {}): Promise<string> {
    if (this.#stopped) throw new UnavailableError('the node is stopping');
    const where = resolve(mountpoint);
    if (this.#mounts.has(where))
      throw new AlreadyExistsError(`this node already mounts the cell at ${where}`, { mountpoint: where });
    const pending = import('./mount.ts').then(({ mountNode }) =>
      mountNode(this, where, { ...options, logger: this.log.child({ module: 'fuse', mountpoint: where }) }),
    );
    this.#mounts.set(where, pending);
    try {
      await pending;
    } catch (error) {
      this.#mounts.delete(where);
      throw error;
    }
    this.log.info({ mountpoint: where }, 'mounted the cell');
    return where;
  }

  /** Unmount a mount this node made (lazily if busy), releasing its open files' tokens. */
  async unmount(mountpoint: string): Promise<void> {
    const where = resolve(mountpoint);
    const pending = this.#mounts.get(where);
    if (pending === undefined)
      throw new NotFoundError(`this node has no mount at ${where}`, { mountpoint: where });
    let mounted: NodeMount;
    try {
      mounted = await pending;
    } catch {
      return; // the mount failed; mount() already forgot it
    }
    if (this.#mounts.get(where) !== pending) return; // another unmount got there first
    this.#mounts.delete(where);
    await mounted.unmount();
    this.log.info({ mountpoint: where }, 'unmounted the cell');
  }

  /** The mountpoints of this node's mounts (including one still being mounted). */
  mounts(): string[] {
    return [...this.#mounts.keys()];
  }

  // ---- the local admin socket -------------------------------------------------------------------

  async #startAdmin(): Promise<void> {
    const path = paths(this.data).adminSocket;
    await rm(path, { force: true });
    const server = createServer((socket) => this.#adminConnection(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#admin = server;
  }

  #adminConnection(socket: Socket): void {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('error', () => {});
    socket.on('data', (text: string) => {
      buffered += text;
      if (buffered.length > 64 * 1024) {
        socket.end(
          `${JSON.stringify({ ok: false, code: 'INVALID_ARGUMENT', message: 'request too large' })}\n`,
        );
        return;
      }
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        void this.#adminRequest(line).then((reply) => {
          if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}\n`);
        });
        newline = buffered.indexOf('\n');
      }
    });
  }

  /**
   * One admin request (a JSON line): from the local socket, or from member `remote` over the
   * network (`zhsm --node`; the ops that act on this machine itself are refused then).
   */
  async #adminRequest(line: string, remote?: string): Promise<Record<string, unknown>> {
    try {
      const request = JSON.parse(line) as {
        op?: unknown;
        ttlMs?: unknown;
        token?: unknown;
        mountpoint?: unknown;
      };
      if (remote !== undefined) {
        if (typeof request.op === 'string' && LOCAL_ADMIN_OPS.has(request.op))
          throw new PermissionDeniedError(`${request.op} is only served on the node's own admin socket`);
        this.log.info({ peer: remote, op: request.op }, 'admin request from a member');
      }
      if (request.op === 'status') return { ok: true, status: await this.status() };
      if (request.op === 'mount' || request.op === 'unmount') {
        if (typeof request.mountpoint !== 'string' || !isAbsolute(request.mountpoint))
          throw new InvalidArgumentError('mountpoint must be an absolute path');
        if (request.op === 'mount') return { ok: true, mountpoint: await this.mount(request.mountpoint) };
        await this.unmount(request.mountpoint);
        return { ok: true, mountpoint: resolve(request.mountpoint) };
      }
      if (request.op === 'mounts') return { ok: true, mounts: this.mounts() };
      if (request.op === 'pid') return { ok: true, pid: process.pid };
      if (typeof request.op === 'string' && request.op.startsWith('power-'))
        return { ok: true, ...(await powerAdmin(this.remote, request as Record<string, unknown>)) };
      if (
        typeof request.op === 'string' &&
        (request.op.startsWith('chains-') || request.op === 'mover' || request.op === 'cache')
      )
        return { ok: true, ...(await placementAdmin(this.remote, request as Record<string, unknown>)) };
      if (typeof request.op === 'string' && OPS_ADMIN_OPS.has(request.op))
        return { ok: true, ...(await opsAdmin(this, request as Record<string, unknown>)) };
      if (typeof request.op === 'string' && RECOVERY_OPS.has(request.op))
        return { ok: true, ...(await recoveryAdmin(this, request as Record<string, unknown>)) };
      if (request.op === 'routes') return { ok: true, routes: this.routes() };
      if (request.op === 'token-create') {
        const ttlMs = typeof request.ttlMs === 'number' ? request.ttlMs : JOIN_TOKEN_TTL_MS_DEFAULT;
        if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0)
          throw new InvalidArgumentError('ttlMs must be positive');
        return { ok: true, ...(await this.createJoinToken(ttlMs)) };
      }
      if (request.op === 'token-revoke' && typeof request.token === 'string') {
        await this.revokeJoinToken(request.token);
        return { ok: true };
      }
      throw new InvalidArgumentError(`unknown admin request ${JSON.stringify(request.op)}`);
    } catch (error) {
      const code = error instanceof ZhsmError ? error.code : 'INVALID_ARGUMENT';
      return { ok: false, code, message: (error as Error).message };
    }
  }

  /**
   * Stop the daemon. `deregister: false` leaves a storage server listed as online (as a crash
   * would; tests use it).
   */
  async stop(options: { deregister?: boolean } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    // Mounts first: their open files still need the cell (tokens released, buffers flushed).
    await Promise.all(
      [...this.#mounts.keys()].map((mountpoint) =>
        this.unmount(mountpoint).catch((error: unknown) =>
          this.log.error({ err: error, mountpoint }, 'cannot unmount; clear it with: umount -l MOUNTPOINT'),
        ),
      ),
    );
    for (const timer of this.#timers) clearInterval(timer);
    await this.metrics.close();
    if (this.#admin !== undefined) {
      await new Promise<void>((resolve) => this.#admin!.close(() => resolve()));
      await rm(paths(this.data).adminSocket, { force: true }).catch(() => {});
    }
    await this.storage?.stop({ deregister: options.deregister !== false });
    for (const service of this.#services) await service.stop().catch(() => {});
    await this.remote.close();
    await this.controller?.stop();
    if (this.directory.all().length > 0)
      await writeMembersCache(this.data, this.directory.all()).catch(() => {});
    await this.host.stop();
    this.log.info('zhsm node stopped');
  }

  // ---- init and join ----------------------------------------------------------------------------

  /** Create a cell: this node becomes its first controller (id 1). */
  static async init(options: {
    data: string;
    cell: string;
    backends?: readonly string[];
    backendTags?: ReadonlyArray<{ path: string; tags: string[] }>;
    listen?: readonly string[];
    announce?: readonly string[];
    routes?: readonly Route[];
    name?: string;
    tokenTtlMs?: number;
    logger?: Logger;
  }): Promise<{
    peerId: string;
    addresses: string[];
    token: string;
    tokenExpiresMs: number;
    config: NodeConfig;
  }> {
    const cell = checkCellName(options.cell);
    await ensureNewDataDirectory(options.data);
    const backends = await prepareBackends(options.backends ?? [], cell, options.logger);
    const config: NodeConfig = {
      formatVersion: CONFIG_FORMAT_VERSION,
      cell,
      name: options.name ?? defaultNodeName(),
      controllerId: 1,
      initialVoters: [1],
      backends,
      ...withTags(backends, options.backendTags),
      ...(backends.length > 0 ? { serverUuid: newServerUuid() } : {}),
      listen: checkMultiaddrs(options.listen?.length ? options.listen : [LISTEN_DEFAULT], 'listen'),
      ...(options.announce?.length ? { announce: checkMultiaddrs(options.announce, 'announce') } : {}),
      ...(options.routes?.length ? { routes: options.routes.map(checkRoute) } : {}),
    };
    await writeConfig(options.data, config);
    const node = await ZhsmNode.start(options.data, { logger: options.logger });
    try {
      const initialized = await node.remote.request({ read: { cell: {} } });
      if (initialized.cell === undefined) {
        const result = await node.remote.propose({
          initCell: initCellCommand(cell),
        });
        if (result.code !== 'OK')
          throw new ZhsmError('IO_ERROR', `cannot create the cell: ${result.message}`);
      }
      // The first controller admits itself with a token of its own (and so becomes controller 1).
      const self = newJoinToken();
      const now = Date.now();
      await node.remote.propose({
        createJoinToken: {
          token: {
            id: self.id,
            secretHash: secretHash(self.secret),
            expiresMs: now + 60_000,
            revoked: false,
            createdMs: now,
          },
        },
      });
      const admitted = await node.remote.propose({
        admitMember: {
          peerId: node.peerId,
          tokenId: self.id,
          secretHash: secretHash(self.secret),
          controller: true,
          addresses: node.host.multiaddrs().map(String),
          softwareLevel: METADATA_LEVEL,
        },
      });
      if (admitted.code !== 'OK' || admitted.member?.controllerId !== 1)
        throw new ZhsmError(
          'IO_ERROR',
          `cannot admit the first controller: ${admitted.code} ${admitted.message}`,
        );
      await node.remote.propose({ revokeJoinToken: { id: self.id } });
      node.directory.upsert(admitted.member);
      if (node.storage !== undefined) await node.storage.register();
      const token = await node.createJoinToken(options.tokenTtlMs ?? JOIN_TOKEN_TTL_MS_DEFAULT);
      return {
        peerId: node.peerId,
        addresses: node.host.multiaddrs().map(String),
        token: token.token,
        tokenExpiresMs: token.expiresMs,
        config: node.config,
      };
    } finally {
      await node.stop();
    }
  }

  /** Join an existing cell through any of its members. */
  static async join(options: {
    peer: string;
    token: string;
    data: string;
    controller?: boolean;
    backends?: readonly string[];
    backendTags?: ReadonlyArray<{ path: string; tags: string[] }>;
    listen?: readonly string[];
    announce?: readonly string[];
    routes?: readonly Route[];
    name?: string;
    logger?: Logger;
  }): Promise<{ peerId: string; member: Member; config: NodeConfig }> {
    const routes = (options.routes ?? []).map(checkRoute);
    const token = parseJoinToken(options.token);
    const peer = checkMultiaddrs([options.peer], 'peer')[0]!;
    if (!peer.includes('/p2p/'))
      throw new InvalidArgumentError(`the peer address must end in /p2p/<peer id>: ${options.peer}`);
    await ensureNewDataDirectory(options.data);
    const identity = await loadOrCreateIdentity(paths(options.data).base);
    const listen = checkMultiaddrs(options.listen?.length ? options.listen : [LISTEN_DEFAULT], 'listen');
    const host = await createHost({
      privateKey: identity.privateKey,
      listen,
      ...(options.announce?.length ? { announce: options.announce } : {}),
      isMember: () => false,
      relayServer: false,
      logger: options.logger?.child({ module: 'net' }),
    });
    try {
      const response = await call(
        host,
        peer,
        joinMethod,
        {
          tokenId: token.id,
          secret: token.secret,
          controller: options.controller === true,
          addresses: host.multiaddrs().map(String),
          softwareLevel: METADATA_LEVEL,
        },
        { timeoutMs: 30_000 },
      );
      const backends = await prepareBackends(options.backends ?? [], response.cell, options.logger);
      const config: NodeConfig = {
        formatVersion: CONFIG_FORMAT_VERSION,
        cell: response.cell,
        name: options.name ?? defaultNodeName(),
        controllerId: response.member.controllerId,
        backends,
        ...withTags(backends, options.backendTags),
        ...(backends.length > 0 ? { serverUuid: newServerUuid() } : {}),
        listen: boundListen(listen, host) ?? listen,
        ...(options.announce?.length ? { announce: checkMultiaddrs(options.announce, 'announce') } : {}),
        ...(routes.length > 0 ? { routes } : {}),
      };
      await writeConfig(options.data, config);
      await writeMembersCache(options.data, response.members);
      return { peerId: identity.peerId, member: response.member, config };
    } finally {
      await host.stop();
    }
  }
}

/** The listen addresses with tcp port 0 replaced by the port bound (undefined: nothing to do). */
function boundListen(listen: readonly string[], host: Host): string[] | undefined {
  if (!listen.some((address) => /\/tcp\/0(\/|$)/.test(address))) return undefined;
  const ports = host.libp2p
    .getMultiaddrs()
    .map((address) => address.toString().match(/\/tcp\/(\d+)/)?.[1])
    .filter((port): port is string => port !== undefined && port !== '0');
  const tcpListens = listen.filter((address) => /\/tcp\//.test(address) && !address.includes('p2p-circuit'));
  if (ports.length === 0 || tcpListens.length !== 1) return undefined;
  return listen.map((address) => address.replace(/\/tcp\/0(?=\/|$)/, `/tcp/${ports[0]}`));
}

function checkMultiaddrs(values: readonly string[], what: string): string[] {
  return values.map((value) => {
    try {
      return multiaddr(value).toString();
    } catch {
      throw new InvalidArgumentError(`invalid ${what} multiaddr ${JSON.stringify(value)}`);
    }
  });
}

/** The controller role of `config.controllerId` (at start, or when the cell makes a node one). */
function openControllerRole(init: {
  config: NodeConfig;
  data: string;
  host: Host;
  directory: MemberDirectory;
  metrics: NodeMetrics;
  log: Logger;
  options: StartOptions;
}): Promise<ControllerRole> {
  const where = paths(init.data);
  return ControllerRole.start({
    id: init.config.controllerId,
    cell: init.config.cell,
    host: init.host,
    directory: init.directory,
    raftPath: where.raft,
    metadataPath: where.metadata,
    initialMembership: { voters: [...(init.config.initialVoters ?? [])], learners: [] },
    tickMs: init.options.tickMs,
    snapshotEveryEntries: init.options.snapshotEveryEntries,
    serverStaleMs: init.options.serverStaleMs,
    observer: init.metrics.controllerObserver,
    logger: init.log,
  });
}

/** The primary's duties that move data: the mover and the META header writer. */
function attachControllerDuties(controller: ControllerRole, remote: RemoteCell): void {
  const replica = controller.replica;
  controller.attachMover({
    propose: (command) => replica.propose(command),
    readChunk: (backend, id, size, hash) => remote.readChunk(backend, id, 0, size, hash),
    writeChunk: (backend, id, bytes, hash) => remote.writeChunk(backend, id, bytes, hash),
    deleteChunk: (backend, id) => remote.deleteChunk(backend, id),
    copyChunk: (from, to, id, size, hash) => remote.copyChunk(from, to, id, size, hash),
    nowMs: () => Date.now(),
  });
  controller.attachHeaderWriter({
    propose: (command) => replica.propose(command),
    putMeta: (backend, objects) => remote.putMeta(backend, objects),
  });
}

async function ensureNewDataDirectory(data: string): Promise<void> {
  const where = paths(data);
  try {
    await stat(where.config);
    throw new AlreadyExistsError(`${where.base} already holds a zhsm node (node.json exists)`);
  } catch (error) {
    if (error instanceof ZhsmError) throw error;
  }
  await mkdir(where.base, { recursive: true, mode: 0o700 });
  const stray = (await readdir(where.base)).filter((name) => name !== 'identity.key');
  if (stray.length > 0)
    throw new AlreadyExistsError(
      `${where.base} is not empty (${stray.slice(0, 3).join(', ')}): use a new directory`,
    );
}

/** The config's backendTags from --tag arguments (none: no field). */
function withTags(
  backends: readonly string[],
  tags: ReadonlyArray<{ path: string; tags: string[] }> | undefined,
): { backendTags?: Record<string, string[]> } {
  const backendTags = backendTagsOf(backends, tags);
  return backendTags === undefined ? {} : { backendTags };
}

async function prepareBackends(
  backends: readonly string[],
  cell: string,
  logger?: Logger,
): Promise<string[]> {
  const absolute = backends.map((path) => resolve(path));
  if (new Set(absolute).size !== absolute.length) throw new InvalidArgumentError('a backend is listed twice');
  for (const path of absolute) {
    const backend = await openOrCreateBackend(path, cell, logger);
    await backend.close();
  }
  return absolute;
}
