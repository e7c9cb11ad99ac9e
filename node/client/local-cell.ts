/**
 * A whole cell in one process: controller replicas (LevelDB, in-process network) and storage
 * backends (node/store), behind the CellApi. For tests, benchmarks and a one-machine cell; the
 * peer daemon puts the same parts into separate processes on libp2p.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { LevelRaftStorage } from '../../consensus/storage-level.ts';
import { NotFoundError, UnavailableError, ZhsmError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { LocalNetwork } from '../controller/local-transport.ts';
import { ControllerReplica } from '../controller/replica.ts';
import { LevelKv } from '../metadata/kv.ts';
import { type BackendRecord, type Command, initCellCommand, type Result } from '../metadata/records.ts';
import { Backend } from '../store/backend.ts';
import type { CellApi, MetadataReader } from './cell-api.ts';
import { readStoredChunk } from './chunk-io.ts';
import { CommandSession } from './command-session.ts';

export interface LocalCellOptions {
  /** Where controllers and backends keep their data. */
  readonly directory: string;
  readonly cell?: string;
  readonly controllers?: number;
  /** Storage servers and backends per server (default 2 servers with 1 backend each). */
  readonly servers?: number;
  readonly backendsPerServer?: number;
  readonly tickMs?: number;
  readonly logger?: Logger;
}

/** Proposals are retried across failovers for this long. */
const PROPOSE_RETRY_MS = 15_000;

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

export class LocalCell implements CellApi {
  readonly clientId = 'local';
  readonly replicas: ControllerReplica[];
  readonly #closers: Array<() => Promise<void>>;
  readonly #backends = new Map<string, Backend>();
  readonly #commands = new CommandSession();
  readonly metadata: MetadataReader;
  #timers: Array<ReturnType<typeof setInterval>> = [];

  private constructor(replicas: ControllerReplica[], closers: Array<() => Promise<void>>) {
    this.replicas = replicas;
    this.#closers = closers;
    const read = async <T>(query: (replica: ControllerReplica) => Promise<T>): Promise<T> => {
      const leader = await this.#leader();
      await leader.readBarrier();
      return query(leader);
    };
    this.metadata = {
      root: () =>
        read(async (r) => {
          const cell = await r.machine.cell();
          if (cell === undefined) throw new NotFoundError('the cell is not initialized');
          return cell.rootId;
        }),
      inode: (id) => read((r) => r.machine.inode(id)),
      lookup: (parent, name) => read((r) => r.machine.lookup(parent, name)),
      resolve: (start, names) => read((r) => r.machine.resolve(start, names)),
      readdir: (parent, options) => read((r) => r.machine.readdir(parent, options)),
      locations: (object) => read((r) => r.machine.locations(object)),
      backends: () => read((r) => r.machine.backends()),
      servers: () => read((r) => r.machine.servers()),
      chains: () => read((r) => r.machine.chains()),
    };
  }

  /** Start (or restart) a local cell in `directory`. */
  static async open(options: LocalCellOptions): Promise<LocalCell> {
    const controllers = options.controllers ?? 1;
    const network = new LocalNetwork();
    const voters = Array.from({ length: controllers }, (_, i) => i + 1);
    const closers: Array<() => Promise<void>> = [];
    const replicas: ControllerReplica[] = [];
    for (const id of voters) {
      const base = join(options.directory, 'controllers', String(id));
      mkdirSync(base, { recursive: true });
      const storage = await LevelRaftStorage.open(join(base, 'raft'));
      const kv = await LevelKv.open(join(base, 'metadata'));
      const replica = await ControllerReplica.start({
        id,
        storage,
        kv,
        transport: network.transport(id),
        initialMembership: { voters, learners: [] },
        tickMs: options.tickMs,
        logger: options.logger,
      });
      replicas.push(replica);
      closers.push(async () => {
        await replica.stop();
        await storage.close();
        await kv.close();
      });
    }
    const cell = new LocalCell(replicas, closers);
    await cell.#initialize(options);
    return cell;
  }

