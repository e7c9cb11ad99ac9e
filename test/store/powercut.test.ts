/**
 * Power cuts, simulated: the backend runs on sim/sim-fs.ts, which keeps apart what processes see
 * and what is durable. The power is cut at a random operation; the recovered filesystem holds the
 * durable state plus a random subset of unsynced pages and directory entries (torn writes).
 * Every acknowledged ingest, header update and delete must survive; nothing may be torn.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backend } from '../../node/store/backend.ts';
import { newObjectId, objectIdToHex } from '../../node/store/object-id.ts';
import { SimFileSystem } from '../../sim/sim-fs.ts';
import { patternBytes } from '../helpers.ts';

const seeds = Number(process.env.ZHSM_POWERCUT_SEEDS ?? 300);

function prng(seed: number): (bound: number) => number {
  let state = seed >>> 0;
  return (bound) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * bound);
  };
}

function bodyOf(version: number): Buffer {
  const size = (version * 10_007) % 300_000;
  const body = Buffer.alloc(size);
  patternBytes(Math.min(size, 20_000), version).copy(body, 0);
  if (size > 200_000) patternBytes(5000, version + 1).copy(body, 150_000);
  return body;
}

interface Expectation {
  /** Highest acknowledged version; undefined if never acknowledged. */
  ackedVersion?: number;
  /** Versions started (a later one may have landed without its acknowledgement). */
  startedVersions: Set<number>;
  removed: boolean;
  removeStarted: boolean;
  /** Values of the hot flag the acknowledged version may show (acknowledged or in flight). */
  hotAllowed: Set<boolean>;
}

test(`the object store survives ${seeds} simulated power cuts with torn writes`, async () => {
  let cutsInIngest = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const random = prng(seed);
    const fs = new SimFileSystem({ randomInt: random });
    await Backend.create('/backend', { cell: 'sim', fs });
    const backend = await Backend.open('/backend', { cell: 'sim', fs });
    const ids = [newObjectId(), newObjectId(), newObjectId()];
    const expected = ids.map(
      (): Expectation => ({
        startedVersions: new Set(),
        removed: false,
        removeStarted: false,
        hotAllowed: new Set([false]),
      }),
    );
    fs.cutAfterOperations = fs.operations + 1 + random(600);
    let version = 1;
    const workload = async () => {
      for (;;) {
        const i = random(ids.length);
        const id = ids[i]!;
        const e = expected[i]!;
        const action = random(10);
        if (action < 6) {
          const v = version++;
          e.startedVersions.add(v);
          if (e.removed) {
            // Removed (acknowledged), now stored again: until this ingest is acknowledged the
            // object may be absent or present with this version, nothing else.
            e.removed = false;
            e.ackedVersion = undefined;
          }
          await backend.ingest({ id, version: v, mtimeMs: 1_000_000 + v }, bodyOf(v));
          e.ackedVersion = v;
          e.removed = false;
          e.removeStarted = false;
          e.hotAllowed = new Set([false]);
        } else if (action < 9) {
          if (e.ackedVersion === undefined || e.removed || e.removeStarted) continue;
          const hot = random(2) === 0;
          e.hotAllowed.add(hot);
          await backend.updateHeader(id, (h) => ({ ...h, flags: { ...h.flags, hot } }));
          e.hotAllowed = new Set([hot]);
        } else {
          if (e.ackedVersion === undefined || e.removed) continue;
          e.removeStarted = true;
          await backend.remove(id);
          e.removed = true;
        }
      }
    };
    const outcome = await Promise.race([workload().then(() => 'finished'), fs.whenDead().then(() => 'cut')]);
    assert.equal(outcome, 'cut');
    const recovered = fs.recover();
    const after = await Backend.open('/backend', { cell: 'sim', fs: recovered });
    const leftovers = await recovered.readdir('/backend/tmp');
    assert.deepEqual(leftovers, [], `seed ${seed}: temp cleaned`);
    for (const [i, id] of ids.entries()) {
      const e = expected[i]!;
      const where = `seed ${seed}, object ${i} (${objectIdToHex(id)})`;
      const present = await after.has(id);
      if (e.removed) {
        assert.equal(present, false, `${where}: deleted but back`);
        continue;
      }
      if (!present) {
        assert.ok(
          e.ackedVersion === undefined || e.removeStarted,
          `${where}: acknowledged version ${e.ackedVersion} lost`,
        );
        continue;
      }
      const head = await after.head(id);
      assert.ok(e.startedVersions.has(head.version), `${where}: version ${head.version} was never written`);
      if (e.ackedVersion !== undefined) {
        assert.ok(
          head.version >= e.ackedVersion,
          `${where}: version ${head.version} < acknowledged ${e.ackedVersion}`,
        );
        if (head.version === e.ackedVersion) {
          assert.ok(e.hotAllowed.has(head.flags.hot), `${where}: acknowledged header update lost`);
        }
      } else {
        cutsInIngest++;
      }
      const body = await after.readAll(id, 'full');
      assert.ok(body.equals(bodyOf(head.version)), `${where}: body of version ${head.version} damaged`);
    }
    const report = await after.scrub();
    assert.deepEqual(report.corrupt, [], `seed ${seed}: scrub finds no damage`);
  }
  assert.ok(cutsInIngest >= 0);
});
