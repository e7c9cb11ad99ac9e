/**
 * The mover: makes the copies of every file match what the resolve chains say (the target bits of
 * the concept note), on the primary controller.
 *
 * For each chunk object of a file, with D = the backends the chains resolve the file to:
 * 1. target bits: set on D, cleared elsewhere (`placeCopy`); a copy made at once is recorded
 *    current and target in one step, and bits are not cleared on copies released in the same step;
 * 2. copy: for each backend of D without a current copy, whose server is awake: read the object
 *    from a current copy, write it to the new backend (the storage server ingests into a temp
 *    file, verifies the content hash, renames), then mark it current;
 * 3. release: once every backend of D holds a current copy, drop the copies outside D — the
 *    record first (readers stop choosing it), then the object on its backend.
 * At every moment at least one verified current copy exists: the state machine refuses to drop
 * the last one, and releases happen only after the new copies are current. Copies to sleeping
 * servers wait (their target bits stay set; the server is listed as waiting).
 *
 * Work comes from the placement queue (`q:` keys: files written, renamed or truncated) and from
 * passes over every file: when the chains change, when this controller becomes primary, and every
 * `scanIntervalMs`. A pass first plans (counting what to copy) and then moves, so progress and an
 * ETA can be shown (`zhsm migrate`). Copies are throttled (`concurrency`, `bytesPerSecond`).
 * With no chains set, D is the backends whose target bit is set (what the writers chose): the
 * mover then only repairs, e.g. a copy a reader reported bad (`reportBadCopy`) is copied over.
 */
import { type Logger, silentLogger } from '../common/log.ts';
import type {
  AccessStats,
  BackendRecord,
  Command,
  Inode,
  Location,
  Result,
  ServerRecord,
  StoredChains,
} from '../metadata/records.ts';
import { opensAt, type ReaddirEntry } from '../metadata/state-machine.ts';
import { type BackendFacts, CACHE_TAG, type Chains, type FileFacts, resolve } from './chains.ts';

/** What the mover reads: the primary's own state machine. */
export interface MoverState {
  chains(): Promise<StoredChains | undefined>;
  queuedFiles(limit: number): Promise<Array<{ id: Uint8Array; queued: number }>>;
  inodesAfter(after: string, limit: number): Promise<Inode[]>;
  inode(id: Uint8Array): Promise<Inode | undefined>;
  readdir(parent: Uint8Array, options: { after?: string; limit?: number }): Promise<ReaddirEntry[]>;
  locations(object: Uint8Array): Promise<Array<{ backend: Uint8Array; location: Location }>>;
  backends(): Promise<BackendRecord[]>;
  servers(): Promise<ServerRecord[]>;
  access(id: Uint8Array): Promise<AccessStats | undefined>;
}

/** What the mover does: proposals and chunk transfers. */
export interface MoverIo {
  propose(command: Omit<Command, 'timeMs'>): Promise<Result>;
  readChunk(backend: Uint8Array, id: Uint8Array, size: number, hash: Uint8Array): Promise<Uint8Array>;
  writeChunk(backend: Uint8Array, id: Uint8Array, bytes: Uint8Array, hash: Uint8Array): Promise<void>;
  /** Copy an object between backends server to server; absent: read here, then write. */
  copyChunk?(from: Uint8Array, to: Uint8Array, id: Uint8Array, size: number, hash: Uint8Array): Promise<void>;
  deleteChunk(backend: Uint8Array, id: Uint8Array): Promise<void>;
  nowMs(): number;
}

export interface MoverOptions {
  readonly state: MoverState;
  readonly io: MoverIo;
  readonly logger?: Logger;
  /** Chunk copies in flight at most, and files placed at once (default 8). */
  readonly concurrency?: number;
  /** Copy throughput at most, bytes per second (default 0: unlimited). */
  readonly bytesPerSecond?: number;
  /** A pass over every file this often (default 10 minutes). */
  readonly scanIntervalMs?: number;
  /** The queue is looked at this often (default 1 s). */
  readonly pollMs?: number;
  /** Wake a sleeping server (the power manager); absent: copies wait for servers to wake. */
  readonly wake?: (server: Uint8Array, reason: string) => Promise<unknown>;
  /** Wake a sleeping destination once copies waited for it this long (default 12 h). */
  readonly wakeTargetsAfterMs?: number;
  /** Whether the controllers' cache tracks a copy on a cache backend (hex ids); others go. */
  readonly cacheTracks?: (object: string, backend: string) => boolean;
}

