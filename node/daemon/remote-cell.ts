/**
 * The CellApi over the network: what every node (client, storage server, controller) uses to talk
 * to the cell.
 *
 * - Metadata: one multiplexed session (`/zhsm/meta/1.0.0`) with the primary. The primary is found
 *   by asking the known controllers for `/zhsm/cell-info` (the one that says it leads, at the
 *   highest term); NOT_LEADER, a closed session or an unreachable primary make the client find it
 *   again and retry for up to `retryMs`. On a controller node that is itself the primary, requests
 *   go straight to the local controller (libp2p cannot dial itself).
 * - Data: chunk objects stream directly between this node and the storage server that holds the
 *   backend (`storage/*`), never through a controller.
 *
 * Retries: a proposal whose session broke after it was sent may have been applied. Every proposal
 * carries this client's session id and a sequence number (`CommandSession`), and the state machine
 * answers a retry of an applied command with its saved result: retries are exactly-once.
 */

import type { CellApi, MetadataReader } from '../client/cell-api.ts';
import { readStoredChunk } from '../client/chunk-io.ts';
import { CommandSession } from '../client/command-session.ts';
import { NotFoundError, UnavailableError, ZhsmError } from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import type { BackendRecord, Command, Result, ServerRecord } from '../metadata/records.ts';
import type { Host } from '../net/host.ts';
import { call } from '../net/rpc.ts';
import { openSession, type Session } from '../net/session.ts';
import { StorageClient } from '../storage/client.ts';
import {
  coalesce,
  type ListedObject,
  listBackendPage,
  type MetaObject,
  storeMetaObjects,
  verifyObjects,
} from '../storage/service.ts';
import type { Backend } from '../store/backend.ts';
import type { MemberDirectory } from './directory.ts';
import {
  type CellInfo,
  cellInfoMethod,
  type MetaRequest,
  type MetaResponse,
  metaMethod,
} from './protocols.ts';

/** Requests are retried across failovers for this long by default. */
export const RETRY_MS_DEFAULT = 15_000;
const PROBE_TIMEOUT_MS = 2_000;
const META_CALL_TIMEOUT_MS = 30_000;

/** The local controller, when this node is one. */
export interface LocalController {
  readonly peerId: string;
  isLeader(): boolean;
  handleMeta(request: MetaRequest): Promise<MetaResponse>;
  info(): CellInfo;
}

export interface RemoteCellOptions {
  readonly host: Host;
  readonly directory: MemberDirectory;
  readonly local?: LocalController;
  readonly logger?: Logger;
  readonly retryMs?: number;
}

const RETRYABLE = new Set(['NOT_LEADER', 'CLOSED', 'UNAVAILABLE', 'IO_ERROR', 'TIMEOUT']);

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

async function removeIfThere(backend: Backend, id: Uint8Array): Promise<void> {
  await backend.remove(id).catch((error: unknown) => {
    if ((error as ZhsmError).code !== 'NOT_FOUND') throw error;
  });
}

export class RemoteCell implements CellApi {
  readonly clientId: string;
  readonly metadata: MetadataReader;
  readonly storage: StorageClient;
  readonly #host: Host;
  /** Numbers this client's proposals for exactly-once retries. */
  readonly #commands = new CommandSession();
  readonly #directory: MemberDirectory;
  #local: LocalController | undefined;
  readonly #log: Logger;
  readonly #retryMs: number;
  #primary: { peerId: string; term: number } | undefined;
  #finding: Promise<{ peerId: string; term: number }> | undefined;
  #session: { peerId: string; session: Session<MetaRequest, MetaResponse> } | undefined;
  #opening: Promise<Session<MetaRequest, MetaResponse>> | undefined;
  #servers = new Map<string, { peerId: string; addresses: string[]; online: boolean }>();
  #backendServer = new Map<string, string>();
  #closed = false;
  #localBackends: (() => ReadonlyMap<string, Backend>) | undefined;

