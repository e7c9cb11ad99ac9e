/**
 * The power manager: a duty of the primary controller. Every `intervalMs` it reads the servers,
 * their power configurations and the cell's power policy from its own metadata, asks the pure
 * policy (power-policy.ts) what to do, and does it through the servers' power drivers
 * (power-driver.ts), recording every state in the replicated metadata (`setPowerState`, which
 * also appends to the power event log). It serves requests too: "wake" (a reader needs a
 * sleeping server; concurrent requests for one server share one wake), "on" and "off" (an
 * administrator).
 *
 * All facts live in the metadata, so any primary can carry on where another one stopped: a
 * WAKING server that registers becomes ON, one that does not within the wake timeout becomes
 * FAILED_TO_START (retried with backoff); a GOING_DOWN that nobody finishes is done again.
 * Operations on one server run one after another; a wake asked for while the server goes down
 * runs when the power-down ended.
 */
import { InvalidArgumentError, NotFoundError, ZhsmError } from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import type { Command, PowerConfig, PowerState, Result, ServerRecord } from '../metadata/records.ts';
import type { MetadataStateMachine } from '../metadata/state-machine.ts';
import { type PowerDriver, type PowerTarget, powerDriverFor } from './power-driver.ts';
import { decide, idleCandidates, isPending, type PowerAction, type PowerInputs } from './power-policy.ts';

export const POWER_INTERVAL_MS_DEFAULT = 1_000;
/** An "off" request waits this long for the power-down to end before it answers. */
const OFF_ANSWER_WAIT_MS = 10_000;

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** What the manager needs from the controller it runs on. */
export interface PowerControllerView {
  isLeader(): boolean;
  propose(command: Omit<Command, 'timeMs'>): Promise<Result>;
  readonly machine: MetadataStateMachine;
  /** Peer ids of the cell's controllers (never powered down), this node's included. */
  controllerPeers(): string[];
}

export interface PowerManagerOptions {
  readonly controller: PowerControllerView;
  readonly intervalMs?: number;
  readonly logger?: Logger;
  /** Tests: another driver for a configuration. */
  readonly driverFor?: (config: PowerConfig, target: PowerTarget) => PowerDriver;
  readonly nowMs?: () => number;
  /** Every power state this manager recorded (metrics: node/daemon/metrics.ts). */
  readonly onStateChange?: (change: PowerStateChange) => void;
}

export interface PowerStateChange {
  readonly server: string;
  readonly from: PowerState;
  readonly to: PowerState;
  /** WAKING -> ON: ms from the wake request (or, after a failover, from WAKING) to ON. */
  readonly wakeMs?: number;
}

export interface PowerAnswer {
  server: ServerRecord;
  /** The server should be online within this long (the wake timeout); 0 for "off". */
  waitMs: number;
}

export type PowerRequestAction = 'wake' | 'on' | 'off';

/** The host part of a multiaddr (/ip4/10.0.0.7/tcp/4001 -> 10.0.0.7), or ''. */
function hostOf(address: string | undefined): string {
  return /^\/(?:ip4|ip6|dns4|dns6|dns)\/([^/]+)/.exec(address ?? '')?.[1] ?? '';
}

export class PowerManager {
  readonly #controller: PowerControllerView;
  readonly #intervalMs: number;
  readonly #log: Logger;
  readonly #driverFor: (config: PowerConfig, target: PowerTarget) => PowerDriver;
  readonly #now: () => number;
  /** The operation running (or queued last) per server (hex). */
  readonly #ops = new Map<string, Promise<void>>();
  /** Wakes that were asked for and not yet started or answered, per server: shared by callers. */
  readonly #wakes = new Map<string, Promise<PowerAnswer>>();
  readonly #abort = new AbortController();
  readonly #onStateChange: PowerManagerOptions['onStateChange'];
  /** When the running wake of each server (hex) was asked for (wake latency). */
  readonly #wakeAsked = new Map<string, number>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #ticking = false;