  async #initialize(options: LocalCellOptions): Promise<void> {
    const cellName = options.cell ?? 'local';
    const leader = await this.#leader();
    await leader.readBarrier();
    if ((await leader.machine.cell()) === undefined) {
      const result = await this.propose({
        initCell: initCellCommand(cellName),
      });
      if (result.code !== 'OK')
        throw new ZhsmError('IO_ERROR', `cannot initialize the cell: ${result.message}`);
    }
    const servers = options.servers ?? 2;
    const perServer = options.backendsPerServer ?? 1;
    for (let s = 0; s < servers; s++) {
      const serverUuid = await this.#stableUuid(join(options.directory, 'servers', String(s)));
      await this.propose({
        registerServer: {
          server: {
            uuid: serverUuid,
            peerId: `local-server-${s}`,
            name: `server-${s}`,
            addresses: [],
            power: 'ON',
            registeredMs: 0,
            lastSeenMs: 0,
            online: true,
          },
        },
      });
      const records: BackendRecord[] = [];
      for (let b = 0; b < perServer; b++) {
        const root = join(options.directory, 'servers', String(s), `backend-${b}`);
        let backend: Backend;
        try {
          backend = await Backend.open(root, { cell: cellName, logger: options.logger });
        } catch (error) {
          if ((error as ZhsmError).code !== 'NOT_A_BACKEND') throw error;
          backend = await Backend.create(root, { cell: cellName, logger: options.logger });
        }
        this.#backends.set(hex(backend.uuid), backend);
        const space = await backend.space();
        records.push({
          uuid: backend.uuid,
          serverUuid,
          path: root,
          capacityBytes: space.totalBytes,
          freeBytes: space.availableBytes,
          tags: [],
          updatedMs: 0,
        });
      }
      await this.propose({ registerBackends: { serverUuid, backends: records } });
    }
    // Expire tokens of clients that went away.
    this.#timers.push(
      setInterval(() => {
        void this.propose({ expireTokens: { nowMs: Date.now() } }).catch(() => {});
      }, 5_000),
    );
    for (const timer of this.#timers) timer.unref();
  }

  /** A UUID kept in a file, so a server keeps its identity across restarts. */
  async #stableUuid(directory: string): Promise<Uint8Array> {
    const { readFile, writeFile, mkdir } = await import('node:fs/promises');
    await mkdir(directory, { recursive: true });
    const path = join(directory, 'server.uuid');
    try {
      return new Uint8Array(Buffer.from((await readFile(path, 'utf8')).trim(), 'hex'));
    } catch {
      const uuid = newId();
      await writeFile(path, `${hex(uuid)}\n`);
      return uuid;
    }
  }

  async #leader(): Promise<ControllerReplica> {
    const deadline = Date.now() + PROPOSE_RETRY_MS;
    for (;;) {
      const leader = this.replicas.find((replica) => replica.isLeader);
      if (leader !== undefined) return leader;
      if (Date.now() > deadline) throw new UnavailableError('no primary controller');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  async propose(command: Omit<Command, 'timeMs'>): Promise<Result> {
    return (await this.proposeBatch([command]))[0]!;
  }

  /**
   * Several commands, proposed back to back (one log write, applied in order), retried at the
   * new leader after a failover. A proposal overtaken by a snapshot may have been applied: the
   * session makes its retry safe.
   */
  async proposeBatch(commands: ReadonlyArray<Omit<Command, 'timeMs'>>): Promise<Result[]> {
    const deadline = Date.now() + PROPOSE_RETRY_MS;
    const begun = commands.map(() => this.#commands.begin());
    try {
      for (;;) {
        const leader = await this.#leader();
        try {
          // No await between the proposals: they enter the log in this order.
          return await Promise.all(
            commands.map((command, i) => leader.propose({ ...command, ...begun[i]!.stamp })),
          );
        } catch (error) {
          if (!(error instanceof ZhsmError) || error.code !== 'NOT_LEADER' || Date.now() > deadline)
            throw error;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
    } finally {
      for (const { done } of begun) done();
    }
  }

  #backend(uuid: Uint8Array): Backend {
    const backend = this.#backends.get(hex(uuid));
    if (backend === undefined) throw new UnavailableError(`backend ${hex(uuid)} is not reachable`);
    return backend;
  }

  get backends(): Backend[] {
    return [...this.#backends.values()];
  }

  async writeChunk(backend: Uint8Array, id: Uint8Array, bytes: Uint8Array, hash: Uint8Array): Promise<void> {
    await this.#backend(backend).ingest(
      { id, mainType: 'DATA', layout: 'INLINE', bodySize: bytes.length, contentHash: hash },
      bytes,
    );
  }

  async readChunk(
    backend: Uint8Array,
    id: Uint8Array,
    offset: number,
    length: number,
    expectedHash?: Uint8Array,
    into?: Uint8Array,
  ): Promise<Uint8Array> {
    return readStoredChunk(this.#backend(backend), id, offset, length, expectedHash, into);
  }

  async deleteObjects(ids: readonly Uint8Array[]): Promise<void> {
    for (const backend of this.#backends.values()) {
      for (const id of ids) {
        await backend.remove(id).catch((error: unknown) => {
          if ((error as ZhsmError).code !== 'NOT_FOUND') throw error;
        });
      }
    }
  }

  nowMs(): number {
    return Date.now();
  }

  async close(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    for (const close of this.#closers) await close();
    for (const backend of this.#backends.values()) await backend.close();
  }
}

function newId(): Uint8Array {
  return new Uint8Array(randomBytes(16));
}
