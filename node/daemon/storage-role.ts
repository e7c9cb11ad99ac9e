/**
 * The storage-server role of a daemon: opens its backend directories, serves them to the cell
 * (`storage/*`, node/storage/service.ts) and keeps the cell's record of them current.
 *
 * Registration (the concept note: "re-register whenever a primary connects"): the server
 * registers itself and its backends (UUIDs, capacity, free space) with the primary whenever the
 * primary or its term changes, and every `heartbeatMs` (30 s: also its sign of life — the primary
 * marks a server offline that it has not heard from for 120 s). On an
 * orderly shutdown it deregisters (marked offline; its data stays where it is).
 *
 * Power management: every registration carries the last data access the storage service served
 * (reads and writes), and between registrations a `reportAccess` goes to the primary at most every
 * `accessReportMs` (5 s) when the server was accessed since the last report, so the primary's
 * idle clock (node/hsm/power-policy.ts) is at most that late.
 */
import { ZhsmError } from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import type { BackendRecord } from '../metadata/records.ts';
import type { Host } from '../net/host.ts';
import { type StorageActivity, serveStorage } from '../storage/service.ts';
import { Backend, type BackendOptions } from '../store/backend.ts';
import type { RemoteCell } from './remote-cell.ts';

const CHECK_INTERVAL_MS = 1_000;
export const STORAGE_HEARTBEAT_MS_DEFAULT = 30_000;
export const ACCESS_REPORT_MS_DEFAULT = 5_000;
/** Shutdown does not wait longer than this for the primary to take the deregistration. */
const DEREGISTER_RETRY_MS = 3_000;

export interface StorageRoleOptions {
  readonly cell: string;
  readonly name: string;
  readonly serverUuid: Uint8Array;
  readonly backendPaths: readonly string[];
  /** Tags per backend path (placement chains select backends by tag). */
  readonly backendTags?: Readonly<Record<string, readonly string[]>>;
  readonly host: Host;
  readonly remote: RemoteCell;
  /** Re-register (fresh space figures, sign of life) this often; default 30 s. */
  readonly heartbeatMs?: number;
  /** Report data accesses between registrations at most this often; default 5 s. */
  readonly accessReportMs?: number;
  readonly logger?: Logger;
  /** Bytes read from and written to each backend (metrics: node/daemon/metrics.ts). */
  readonly onBackendIo?: BackendOptions['onIo'];
}

/** Open a backend directory of this cell, creating it if it is new (init / join). */
export async function openOrCreateBackend(path: string, cell: string, logger?: Logger): Promise<Backend> {
  try {
    return await Backend.open(path, { cell, logger });
  } catch (error) {
    if (!(error instanceof ZhsmError) || error.code !== 'NOT_A_BACKEND') throw error;
    return Backend.create(path, { cell, logger });
  }
}

export class StorageRole {
  readonly serverUuid: Uint8Array;
  readonly backends: ReadonlyMap<string, Backend>;
  readonly #options: StorageRoleOptions;
  readonly #log: Logger;
  readonly #stopService: () => Promise<void>;
  #timer: ReturnType<typeof setInterval> | undefined;
  #registeredWith: string | undefined;
  #registeredAt = 0;
  readonly #heartbeatMs: number;
  readonly #accessReportMs: number;
  /** Reads and writes served (updated by the storage service). */
  readonly activity: StorageActivity;
  /** The last access the primary has been told of, and when it was told. */
  #reportedAccessMs = 0;
  #accessReportAt = 0;
  #checking = false;
  #stopped = false;

  private constructor(
    options: StorageRoleOptions,
    backends: Map<string, Backend>,
    stop: () => Promise<void>,
    activity: StorageActivity,
  ) {
    this.#options = options;
    this.serverUuid = options.serverUuid;
    this.backends = backends;
    this.#log = (options.logger ?? silentLogger()).child({ role: 'storage' });
    this.#stopService = stop;
    this.#heartbeatMs = options.heartbeatMs ?? STORAGE_HEARTBEAT_MS_DEFAULT;
    this.#accessReportMs = options.accessReportMs ?? ACCESS_REPORT_MS_DEFAULT;
    this.activity = activity;
  }