  constructor(options: RemoteCellOptions) {
    this.#host = options.host;
    this.#directory = options.directory;
    this.#local = options.local;
    this.#log = options.logger ?? silentLogger();
    this.#retryMs = options.retryMs ?? RETRY_MS_DEFAULT;
    this.clientId = options.host.peerId.toString();
    this.storage = new StorageClient(options.host);
    const read = async <K extends keyof MetaResponse>(query: MetaRequest['read'], key: K) => {
      const response = await this.request({ read: query });
      return response[key];
    };
    this.metadata = {
      root: async () => {
        const root = await read({ root: {} }, 'root');
        if (root === undefined) throw new NotFoundError('the cell is not initialized');
        return root;
      },
      inode: async (id) => read({ inode: id }, 'inode'),
      lookup: async (parent, name) => read({ lookup: { parent, name } }, 'inode'),
      resolve: async (start, names) => {
        const resolved = await read({ resolve: { start, names: [...names] } }, 'resolved');
        if (resolved == null) throw new ZhsmError('DECODE_ERROR', 'the primary answered without a path walk');
        return resolved.inode == null ? { depth: 0 } : { inode: resolved.inode, depth: resolved.depth };
      },
      readdir: async (parent, options) =>
        (
          await read(
            { readdir: { parent, after: options.after ?? '', limit: options.limit ?? 0 } },
            'entries',
          )
        )?.entries ?? [],
      locations: async (object) => (await read({ locations: object }, 'locations'))?.entries ?? [],
      backends: async () => (await read({ backends: {} }, 'backends'))?.backends ?? [],
      servers: async () => (await read({ servers: {} }, 'servers'))?.servers ?? [],
      chains: async () => (await read({ chains: {} }, 'chains')) ?? undefined,
    };
  }

  /**
   * This node's own controller role (started or stopped while the daemon runs): requests to it
   * go to it directly. The primary is looked up again.
   */
  setLocal(local: LocalController | undefined): void {
    this.#local = local;
    this.#primary = undefined;
  }

  /**
   * The primary as last found (undefined until the first request), or a newer one (higher term)
   * that a probe or this node's own controller has seen since: a node that sends no requests
   * still notices a change of primary (a storage server registers again with the new one).
   */
  get primary(): { peerId: string; term: number } | undefined {
    if (this.#local !== undefined) {
      const info = this.#local.info();
      this.#notePrimary(info.leaderPeerId, info.term);
    }
    return this.#primary;
  }

  #notePrimary(peerId: string, term: number): void {
    if (peerId !== '' && this.#primary !== undefined && term > this.#primary.term)
      this.#primary = { peerId, term };
  }