export interface PlacementPlan {
  files: number;
  filesToChange: number;
  objectsToCopy: number;
  bytesToCopy: number;
  objectsToRelease: number;
  bytesToRelease: number;
  flows: Array<{ from: string; to: string; objects: number; bytes: number }>;
  filesShort: number;
  chainsVersion: number;
}

export interface MoverStatus {
  active: boolean;
  phase: string;
  chainsVersion: number;
  queuedFiles: number;
  scannedFiles: number;
  totalFiles: number;
  copiesDone: number;
  bytesDone: number;
  copiesPlanned: number;
  bytesPlanned: number;
  copiesFailed: number;
  released: number;
  bytesPerSecond: number;
  etaMs: number;
  waiting: string[];
  lastError: string;
  passStartedMs: number;
  /** When the last completed pass ended (0: none yet); with passStartedMs its duration. */
  passFinishedMs: number;
  passes: number;
}

const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
const fromHex = (text: string) => new Uint8Array(Buffer.from(text, 'hex'));
const QUEUE_BATCH = 256;
/** The mover wakes one server at most this often. */
const WAKE_AGAIN_MS = 60_000;
const SCAN_PAGE = 512;

/** The cell's backends as the chains see them (awake: the server is online and powered on). */
export function backendFacts(
  backends: readonly BackendRecord[],
  servers: readonly ServerRecord[],
): BackendFacts[] {
  const byUuid = new Map(servers.map((server) => [hex(server.uuid), server]));
  return backends.map((backend) => {
    const server = byUuid.get(hex(backend.serverUuid));
    const power = server?.power ?? 'POWER_STATE_UNSPECIFIED';
    return {
      uuid: hex(backend.uuid),
      server: hex(backend.serverUuid),
      serverName: server?.name ?? '',
      tags: backend.tags,
      freeBytes: backend.freeBytes,
      awake: server?.online === true && (power === 'ON' || power === 'POWER_STATE_UNSPECIFIED'),
    };
  });
}

/** One chunk's work: copies to make (to, from) and copies to release. */
interface ChunkWork {
  id: Uint8Array;
  size: number;
  hash: Uint8Array;
  desired: string[];
  locations: Map<string, Location>;
  copies: Array<{ to: string; from: string }>;
  releases: string[];
  /** Desired backends whose server sleeps (copies wait). */
  asleep: string[];
  /** Servers (hex) that hold the only current copies while a desired backend is awake. */
  sources: string[];
}

