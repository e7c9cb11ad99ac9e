/**
 * Prometheus metrics of a node (prom-client): one Registry per ZhsmNode (tests run several nodes
 * in one process, so never prom-client's global registry), served as text on
 * `http://HOST:PORT/metrics` when the node is configured to (`zhsm-node start --metrics
 * HOST:PORT`, or `"metrics"` in node.json; off otherwise). Names, labels and meaning are listed in
 * docs/ARCHITECTURE.md ("Metrics"); docs/grafana-dashboard.json is a dashboard over them.
 *
 * Two kinds of sources:
 * - events, counted where they happen through optional hooks (no-ops unless a node passes them):
 *   consensus state changes (ControllerReplica `onStateChange`), power state changes
 *   (PowerManager `onStateChange`), cache events (ControllerCache `onEvent`), backend bytes
 *   (Backend `onIo`), served calls (Host `onInboundCall`), FUSE operations (mountFs `onOperation`);
 * - state, read when Prometheus scrapes (`collect`): term, indexes, role and replication lag from
 *   the controller's replica, cache size, server power states, backend space, members.
 */
import { rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { constants } from 'node:os';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { HardState, Role, SoftState } from '../../consensus/types.ts';
import { IoError } from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import type { CacheEvent, CacheStatus } from '../hsm/cache.ts';
import type { PowerStateChange } from '../hsm/power-manager.ts';
import type { Backend } from '../store/backend.ts';
import { type MetricsAddress, parseMetricsAddress } from './config.ts';
import type { ControllerObserver, ControllerRole } from './controller.ts';
import type { MemberDirectory } from './directory.ts';
import type { StorageRole } from './storage-role.ts';

/** What the metrics read from a node at scrape time (ZhsmNode has all of it). */
export interface MetricsSubject {
  readonly peerId: string;
  readonly config: { readonly cell: string; readonly name: string; readonly controllerId: number };
  readonly controller: ControllerRole | undefined;
  readonly storage: StorageRole | undefined;
  readonly directory: Pick<MemberDirectory, 'all'>;
  readonly host: { onInboundCall?: ((method: string, code: string, seconds: number) => void) | undefined };
}

/** Wake latencies: a server wakes in seconds (a VM) to many minutes (a RAID behind IPMI). */
const WAKE_BUCKETS = [1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600, 1200, 1800];
/** FUSE operations: a cached getattr takes microseconds, a read that waits for a wake minutes. */
const FUSE_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
  300, 600,
];
/** Served calls (storage reads and writes of 4 MiB chunks, cell-info, join). */
const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const ROLES = ['follower', 'preCandidate', 'candidate', 'leader', 'learner'] as const;
const POWER_STATES = ['ON', 'WAKING', 'SLEEPING', 'GOING_DOWN', 'FAILED_TO_START', 'FAILED_TO_STOP'] as const;

const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');

/** errno number -> name (5 -> 'EIO'). */
const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name] as [number, string]),
);

export class NodeMetrics {
  readonly registry = new Registry();
  #subject: MetricsSubject | undefined;
  #server: Server | undefined;
  #url: string | undefined;
  #urlFile: string | undefined;
  #defaultMetrics = false;
  #controllerMetrics = false;
  /** The last term, role and primary this controller reported (election and leader counts). */
  #term = -1;
  #role: Role | undefined;
  #leader = 0;

  // ---- controllers (registered by attach() on controllers only) ---------------------------------
  readonly elections = new Counter({
    name: 'zhsm_raft_elections_total',
    help: 'Elections this controller started (new terms it entered as a candidate)',
    registers: [],
  });
  readonly leaderChanges = new Counter({
    name: 'zhsm_raft_leader_changes_total',
    help: 'Times this controller learned of a primary (after none or another one)',
    registers: [],
  });
  readonly powerChanges = new Counter({
    name: 'zhsm_power_state_changes_total',
    help: 'Power states recorded by this controller while primary, by server and new state',
    labelNames: ['server', 'to'] as const,
    registers: [],
  });
  readonly wakeSeconds = new Histogram({
    name: 'zhsm_power_wake_seconds',
    help: 'Wake latency: from the wake request to the server registered (ON), observed by the primary',
    buckets: WAKE_BUCKETS,
    registers: [],
  });
  readonly cacheEvents = new Counter({
    name: 'zhsm_cache_events_total',
    help: "The primary's cache: opens of cached files (hit), of files not cached (miss), admissions (admit), evictions (evict)",
    labelNames: ['event'] as const,
    registers: [],
  });