  async propose(command: Omit<Command, 'timeMs'>, options: { retryMs?: number } = {}): Promise<Result> {
    return this.#numbered([command], async ([numbered]) => {
      const response = await this.request({ propose: numbered! }, options);
      if (response.result == null)
        throw new ZhsmError('DECODE_ERROR', 'the primary answered without a result');
      return response.result;
    });
  }

  /** Several commands at once (one round trip; each its own log entry). */
  async proposeBatch(commands: ReadonlyArray<Omit<Command, 'timeMs'>>): Promise<Result[]> {
    return this.#numbered(commands, async (numbered) => {
      const response = await this.request({ proposeBatch: { commands: numbered } });
      return response.results?.results ?? [];
    });
  }

  /** `commands` numbered in this client's session (exactly-once retries) while `send` runs. */
  async #numbered<T>(
    commands: ReadonlyArray<Omit<Command, 'timeMs'>>,
    send: (numbered: Command[]) => Promise<T>,
  ): Promise<T> {
    const begun = commands.map(() => this.#commands.begin());
    try {
      return await send(
        commands.map((command, index) => ({ ...command, ...begun[index]!.stamp, timeMs: 0 })),
      );
    } finally {
      for (const { done } of begun) done();
    }
  }

  /**
   * Power management at the primary (node/hsm/power-manager.ts): 'wake' (for a read), 'on', 'off'.
   * Answers with the server's record and how long a woken server may take to register.
   */
  async power(
    serverUuid: Uint8Array,
    action: 'wake' | 'on' | 'off',
    options: { force?: boolean; reason?: string } = {},
  ): Promise<{ server: ServerRecord; waitMs: number }> {
    const response = await this.request({
      power: { serverUuid, action, force: options.force === true, reason: options.reason ?? '' },
    });
    if (response.powerAnswer == null)
      throw new ZhsmError('DECODE_ERROR', 'the primary answered without a power answer');
    return response.powerAnswer;
  }

  /** Wake a sleeping storage server for a read or a strict write (PowerWakeApi; the cell client). */
  wakeServer(serverUuid: Uint8Array, reason?: string): Promise<{ server: ServerRecord; waitMs: number }> {
    return this.power(serverUuid, 'wake', reason === undefined ? {} : { reason });
  }

  async members() {
    return (await this.request({ read: { members: {} } })).members?.members ?? [];
  }

  async tokens() {
    return (await this.request({ read: { tokens: {} } })).tokens?.tokens ?? [];
  }

  /** Send a metadata request to the primary, finding it again and retrying on failover. */
  async request(request: MetaRequest, options: { retryMs?: number } = {}): Promise<MetaResponse> {
    const deadline = Date.now() + (options.retryMs ?? this.#retryMs);
    let delayMs = 20;
    for (;;) {
      if (this.#closed) throw new UnavailableError('the cell connection is closed');
      try {
        const primary = await this.#findPrimary(deadline);
        if (this.#local !== undefined && primary.peerId === this.#local.peerId) {
          return await this.#local.handleMeta(request);
        }
        const session = await this.#sessionWith(primary.peerId);
        return await session.call(request, { timeoutMs: META_CALL_TIMEOUT_MS });
      } catch (error) {
        const code = error instanceof ZhsmError ? error.code : 'CLOSED';
        if (!RETRYABLE.has(code) || Date.now() + delayMs > deadline) throw error;
        this.#log.debug({ code, err: error }, 'metadata request failed; finding the primary again');
        this.#primary = undefined;
        await sleep(delayMs);
        delayMs = Math.min(delayMs * 2, 500);
      }
    }
  }

  /** Ask the controllers who leads; the answer from the highest term wins. */
  async #findPrimary(deadline: number): Promise<{ peerId: string; term: number }> {
    if (this.#primary !== undefined) return this.#primary;
    this.#finding ??= (async () => {
      try {
        for (;;) {
          if (this.#local?.isLeader() === true) {
            this.#primary = { peerId: this.#local.peerId, term: this.#local.info().term };
            return this.#primary;
          }
          const found = await this.probe();
          if (found !== undefined) {
            this.#primary = found;
            return found;
          }
          if (Date.now() > deadline) throw new UnavailableError('no primary controller is reachable');
          await sleep(100);
        }
      } finally {
        this.#finding = undefined;
      }
    })();
    return this.#finding;
  }

  /** One round of asking every known controller; also refreshes the directory from the primary. */
  async probe(): Promise<{ peerId: string; term: number; info: CellInfo } | undefined> {
    const controllers = this.#directory.controllers();
    const answers = await Promise.all(
      controllers.map(async (member) => {
        try {
          return await this.cellInfoOf(member.peerId, member.addresses);
        } catch {
          return undefined;
        }
      }),
    );
    let best: CellInfo | undefined;
    for (const info of answers) {
      if (info === undefined || info.role !== 'leader') continue;
      if (best === undefined || info.term > best.term) best = info;
    }
    if (best === undefined) return undefined;
    if (best.members.length > 0 && this.#local === undefined) this.#directory.replace(best.members);
    this.#notePrimary(best.peerId, best.term);
    return { peerId: best.peerId, term: best.term, info: best };
  }

  /** cell-info of one node (this node's own answer for itself). */
  async cellInfoOf(peerId: string, addresses: readonly string[] = []): Promise<CellInfo> {
    if (this.#local !== undefined && peerId === this.#local.peerId) return this.#local.info();
    await this.#directory.remember(this.#host, peerId, addresses, this.#log);
    return call(this.#host, peerId, cellInfoMethod, {}, { timeoutMs: PROBE_TIMEOUT_MS });
  }

  async #sessionWith(peerId: string): Promise<Session<MetaRequest, MetaResponse>> {
    const current = this.#session;
    if (current !== undefined && current.peerId === peerId && !current.session.closed) return current.session;
    if (this.#opening !== undefined) return this.#opening;
    this.#opening = (async () => {
      try {
        if (current !== undefined) void current.session.close().catch(() => {});
        const member = this.#directory.member(peerId);
        if (member !== undefined)
          await this.#directory.remember(this.#host, peerId, member.addresses, this.#log);
        const session = await openSession(this.#host, peerId, metaMethod, { openTimeoutMs: 5_000 });
        this.#session = { peerId, session };
        return session;
      } finally {
        this.#opening = undefined;
      }
    })();
    return this.#opening;
  }

  // ---- data ---------------------------------------------------------------------------------

  async #server(backend: Uint8Array): Promise<{ peerId: string; addresses: string[] }> {
    const key = hex(backend);
    let serverKey = this.#backendServer.get(key);
    if (serverKey === undefined || this.#servers.get(serverKey)?.online !== true) {
      await this.refreshServers();
      serverKey = this.#backendServer.get(key);
    }
    const server = serverKey === undefined ? undefined : this.#servers.get(serverKey);
    if (server === undefined) throw new UnavailableError(`backend ${key} is not known to the cell`);
    if (!server.online) throw new UnavailableError(`the storage server of backend ${key} is offline`);
    return server;
  }

  /** Re-read the servers and backends from the metadata. */
  async refreshServers(): Promise<{ servers: ServerRecord[]; backends: BackendRecord[] }> {
    const [servers, backends] = await Promise.all([this.metadata.servers(), this.metadata.backends()]);
    this.#servers = new Map(
      servers.map((s) => [hex(s.uuid), { peerId: s.peerId, addresses: s.addresses, online: s.online }]),
    );
    this.#backendServer = new Map(backends.map((b) => [hex(b.uuid), hex(b.serverUuid)]));
    return { servers, backends };
  }

  async #storagePeer(backend: Uint8Array): Promise<string> {
    const server = await this.#server(backend);
    await this.#directory.remember(this.#host, server.peerId, server.addresses, this.#log);
    return server.peerId;
  }

  /**
   * This node's own backends (when it is a storage server too): libp2p cannot dial itself, so
   * chunk transfers with them go to the backend directly (the mover and the cache on a primary
   * that stores data, a mount on a storage server).
   */
  useLocalBackends(backends: () => ReadonlyMap<string, Backend>): void {
    this.#localBackends = backends;
  }

  #ownBackend(backend: Uint8Array): Backend | undefined {
    return this.#localBackends?.().get(hex(backend));
  }

  /** A whole chunk object streamed from one backend (block checksums verified on the way). */
  async *readChunkStream(backend: Uint8Array, id: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
    const own = this.#ownBackend(backend);
    if (own !== undefined) {
      yield* own.read(id, { offset: 0, length: size });
      return;
    }
    const peer = await this.#storagePeer(backend);
    yield* this.storage.readStream(peer, backend, id, 0, size);
  }

  /**
   * Copy a chunk object from backend `from` to backend `to` (the mover): server to server
   * (storage/fetch on the destination), so the bytes do not pass through this node unless one
   * of the backends is its own. The destination checks the content hash before the copy counts.
   */
  async copyChunk(
    from: Uint8Array,
    to: Uint8Array,
    id: Uint8Array,
    size: number,
    hash: Uint8Array,
  ): Promise<void> {
    const ownTo = this.#ownBackend(to);
    if (ownTo !== undefined) {
      await ownTo.ingest(
        { id, mainType: 'DATA', layout: 'INLINE', bodySize: size, contentHash: hash },
        coalesce(this.readChunkStream(from, id, size), size),
      );
      return;
    }
    if (this.#ownBackend(from) !== undefined) {
      const peer = await this.#storagePeer(to);
      await this.storage.write(peer, to, id, this.readChunkStream(from, id, size), size, hash);
      return;
    }
    const peer = await this.#storagePeer(to);
    await this.storage.fetch(peer, to, id, size, hash, from);
  }

  /** Delete one object from one backend (a released copy; missing is fine). */
  async deleteChunk(backend: Uint8Array, id: Uint8Array): Promise<void> {
    const local = this.#ownBackend(backend);
    if (local !== undefined) {
      await removeIfThere(local, id);
      return;
    }
    const peer = await this.#storagePeer(backend);
    await this.storage.delete(peer, [id], backend);
  }

  async writeChunk(backend: Uint8Array, id: Uint8Array, bytes: Uint8Array, hash: Uint8Array): Promise<void> {
    const local = this.#ownBackend(backend);
    if (local !== undefined) {
      await local.ingest(
        { id, mainType: 'DATA', layout: 'INLINE', bodySize: bytes.length, contentHash: hash },
        bytes,
      );
      return;
    }
    const peer = await this.#storagePeer(backend);
    await this.storage.write(peer, backend, id, bytes, bytes.byteLength, hash);
  }

  async readChunk(
    backend: Uint8Array,
    id: Uint8Array,
    offset: number,
    length: number,
    expectedHash?: Uint8Array,
    into?: Uint8Array,
  ): Promise<Uint8Array> {
    const local = this.#ownBackend(backend);
    if (local !== undefined) return readStoredChunk(local, id, offset, length, expectedHash, into);
    // An empty expected hash: none is known (a trimmed chunk).
    const check = expectedHash !== undefined && expectedHash.length > 0 ? expectedHash : undefined;
    return this.storage.read(await this.#storagePeer(backend), backend, id, offset, length, {
      ...(check === undefined ? {} : { expectedHash: check }),
      ...(into === undefined ? {} : { into }),
    });
  }

  /** Store META objects (inode headers, node/recovery/) on one backend; returns how many were newer. */
  async putMeta(backend: Uint8Array, objects: readonly MetaObject[]): Promise<number> {
    const own = this.#ownBackend(backend);
    if (own !== undefined) return storeMetaObjects(own, objects);
    return this.storage.putMeta(await this.#storagePeer(backend), backend, objects);
  }

  /** One page of a backend's object headers (storage/list; rebuild, scrub, fsck). */
  async listObjects(
    backend: Uint8Array,
    page: { after?: Uint8Array; limit?: number; metaOnly?: boolean },
  ): Promise<{ objects: ListedObject[]; next: Uint8Array | undefined }> {
    const own = this.#ownBackend(backend);
    if (own !== undefined) return listBackendPage(own, page);
    return this.storage.list(await this.#storagePeer(backend), backend, page);
  }

  /** Re-hash objects on their backend's server (scrub); one result per id. */
  async verifyObjects(backend: Uint8Array, ids: readonly Uint8Array[], bytesPerSecond: number) {
    const own = this.#ownBackend(backend);
    if (own !== undefined) return verifyObjects(own, ids, bytesPerSecond);
    return this.storage.verify(await this.#storagePeer(backend), backend, ids, bytesPerSecond);
  }

  async deleteObjects(ids: readonly Uint8Array[]): Promise<void> {
    if (ids.length === 0) return;
    if (this.#servers.size === 0) await this.refreshServers();
    await Promise.all(
      [...this.#servers.values()]
        .filter((server) => server.online)
        .map(async (server) => {
          if (server.peerId === this.clientId) {
            for (const backend of this.#localBackends?.().values() ?? [])
              for (const id of ids) await removeIfThere(backend, id).catch(() => {});
            return;
          }
          try {
            await this.#directory.remember(this.#host, server.peerId, server.addresses, this.#log);
            await this.storage.delete(server.peerId, ids);
          } catch (error) {
            this.#log.warn({ server: server.peerId, err: error }, 'cannot delete released objects');
          }
        }),
    );
  }

  nowMs(): number {
    return Date.now();
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#session?.session.close().catch(() => {});
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