export class Mover {
  readonly #state: MoverState;
  readonly #io: MoverIo;
  readonly #log: Logger;
  readonly #concurrency: number;
  readonly #bytesPerSecond: number;
  readonly #scanIntervalMs: number;
  readonly #pollMs: number;
  readonly #cacheTracks: (object: string, backend: string) => boolean;
  readonly #wake: ((server: Uint8Array, reason: string) => Promise<unknown>) | undefined;
  readonly #wakeTargetsAfterMs: number;
  readonly #waitingSince = new Map<string, number>();
  readonly #waitingInPass = new Set<string>();
  #slotsUsed = 0;
  readonly #slotWaiters: Array<() => void> = [];
  /** Servers copies waited for in the last pass: one of them awake again starts a pass. */
  #waitedFor = new Set<string>();
  readonly #wokenAt = new Map<string, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  #stopped = true;
  #busy: Promise<void> = Promise.resolve();
  #lastPassMs = 0;
  #passVersion = -1;
  #throttleUntil = 0;
  readonly #status: MoverStatus = {
    active: false,
    phase: 'idle',
    chainsVersion: 0,
    queuedFiles: 0,
    scannedFiles: 0,
    totalFiles: 0,
    copiesDone: 0,
    bytesDone: 0,
    copiesPlanned: 0,
    bytesPlanned: 0,
    copiesFailed: 0,
    released: 0,
    bytesPerSecond: 0,
    etaMs: 0,
    waiting: [],
    lastError: '',
    passStartedMs: 0,
    passFinishedMs: 0,
    passes: 0,
  };

  constructor(options: MoverOptions) {
    this.#state = options.state;
    this.#io = options.io;
    this.#log = (options.logger ?? silentLogger()).child({ module: 'mover' });
    this.#concurrency = Math.max(1, options.concurrency ?? 8);
    this.#bytesPerSecond = Math.max(0, options.bytesPerSecond ?? 0);
    this.#scanIntervalMs = options.scanIntervalMs ?? 10 * 60_000;
    this.#pollMs = options.pollMs ?? 1_000;
    this.#cacheTracks = options.cacheTracks ?? (() => false);
    this.#wake = options.wake;
    this.#wakeTargetsAfterMs = options.wakeTargetsAfterMs ?? 12 * 60 * 60_000;
  }

  /** Run (this controller became primary): a pass at once, then the queue and periodic passes. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#status.active = true;
    this.#passVersion = -1;
    this.#schedule(0);
  }

  /** Stop (no longer primary); resolves when the current step ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#status.active = false;
    this.#status.phase = 'idle';
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#busy;
  }

  status(): MoverStatus {
    return { ...this.#status, waiting: [...this.#status.waiting] };
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#busy = this.#tick().finally(() => this.#schedule(this.#pollMs));
    }, delayMs);
  }

  async #tick(): Promise<void> {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    try {
      const chains = await this.#state.chains();
      const due = this.#io.nowMs() - this.#lastPassMs >= this.#scanIntervalMs;
      if ((chains?.version ?? 0) !== this.#passVersion || due || (await this.#waitedForIsAwake()))
        await this.#pass(chains);
      else await this.#drainQueue(chains);
    } catch (error) {
      this.#status.lastError = (error as Error).message;
      this.#log.warn({ err: error }, 'mover step failed');
    } finally {
      this.#running = false;
      if (this.#status.phase !== 'idle') this.#status.phase = 'idle';
    }
  }

  /** Files written, renamed or truncated lately. */
  async #drainQueue(chains: StoredChains | undefined): Promise<void> {
    const queued = await this.#state.queuedFiles(QUEUE_BATCH);
    this.#status.queuedFiles = queued.length;
    if (queued.length === 0) return;
    this.#status.phase = 'moving';
    const facts = await this.#facts();
    const done: Array<{ id: Uint8Array; queued: number }> = [];
    for (const entry of queued) {
      if (this.#stopped) break;
      const inode = await this.#state.inode(entry.id);
      if (inode !== undefined) {
        for await (const [file, path] of this.#filesUnder(inode))
          await this.#placeFile(chains ?? null, file, path, facts);
      }
      done.push(entry);
    }
    if (done.length > 0) await this.#io.propose({ placementDone: { files: done } });
    this.#status.queuedFiles = Math.max(0, this.#status.queuedFiles - done.length);
  }

  /** A pass over every file: plan (count), then move. */
  async #pass(chains: StoredChains | undefined): Promise<void> {
    const started = this.#io.nowMs();
    Object.assign(this.#status, {
      phase: 'scanning',
      scannedFiles: 0,
      totalFiles: 0,
      copiesDone: 0,
      bytesDone: 0,
      copiesPlanned: 0,
      bytesPlanned: 0,
      copiesFailed: 0,
      released: 0,
      etaMs: 0,
      bytesPerSecond: 0,
      passStartedMs: started,
      waiting: [],
    });
    const facts = await this.#facts();
    const plan = await this.plan(chains ?? null, facts);
    this.#status.totalFiles = plan.files;
    this.#status.copiesPlanned = plan.objectsToCopy;
    this.#status.bytesPlanned = plan.bytesToCopy;
    this.#status.phase = 'moving';
    const paths = new PathCache(this.#state);
    let after = '';
    const waiting = new Set<string>();
    const inFlight = new Set<Promise<void>>();
    this.#waitingInPass.clear();
    for (;;) {
      if (this.#stopped) return;
      const page = await this.#state.inodesAfter(after, SCAN_PAGE);
      if (page.length === 0) break;
      after = hex(page.at(-1)!.id);
      for (const inode of page) {
        if (this.#stopped) return;
        if (inode.type !== 'FILE') continue;
        this.#status.scannedFiles += 1;
        const path = await paths.pathOf(inode);
        if (path === undefined) continue;
        // Several files at once (their chunk copies share the copy slots).
        const task: Promise<void> = this.#placeFile(chains ?? null, inode, path, facts).then((servers) => {
          for (const server of servers) waiting.add(server);
          this.#status.waiting = [...waiting];
        });
        inFlight.add(task);
        void task.finally(() => inFlight.delete(task));
        if (inFlight.size >= this.#concurrency) await Promise.race(inFlight);
      }
    }
    await Promise.all(inFlight);
    // Servers nothing waited for in this pass start their wait anew.
    for (const server of this.#waitingSince.keys())
      if (!this.#waitingInPass.has(server)) this.#waitingSince.delete(server);
    this.#waitedFor = new Set(this.#waitingInPass);
    this.#waitingInPass.clear();
    this.#passVersion = chains?.version ?? 0;
    this.#status.chainsVersion = chains?.version ?? 0;
    this.#lastPassMs = this.#io.nowMs();
    this.#status.passFinishedMs = this.#lastPassMs;
    this.#status.passes += 1;
    this.#log.info(
      {
        copies: this.#status.copiesDone,
        bytes: this.#status.bytesDone,
        released: this.#status.released,
        ms: this.#lastPassMs - started,
      },
      'placement pass done',
    );
  }

  async #waitedForIsAwake(): Promise<boolean> {
    if (this.#waitedFor.size === 0) return false;
    const servers = await this.#state.servers();
    return servers.some(
      (server) =>
        this.#waitedFor.has(hex(server.uuid)) &&
        server.online &&
        (server.power === 'ON' || server.power === 'POWER_STATE_UNSPECIFIED'),
    );
  }

  async #facts(): Promise<BackendFacts[]> {
    const [backends, servers] = await Promise.all([this.#state.backends(), this.#state.servers()]);
    return backendFacts(backends, servers);
  }

  /** The files under an inode (itself when a file), with their paths. */
  async *#filesUnder(inode: Inode): AsyncGenerator<[Inode, string]> {
    const paths = new PathCache(this.#state);
    const base = await paths.pathOf(inode);
    if (base === undefined) return;
    if (inode.type === 'FILE') {
      yield [inode, base];
      return;
    }
    if (inode.type !== 'DIRECTORY') return;
    const stack: Array<[Uint8Array, string]> = [[inode.id, base]];
    while (stack.length > 0) {
      const [directory, path] = stack.pop()!;
      let after: string | undefined;
      for (;;) {
        const entries = await this.#state.readdir(directory, { after, limit: 1_000 });
        if (entries.length === 0) break;
        after = entries.at(-1)!.name;
        for (const entry of entries) {
          const child = await this.#state.inode(entry.id);
          if (child === undefined) continue;
          const childPath = path === '/' ? `/${entry.name}` : `${path}/${entry.name}`;
          if (child.type === 'DIRECTORY') stack.push([child.id, childPath]);
          else if (child.type === 'FILE') yield [child, childPath];
        }
      }
    }
  }

  /** What one file's chunks need; shared by the plan and the move. */
  async #work(
    chains: Chains | null,
    inode: Inode,
    path: string,
    facts: BackendFacts[],
  ): Promise<{ chunks: ChunkWork[]; short: boolean }> {
    const now = this.#io.nowMs();
    // No chains: each chunk's D is its target bits (computed per chunk below).
    const resolved =
      chains === null
        ? undefined
        : resolve(
            chains,
            fileFacts(inode, path, await this.#state.access(inode.id), now),
            facts,
            now,
          ).targets.map((target) => target.backend);
    const awake = new Map(facts.map((fact) => [fact.uuid, fact.awake]));
    const cacheBackends = new Set(
      facts.filter((fact) => fact.tags.includes(CACHE_TAG)).map((fact) => fact.uuid),
    );
    const chunks: ChunkWork[] = [];
    for (const chunk of inode.chunks) {
      const locations = new Map(
        (await this.#state.locations(chunk.id)).map((entry) => [hex(entry.backend), entry.location]),
      );
      if (locations.size === 0) continue; // not stored yet (or being rewritten)
      const desired = resolved ?? [...locations].filter(([, l]) => l.target).map(([backend]) => backend);
      const current = [...locations].filter(([, l]) => l.current && !l.outdated).map(([b]) => b);
      const sources = current.filter((backend) => awake.get(backend) === true);
      const copies: Array<{ to: string; from: string }> = [];
      const asleep: string[] = [];
      let needsSource = false;
      for (const backend of desired) {
        if (current.includes(backend)) continue;
        if (awake.get(backend) === true && sources.length === 0) needsSource = true;
        if (awake.get(backend) !== true || sources.length === 0) asleep.push(backend);
        else copies.push({ to: backend, from: sources[copies.length % sources.length]! });
      }
      const serverOf = (backend: string) => facts.find((fact) => fact.uuid === backend)?.server ?? '';
      const sourceServers = needsSource ? [...new Set(current.map(serverOf))].filter((s) => s !== '') : [];
      // Copies outside D go, except the controllers' cache copies it tracks (a cache copy nobody
      // tracks, e.g. of a former primary's cache, goes too).
      const releases =
        desired.length > 0
          ? [...locations.keys()].filter(
              (backend) =>
                !desired.includes(backend) &&
                !(cacheBackends.has(backend) && this.#cacheTracks(hex(chunk.id), backend)),
            )
          : [];
      chunks.push({
        id: chunk.id,
        size: chunk.size,
        hash: chunk.hash,
        desired,
        locations,
        copies,
        releases,
        asleep,
        sources: sourceServers,
      });
    }
    return { chunks, short: resolved !== undefined && chains !== null && resolved.length < chains.copies };
  }

  /** Dry run: what these chains would copy and release, over every file. */
  async plan(chains: (Chains & { version?: number }) | null, facts?: BackendFacts[]): Promise<PlacementPlan> {
    const backendFacts_ = facts ?? (await this.#facts());
    const labels = new Map(
      backendFacts_.map((f) => [f.uuid, `${f.serverName || f.server.slice(0, 8)}:${f.uuid.slice(0, 8)}`]),
    );
    const label = (backend: string) => labels.get(backend) ?? backend.slice(0, 8);
    const plan: PlacementPlan = {
      files: 0,
      filesToChange: 0,
      objectsToCopy: 0,
      bytesToCopy: 0,
      objectsToRelease: 0,
      bytesToRelease: 0,
      flows: [],
      filesShort: 0,
      chainsVersion: (await this.#state.chains())?.version ?? 0,
    };
    const flows = new Map<string, { from: string; to: string; objects: number; bytes: number }>();
    const paths = new PathCache(this.#state);
    let after = '';
    for (;;) {
      const page = await this.#state.inodesAfter(after, SCAN_PAGE);
      if (page.length === 0) break;
      after = hex(page.at(-1)!.id);
      for (const inode of page) {
        if (inode.type !== 'FILE') continue;
        const path = await paths.pathOf(inode);
        if (path === undefined) continue;
        plan.files += 1;
        const { chunks, short } = await this.#work(chains, inode, path, backendFacts_);
        if (short) plan.filesShort += 1;
        let changes = false;
        for (const chunk of chunks) {
          const moves = [...chunk.copies, ...chunk.asleep.map((to) => ({ to, from: '' }))];
          for (const move of moves) {
            plan.objectsToCopy += 1;
            plan.bytesToCopy += chunk.size;
            const from = move.from === '' ? 'a current copy' : label(move.from);
            const key = `${from}\u0000${label(move.to)}`;
            const flow = flows.get(key) ?? { from, to: label(move.to), objects: 0, bytes: 0 };
            flow.objects += 1;
            flow.bytes += chunk.size;
            flows.set(key, flow);
          }
          plan.objectsToRelease += chunk.releases.length;
          plan.bytesToRelease += chunk.releases.length * chunk.size;
          if (moves.length > 0 || chunk.releases.length > 0) changes = true;
        }
        if (changes) plan.filesToChange += 1;
      }
    }
    plan.flows = [...flows.values()].sort((a, b) => b.bytes - a.bytes);
    return plan;
  }

  /** Bring one file's copies in line with the chains; returns the servers copies wait for. */
  async #placeFile(
    chains: Chains | null,
    inode: Inode,
    path: string,
    facts: BackendFacts[],
  ): Promise<string[]> {
    const { chunks } = await this.#work(chains, inode, path, facts);
    const waiting = new Set<string>();
    const serverOf = new Map(facts.map((fact) => [fact.uuid, fact.serverName || fact.server.slice(0, 8)]));
    const queue = [...chunks];
    const worker = async () => {
      for (;;) {
        const chunk = queue.shift();
        if (chunk === undefined || this.#stopped) return;
        try {
          await this.#inSlot(() => this.#placeChunk(chunk));
        } catch (error) {
          this.#status.copiesFailed += 1;
          this.#status.lastError = `${path}: ${(error as Error).message}`;
          this.#log.warn(
            { path, object: hex(chunk.id), err: error },
            'cannot place a copy; later pass retries',
          );
        }
        for (const backend of chunk.asleep) {
          waiting.add(serverOf.get(backend) ?? backend.slice(0, 8));
          const fact = facts.find((candidate) => candidate.uuid === backend);
          if (fact !== undefined && !fact.awake) this.#noteWaiting(fact.server, 'target');
        }
        // The desired backend is awake but every copy sleeps: the copy needs a source woken.
        if (chunk.sources.length > 0) this.#noteWaiting(chunk.sources[0]!, 'source');
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#concurrency, queue.length) }, worker));
    return [...waiting];
  }

  /** Run a chunk's placement in one of `concurrency` copy slots. */
  async #inSlot<T>(work: () => Promise<T>): Promise<T> {
    while (this.#slotsUsed >= this.#concurrency)
      await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
    this.#slotsUsed += 1;
    try {
      return await work();
    } finally {
      this.#slotsUsed -= 1;
      this.#slotWaiters.shift()?.();
    }
  }

  async #placeChunk(chunk: ChunkWork): Promise<void> {
    const desired = new Set(chunk.desired);
    const copiedNow = new Set(chunk.copies.map((copy) => copy.to));
    const releasedNow = chunk.asleep.length === 0 && chunk.desired.length > 0;
    // 1. Target bits where the chains want a copy: a copy made right away is recorded current
    //    and target in one step (below); a copy that waits for a sleeping server gets its bit
    //    now (the power manager keeps pending targets in mind). Bits elsewhere are cleared,
    //    unless those copies are released in this same step.
    for (const backend of chunk.desired) {
      const location = chunk.locations.get(backend);
      if (location?.target === true || copiedNow.has(backend)) continue;
      await this.#placeCopy(chunk.id, backend, {
        outdated: location?.outdated ?? false,
        current: location?.current ?? false,
        target: true,
        mtimeMs: location?.mtimeMs ?? 0,
      });
    }
    for (const [backend, location] of chunk.locations) {
      if (desired.has(backend) || !location.target || !location.current) continue;
      if (releasedNow && chunk.releases.includes(backend)) continue;
      await this.#placeCopy(chunk.id, backend, { ...location, target: false });
    }
    // 2. Copies to awake backends, each verified by the receiving server before it counts.
    for (const copy of chunk.copies) {
      await this.#throttle(chunk.size);
      if (this.#io.copyChunk !== undefined) {
        await this.#io.copyChunk(fromHex(copy.from), fromHex(copy.to), chunk.id, chunk.size, chunk.hash);
      } else {
        const bytes = await this.#io.readChunk(fromHex(copy.from), chunk.id, chunk.size, chunk.hash);
        await this.#io.writeChunk(fromHex(copy.to), chunk.id, bytes, chunk.hash);
      }
      await this.#placeCopy(chunk.id, copy.to, { outdated: false, current: true, target: true, mtimeMs: 0 });
      this.#status.copiesDone += 1;
      this.#status.bytesDone += chunk.size;
      this.#updateRate();
    }
    // 3. Releases, only when every desired backend holds a current copy.
    if (chunk.asleep.length > 0 || chunk.desired.length === 0) return;
    for (const backend of chunk.releases) {
      const result = await this.#io.propose({
        placeCopy: { object: chunk.id, backend: fromHex(backend), remove: true },
      });
      if (result.code !== 'OK') {
        if (result.code === 'NOT_FOUND') return; // the object was released meanwhile
        throw new Error(`release refused: ${result.message}`);
      }
      await this.#io.deleteChunk(fromHex(backend), chunk.id).catch((error: unknown) => {
        // The record is gone: the bytes are garbage that a scrub collects.
        this.#log.warn({ backend, object: hex(chunk.id), err: error }, 'cannot delete a released copy');
      });
      this.#status.released += 1;
    }
  }

  /**
   * Copies wait for a sleeping server. A source (the only copies sleep while the destination is
   * awake, and its pending target keeps it awake) is woken at once; a sleeping destination after
   * its copies waited `wakeTargetsAfterMs` (they are batched: the server wakes for them all).
   */
  #noteWaiting(server: string, role: 'source' | 'target'): void {
    this.#waitingInPass.add(server);
    if (this.#wake === undefined) return;
    const now = this.#io.nowMs();
    const since = this.#waitingSince.get(server) ?? now;
    this.#waitingSince.set(server, since);
    if (role === 'target' && now - since < this.#wakeTargetsAfterMs) return;
    if (now - (this.#wokenAt.get(server) ?? 0) < WAKE_AGAIN_MS) return;
    this.#wokenAt.set(server, now);
    this.#waitingSince.delete(server);
    const reason =
      role === 'source'
        ? 'mover: the only copies to move are here'
        : 'mover: copies have waited for this server';
    void this.#wake(fromHex(server), reason).catch((error: unknown) =>
      this.#log.warn({ server, err: error }, 'mover cannot wake a server'),
    );
  }

  async #placeCopy(object: Uint8Array, backend: string, location: Location): Promise<void> {
    const result = await this.#io.propose({ placeCopy: { object, backend: fromHex(backend), location } });
    if (result.code !== 'OK' && result.code !== 'NOT_FOUND')
      throw new Error(`placeCopy refused: ${result.message}`);
  }

  async #throttle(bytes: number): Promise<void> {
    if (this.#bytesPerSecond === 0) return;
    const now = this.#io.nowMs();
    const start = Math.max(now, this.#throttleUntil);
    this.#throttleUntil = start + (bytes / this.#bytesPerSecond) * 1000;
    if (start > now) await new Promise((resolve) => setTimeout(resolve, start - now));
  }

  #updateRate(): void {
    const elapsed = Math.max(1, this.#io.nowMs() - this.#status.passStartedMs);
    this.#status.bytesPerSecond = (this.#status.bytesDone * 1000) / elapsed;
    const left = Math.max(0, this.#status.bytesPlanned - this.#status.bytesDone);
    this.#status.etaMs =
      this.#status.bytesPerSecond > 0 ? Math.round((left / this.#status.bytesPerSecond) * 1000) : 0;
  }
}

/** A file as the chains see it. */
export function fileFacts(
  inode: Inode,
  path: string,
  access: AccessStats | undefined,
  nowMs: number,
): FileFacts {
  return {
    path,
    size: inode.size,
    mtimeMs: inode.mtimeMs,
    atimeMs: access?.openedMs ?? 0,
    opens: opensAt(access, nowMs),
  };
}

/** Paths of inodes from their parent links, with directory paths cached. */
class PathCache {
  readonly #state: MoverState;
  readonly #directories = new Map<string, string | undefined>();
  constructor(state: MoverState) {
    this.#state = state;
  }

  async pathOf(inode: Inode): Promise<string | undefined> {
    if (inode.parent.length === 0 || hex(inode.parent) === hex(inode.id)) return '/';
    const parent = await this.#directoryPath(inode.parent, 0);
    if (parent === undefined) return undefined;
    return parent === '/' ? `/${inode.name}` : `${parent}/${inode.name}`;
  }

  async #directoryPath(id: Uint8Array, depth: number): Promise<string | undefined> {
    const key = hex(id);
    if (this.#directories.has(key)) return this.#directories.get(key);
    if (depth > 4096) return undefined;
    const inode = await this.#state.inode(id);
    let path: string | undefined;
    if (inode === undefined) path = undefined;
    else if (inode.parent.length === 0 || hex(inode.parent) === key) path = '/';
    else {
      const parent = await this.#directoryPath(inode.parent, depth + 1);
      path = parent === undefined ? undefined : parent === '/' ? `/${inode.name}` : `${parent}/${inode.name}`;
    }
    this.#directories.set(key, path);
    return path;
  }
}
