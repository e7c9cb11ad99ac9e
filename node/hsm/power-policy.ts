/**
 * Power management decisions, pure: from the servers' records, their power configurations, the
 * last data accesses, the pending work and the clock, which servers to power down, which failed
 * starts to retry and which power states to correct. No I/O, no clock reads: the primary's
 * PowerManager (power-manager.ts) and the simulator run the same code.
 *
 * States (proto/metadata.proto PowerState):
 * ```
 *   ON ──idle──▶ GOING_DOWN ──off ok──▶ SLEEPING ──wake──▶ WAKING ──registered──▶ ON
 *                    │ off failed                               │ no registration within the
 *                    ▼                                          ▼ wake timeout, or on() failed
 *               FAILED_TO_STOP (kept on; retried with backoff)  FAILED_TO_START (retried with backoff)
 * ```
 */
import type { PowerConfig, PowerPolicy, PowerState, ServerRecord } from '../metadata/records.ts';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** How long a reader waits for a sleeping server at most by default (a RAID may need 5 min). */
export const WAKE_WAIT_MS_DEFAULT = 6 * 60_000;
/**
 * Wake on demand: a reader polls a waking server's record this often (one metadata read; a
 * reader waits only while the server starts), asks again after this long.
 */
export const WAKE_POLL_MS = 100;
export const WAKE_ASK_AGAIN_MS = 2_000;
/** Beyond the cell's wake timeout, a reader waits this much longer for the server to show up. */
export const WAKE_MARGIN_MS = 5_000;

export interface PowerInputs {
  readonly nowMs: number;
  readonly policy: PowerPolicy;
  readonly servers: readonly ServerRecord[];
  /** Power configurations by server uuid (hex); a server without one is never switched. */
  readonly configs: ReadonlyMap<string, PowerConfig>;
  /** Last data access by server uuid (hex), merged with the records' `lastAccessMs`. */
  readonly lastAccess?: ReadonlyMap<string, number>;
  /** Peer ids that must never be powered down: controllers, and the node the primary runs on. */
  readonly protectedPeers: ReadonlySet<string>;
  /** Servers (hex) that a pending write or migration targets (see `pendingServers`). */
  readonly pending: ReadonlySet<string>;
  /** Servers (hex) with a power operation running right now (no decision about them). */
  readonly busy: ReadonlySet<string>;
}

export type PowerAction =
  /** Power the server down (GOING_DOWN, the driver's off(), SLEEPING or FAILED_TO_STOP). */
  | { readonly kind: 'sleep'; readonly server: ServerRecord; readonly reason: string }
  /** Power the server up (WAKING, the driver's on()); a retry of a failed start. */
  | { readonly kind: 'wake'; readonly server: ServerRecord; readonly reason: string }
  /** Record a state the facts show (a registration, a timeout). */
  | {
      readonly kind: 'mark';
      readonly server: ServerRecord;
      readonly state: PowerState;
      readonly expected: PowerState[];
      readonly failures: number;
      readonly reason: string;
    };

/** The wait before retry number `failures` (1 = the first retry): doubled per failure, capped. */
export function retryBackoffMs(policy: PowerPolicy, failures: number): number {
  const exponent = Math.max(0, Math.min(failures - 1, 30));
  return Math.min(policy.retryBackoffMaxMs, policy.retryBackoffMs * 2 ** exponent);
}

/** When the server was last used (a data access, or a power change such as a wake). */
export function lastActivityMs(server: ServerRecord, lastAccess?: ReadonlyMap<string, number>): number {
  return Math.max(
    server.lastAccessMs ?? 0,
    lastAccess?.get(hex(server.uuid)) ?? 0,
    server.powerChangedMs ?? 0,
    server.registeredMs,
  );
}

/** Registered after its last power change: the server came up (again). */
function registeredSinceChange(server: ServerRecord): boolean {
  return server.online && server.lastSeenMs >= (server.powerChangedMs ?? 0);
}

/**
 * Servers that the idle policy would power down if no pending work targets them: switchable (a
 * power configuration), not protected, on (or failed to stop, after the retry backoff), and not
 * used for the idle timeout. The manager scans for pending work only when this is not empty.
 */
export function idleCandidates(inputs: PowerInputs): ServerRecord[] {
  const idleMs = inputs.policy.idleTimeoutMs;
  if (idleMs <= 0) return [];
  return inputs.servers.filter((server) => {
    const key = hex(server.uuid);
    if (inputs.busy.has(key) || !inputs.configs.has(key)) return false;
    if (inputs.protectedPeers.has(server.peerId)) return false;
    if (server.power === 'FAILED_TO_STOP') {
      const since = server.powerChangedMs ?? 0;
      if (inputs.nowMs < since + retryBackoffMs(inputs.policy, server.powerFailures ?? 1)) return false;
    } else if (server.power !== 'ON') return false;
    return inputs.nowMs - lastActivityMs(server, inputs.lastAccess) >= idleMs;
  });
}