  static async start(options: StorageRoleOptions): Promise<StorageRole> {
    const backends = new Map<string, Backend>();
    try {
      for (const path of options.backendPaths) {
        const backend = await Backend.open(path, {
          cell: options.cell,
          logger: options.logger,
          ...(options.onBackendIo === undefined ? {} : { onIo: options.onBackendIo }),
        });
        backends.set(Buffer.from(backend.uuid).toString('hex'), backend);
      }
    } catch (error) {
      for (const backend of backends.values()) await backend.close().catch(() => {});
      throw error;
    }
    const activity: StorageActivity = { lastAccessMs: 0 };
    const service = await serveStorage(options.host, {
      backends: () => backends,
      fetch: (source, id, size) => options.remote.readChunkStream(source, id, size),
      activity,
      logger: options.logger,
    });
    const role = new StorageRole(options, backends, () => service.stop(), activity);
    role.#timer = setInterval(() => void role.#check(), CHECK_INTERVAL_MS);
    void role.#check();
    return role;
  }

  /** Whether the current primary has this server's registration (status and tests). */
  get registeredWith(): string | undefined {
    return this.#registeredWith;
  }

  async #records(): Promise<BackendRecord[]> {
    const records: BackendRecord[] = [];
    for (const backend of this.backends.values()) {
      const space = await backend.space();
      records.push({
        uuid: backend.uuid,
        serverUuid: this.serverUuid,
        path: backend.root,
        capacityBytes: space.totalBytes,
        freeBytes: space.availableBytes,
        tags: [...(this.#options.backendTags?.[backend.root] ?? [])],
        updatedMs: 0,
      });
    }
    return records;
  }

  /** Register again when the primary changed (or the space figures are old). */
  async #check(): Promise<void> {
    if (this.#checking || this.#stopped) return;
    this.#checking = true;
    try {
      const remote = this.#options.remote;
      if (remote.primary === undefined) await remote.request({ read: { cell: {} } });
      const primary = remote.primary;
      if (primary === undefined) return;
      const key = `${primary.peerId}/${primary.term}`;
      if (key === this.#registeredWith && Date.now() - this.#registeredAt < this.#heartbeatMs) {
        await this.#reportAccess();
        return;
      }
      await this.register();
      this.#registeredWith = key;
      this.#registeredAt = Date.now();
      this.#log.info({ primary: primary.peerId, term: primary.term }, 'registered with the primary');
    } catch (error) {
      this.#log.debug({ err: error }, 'registration deferred');
    } finally {
      this.#checking = false;
    }
  }

  /** Tell the primary of data accesses since the last report (at most every accessReportMs). */
  async #reportAccess(): Promise<void> {
    const last = this.activity.lastAccessMs;
    if (last <= this.#reportedAccessMs || Date.now() - this.#accessReportAt < this.#accessReportMs) return;
    this.#accessReportAt = Date.now();
    const result = await this.#options.remote.propose({
      reportAccess: { serverUuid: this.serverUuid, lastAccessMs: last },
    });
    if (result.code === 'OK') this.#reportedAccessMs = last;
  }

  async register(): Promise<void> {
    const host = this.#options.host;
    const lastAccessMs = this.activity.lastAccessMs;
    const remote = this.#options.remote;
    const server = {
      uuid: this.serverUuid,
      peerId: host.peerId.toString(),
      name: this.#options.name,
      addresses: host.multiaddrs().map(String),
      power: 'ON' as const,
      registeredMs: 0,
      lastSeenMs: 0,
      online: true,
      lastAccessMs,
    };
    const results = await remote.proposeBatch([
      { registerServer: { server } },
      { registerBackends: { serverUuid: this.serverUuid, backends: await this.#records() } },
    ]);
    const failed = results.find((result) => result.code !== 'OK');
    if (failed !== undefined || results.length !== 2)
      throw new ZhsmError('IO_ERROR', `registration refused: ${failed?.code} ${failed?.message}`);
    this.#reportedAccessMs = Math.max(this.#reportedAccessMs, lastAccessMs);
  }

  async stop(options: { deregister?: boolean } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    if (options.deregister !== false) {
      try {
        await this.#options.remote.propose(
          { deregisterServer: { serverUuid: this.serverUuid } },
          { retryMs: DEREGISTER_RETRY_MS },
        );
        this.#log.info('deregistered from the cell');
      } catch (error) {
        this.#log.warn({ err: error }, 'could not deregister (the server stays listed until it returns)');
      }
    }
    await this.#stopService().catch(() => {});
    for (const backend of this.backends.values()) await backend.close().catch(() => {});
  }
}
