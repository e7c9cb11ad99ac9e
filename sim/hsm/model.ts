/**
 * The HSM simulation: storage servers with backends and power states, files placed by the resolve
 * chains, a controller cache, readers, writers, the mover and the power loop, in virtual time.
 *
 * It runs the project's pure decision code unchanged: `parseChains`/`resolve`
 * (node/hsm/chains.ts) for placement, `decide`/`isAwake`/`isPending`/`chooseWakeTarget`
 * (node/hsm/power-policy.ts) for power, and `CachePolicy` (node/hsm/cache-policy.ts) for the
 * cache. What the real daemon does with I/O (power scripts, boots, transfers, the mover's copies)
 * is modelled here as events with seeded durations and faults. Time is virtual (ms, scheduled on
 * sim/event-queue.ts in µs); all randomness comes from sim/prng.ts streams forked from the seed.
 *
 * Invariants, checked after every event (a violation throws `HsmViolation`, which names the seed):
 * - `acknowledged-write-lost`: the bytes of every acknowledged version are on some backend;
 * - `no-current-copy`: every file has at least one verified current copy (a location marked
 *   current whose backend holds those bytes);
 * - `power-off-with-pending`: no power-off is started while a pending write or migration
 *   (a location with target set and current not set, or a write or copy in flight) targets the
 *   server, and no write or copy is in flight to a server when it goes off.
 */
import { CachePolicy, type CachePolicyConfig } from '../../node/hsm/cache-policy.ts';
import {
  type BackendFacts,
  type Chains,
  type FileFacts,
  parseChains,
  resolve,
} from '../../node/hsm/chains.ts';
import {
  chooseWakeTarget,
  decide,
  isAwake,
  isPending,
  type PowerAction,
  type PowerInputs,
} from '../../node/hsm/power-policy.ts';
import type { PowerConfig, PowerPolicy, PowerState, ServerRecord } from '../../node/metadata/records.ts';
import { EventQueue } from '../event-queue.ts';
import { hashLabel, Prng } from '../prng.ts';

export type HsmViolationCode = 'acknowledged-write-lost' | 'no-current-copy' | 'power-off-with-pending';

export class HsmViolation extends Error {
  readonly code: HsmViolationCode;
  readonly atMs: number;
  constructor(code: HsmViolationCode, message: string, atMs: number) {
    super(`${code}: ${message}`);
    this.code = code;
    this.atMs = atMs;
  }
}

/** Deliberately broken variants (the checker must catch each). */
export interface HsmFaults {
  /** The mover drops copies outside the targets before the new copies are current. */
  readonly releaseBeforeCopy?: boolean;
  /** The power layer ignores pending work (no pending set, no re-check before powering off). */
  readonly ignorePending?: boolean;
  /** A write with no awake destination is acknowledged at once (target bits only, no bytes). */
  readonly ackWithoutCopy?: boolean;
}

export interface ServerSpec {
  readonly name: string;
  readonly tags: readonly string[];
  readonly backends: number;
  readonly backendBytes: number;
  /** From a successful on-script to registration (a RAID may need up to 5 minutes). */
  readonly bootDelayMs: number;
  /** The server never comes up (its on-script succeeds, it never registers). */
  readonly neverStarts?: boolean;
}

export interface PowerScriptModel {
  readonly scriptMsMin: number;
  readonly scriptMsMax: number;
  /** Per attempt: the script exits non-zero. */
  readonly failChance: number;
  /** Per attempt: the script hangs and is killed at `timeoutMs`. */
  readonly hangChance: number;
  readonly timeoutMs: number;
  readonly retries: number;
  readonly retryDelayMs: number;
}

export interface HsmConfig {
  readonly seed: number;
  readonly servers: readonly ServerSpec[];
  readonly chains: string;
  readonly policy: PowerPolicy;
  readonly powerTickMs: number;
  readonly scripts: PowerScriptModel;
  /** Per wake: the boot takes `slowWakeExtraMs` longer. */
  readonly slowWakeChance: number;
  readonly slowWakeExtraMs: number;
  readonly cache: CachePolicyConfig;
  readonly preWake: boolean;
  readonly mover: {
    readonly concurrency: number;
    readonly bytesPerMs: number;
    /** Look at pending work this often even when nothing changed. */
    readonly tickMs: number;
    /** Wake a sleeping target whose pending copies are older than this (0: never). */
    readonly batchAgeMs: number;
  };
  /** Client <-> storage server throughput. */
  readonly transferBytesPerMs: number;
  /** A read or write waits this long for a wake-up at most, then fails (EIO / retry later). */
  readonly waitMaxMs: number;
  readonly startAsleep: boolean;
  readonly faults?: HsmFaults;
  readonly trace?: boolean;
}

interface SimBackend {
  readonly index: number;
  readonly uuid: string;
  readonly server: number;
  readonly tags: readonly string[];
  capacity: number;
  /** Bytes of objects stored, plus reservations of transfers in flight. */
  used: number;
  /** Bytes of other data (the "backend filling up" fault). */
  foreign: number;
  /** The objects' bytes on this backend: file -> version. */
  readonly store: Map<number, number>;
  /** Their sizes: file -> bytes. */
  readonly sizes: Map<number, number>;
  /** Released objects whose bytes are deleted when the server is up again. */
  readonly garbage: Set<number>;
}

interface SimServer {
  readonly index: number;
  readonly key: string;
  readonly spec: ServerSpec;
  readonly record: ServerRecord;
  readonly config: PowerConfig;
  readonly backends: number[];
  busy: boolean;
  wakeQueued: string | undefined;
  /** Locations on its backends with target set and current not set. */
  pending: number;
  writesIn: number;
  copiesIn: number;
  stateSinceMs: number;
  readonly timeIn: Map<PowerState, number>;
  /** The last boot's duration (pre-wake estimates with it). */
  bootEstimateMs: number;
  wakeStartedMs: number;
}