/** What to do now. At most one action per server. */
export function decide(inputs: PowerInputs): PowerAction[] {
  const actions: PowerAction[] = [];
  const { nowMs, policy } = inputs;
  const idle = new Set(idleCandidates(inputs).map((server) => hex(server.uuid)));
  for (const server of inputs.servers) {
    const key = hex(server.uuid);
    if (inputs.busy.has(key)) continue;
    const since = server.powerChangedMs ?? 0;
    const failures = server.powerFailures ?? 0;
    const configured = inputs.configs.has(key);
    switch (server.power) {
      case 'WAKING':
        if (registeredSinceChange(server))
          actions.push(mark(server, 'ON', ['WAKING'], 0, 'registered after the wake-up'));
        else if (nowMs - since > policy.wakeTimeoutMs)
          actions.push(
            mark(
              server,
              'FAILED_TO_START',
              ['WAKING'],
              failures + 1,
              `did not register within the wake timeout (${Math.round(policy.wakeTimeoutMs / 1000)} s)`,
            ),
          );
        break;
      case 'FAILED_TO_START':
        if (registeredSinceChange(server))
          actions.push(mark(server, 'ON', ['FAILED_TO_START'], 0, 'registered after a failed start'));
        else if (configured && nowMs >= since + retryBackoffMs(policy, Math.max(1, failures)))
          actions.push({ kind: 'wake', server, reason: `retry ${failures} of a failed start` });
        break;
      case 'SLEEPING':
        if (registeredSinceChange(server) && server.lastSeenMs > since)
          actions.push(mark(server, 'ON', ['SLEEPING'], 0, 'registered while sleeping (started by hand?)'));
        break;
      case 'GOING_DOWN':
        // Nobody is powering it down (the primary that started it changed): do it again.
        if (configured) actions.push({ kind: 'sleep', server, reason: 'power-down interrupted; again' });
        else actions.push(mark(server, 'ON', ['GOING_DOWN'], 0, 'no power configuration'));
        break;
      case 'ON':
      case 'FAILED_TO_STOP':
        if (idle.has(key) && !inputs.pending.has(key)) {
          const idleS = Math.round((nowMs - lastActivityMs(server, inputs.lastAccess)) / 1000);
          actions.push({
            kind: 'sleep',
            server,
            reason:
              server.power === 'FAILED_TO_STOP'
                ? `retry ${failures} of a failed power-down (idle ${idleS} s)`
                : `idle for ${idleS} s`,
          });
        }
        break;
      default:
        actions.push(mark(server, 'ON', [server.power], 0, 'no power state yet'));
    }
  }
  return actions;
}

function mark(
  server: ServerRecord,
  state: PowerState,
  expected: PowerState[],
  failures: number,
  reason: string,
): PowerAction {
  return { kind: 'mark', server, state, expected, failures, reason };
}

/**
 * Whether a location is pending work that keeps its backend's server on: `target` set and
 * `current` not set (a write or migration that has not landed). Extend here.
 */
export function isPending(location: { target: boolean; current: boolean }): boolean {
  return location.target && !location.current;
}

/** A server a reader can use now: registered and not (being) powered down. */
export function isAwake(server: Pick<ServerRecord, 'online' | 'power'>): boolean {
  return server.online && server.power !== 'SLEEPING' && server.power !== 'GOING_DOWN';
}

/**
 * The server to wake for a chunk whose every copy is on servers that are not awake: the one with
 * the most copies; ties go to a server already waking, then to the lower uuid (deterministic).
 * `copies`: the server (hex) of each current copy. Undefined when there is none.
 */
export function chooseWakeTarget(
  copies: readonly string[],
  servers: ReadonlyMap<string, Pick<ServerRecord, 'power'>>,
): string | undefined {
  const counts = new Map<string, number>();
  for (const server of copies) if (servers.has(server)) counts.set(server, (counts.get(server) ?? 0) + 1);
  const waking = (server: string) => (servers.get(server)?.power === 'WAKING' ? 1 : 0);
  return [...counts.entries()].sort(
    ([a, countA], [b, countB]) => countB - countA || waking(b) - waking(a) || (a < b ? -1 : a > b ? 1 : 0),
  )[0]?.[0];
}
