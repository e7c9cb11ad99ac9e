/** The power management commands of the metadata state machine (proto/metadata.proto 50-59). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryKv } from '../../node/metadata/kv.ts';
import type { PowerConfig, ServerRecord } from '../../node/metadata/records.ts';
import { POWER_EVENTS_MAX, POWER_POLICY_DEFAULT } from '../../node/metadata/state-machine.ts';
import { Harness, id } from '../metadata/harness.ts';

function serverRecord(uuid: Uint8Array, name: string, extra: Partial<ServerRecord> = {}): ServerRecord {
  return {
    uuid,
    peerId: `peer-${name}`,
    name,
    addresses: ['/ip4/127.0.0.1/tcp/1'],
    power: 'ON',
    registeredMs: 0,
    lastSeenMs: 0,
    online: true,
    ...extra,
  };
}

async function withServer() {
  const kv = new MemoryKv();
  const h = await Harness.create(kv);
  const uuid = id();
  assert.equal((await h.run({ registerServer: { server: serverRecord(uuid, 's1') } })).code, 'OK');
  const record = async () => (await h.machine.servers()).find((s) => Buffer.compare(s.uuid, uuid) === 0)!;
  return { h, kv, uuid, record };
}

test('power config: validated, stored under p:, removable', async () => {
  const { h, uuid } = await withServer();
  const sim: PowerConfig = { serverUuid: uuid, driver: 'sim', simData: '/srv/s1', simBootDelayMs: 2000 };
  assert.equal((await h.run({ setPowerConfig: { config: sim } })).code, 'OK');
  const stored = await h.machine.powerConfigs();
  assert.equal(stored.length, 1);
  assert.equal(stored[0]!.driver, 'sim');
  assert.equal(stored[0]!.simBootDelayMs, 2000);
  assert.equal(stored[0]!.updatedMs, h.timeMs);

  const bad = async (config: Partial<PowerConfig>, message: RegExp) => {
    const result = await h.run({
      setPowerConfig: { config: { serverUuid: uuid, driver: 'command', ...config } },
    });
    assert.equal(result.code, 'INVALID_ARGUMENT', JSON.stringify(config));
    assert.match(result.message, message);
  };
  await bad({ driver: 'pdu' }, /unknown power driver/);
  await bad({ onCommand: 'x' }, /needs an on and an off command/);
  await bad({ driver: 'sim', simData: 'relative/dir' }, /absolute data directory/);
  await bad({ onCommand: 'a', offCommand: 'b', retries: 11 }, /at most 10 retries/);
  await bad({ onCommand: 'a', offCommand: 'b', timeoutMs: 2 * 3_600_000 }, /timeout must be at most/);
  await bad({ onCommand: 'a'.repeat(5000), offCommand: 'b' }, /longer than/);
  assert.equal(
    (await h.run({ setPowerConfig: { config: { serverUuid: id(), driver: 'sim', simData: '/x' } } })).code,
    'NOT_FOUND',
  );
  assert.equal((await h.machine.powerConfigs())[0]!.driver, 'sim', 'failed commands change nothing');
  assert.equal(
    (await h.run({ setPowerConfig: { config: { serverUuid: uuid, driver: '' }, remove: true } })).code,
    'OK',
  );
  assert.deepEqual(await h.machine.powerConfigs(), []);
});

test('power policy: defaults, validation, stored under meta:power', async () => {
  const { h } = await withServer();
  assert.deepEqual(await h.machine.powerPolicy(), POWER_POLICY_DEFAULT);
  const policy = {
    idleTimeoutMs: 5000,
    wakeTimeoutMs: 20_000,
    retryBackoffMs: 1000,
    retryBackoffMaxMs: 8000,
  };
  assert.equal((await h.run({ setPowerPolicy: { policy } })).code, 'OK');
  assert.deepEqual(await h.machine.powerPolicy(), { ...policy, updatedMs: h.timeMs });
  for (const [change, message] of [
    [{ idleTimeoutMs: 10 }, /idle timeout/],
    [{ wakeTimeoutMs: 0 }, /wake timeout/],
    [{ retryBackoffMs: 1 }, /retry backoff/],
    [{ retryBackoffMaxMs: 500 }, /maximum retry backoff/],
    [{ idleTimeoutMs: -1 }, /non-negative/],
  ] as const) {
    const result = await h.run({ setPowerPolicy: { policy: { ...policy, ...change } } });
    assert.equal(result.code, 'INVALID_ARGUMENT', JSON.stringify(change));
    assert.match(result.message, message);
  }
  assert.equal((await h.run({ setPowerPolicy: { policy: { ...policy, idleTimeoutMs: 0 } } })).code, 'OK');
});

test('power state: transitions with expected states, online follows, events are logged', async () => {
  const { h, uuid, record } = await withServer();
  assert.equal((await record()).power, 'ON');
  const set = (state: ServerRecord['power'], expected: ServerRecord['power'][] = [], failures = 0) =>
    h.run({ setPowerState: { serverUuid: uuid, state, expected, reason: `to ${state}`, failures } });

  assert.equal((await set('GOING_DOWN', ['ON'])).code, 'OK');
  let r = await record();
  assert.equal(r.power, 'GOING_DOWN');
  assert.equal(r.online, false, 'a server going down takes no new placements');
  assert.equal(r.powerChangedMs, h.timeMs);
  // A registration while it goes down keeps it out of placements and keeps the power state.
  await h.run({ registerServer: { server: serverRecord(uuid, 's1') } });
  r = await record();
  assert.equal(r.power, 'GOING_DOWN');
  assert.equal(r.online, false);

  const stale = await set('WAKING', ['SLEEPING']);
  assert.equal(stale.code, 'STALE');
  assert.match(stale.message, /GOING_DOWN, not SLEEPING/);
  assert.equal((await set('FAILED_TO_STOP', ['GOING_DOWN'], 1)).code, 'OK');
  r = await record();
  assert.equal(r.online, true, 'a server that could not be stopped is kept marked on');
  assert.equal(r.powerFailures, 1);
  assert.equal((await set('GOING_DOWN', ['FAILED_TO_STOP'], 1)).code, 'OK');
  assert.equal((await set('SLEEPING', ['GOING_DOWN'])).code, 'OK');
  r = await record();
  assert.equal(r.online, false);
  assert.equal(r.powerReason, 'to SLEEPING');
  const sleptAt = r.powerChangedMs;
  // The same state again (same failures) is a no-op: no event, no new time.
  assert.equal((await set('SLEEPING')).code, 'OK');
  assert.equal((await record()).powerChangedMs, sleptAt);

  // A registration keeps the power state (the primary decides what it means).
  await h.run({ registerServer: { server: serverRecord(uuid, 's1', { lastAccessMs: 42 }) } });
  r = await record();
  assert.equal(r.power, 'SLEEPING');
  assert.equal(r.online, true);
  assert.equal(r.lastAccessMs, 42);

  assert.equal((await set('POWER_STATE_UNSPECIFIED' as never)).code, 'INVALID_ARGUMENT');
  assert.equal((await set('ON', [99 as never])).code, 'INVALID_ARGUMENT');
  assert.equal((await h.run({ setPowerState: { serverUuid: id(), state: 'ON' } })).code, 'NOT_FOUND');
  assert.equal(
    (await h.run({ setPowerState: { serverUuid: new Uint8Array(3), state: 'ON' } })).code,
    'INVALID_ARGUMENT',
  );

  const events = await h.machine.powerEvents(100);
  assert.deepEqual(
    events.map((e) => `${e.from}>${e.to}`),
    ['ON>GOING_DOWN', 'GOING_DOWN>FAILED_TO_STOP', 'FAILED_TO_STOP>GOING_DOWN', 'GOING_DOWN>SLEEPING'],
  );
  assert.deepEqual(
    events.map((e) => e.sequence),
    [1, 2, 3, 4],
  );
  assert.equal(events[0]!.serverName, 's1');
  assert.deepEqual(
    (await h.machine.powerEvents(2)).map((e) => e.sequence),
    [3, 4],
    'the last n events',
  );
});

test('the power log keeps the last POWER_EVENTS_MAX events', async () => {
  const { h, kv, uuid } = await withServer();
  const commands = [];
  for (let i = 0; i < POWER_EVENTS_MAX + 25; i++)
    commands.push({
      setPowerState: { serverUuid: uuid, state: i % 2 === 0 ? ('WAKING' as const) : ('ON' as const) },
    });
  const results = await h.runBatch(commands);
  assert.ok(results.every((r) => r.code === 'OK'));
  const events = await h.machine.powerEvents(POWER_EVENTS_MAX);
  assert.equal(events.length, POWER_EVENTS_MAX);
  assert.equal(events[0]!.sequence, 26);
  assert.equal(events.at(-1)!.sequence, POWER_EVENTS_MAX + 25);
  let keys = 0;
  for await (const [key] of kv.range({ gte: 'pl:', lt: 'pl:\uffff' })) if (key.startsWith('pl:')) keys += 1;
  assert.equal(keys, POWER_EVENTS_MAX, 'older events are deleted, not only hidden');
});

test('access reports only move forward; locations can be scanned for pending work', async () => {
  const { h, uuid, record } = await withServer();
  assert.equal((await h.run({ reportAccess: { serverUuid: uuid, lastAccessMs: 1000 } })).code, 'OK');
  assert.equal((await h.run({ reportAccess: { serverUuid: uuid, lastAccessMs: 500 } })).code, 'OK');
  assert.equal((await record()).lastAccessMs, 1000);
  assert.equal(
    (await h.run({ reportAccess: { serverUuid: uuid, lastAccessMs: -5 } })).code,
    'INVALID_ARGUMENT',
  );
  assert.equal((await h.run({ reportAccess: { serverUuid: id(), lastAccessMs: 5 } })).code, 'NOT_FOUND');

  const object = id();
  const backend = id();
  await h.run({
    setLocation: { object, backend, location: { outdated: false, current: false, target: true, mtimeMs: 0 } },
  });
  const seen: string[] = [];
  await h.machine.scanLocations((o, b, location) => {
    seen.push(`${Buffer.from(o).toString('hex')}:${Buffer.from(b).toString('hex')}:${location.target}`);
    return true;
  });
  assert.deepEqual(seen, [
    `${Buffer.from(object).toString('hex')}:${Buffer.from(backend).toString('hex')}:true`,
  ]);
});