  // ---- every node -------------------------------------------------------------------------------
  readonly backendBytes = new Counter({
    name: 'zhsm_backend_bytes_total',
    help: 'Body bytes read from (verified, scrubs included) and written to (ingested) each backend of this storage server',
    labelNames: ['backend', 'path', 'direction'] as const,
    registers: [this.registry],
  });
  readonly calls = new Counter({
    name: 'zhsm_rpc_served_total',
    help: "Calls this node served, by method (storage/read, storage/write, ...) and outcome ('OK' or the error code)",
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });
  readonly callSeconds = new Histogram({
    name: 'zhsm_rpc_served_seconds',
    help: 'Time to serve a call, by method (request to response sent, data transfer included)',
    labelNames: ['method'] as const,
    buckets: RPC_BUCKETS,
    registers: [this.registry],
  });
  readonly fuseSeconds = new Histogram({
    name: 'zhsm_fuse_operation_seconds',
    help: "Time to answer a FUSE operation of this node's mounts, by operation",
    labelNames: ['op'] as const,
    buckets: FUSE_BUCKETS,
    registers: [this.registry],
  });
  readonly fuseErrors = new Counter({
    name: 'zhsm_fuse_operation_errors_total',
    help: 'FUSE operations answered with an error, by operation and errno',
    labelNames: ['op', 'errno'] as const,
    registers: [this.registry],
  });

  constructor() {
    const metrics = this;
    const space = (
      name: string,
      help: string,
      pick: (s: { totalBytes: number; availableBytes: number }) => number,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ['backend', 'path'] as const,
        registers: [this.registry],
        async collect() {
          this.reset();
          for (const backend of metrics.#subject?.storage?.backends.values() ?? []) {
            try {
              this.set({ backend: hex(backend.uuid), path: backend.root }, pick(await backend.space()));
            } catch {
              // a failing disk shows in the calls' errors; the scrape goes on
            }
          }
        },
      });
    space(
      'zhsm_backend_capacity_bytes',
      'Size of the filesystem of each backend of this storage server',
      (s) => s.totalBytes,
    );
    space(
      'zhsm_backend_free_bytes',
      'Bytes available to each backend of this storage server',
      (s) => s.availableBytes,
    );
    new Gauge({
      name: 'zhsm_members',
      help: 'Members of the cell this node knows of',
      registers: [this.registry],
      collect() {
        this.set(metrics.#subject?.directory.all().length ?? 0);
      },
    });
    new Gauge({
      name: 'zhsm_node_info',
      help: 'This node (always 1): cell, name, peer id, controller id (0: none), storage server or not',
      labelNames: ['cell', 'name', 'peer_id', 'controller_id', 'storage'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        const subject = metrics.#subject;
        if (subject === undefined) return;
        this.set(
          {
            cell: subject.config.cell,
            name: subject.config.name,
            peer_id: subject.peerId,
            controller_id: String(subject.config.controllerId),
            storage: String(subject.storage !== undefined),
          },
          1,
        );
      },
    });
  }

  /** Read state from `subject` at scrape time and count the calls its host serves. */
  attach(subject: MetricsSubject): void {
    this.#subject = subject;
    subject.host.onInboundCall = (method, code, seconds) => this.servedCall(method, code, seconds);
    if (subject.controller !== undefined) this.#registerController(subject.controller);
  }