interface Loc {
  readonly backend: number;
  current: boolean;
  target: boolean;
  version: number;
  /** When the target bit was set on a location not current (batch age). */
  pendingSinceMs: number;
  inFlight: boolean;
}

export interface SimFile {
  readonly id: number;
  readonly path: string;
  readonly folder: number;
  size: number;
  /** The acknowledged version (0: none yet). */
  version: number;
  mtimeMs: number;
  atimeMs: number;
  opens: number;
  readonly locs: Loc[];
}

export interface Folder {
  readonly path: string;
  readonly files: number[];
}

interface Waiter {
  readonly kind: 'read' | 'write';
  readonly file: number;
  readonly sinceMs: number;
  readonly size: number;
  readonly done: (ok: boolean) => void;
  woken: string | undefined;
  finished: boolean;
}

export interface ReadSession {
  readonly folder: number;
  /** Positions in the folder still to read, in order. */
  readonly positions: number[];
  readonly thinkMeanMs: number;
  lastReadMs: number;
  reads: number;
  gapMsSum: number;
  gaps: number;
  readonly preWoken: Set<number>;
}

export interface HsmStats {
  sinceMs: number;
  reads: number;
  readsCache: number;
  readsAwake: number;
  readsWaited: number;
  readsFailed: number;
  readWaitsMs: number[];
  writes: number;
  writesWaited: number;
  writesFailed: number;
  writeWaitsMs: number[];
  acknowledged: number;
  bytesWritten: number;
  bytesMoved: number;
  copies: number;
  copiesAborted: number;
  releases: number;
  wakes: Record<string, number>;
  powerOffs: number;
  scriptFailures: number;
  scriptHangs: number;
  failedToStart: number;
  failedToStop: number;
  preWakes: number;
}

function emptyStats(sinceMs: number): HsmStats {
  return {
    sinceMs,
    reads: 0,
    readsCache: 0,
    readsAwake: 0,
    readsWaited: 0,
    readsFailed: 0,
    readWaitsMs: [],
    writes: 0,
    writesWaited: 0,
    writesFailed: 0,
    writeWaitsMs: [],
    acknowledged: 0,
    bytesWritten: 0,
    bytesMoved: 0,
    copies: 0,
    copiesAborted: 0,
    releases: 0,
    wakes: {},
    powerOffs: 0,
    scriptFailures: 0,
    scriptHangs: 0,
    failedToStart: 0,
    failedToStop: 0,
    preWakes: 0,
  };
}

interface Event {
  readonly label: string;
  readonly run: () => void;
}

/** Pre-wake a server this much earlier than its boot time says (scripts, the power loop). */
export const PRE_WAKE_MARGIN_MS = 60_000;
/** The mover looks at changed work this often. */
export const MOVER_POLL_MS = 1_000;

const hexOf = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

export class HsmSim {
  readonly config: HsmConfig;
  readonly faults: HsmFaults;
  readonly servers: SimServer[] = [];
  readonly backends: SimBackend[] = [];
  readonly files: SimFile[] = [];
  readonly folders: Folder[] = [];
  readonly cache: CachePolicy;
  readonly traceLines: string[] = [];
  stats: HsmStats;
  chains: Chains;
  #now = 0;
  #events = 0;
  #hash = 0x811c9dc5;
  readonly #queue = new EventQueue<Event>({ sizeMax: 5_000_000 });
  readonly #rng: Prng;
  readonly #scriptRng: Prng;
  readonly #lastAccess = new Map<string, number>();
  readonly #serverByKey = new Map<string, SimServer>();
  readonly #waiters: Waiter[] = [];
  readonly #moverWork = new Set<number>();
  #moverDirty = false;
  #copiesInFlight = 0;
  readonly #dirty = new Set<number>();
  readonly #pathIndex = new Map<string, number>();