  constructor(options: PowerManagerOptions) {
    this.#controller = options.controller;
    this.#intervalMs = options.intervalMs ?? POWER_INTERVAL_MS_DEFAULT;
    this.#log = (options.logger ?? silentLogger()).child({ component: 'power' });
    this.#driverFor = options.driverFor ?? powerDriverFor;
    this.#now = options.nowMs ?? Date.now;
    this.#onStateChange = options.onStateChange;
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.tick(), this.#intervalMs);
  }

  /** Stop deciding; running driver calls are told to abort (a boot delay ends without a start). */
  stop(): void {
    clearInterval(this.#timer);
    this.#abort.abort();
  }

  get #stopped(): boolean {
    return this.#abort.signal.aborted;
  }

  /** One round of decisions (the primary only). */
  async tick(): Promise<void> {
    if (this.#ticking || this.#stopped || !this.#controller.isLeader()) return;
    this.#ticking = true;
    try {
      const inputs = await this.#inputs();
      if (idleCandidates(inputs).length > 0) {
        const pending = await this.pendingServers();
        for (const action of decide({ ...inputs, pending })) this.#act(action);
      } else {
        for (const action of decide(inputs)) this.#act(action);
      }
    } catch (error) {
      if (!this.#stopped) this.#log.debug({ err: error }, 'power duties deferred');
    } finally {
      this.#ticking = false;
    }
  }

  async #inputs(): Promise<PowerInputs> {
    const machine = this.#controller.machine;
    const [servers, configs, policy] = await Promise.all([
      machine.servers(),
      machine.powerConfigs(),
      machine.powerPolicy(),
    ]);
    return {
      nowMs: this.#now(),
      policy,
      servers,
      configs: new Map(configs.map((config) => [hex(config.serverUuid), config])),
      protectedPeers: new Set(this.#controller.controllerPeers()),
      pending: new Set(),
      busy: new Set(this.#ops.keys()),
    };
  }

  /**
   * Servers (hex) that pending work targets: a location with `target` set and `current` not set on
   * one of their backends. Scans every location (only done when some server is idle).
   */
  async pendingServers(): Promise<Set<string>> {
    const machine = this.#controller.machine;
    const backendServer = new Map((await machine.backends()).map((b) => [hex(b.uuid), hex(b.serverUuid)]));
    const servers = new Set<string>();
    await machine.scanLocations((_object, backend, location) => {
      if (!isPending(location)) return true;
      const server = backendServer.get(hex(backend));
      if (server !== undefined) servers.add(server);
      return servers.size < backendServer.size;
    });
    return servers;
  }

  #act(action: PowerAction): void {
    const key = hex(action.server.uuid);
    if (action.kind === 'mark') {
      this.#enqueue(key, async () => {
        await this.#setState(action.server, action.state, action.expected, action.reason, action.failures);
      });
    } else if (action.kind === 'sleep') {
      this.#enqueue(key, () => this.#sleep(action.server.uuid, action.reason, false));
    } else {
      this.#enqueue(key, () => this.#wake(action.server.uuid, action.reason));
    }
  }

