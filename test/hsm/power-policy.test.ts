/** The pure power policy (node/hsm/power-policy.ts): decisions from records, accesses, work, clock. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  chooseWakeTarget,
  decide,
  idleCandidates,
  isAwake,
  isPending,
  type PowerInputs,
  retryBackoffMs,
} from '../../node/hsm/power-policy.ts';
import type { PowerConfig, PowerPolicy, ServerRecord } from '../../node/metadata/records.ts';

const policy: PowerPolicy = {
  idleTimeoutMs: 60_000,
  wakeTimeoutMs: 30_000,
  retryBackoffMs: 1000,
  retryBackoffMaxMs: 8000,
};
const NOW = 10_000_000;

function uuid(n: number): Uint8Array {
  const bytes = new Uint8Array(16);
  bytes[15] = n;
  return bytes;
}
const key = (n: number) => Buffer.from(uuid(n)).toString('hex');

function server(n: number, extra: Partial<ServerRecord> = {}): ServerRecord {
  return {
    uuid: uuid(n),
    peerId: `peer${n}`,
    name: `s${n}`,
    addresses: [],
    power: 'ON',
    registeredMs: 0,
    lastSeenMs: NOW - 1000,
    online: true,
    lastAccessMs: 0,
    powerChangedMs: 0,
    powerFailures: 0,
    ...extra,
  };
}

function inputs(servers: ServerRecord[], extra: Partial<PowerInputs> = {}): PowerInputs {
  const configs = new Map<string, PowerConfig>(
    servers.map((s) => [
      Buffer.from(s.uuid).toString('hex'),
      { serverUuid: s.uuid, driver: 'sim', simData: '/x' },
    ]),
  );
  return {
    nowMs: NOW,
    policy,
    servers,
    configs,
    protectedPeers: new Set(),
    pending: new Set(),
    busy: new Set(),
    ...extra,
  };
}

const summary = (actions: ReturnType<typeof decide>) =>
  actions.map((a) => `${a.server.name}:${a.kind}${a.kind === 'mark' ? `:${a.state}:${a.failures}` : ''}`);

test('idle servers are powered down; recent access, pending work, controllers, no config keep them on', () => {
  const idle = server(1, { lastAccessMs: NOW - 61_000 });
  const recent = server(2, { lastAccessMs: NOW - 59_000 });
  const pending = server(3, { lastAccessMs: NOW - 120_000 });
  const controller = server(4, { lastAccessMs: 0 });
  const unconfigured = server(5);
  const wokenLately = server(6, { lastAccessMs: 0, powerChangedMs: NOW - 10_000 });
  const busy = server(7);
  const all = [idle, recent, pending, controller, unconfigured, wokenLately, busy];
  const base = inputs(all);
  const configs = new Map(base.configs);
  configs.delete(key(5));
  const decided = decide({
    ...base,
    configs,
    pending: new Set([key(3)]),
    protectedPeers: new Set(['peer4']),
    busy: new Set([key(7)]),
  });
  assert.deepEqual(summary(decided), ['s1:sleep']);
  assert.match((decided[0] as { reason: string }).reason, /idle for 61 s/);
  // Pending work is checked after the candidates (the manager scans only when there are some).
  assert.deepEqual(
    idleCandidates({ ...base, configs, protectedPeers: new Set(['peer4']), busy: new Set([key(7)]) }).map(
      (s) => s.name,
    ),
    ['s1', 's3'],
  );
  // The last access may come from outside the records (the simulator).
  assert.deepEqual(summary(decide(inputs([idle], { lastAccess: new Map([[key(1), NOW - 5]]) }))), []);
  // No idle timeout: never.
  assert.deepEqual(summary(decide(inputs([idle], { policy: { ...policy, idleTimeoutMs: 0 } }))), []);
});

test('waking: registered after the wake is ON; no registration within the wake timeout is FAILED_TO_START', () => {
  const registered = server(1, { power: 'WAKING', powerChangedMs: NOW - 5000, lastSeenMs: NOW - 100 });
  const staleOnline = server(2, { power: 'WAKING', powerChangedMs: NOW - 5000, lastSeenMs: NOW - 6000 });
  const late = server(3, { power: 'WAKING', powerChangedMs: NOW - 31_000, online: false, powerFailures: 2 });
  assert.deepEqual(summary(decide(inputs([registered, staleOnline, late]))), [
    's1:mark:ON:0',
    's3:mark:FAILED_TO_START:3',
  ]);
});

test('failed starts are retried with a doubling, capped backoff; failed stops too', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 10].map((n) => retryBackoffMs(policy, n)),
    [1000, 2000, 4000, 8000, 8000, 8000],
  );
  const failed = (failures: number, agoMs: number) =>
    server(1, {
      power: 'FAILED_TO_START',
      online: false,
      powerFailures: failures,
      powerChangedMs: NOW - agoMs,
    });
  assert.deepEqual(summary(decide(inputs([failed(1, 999)]))), []);
  assert.deepEqual(summary(decide(inputs([failed(1, 1000)]))), ['s1:wake']);
  assert.deepEqual(summary(decide(inputs([failed(3, 3999)]))), []);
  assert.deepEqual(summary(decide(inputs([failed(3, 4000)]))), ['s1:wake']);
  // It came up after all.
  assert.deepEqual(
    summary(
      decide(inputs([server(1, { power: 'FAILED_TO_START', powerChangedMs: NOW - 10, lastSeenMs: NOW })])),
    ),
    ['s1:mark:ON:0'],
  );
  const stuck = (agoMs: number) =>
    server(1, { power: 'FAILED_TO_STOP', powerFailures: 2, powerChangedMs: NOW - agoMs, lastAccessMs: 0 });
  // Idle since the failed stop (powerChangedMs), and the backoff of 2 failures (2 s) passed.
  assert.deepEqual(summary(decide(inputs([stuck(61_000)]))), ['s1:sleep']);
  assert.deepEqual(
    summary(decide(inputs([stuck(1500)], { policy: { ...policy, idleTimeoutMs: 1000 } }))),
    [],
  );
  assert.deepEqual(summary(decide(inputs([stuck(2500)], { policy: { ...policy, idleTimeoutMs: 1000 } }))), [
    's1:sleep',
  ]);
});

test('sleeping servers that register are ON; an interrupted power-down is done again', () => {
  const startedByHand = server(1, { power: 'SLEEPING', powerChangedMs: NOW - 5000, lastSeenMs: NOW - 10 });
  const asleep = server(2, { power: 'SLEEPING', powerChangedMs: NOW - 5000, online: false });
  const interrupted = server(3, { power: 'GOING_DOWN', powerChangedMs: NOW - 5000, online: false });
  assert.deepEqual(summary(decide(inputs([startedByHand, asleep, interrupted]))), [
    's1:mark:ON:0',
    's3:sleep',
  ]);
  assert.deepEqual(summary(decide(inputs([interrupted], { busy: new Set([key(3)]) }))), []);
});

test('pending work, awake servers and the wake target', () => {
  assert.equal(isPending({ target: true, current: false }), true);
  assert.equal(isPending({ target: true, current: true }), false);
  assert.equal(isPending({ target: false, current: false }), false);
  assert.equal(isAwake({ online: true, power: 'ON' }), true);
  assert.equal(isAwake({ online: true, power: 'WAKING' }), true, 'registered, not yet marked ON');
  assert.equal(isAwake({ online: true, power: 'GOING_DOWN' }), false);
  assert.equal(isAwake({ online: false, power: 'ON' }), false);
  const records = new Map([
    ['a', { power: 'SLEEPING' as const }],
    ['b', { power: 'WAKING' as const }],
    ['c', { power: 'SLEEPING' as const }],
  ]);
  assert.equal(chooseWakeTarget(['a', 'c', 'c'], records), 'c', 'the most copies');
  assert.equal(chooseWakeTarget(['a', 'b'], records), 'b', 'a tie goes to the one already waking');
  assert.equal(chooseWakeTarget(['c', 'a'], records), 'a', 'then the lower uuid');
  assert.equal(chooseWakeTarget(['x'], records), undefined, 'unknown servers are not woken');
  assert.equal(chooseWakeTarget([], records), undefined);
});