  constructor(config: HsmConfig) {
    this.config = config;
    this.faults = config.faults ?? {};
    this.#rng = new Prng(config.seed).fork('hsm');
    this.#scriptRng = this.#rng.fork('scripts');
    this.chains = parseChains(config.chains);
    this.cache = new CachePolicy(config.cache);
    this.stats = emptyStats(0);
    const ids = this.#rng.fork('uuids');
    config.servers.forEach((spec, index) => {
      const uuid = new Uint8Array(16);
      for (let i = 0; i < 16; i += 4) new DataView(uuid.buffer).setUint32(i, ids.nextUint32());
      // Server uuids sort by index, so that ties in chooseWakeTarget are read easily.
      uuid[0] = index;
      const key = hexOf(uuid);
      const power: PowerState = config.startAsleep ? 'SLEEPING' : 'ON';
      const server: SimServer = {
        index,
        key,
        spec,
        record: {
          uuid,
          peerId: `sim-peer-${spec.name}`,
          name: spec.name,
          addresses: [],
          power,
          registeredMs: 0,
          lastSeenMs: 0,
          online: power === 'ON',
          lastAccessMs: 0,
          powerChangedMs: 0,
          powerReason: 'initial',
          powerFailures: 0,
        },
        config: {
          serverUuid: uuid,
          driver: 'command',
          onCommand: `power-on ${spec.name}`,
          offCommand: `power-off ${spec.name}`,
          timeoutMs: config.scripts.timeoutMs,
          retries: config.scripts.retries,
          retryDelayMs: config.scripts.retryDelayMs,
          simBootDelayMs: spec.bootDelayMs,
        },
        backends: [],
        busy: false,
        wakeQueued: undefined,
        pending: 0,
        writesIn: 0,
        copiesIn: 0,
        stateSinceMs: 0,
        timeIn: new Map(),
        bootEstimateMs: spec.bootDelayMs,
        wakeStartedMs: 0,
      };
      for (let b = 0; b < spec.backends; b++) {
        const backendUuid = `${key.slice(0, 8)}${b.toString(16).padStart(2, '0')}${key.slice(10)}`;
        const backend: SimBackend = {
          index: this.backends.length,
          uuid: backendUuid,
          server: index,
          tags: spec.tags,
          capacity: spec.backendBytes,
          used: 0,
          foreign: 0,
          store: new Map(),
          sizes: new Map(),
          garbage: new Set(),
        };
        server.backends.push(backend.index);
        this.backends.push(backend);
      }
      this.servers.push(server);
      this.#serverByKey.set(key, server);
    });
    this.#every(config.powerTickMs, 'power', () => this.#powerTick());
    // The mover looks at its work when something changed (polled each second, as the real one)
    // and every tickMs in any case (batch ages).
    this.#every(MOVER_POLL_MS, 'mover-poll', () => {
      if (this.#moverDirty) this.#moverPass();
    });
    this.#every(config.mover.tickMs, 'mover', () => this.#moverPass());
  }

  get nowMs(): number {
    return this.#now;
  }

  get events(): number {
    return this.#events;
  }

  get traceHash(): string {
    return (this.#hash >>> 0).toString(16).padStart(8, '0');
  }

  /** A stream for the scenario or workload, derived from the seed. */
  rng(label: string): Prng {
    return this.#rng.fork(label);
  }

  log(line: string): void {
    if (this.config.trace) this.traceLines.push(`${(this.#now / 1000).toFixed(3).padStart(10)} ${line}`);
  }

  // ---- events -------------------------------------------------------------------------------------

  at(timeMs: number, label: string, run: () => void): void {
    this.#queue.push(Math.round(Math.max(timeMs, this.#now) * 1000), { label, run });
  }

  after(delayMs: number, label: string, run: () => void): void {
    this.at(this.#now + Math.max(0, delayMs), label, run);
  }

  #every(periodMs: number, label: string, run: () => void): void {
    const tick = () => {
      run();
      this.after(periodMs, label, tick);
    };
    this.after(periodMs, label, tick);
  }

  /** Run events until virtual time `untilMs`; throws HsmViolation. */
  run(untilMs: number): void {
    for (;;) {
      const next = this.#queue.peekTimeUs();
      if (next === undefined || next > untilMs * 1000) break;
      const event = this.#queue.pop()!;
      this.#now = event.timeUs / 1000;
      this.#events++;
      this.#fold(`${event.timeUs} ${event.payload.label}`);
      event.payload.run();
      this.#check();
    }
    this.#now = Math.max(this.#now, untilMs);
    this.#accountAll();
  }

  #fold(text: string): void {
    this.#hash = Math.imul(this.#hash ^ hashLabel(text), 0x01000193) >>> 0;
  }

  // ---- setup ----------------------------------------------------------------------------------------

  folder(path: string): number {
    this.folders.push({ path, files: [] });
    return this.folders.length - 1;
  }

  /** A file that exists at the start, placed where the chains say (copies current). */
  seedFile(folder: number, name: string, size: number, mtimeMs: number, opens = 0): SimFile {
    const file = this.#newFile(folder, name, size);
    file.mtimeMs = mtimeMs;
    file.opens = opens;
    file.version = 1;
    const targets = this.#resolveTargets(file, false);
    for (const backend of targets) {
      this.#putBytes(this.backends[backend]!, file.id, 1, size);
      file.locs.push({
        backend,
        current: true,
        target: true,
        version: 1,
        pendingSinceMs: 0,
        inFlight: false,
      });
    }
    if (targets.length === 0) throw new Error(`no backend for ${file.path}`);
    return file;
  }

  #newFile(folder: number, name: string, size: number): SimFile {
    const path = `${this.folders[folder]!.path}/${name}`;
    const file: SimFile = {
      id: this.files.length,
      path,
      folder,
      size,
      version: 0,
      mtimeMs: this.#now,
      atimeMs: 0,
      opens: 0,
      locs: [],
    };
    this.files.push(file);
    this.folders[folder]!.files.push(file.id);
    this.#pathIndex.set(path, file.id);
    return file;
  }

  fileByPath(path: string): SimFile | undefined {
    const id = this.#pathIndex.get(path);
    return id === undefined ? undefined : this.files[id];
  }

  /** Start measuring afresh (after a warm-up). */
  resetStats(): void {
    this.#accountAll();
    for (const server of this.servers) server.timeIn.clear();
    this.stats = emptyStats(this.#now);
    this.cache.stats.hits = 0;
    this.cache.stats.misses = 0;
    this.cache.stats.admissions = 0;
    this.cache.stats.evictions = 0;
    this.cache.stats.invalidations = 0;
  }

  // ---- placement ------------------------------------------------------------------------------------

  backendFacts(): BackendFacts[] {
    return this.backends.map((b) => {
      const server = this.servers[b.server]!;
      return {
        uuid: b.uuid,
        server: server.key,
        serverName: server.spec.name,
        tags: b.tags,
        freeBytes: b.capacity - b.used - b.foreign,
        awake: isAwake(server.record),
      };
    });
  }

  #facts(file: SimFile, size = file.size): FileFacts {
    return { path: file.path, size, mtimeMs: file.mtimeMs, atimeMs: file.atimeMs, opens: file.opens };
  }

  #backendIndex = new Map<string, number>();
  #byUuid(uuid: string): number {
    if (this.#backendIndex.size === 0) for (const b of this.backends) this.#backendIndex.set(b.uuid, b.index);
    return this.#backendIndex.get(uuid)!;
  }

  #resolveTargets(
    file: SimFile,
    awakeOnly: boolean,
    size = file.size,
    exclude?: ReadonlySet<string>,
  ): number[] {
    const resolution = resolve(this.chains, this.#facts(file, size), this.backendFacts(), this.#now, {
      awakeOnly,
      ...(exclude === undefined ? {} : { exclude }),
    });
    return resolution.targets.map((t) => this.#byUuid(t.backend));
  }

  /** Set the target bits of a file to `targets` (pending counts kept). */
  #setTargets(file: SimFile, targets: readonly number[]): void {
    const want = new Set(targets);
    for (const loc of file.locs) {
      if (want.has(loc.backend) !== loc.target) this.#updateLoc(file, loc, { target: want.has(loc.backend) });
      want.delete(loc.backend);
    }
    for (const backend of want) {
      const loc: Loc = {
        backend,
        current: false,
        target: false,
        version: 0,
        pendingSinceMs: this.#now,
        inFlight: false,
      };
      file.locs.push(loc);
      this.#updateLoc(file, loc, { target: true });
    }
    this.#moverWork.add(file.id);
    this.#moverDirty = true;
    this.#dirty.add(file.id);
  }

  #updateLoc(file: SimFile, loc: Loc, patch: Partial<Pick<Loc, 'current' | 'target' | 'version'>>): void {
    const server = this.servers[this.backends[loc.backend]!.server]!;
    const before = isPending(loc);
    if (patch.current !== undefined) loc.current = patch.current;
    if (patch.target !== undefined) loc.target = patch.target;
    if (patch.version !== undefined) loc.version = patch.version;
    const after = isPending(loc);
    if (after && !before) {
      server.pending++;
      loc.pendingSinceMs = this.#now;
    } else if (before && !after) server.pending--;
    this.#dirty.add(file.id);
  }

  #dropLoc(file: SimFile, loc: Loc): void {
    if (isPending(loc)) this.servers[this.backends[loc.backend]!.server]!.pending--;
    file.locs.splice(file.locs.indexOf(loc), 1);
    this.#dirty.add(file.id);
  }

  /** Locations holding the acknowledged version (verified current copies). */
  currentLocs(file: SimFile): Loc[] {
    return file.locs.filter(
      (loc) =>
        loc.current &&
        loc.version === file.version &&
        this.backends[loc.backend]!.store.get(file.id) === file.version,
    );
  }

  /** New chains: every file's targets are resolved again (the mover moves). */
  setChains(text: string): void {
    this.chains = parseChains(text);
    this.log(`chains changed (${this.chains.rows.length} rows, copies ${this.chains.copies})`);
    for (const file of this.files)
      if (file.version > 0) this.#setTargets(file, this.#resolveTargets(file, false));
  }

  /** Other data fills a backend up to `fraction` of its capacity. */
  fillBackend(backend: number, fraction: number): void {
    const b = this.backends[backend]!;
    b.foreign = Math.max(0, Math.floor(b.capacity * fraction) - b.used);
    this.log(`backend ${b.uuid.slice(0, 8)} filled to ${(fraction * 100).toFixed(0)} %`);
  }

  // ---- power ----------------------------------------------------------------------------------------

  #pendingFor(server: SimServer): boolean {
    return server.pending > 0 || server.writesIn > 0 || server.copiesIn > 0;
  }

  #setPower(server: SimServer, state: PowerState, failures: number, reason: string): void {
    this.#account(server);
    const record = server.record;
    this.log(`power ${record.name} ${record.power} -> ${state} (${reason})`);
    if (state === 'FAILED_TO_START' && record.power !== 'FAILED_TO_START') this.stats.failedToStart++;
    if (state === 'FAILED_TO_STOP') this.stats.failedToStop++;
    record.power = state;
    record.powerChangedMs = this.#now;
    record.powerFailures = failures;
    record.powerReason = reason;
    if (state === 'SLEEPING') record.online = false;
  }

  #account(server: SimServer): void {
    const state = server.record.power;
    server.timeIn.set(state, (server.timeIn.get(state) ?? 0) + (this.#now - server.stateSinceMs));
    server.stateSinceMs = this.#now;
  }

  #accountAll(): void {
    for (const server of this.servers) this.#account(server);
  }

  #powerTick(): void {
    const pending = new Set<string>();
    if (!this.faults.ignorePending)
      for (const server of this.servers) if (this.#pendingFor(server)) pending.add(server.key);
    const inputs: PowerInputs = {
      nowMs: this.#now,
      policy: this.config.policy,
      servers: this.servers.map((s) => s.record),
      configs: new Map(this.servers.map((s) => [s.key, s.config])),
      lastAccess: this.#lastAccess,
      protectedPeers: new Set(),
      pending,
      busy: new Set(this.servers.filter((s) => s.busy).map((s) => s.key)),
    };
    for (const action of decide(inputs)) this.#act(action);
    this.#serveWaiters();
  }

  #act(action: PowerAction): void {
    const server = this.#serverByKey.get(hexOf(action.server.uuid))!;
    if (action.kind === 'mark') {
      if (action.expected.includes(server.record.power))
        this.#setPower(server, action.state, action.failures, action.reason);
      if (action.state === 'ON') this.#moverDirty = true;
    } else if (action.kind === 'sleep') this.#sleep(server, action.reason);
    else this.#wake(server, action.reason, 'retry');
  }

  #sleep(server: SimServer, reason: string): void {
    if (server.busy) return;
    const record = server.record;
    const failuresBefore = record.power === 'FAILED_TO_STOP' ? (record.powerFailures ?? 0) : 0;
    this.#setPower(server, 'GOING_DOWN', record.powerFailures ?? 0, reason);
    // As the PowerManager does: a write may have been placed on it since the decision.
    if (!this.faults.ignorePending && this.#pendingFor(server)) {
      this.#setPower(server, 'ON', 0, 'pending work targets it; stays on');
      return;
    }
    if (this.#pendingFor(server))
      this.#violation(
        'power-off-with-pending',
        `${record.name} powered off with pending work (${server.pending} pending location(s), ${server.writesIn} write(s) and ${server.copiesIn} copy(ies) in flight)`,
      );
    server.busy = true;
    this.#script(server, 'off', (ok, detail) => {
      server.busy = false;
      if (ok) {
        if (server.writesIn > 0 || server.copiesIn > 0)
          this.#violation(
            'power-off-with-pending',
            `${record.name} went off with ${server.writesIn} write(s) and ${server.copiesIn} copy(ies) in flight`,
          );
        this.stats.powerOffs++;
        this.#setPower(server, 'SLEEPING', 0, reason);
      } else this.#setPower(server, 'FAILED_TO_STOP', failuresBefore + 1, detail);
      const queued = server.wakeQueued;
      server.wakeQueued = undefined;
      if (queued !== undefined) this.#wake(server, 'woken after a power-down', queued);
    });
  }

  /** Ask for a server to be up (a read, a write, the mover, pre-wake). */
  requestWake(server: SimServer, why: string): void {
    const power = server.record.power;
    if (server.busy) {
      if (power === 'GOING_DOWN') server.wakeQueued ??= why;
      return;
    }
    if (power === 'SLEEPING' || power === 'FAILED_TO_START' || power === 'GOING_DOWN')
      this.#wake(server, `woken for ${why}`, why);
  }

  #wake(server: SimServer, reason: string, why: string): void {
    if (server.busy) {
      server.wakeQueued ??= why;
      return;
    }
    const record = server.record;
    if (
      record.online &&
      record.power !== 'SLEEPING' &&
      record.power !== 'GOING_DOWN' &&
      record.power !== 'FAILED_TO_START'
    )
      return;
    this.stats.wakes[why] = (this.stats.wakes[why] ?? 0) + 1;
    const failures = record.powerFailures ?? 0;
    this.#setPower(server, 'WAKING', failures, reason);
    server.busy = true;
    server.wakeStartedMs = this.#now;
    this.#script(server, 'on', (ok, detail) => {
      server.busy = false;
      if (!ok) {
        if (record.power === 'WAKING') this.#setPower(server, 'FAILED_TO_START', failures + 1, detail);
        return;
      }
      if (server.spec.neverStarts) return;
      const slow = this.#scriptRng.chance(this.config.slowWakeChance) ? this.config.slowWakeExtraMs : 0;
      this.after(server.spec.bootDelayMs + slow, `register ${record.name}`, () => this.#register(server));
    });
  }

  #register(server: SimServer): void {
    const record = server.record;
    if (record.power !== 'WAKING' && record.power !== 'FAILED_TO_START') return;
    record.online = true;
    record.lastSeenMs = this.#now;
    server.bootEstimateMs = this.#now - server.wakeStartedMs;
    this.log(
      `register ${record.name} (up ${((this.#now - server.wakeStartedMs) / 1000).toFixed(1)} s after the wake)`,
    );
    // Released objects are deleted now that the server is up.
    for (const backend of server.backends) {
      const b = this.backends[backend]!;
      for (const id of b.garbage) this.#deleteBytes(b, id);
      b.garbage.clear();
    }
    this.#moverDirty = true;
    this.#serveWaiters();
  }

  /** The power driver: the command with a timeout and retries (delay doubled per retry). */
  #script(server: SimServer, what: 'on' | 'off', done: (ok: boolean, detail: string) => void): void {
    const model = this.config.scripts;
    const attempts = 1 + model.retries;
    let delay = model.retryDelayMs;
    const attempt = (n: number) => {
      const hang = this.#scriptRng.chance(model.hangChance);
      const fail = !hang && this.#scriptRng.chance(model.failChance);
      const took = hang ? model.timeoutMs : this.#scriptRng.range(model.scriptMsMin, model.scriptMsMax);
      this.after(took, `${what}-script ${server.spec.name} #${n}`, () => {
        if (!hang && !fail) {
          done(true, '');
          return;
        }
        this.stats.scriptFailures++;
        if (hang) this.stats.scriptHangs++;
        const why = hang ? `timed out after ${model.timeoutMs} ms (killed)` : 'exit code 1';
        this.log(`power ${what} script for ${server.spec.name} failed: ${why}`);
        if (n < attempts) {
          this.after(delay, `${what}-retry ${server.spec.name}`, () => attempt(n + 1));
          delay *= 2;
        } else done(false, `power ${what} command for ${server.spec.name} failed ${attempts} times: ${why}`);
      });
    };
    attempt(1);
  }

  #touch(server: SimServer): void {
    this.#lastAccess.set(server.key, this.#now);
    server.record.lastAccessMs = this.#now;
  }

  serverOf(backend: number): SimServer {
    return this.servers[this.backends[backend]!.server]!;
  }

  // ---- reads ----------------------------------------------------------------------------------------

  /** Read a file; `done(ok)` when it was served (or failed). Returns how it was served. */
  read(
    fileId: number,
    done: (ok: boolean) => void,
    session?: ReadSession,
  ): 'cache' | 'awake' | 'wait' | 'none' {
    const file = this.files[fileId]!;
    this.stats.reads++;
    file.opens++;
    file.atimeMs = this.#now;
    if (this.cache.lookup(String(file.id), file.version) === 'hit') {
      this.stats.readsCache++;
      if (session !== undefined && this.config.preWake) this.#preWake(session);
      this.after(1, `read-cache f${file.id}`, () => done(true));
      return 'cache';
    }
    const locs = this.currentLocs(file);
    if (locs.length === 0) {
      this.stats.readsFailed++;
      this.after(1, `read-none f${file.id}`, () => done(false));
      return 'none';
    }
    const awake = locs.find((loc) => isAwake(this.serverOf(loc.backend).record));
    if (awake !== undefined) {
      this.stats.readsAwake++;
      this.#serveRead(file, awake, done);
      return 'awake';
    }
    const waiter: Waiter = {
      kind: 'read',
      file: file.id,
      sinceMs: this.#now,
      size: file.size,
      done,
      woken: undefined,
      finished: false,
    };
    this.#waiters.push(waiter);
    this.#wakeFor(waiter, locs);
    this.after(this.config.waitMaxMs, `read-timeout f${file.id}`, () => {
      if (waiter.finished) return;
      waiter.finished = true;
      this.stats.readsFailed++;
      this.log(`read of ${file.path} failed: no copy came up within ${this.config.waitMaxMs} ms`);
      done(false);
    });
    return 'wait';
  }

  #serveRead(file: SimFile, loc: Loc, done: (ok: boolean) => void): void {
    const server = this.serverOf(loc.backend);
    this.#touch(server);
    this.cache.noteRead({ id: String(file.id), size: file.size, version: file.version }, this.#now);
    this.after(5 + file.size / this.config.transferBytesPerMs, `read f${file.id}`, () => {
      this.#touch(server);
      done(true);
    });
  }

  /** Wake the best server for a waiter: the most copies, one not failing to start if possible. */
  #wakeFor(waiter: Waiter, locs: readonly Loc[], why: string = waiter.kind): void {
    const servers = locs.map((loc) => this.serverOf(loc.backend));
    const healthy = servers.filter((s) => s.record.power !== 'FAILED_TO_START' || s.key === waiter.woken);
    const choice = healthy.length > 0 ? healthy : servers;
    const states = new Map(choice.map((s) => [s.key, s.record]));
    const target = chooseWakeTarget(
      choice.map((s) => s.key),
      states,
    );
    if (target === undefined) return;
    const server = this.#serverByKey.get(target)!;
    waiter.woken = target;
    this.requestWake(server, why);
  }

  #serveWaiters(): void {
    if (this.#waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const waiter of this.#waiters.splice(0)) {
      if (waiter.finished) continue;
      const file = this.files[waiter.file]!;
      if (waiter.kind === 'read') {
        const locs = this.currentLocs(file);
        const awake = locs.find((loc) => isAwake(this.serverOf(loc.backend).record));
        if (awake !== undefined) {
          waiter.finished = true;
          this.stats.readsWaited++;
          this.stats.readWaitsMs.push(this.#now - waiter.sinceMs);
          this.#serveRead(file, awake, waiter.done);
          continue;
        }
        // The server we woke failed to start: try another copy.
        const woken = waiter.woken === undefined ? undefined : this.#serverByKey.get(waiter.woken);
        if (woken?.record.power === 'FAILED_TO_START') this.#wakeFor(waiter, locs);
        still.push(waiter);
      } else {
        if (this.#tryWrite(file, waiter.size, waiter.done, waiter.sinceMs)) {
          waiter.finished = true;
          continue;
        }
        const woken = waiter.woken === undefined ? undefined : this.#serverByKey.get(waiter.woken);
        if (woken?.record.power === 'FAILED_TO_START') this.#wakeForWrite(waiter, file);
        still.push(waiter);
      }
    }
    this.#waiters.push(...still);
  }

  /**
   * Pre-wake: a session served from the cache will soon need a file that is neither cached nor on
   * an awake server: wake its server when the session, at its pace so far, would reach that file
   * within the server's boot time (the last boot measured, the configured delay before).
   */
  #preWake(session: ReadSession): void {
    const folder = this.folders[session.folder]!;
    const gap = session.gaps > 0 ? session.gapMsSum / session.gaps : session.thinkMeanMs;
    for (let ahead = 0; ahead < session.positions.length; ahead++) {
      const file = this.files[folder.files[session.positions[ahead]!]!]!;
      if (this.cache.holds(String(file.id), file.version)) continue;
      const locs = this.currentLocs(file);
      if (locs.length === 0 || locs.some((loc) => isAwake(this.serverOf(loc.backend).record))) continue;
      const servers = locs.map((loc) => this.serverOf(loc.backend));
      const key = chooseWakeTarget(
        servers.map((s) => s.key),
        new Map(servers.map((s) => [s.key, s.record])),
      );
      if (key === undefined) return;
      const server = this.#serverByKey.get(key)!;
      const reachMs = (ahead + 1) * gap;
      if (reachMs > server.bootEstimateMs + PRE_WAKE_MARGIN_MS) return;
      if (!session.preWoken.has(server.index) && server.record.power === 'SLEEPING') {
        session.preWoken.add(server.index);
        this.stats.preWakes++;
        this.log(`pre-wake ${server.spec.name} for ${file.path} (${Math.round(reachMs / 1000)} s ahead)`);
        this.requestWake(server, 'prewake');
      }
      return;
    }
  }

  /** A reader walking a folder in order from `from` (`count` files), thinking between reads. */
  startSession(folder: number, from: number, count: number, thinkMeanMs: number, rng: Prng): void {
    const files = this.folders[folder]!.files;
    const positions: number[] = [];
    for (let i = from; i < Math.min(files.length, from + count); i++) positions.push(i);
    const session: ReadSession = {
      folder,
      positions,
      thinkMeanMs,
      lastReadMs: this.#now,
      reads: 0,
      gapMsSum: 0,
      gaps: 0,
      preWoken: new Set(),
    };
    const next = () => {
      const position = session.positions.shift();
      if (position === undefined) return;
      if (session.reads > 0) {
        session.gapMsSum += this.#now - session.lastReadMs;
        session.gaps++;
      }
      session.reads++;
      session.lastReadMs = this.#now;
      this.read(files[position]!, () => this.after(rng.exponential(thinkMeanMs), 'session', next), session);
    };
    next();
  }

  // ---- writes ---------------------------------------------------------------------------------------

  /** Write a file (new, or a new version); `done(ok)` once acknowledged (or failed). */
  write(folder: number, name: string, size: number, done: (ok: boolean) => void = () => {}): SimFile {
    const path = `${this.folders[folder]!.path}/${name}`;
    const existing = this.fileByPath(path);
    const file = existing ?? this.#newFile(folder, name, size);
    this.stats.writes++;
    const since = this.#now;
    if (this.#tryWrite(file, size, done, since)) return file;
    if (this.faults.ackWithoutCopy) {
      // Broken: acknowledge with target bits only, expecting the mover to fill them.
      this.#acknowledge(file, size, []);
      done(true);
      return file;
    }
    const waiter: Waiter = {
      kind: 'write',
      file: file.id,
      sinceMs: since,
      size,
      done,
      woken: undefined,
      finished: false,
    };
    this.#waiters.push(waiter);
    this.#wakeForWrite(waiter, file);
    this.after(this.config.waitMaxMs, `write-timeout f${file.id}`, () => {
      if (waiter.finished) return;
      waiter.finished = true;
      this.stats.writesFailed++;
      done(false);
    });
    return file;
  }

  #wakeForWrite(waiter: Waiter, file: SimFile): void {
    const targets = this.#resolveTargets(file, false, waiter.size);
    const servers = targets.map((b) => this.serverOf(b));
    const healthy = servers.filter((s) => s.record.power !== 'FAILED_TO_START');
    const server = healthy[0] ?? servers[0];
    if (server === undefined) return;
    waiter.woken = server.key;
    this.requestWake(server, 'write');
  }

  /** Start the write if an awake destination matches; false if none does. */
  #tryWrite(file: SimFile, size: number, done: (ok: boolean) => void, sinceMs: number): boolean {
    const landing = this.#resolveTargets(file, true, size);
    if (landing.length === 0) return false;
    if (sinceMs < this.#now) {
      this.stats.writesWaited++;
      this.stats.writeWaitsMs.push(this.#now - sinceMs);
    }
    const servers = landing.map((b) => this.serverOf(b));
    for (const b of landing) this.backends[b]!.used += size;
    for (const s of servers) {
      s.writesIn++;
      this.#touch(s);
    }
    this.after(5 + size / this.config.transferBytesPerMs, `write-done f${file.id}`, () => {
      const landed: number[] = [];
      landing.forEach((b, i) => {
        const server = servers[i]!;
        server.writesIn--;
        const backend = this.backends[b]!;
        backend.used -= size;
        if (!isAwake(server.record)) return;
        this.#touch(server);
        landed.push(b);
      });
      if (landed.length === 0) {
        // Every destination went away: the client retries.
        if (!this.#tryWrite(file, size, done, sinceMs)) {
          this.stats.writesFailed++;
          done(false);
        }
        return;
      }
      this.#acknowledge(file, size, landed);
      this.stats.bytesWritten += size * landed.length;
      done(true);
    });
    return true;
  }

  #acknowledge(file: SimFile, size: number, landed: readonly number[]): void {
    const version = file.version + 1;
    for (const b of landed) this.#putBytes(this.backends[b]!, file.id, version, size);
    file.size = size;
    file.version = version;
    file.mtimeMs = this.#now;
    this.cache.invalidate(String(file.id));
    for (const loc of file.locs) if (loc.current) this.#updateLoc(file, loc, { current: false });
    const targets = this.#resolveTargets(file, false);
    for (const b of landed) {
      let loc = file.locs.find((l) => l.backend === b);
      if (loc === undefined) {
        loc = {
          backend: b,
          current: false,
          target: false,
          version: 0,
          pendingSinceMs: this.#now,
          inFlight: false,
        };
        file.locs.push(loc);
      }
      this.#updateLoc(file, loc, { current: true, version });
    }
    this.#setTargets(file, targets);
    this.stats.acknowledged++;
  }

  // ---- the mover ------------------------------------------------------------------------------------

  /** Make copies match the target bits: copy (verified), mark current, then release. */
  #moverPass(): void {
    this.#moverDirty = false;
    const wakes = new Map<SimServer, string>();
    for (const id of this.#moverWork) {
      const file = this.files[id]!;
      if (this.faults.releaseBeforeCopy) this.#release(file, true);
      const current = this.currentLocs(file);
      const needs = file.locs.filter((loc) => loc.target && !(loc.current && loc.version === file.version));
      if (needs.length === 0) {
        this.#release(file, false);
        if (!file.locs.some((loc) => !loc.target || loc.inFlight)) this.#moverWork.delete(id);
        continue;
      }
      for (const loc of needs) {
        if (loc.inFlight) continue;
        const dest = this.serverOf(loc.backend);
        const backend = this.backends[loc.backend]!;
        if (!isAwake(dest.record)) {
          const age = this.#now - loc.pendingSinceMs;
          if (this.config.mover.batchAgeMs > 0 && age >= this.config.mover.batchAgeMs && !wakes.has(dest)) {
            wakes.set(dest, 'mover');
            if (!current.some((l) => isAwake(this.serverOf(l.backend).record))) {
              const source = this.serverOf(current[0]?.backend ?? loc.backend);
              if (!wakes.has(source)) wakes.set(source, 'mover-source');
            }
          }
          continue;
        }
        if (backend.capacity - backend.used - backend.foreign <= file.size) {
          // Full: the chains pick the next use match.
          this.#setTargets(file, this.#resolveTargets(file, false, file.size, new Set([backend.uuid])));
          break;
        }
        const source = current.find((l) => isAwake(this.serverOf(l.backend).record));
        if (source === undefined) {
          // The target is up (and kept up by the pending copy): wake a source.
          const best = chooseWakeTarget(
            current.map((l) => this.serverOf(l.backend).key),
            new Map(current.map((l) => [this.serverOf(l.backend).key, this.serverOf(l.backend).record])),
          );
          if (best !== undefined && !wakes.has(this.#serverByKey.get(best)!))
            wakes.set(this.#serverByKey.get(best)!, 'mover-source');
          continue;
        }
        if (this.#copiesInFlight >= this.config.mover.concurrency) continue;
        this.#copy(file, source, loc);
      }
    }
    for (const [server, why] of wakes) this.requestWake(server, why);
  }

  #copy(file: SimFile, source: Loc, loc: Loc): void {
    const from = this.serverOf(source.backend);
    const to = this.serverOf(loc.backend);
    const backend = this.backends[loc.backend]!;
    const version = file.version;
    const size = file.size;
    loc.inFlight = true;
    this.#copiesInFlight++;
    to.copiesIn++;
    backend.used += size;
    this.#touch(from);
    this.#touch(to);
    this.after(10 + size / this.config.mover.bytesPerMs, `copy f${file.id}`, () => {
      loc.inFlight = false;
      this.#copiesInFlight--;
      to.copiesIn--;
      backend.used -= size;
      this.#moverDirty = true;
      const sourceOk = isAwake(from.record) && this.backends[source.backend]!.store.get(file.id) === version;
      if (!sourceOk || !isAwake(to.record) || file.version !== version || !file.locs.includes(loc)) {
        this.stats.copiesAborted++;
        return;
      }
      this.#touch(from);
      this.#touch(to);
      // Written to a temp file, hash verified, renamed: now the bytes are there.
      this.#putBytes(backend, file.id, version, size);
      this.stats.copies++;
      this.stats.bytesMoved += size;
      this.#updateLoc(file, loc, { current: true, version });
    });
  }

  /** Drop copies outside the targets once every target is current (never the last current copy). */
  #release(file: SimFile, early: boolean): void {
    for (const loc of file.locs.slice()) {
      if (loc.target || loc.inFlight) continue;
      if (!early && loc.current && loc.version === file.version && this.currentLocs(file).length <= 1)
        continue;
      this.#dropLoc(file, loc);
      this.stats.releases++;
      const backend = this.backends[loc.backend]!;
      // The record first (readers stop choosing it), then the object on its backend.
      if (isAwake(this.serverOf(loc.backend).record))
        this.after(1, `delete f${file.id}`, () => {
          if (!file.locs.some((l) => l.backend === backend.index)) this.#deleteBytes(backend, file.id);
        });
      else backend.garbage.add(file.id);
    }
  }

  #putBytes(backend: SimBackend, id: number, version: number, size: number): void {
    backend.used += size - (backend.sizes.get(id) ?? 0);
    backend.store.set(id, version);
    backend.sizes.set(id, size);
    backend.garbage.delete(id);
  }

  #deleteBytes(backend: SimBackend, id: number): void {
    if (!backend.store.has(id)) return;
    if (this.files[id]!.locs.some((l) => l.backend === backend.index)) return;
    backend.used -= backend.sizes.get(id) ?? 0;
    backend.store.delete(id);
    backend.sizes.delete(id);
  }

  // ---- invariants -----------------------------------------------------------------------------------

  #violation(code: HsmViolationCode, message: string): never {
    this.log(`VIOLATION ${code}: ${message}`);
    throw new HsmViolation(code, message, this.#now);
  }

  #check(): void {
    for (const id of this.#dirty) {
      const file = this.files[id]!;
      if (file.version === 0) continue;
      if (!this.backends.some((b) => b.store.get(id) === file.version))
        this.#violation(
          'acknowledged-write-lost',
          `the acknowledged version ${file.version} of ${file.path} is on no backend`,
        );
      if (this.currentLocs(file).length === 0)
        this.#violation(
          'no-current-copy',
          `${file.path} has no verified current copy (locations: ${file.locs.map((l) => `${this.backends[l.backend]!.uuid.slice(0, 8)}${l.current ? ' current' : ''}${l.target ? ' target' : ''} v${l.version}`).join(', ') || 'none'})`,
        );
    }
    this.#dirty.clear();
  }

  /** Every file checked (the end of a run). */
  checkAll(): void {
    for (const file of this.files) this.#dirty.add(file.id);
    this.#check();
    for (const server of this.servers) {
      let pending = 0;
      for (const b of server.backends)
        for (const file of this.files)
          for (const loc of file.locs) if (loc.backend === b && isPending(loc)) pending++;
      if (pending !== server.pending) throw new Error(`pending count of ${server.spec.name} drifted`);
    }
  }

  // ---- reporting ------------------------------------------------------------------------------------

  /** Per server: ms in each power state since the stats were reset. */
  powerTimes(): Array<{ name: string; times: Record<string, number> }> {
    this.#accountAll();
    return this.servers.map((s) => ({ name: s.spec.name, times: Object.fromEntries(s.timeIn) }));
  }

  asleepShare(): number {
    const times = this.powerTimes();
    let asleep = 0;
    let total = 0;
    for (const t of times)
      for (const [state, ms] of Object.entries(t.times)) {
        total += ms;
        if (state === 'SLEEPING') asleep += ms;
      }
    return total === 0 ? 0 : asleep / total;
  }

  /** Acknowledged versions whose bytes are on no backend (the report's "writes lost"). */
  lostWrites(): number {
    let lost = 0;
    for (const file of this.files)
      if (file.version > 0 && !this.backends.some((b) => b.store.get(file.id) === file.version)) lost++;
    return lost;
  }

  /** Bytes of files (acknowledged versions), and of their current copies. */
  dataBytes(): { files: number; copies: number } {
    let files = 0;
    let copies = 0;
    for (const file of this.files) {
      if (file.version === 0) continue;
      files += file.size;
      copies += file.size * this.currentLocs(file).length;
    }
    return { files, copies };
  }

  /** Pending copies (target set, not current) now. */
  pendingCopies(): number {
    return this.servers.reduce((sum, s) => sum + s.pending, 0);
  }

  waiting(): number {
    return this.#waiters.filter((w) => !w.finished).length;
  }
}