  /** Run `task` after the operations already queued for the server. */
  #enqueue(key: string, task: () => Promise<void>): Promise<void> {
    const previous = this.#ops.get(key) ?? Promise.resolve();
    const next = previous.then(async () => {
      if (this.#stopped || !this.#controller.isLeader()) return;
      try {
        await task();
      } catch (error) {
        if (!this.#stopped) this.#log.warn({ err: error, server: key }, 'power operation failed');
      }
    });
    this.#ops.set(key, next);
    void next.finally(() => {
      if (this.#ops.get(key) === next) this.#ops.delete(key);
    });
    return next;
  }

  async #server(uuid: Uint8Array): Promise<ServerRecord> {
    const server = (await this.#controller.machine.servers()).find((s) => hex(s.uuid) === hex(uuid));
    if (server === undefined) throw new NotFoundError(`no storage server ${hex(uuid)}`);
    return server;
  }

  async #config(uuid: Uint8Array): Promise<PowerConfig | undefined> {
    return (await this.#controller.machine.powerConfigs()).find((c) => hex(c.serverUuid) === hex(uuid));
  }

  #driver(server: ServerRecord, config: PowerConfig): PowerDriver {
    return this.#driverFor(config, {
      name: server.name,
      uuid: hex(server.uuid),
      address: config.address || hostOf(server.addresses[0]),
      outlet: config.outlet ?? '',
    });
  }

  /** Propose a power state; false when the server's state was not one of `expected`. */
  async #setState(
    server: ServerRecord,
    state: PowerState,
    expected: PowerState[],
    reason: string,
    failures: number,
  ): Promise<boolean> {
    const result = await this.#controller.propose({
      setPowerState: { serverUuid: server.uuid, state, expected, reason, failures },
    });
    if (result.code === 'STALE') return false;
    if (result.code !== 'OK') throw new ZhsmError('IO_ERROR', `cannot record power state: ${result.message}`);
    this.#log.info({ server: server.name, from: server.power, to: state, reason }, 'power state');
    this.#observe(server, state);
    return true;
  }

  #observe(server: ServerRecord, to: PowerState): void {
    const key = hex(server.uuid);
    let wakeMs: number | undefined;
    if (server.power === 'WAKING' && to === 'ON')
      wakeMs = this.#now() - (this.#wakeAsked.get(key) ?? server.powerChangedMs ?? this.#now());
    if (to !== 'WAKING') this.#wakeAsked.delete(key);
    try {
      this.#onStateChange?.({
        server: server.name,
        from: server.power,
        to,
        ...(wakeMs === undefined ? {} : { wakeMs: Math.max(0, wakeMs) }),
      });
    } catch (error) {
      this.#log.warn({ err: error }, 'power state observer failed');
    }
  }

  async #sleep(uuid: Uint8Array, reason: string, force: boolean): Promise<void> {
    const server = await this.#server(uuid);
    const config = await this.#config(uuid);
    if (config === undefined) return;
    const key = hex(uuid);
    if (this.#controller.controllerPeers().includes(server.peerId)) return;
    if (
      !(await this.#setState(
        server,
        'GOING_DOWN',
        // WAKING: an administrator's off right after a wake (the server registered, and the
        // policy's next round would only have marked it ON); the wake's driver call is done,
        // operations on one server run one after another.
        ['ON', 'WAKING', 'FAILED_TO_STOP', 'GOING_DOWN', 'FAILED_TO_START'],
        reason,
        server.powerFailures ?? 0,
      ))
    )
      return;
    // A write may have been placed on it between the decision and GOING_DOWN (placements
    // avoid it from now on): look again.
    if (!force && (await this.pendingServers()).has(key)) {
      await this.#setState(server, 'ON', ['GOING_DOWN'], 'pending work targets it; stays on', 0);
      return;
    }
    const going = { ...server, power: 'GOING_DOWN' as const };
    try {
      await this.#driver(server, config).off(this.#abort.signal);
    } catch (error) {
      const failures = (server.power === 'FAILED_TO_STOP' ? (server.powerFailures ?? 0) : 0) + 1;
      this.#log.error({ err: error, server: server.name }, 'cannot power the server down; kept on');
      await this.#setState(going, 'FAILED_TO_STOP', ['GOING_DOWN'], (error as Error).message, failures);
      return;
    }
    await this.#setState(going, 'SLEEPING', ['GOING_DOWN'], reason, 0);
  }

  async #wake(uuid: Uint8Array, reason: string, askedMs = this.#now()): Promise<void> {
    const server = await this.#server(uuid);
    const config = await this.#config(uuid);
    if (config === undefined) return;
    if (
      server.online &&
      server.power !== 'SLEEPING' &&
      server.power !== 'GOING_DOWN' &&
      server.power !== 'FAILED_TO_START'
    )
      return; // up already
    const expected: PowerState[] = ['SLEEPING', 'FAILED_TO_START', 'ON', 'FAILED_TO_STOP'];
    if (!(await this.#setState(server, 'WAKING', expected, reason, server.powerFailures ?? 0))) return;
    this.#wakeAsked.set(hex(uuid), askedMs);
    const waking = { ...server, power: 'WAKING' as const };
    try {
      await this.#driver(server, config).on(this.#abort.signal);
    } catch (error) {
      if (this.#stopped) return;
      this.#log.error({ err: error, server: server.name }, 'cannot power the server up');
      await this.#setState(
        waking,
        'FAILED_TO_START',
        ['WAKING'],
        (error as Error).message,
        (server.powerFailures ?? 0) + 1,
      );
    }
    // Registration (ON) or the wake timeout (FAILED_TO_START) is the policy's to see.
  }

  /**
   * A request at the primary: "wake"/"on" power the server up (answered once WAKING is recorded,
   * or at once when it is up; concurrent requests share one wake), "off" powers it down (refused
   * for controllers, and while pending work targets it unless `force`).
   */
  async request(
    uuid: Uint8Array,
    action: PowerRequestAction,
    options: { force?: boolean; reason?: string } = {},
  ): Promise<PowerAnswer> {
    if (uuid.length !== 16) throw new InvalidArgumentError('server uuid must be 16 bytes');
    const server = await this.#server(uuid);
    const policy = await this.#controller.machine.powerPolicy();
    const config = await this.#config(uuid);
    const key = hex(uuid);
    if (action === 'off') {
      if (this.#controller.controllerPeers().includes(server.peerId))
        throw new ZhsmError('NOT_PERMITTED', `${server.name} runs a controller: it is never powered down`);
      if (config === undefined)
        throw new InvalidArgumentError(`${server.name} has no power configuration (zhsm power config)`);
      if (!options.force && (await this.pendingServers()).has(key))
        throw new ZhsmError(
          'UNAVAILABLE',
          `pending writes or migrations target ${server.name} (use --force)`,
        );
      const done = this.#enqueue(key, async () => {
        await this.#sleep(uuid, 'powered off by an administrator', options.force === true);
      });
      // Answer with the outcome when the driver is quick, else with GOING_DOWN (poll for more).
      await Promise.race([done, sleep(OFF_ANSWER_WAIT_MS)]);
      return { server: await this.#server(uuid), waitMs: 0 };
    }
    if (action !== 'wake' && action !== 'on')
      throw new InvalidArgumentError(`unknown power action ${action}`);
    const awake =
      server.online &&
      (server.power === 'ON' || server.power === 'WAKING' || server.power === 'FAILED_TO_STOP');
    if (awake) return { server, waitMs: 0 };
    if (server.power === 'WAKING')
      return {
        server,
        waitMs: Math.max(0, (server.powerChangedMs ?? 0) + policy.wakeTimeoutMs - this.#now()),
      };
    if (config === undefined)
      throw new ZhsmError(
        'UNAVAILABLE',
        `${server.name} is ${server.online ? server.power : 'offline'} and has no power configuration to wake it`,
      );
    const shared = this.#wakes.get(key);
    if (shared !== undefined) return shared;
    const reason =
      options.reason ?? (action === 'wake' ? 'woken for a read' : 'powered on by an administrator');
    const askedMs = this.#now();
    const answer = (async () => {
      // The wake is queued behind a running power-down; answer once WAKING is recorded.
      let recorded!: () => void;
      const waking = new Promise<void>((resolve) => {
        recorded = resolve;
      });
      const done = this.#enqueue(key, async () => {
        const before = await this.#server(uuid);
        const wake = this.#wake(uuid, reason, askedMs);
        // #wake records WAKING first: wait until the record says so (or the wake ended).
        for (;;) {
          const now = await this.#server(uuid);
          if (now.power === 'WAKING' && (now.powerChangedMs ?? 0) >= (before.powerChangedMs ?? 0)) break;
          const ended = await Promise.race([wake.then(() => true), sleep(20).then(() => false)]);
          if (ended) break;
        }
        recorded();
        await wake;
      });
      await Promise.race([waking, done]);
      return { server: await this.#server(uuid), waitMs: policy.wakeTimeoutMs };
    })();
    this.#wakes.set(key, answer);
    try {
      return await answer;
    } finally {
      this.#wakes.delete(key);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