  /**
   * The controller's metrics, on controllers only: a gauge without labels is always exported,
   * and a term of 0 on a storage server would read as a fact.
   */
  #registerController(role: ControllerRole): void {
    if (this.#controllerMetrics) return;
    this.#controllerMetrics = true;
    const registry = this.registry;
    registry.registerMetric(this.elections);
    registry.registerMetric(this.leaderChanges);
    registry.registerMetric(this.powerChanges);
    registry.registerMetric(this.wakeSeconds);
    registry.registerMetric(this.cacheEvents);
    // The node's role at scrape time (a role started or stopped while the daemon runs).
    const current = () => this.#subject?.controller ?? role;
    const status = () => current().replica.status();
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read());
        },
      });
    gauge('zhsm_raft_term', "This controller's current consensus term", () => status().term);
    gauge('zhsm_raft_commit_index', "This controller's commit index", () => status().commitIndex);
    gauge(
      'zhsm_raft_applied_index',
      "This controller's applied index (its metadata state machine)",
      () => current().replica.machine.appliedIndex,
    );
    gauge('zhsm_raft_last_index', "The last index of this controller's log", () => status().lastIndex);
    gauge('zhsm_raft_leader', '1 while this controller is the primary, else 0', () =>
      status().role === 'leader' ? 1 : 0,
    );
    new Gauge({
      name: 'zhsm_raft_role',
      help: "This controller's consensus role (1 for the current one)",
      labelNames: ['role'] as const,
      registers: [this.registry],
      collect() {
        const now = status().role;
        for (const name of ROLES) this.set({ role: name }, now === name ? 1 : 0);
      },
    });
    new Gauge({
      name: 'zhsm_raft_replication_lag_entries',
      help: "The primary only: per follower (controller id), the primary's last index minus the follower's match index",
      labelNames: ['follower'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        const s = status();
        if (s.role !== 'leader') return;
        for (const [id, progress] of s.progress) {
          if (id === s.id) continue;
          this.set({ follower: String(id) }, Math.max(0, s.lastIndex - progress.matchIndex));
        }
      },
    });
    const cache = (name: string, help: string, pick: (status: CacheStatus) => number) =>
      gauge(name, help, () => {
        const now = current().cache?.status();
        return now?.active === true ? pick(now) : 0;
      });
    cache('zhsm_cache_bytes', "The primary's cache: bytes of cached files (0 elsewhere)", (c) => c.bytes);
    cache('zhsm_cache_files', "The primary's cache: cached files (0 elsewhere)", (c) => c.files);
    new Gauge({
      name: 'zhsm_storage_servers',
      help: 'The primary only: storage servers of the cell by power state and whether they are online',
      labelNames: ['power', 'online'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        if (!current().isLeader()) return;
        const servers = await current().replica.machine.servers();
        for (const power of POWER_STATES)
          for (const online of [true, false])
            this.set(
              { power, online: String(online) },
              servers.filter((s) => s.power === power && s.online === online).length,
            );
      },
    });
  }

  /** Hooks for ControllerRole.start. */
  get controllerObserver(): ControllerObserver {
    return {
      raft: (change) => this.consensusChange(change),
      power: (change) => this.powerChange(change),
      cache: (event) => this.cacheEvent(event),
    };
  }

  /** ControllerReplica `onStateChange` hook. */
  consensusChange(change: { hardState?: HardState; softState?: SoftState }): void {
    const soft = change.softState;
    if (soft !== undefined) {
      this.#role = soft.role;
      if (soft.leader !== 0 && soft.leader !== this.#leader) this.leaderChanges.inc();
      this.#leader = soft.leader;
    }
    const hard = change.hardState;
    if (hard !== undefined && hard.term > this.#term) {
      // Only a campaign puts a candidate (or a single voter, at once the leader) in a new term; a
      // higher term learned from another controller makes this one a follower in the same change.
      if (this.#role === 'candidate' || this.#role === 'leader') this.elections.inc();
      this.#term = hard.term;
    }
  }

  /** PowerManager `onStateChange` hook. */
  powerChange(change: PowerStateChange): void {
    this.powerChanges.inc({ server: change.server, to: change.to });
    if (change.wakeMs !== undefined) this.wakeSeconds.observe(change.wakeMs / 1000);
  }

  /** ControllerCache `onEvent` hook. */
  cacheEvent(event: CacheEvent): void {
    this.cacheEvents.inc({ event });
  }

  /** Backend `onIo` hook (StorageRole). */
  backendIo(backend: Backend, kind: 'read' | 'write', bytes: number): void {
    if (bytes <= 0) return;
    this.backendBytes.inc({ backend: hex(backend.uuid), path: backend.root, direction: kind }, bytes);
  }

  servedCall(method: string, code: string, seconds: number): void {
    this.calls.inc({ method, code });
    this.callSeconds.observe({ method }, seconds);
  }

  /** mountFs `onOperation` hook. */
  fuseOperation(op: string, seconds: number, errno: number): void {
    this.fuseSeconds.observe({ op }, seconds);
    if (errno !== 0) this.fuseErrors.inc({ op, errno: errnoNames.get(errno) ?? String(errno) });
  }

  /** The endpoint's URL while it serves (`http://HOST:PORT/metrics`). */
  get url(): string | undefined {
    return this.#url;
  }

  /**
   * Serve the registry on `address` (GET /metrics; 404 elsewhere) with Node's process metrics,
   * and write the URL to `urlFile` (removed again by `close`). Throws IoError when the address
   * cannot be bound (in use, not an address of this machine).
   */
  async serve(address: MetricsAddress, options: { urlFile?: string; logger?: Logger } = {}): Promise<string> {
    if (this.#server !== undefined) throw new IoError('the metrics endpoint is already serving');
    const log = options.logger ?? silentLogger();
    if (!this.#defaultMetrics) collectDefaultMetrics({ register: this.registry });
    this.#defaultMetrics = true;
    const { server, url } = await listenMetrics(this.registry, address, log);
    this.#server = server;
    this.#url = url;
    if (options.urlFile !== undefined) {
      await writeFile(options.urlFile, `${url}\n`, { mode: 0o644 });
      this.#urlFile = options.urlFile;
    }
    log.info({ url }, 'serving Prometheus metrics');
    return url;
  }

  /**
   * Serve when `setting` ("HOST:PORT" or "off"; from --metrics or node.json) says so; the URL
   * goes to `urlFile`. Undefined: not served.
   */
  async serveConfigured(
    setting: string | undefined,
    urlFile: string,
    logger?: Logger,
  ): Promise<string | undefined> {
    const address = parseMetricsAddress(setting ?? 'off');
    if (address === undefined) return undefined;
    return this.serve(address, { urlFile, ...(logger === undefined ? {} : { logger }) });
  }

  /** Stop serving (a no-op when not serving). */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#url = undefined;
    if (this.#urlFile !== undefined) {
      await rm(this.#urlFile, { force: true }).catch(() => {});
      this.#urlFile = undefined;
    }
    if (server === undefined) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}

/**
 * An HTTP server for `registry`: GET (or HEAD) /metrics answers the Prometheus text format, any
 * other path 404, other methods on /metrics 405. Resolves once listening, with the URL (the port
 * actually bound when `address.port` is 0).
 */
export async function listenMetrics(
  registry: Registry,
  address: MetricsAddress,
  log: Logger = silentLogger(),
): Promise<{ server: Server; url: string }> {
  // Imported here, not at the top: an ES import of node:http makes Node load its whole HTTP client
  // (undici, ~40 ms), which every daemon start would pay with metrics off.
  const { createServer } = await import('node:http');
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      response
        .writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
        .end('not found: try /metrics\n');
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response
        .writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' })
        .end('GET only\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        response.writeHead(200, { 'content-type': registry.contentType });
        response.end(request.method === 'HEAD' ? undefined : text);
      },
      (error: unknown) => {
        log.warn({ err: error }, 'cannot collect metrics');
        response
          .writeHead(500, { 'content-type': 'text/plain; charset=utf-8' })
          .end('cannot collect metrics\n');
      },
    );
  });
  server.keepAliveTimeout = 65_000; // longer than Prometheus' scrape interval: one connection
  await new Promise<void>((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) => {
      reject(
        new IoError(
          `cannot serve metrics on ${formatHost(address.host)}:${address.port}: ${error.code ?? error.message}${error.code === 'EADDRINUSE' ? ' (the port is in use: pick another, or port 0 for any free one)' : ''}`,
          { host: address.host, port: address.port },
          { cause: error },
        ),
      );
    };
    server.once('error', failed);
    server.listen({ host: address.host, port: address.port }, () => {
      server.off('error', failed);
      resolve();
    });
  });
  server.on('error', (error) => log.warn({ err: error }, 'metrics endpoint error'));
  const bound = server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : address.port;
  return { server, url: `http://${formatHost(address.host)}:${port}/metrics` };
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
