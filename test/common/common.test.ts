import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import protobuf from 'protobufjs';
import { ManualClock } from '../../node/common/clock.ts';
import {
  BackendFullError,
  CorruptObjectError,
  Errno,
  errnoOf,
  assert as invariant,
  NotFoundError,
  PermissionDeniedError,
} from '../../node/common/errors.ts';
import { KeyedMutex } from '../../node/common/mutex.ts';
import { packageRoot } from '../../node/common/package-root.ts';
import { forEachLimited } from '../../node/common/pool.ts';
import { codec, parseProtoFiles } from '../../proto/index.ts';

test('errors carry stable codes and map to errno through one table', () => {
  assert.equal(new NotFoundError('x').code, 'NOT_FOUND');
  assert.equal(errnoOf(new NotFoundError('x')), Errno.ENOENT);
  assert.equal(errnoOf(new BackendFullError('x')), Errno.ENOSPC);
  assert.equal(errnoOf(new CorruptObjectError('x')), Errno.EIO);
  assert.equal(errnoOf(new PermissionDeniedError('x')), Errno.EACCES);
  assert.equal(errnoOf(Object.assign(new Error('x'), { code: 'ENOTEMPTY' })), Errno.ENOTEMPTY);
  assert.equal(errnoOf(new Error('unknown')), Errno.EIO);
  assert.throws(() => invariant(false, 'broken'), { name: 'AssertionError' });
});

test('protobuf codecs: 64-bit as numbers, enums as names, malformed input is a DecodeError', () => {
  const header = codec<{ mtimeMs: number; mainType: string; bodySize: number }>('zhsm.object.ObjectHeader');
  const bytes = header.encode({ mtimeMs: 1_764_300_000_123, mainType: 'DATA', bodySize: 2 ** 45 });
  const decoded = header.decode(bytes);
  assert.equal(decoded.mtimeMs, 1_764_300_000_123);
  assert.equal(decoded.bodySize, 2 ** 45);
  assert.equal(decoded.mainType, 'DATA');
  assert.throws(() => header.decode(new Uint8Array([0x0a, 0xff, 0xff, 0xff])), { code: 'DECODE_ERROR' });
  assert.throws(() => codec('zhsm.nothing.Here'));
});

test('ManualClock fires timers in order, only when advanced', () => {
  const clock = new ManualClock(1000);
  const fired: string[] = [];
  clock.setTimer(50, () => fired.push('b'));
  clock.setTimer(10, () => fired.push('a'));
  const cancelled = clock.setTimer(20, () => fired.push('never'));
  cancelled.cancel();
  clock.advance(30);
  assert.deepEqual(fired, ['a']);
  clock.advance(100);
  assert.deepEqual(fired, ['a', 'b']);
  assert.equal(clock.nowMs(), 1130);
});

test('KeyedMutex serializes per key, not across keys', async () => {
  const mutex = new KeyedMutex();
  const order: string[] = [];
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  await Promise.all([
    mutex.run('a', async () => {
      order.push('a1 start');
      await sleep(20);
      order.push('a1 end');
    }),
    mutex.run('a', async () => {
      order.push('a2');
    }),
    mutex.run('b', async () => {
      order.push('b');
    }),
  ]);
  assert.deepEqual(order, ['a1 start', 'b', 'a1 end', 'a2']);
  assert.equal(mutex.size, 0);
});

test('the schemas saved as JSON (the bundle loads them so) are the schemas of the .proto files', () => {
  const parsed = parseProtoFiles(join(packageRoot, 'proto'));
  const saved = JSON.parse(JSON.stringify(parsed.toJSON())) as protobuf.INamespace;
  const loaded = protobuf.Root.fromJSON(saved);
  loaded.resolveAll();
  assert.equal(JSON.stringify(loaded.toJSON()), JSON.stringify(parsed.toJSON()));
  // Bytes written with one decode the same with the other, nested messages and enums included.
  const header = {
    id: new Uint8Array(16).fill(7),
    mainType: 'META',
    subType: 'FILE',
    bodySize: 2 ** 40,
    blockChecksums: [1, 2, 3],
    xattrs: [{ name: 'user.a', value: new Uint8Array([1]) }],
  };
  const typeName = 'zhsm.object.ObjectHeader';
  const bytes = parsed.lookupType(typeName).encode(header).finish();
  const options = { longs: Number, enums: String, defaults: true };
  assert.deepEqual(
    loaded.lookupType(typeName).toObject(loaded.lookupType(typeName).decode(bytes), options),
    parsed.lookupType(typeName).toObject(parsed.lookupType(typeName).decode(bytes), options),
  );
  assert.equal(codec<typeof header>(typeName).decode(bytes).bodySize, 2 ** 40);
});

test('forEachLimited: at most `limit` at once; after a failure nothing new starts, running ones finish', async () => {
  let running = 0;
  let most = 0;
  const started: number[] = [];
  const finished: number[] = [];
  const task = async (n: number) => {
    started.push(n);
    running += 1;
    most = Math.max(most, running);
    await new Promise((resolve) => setTimeout(resolve, n === 3 ? 1 : 10));
    running -= 1;
    if (n === 3) throw new Error('three failed');
    finished.push(n);
  };
  await assert.rejects(
    forEachLimited(
      Array.from({ length: 20 }, (_, i) => i),
      4,
      task,
    ),
    /three failed/,
  );
  assert.equal(most, 4);
  assert.equal(running, 0, 'the running tasks finished before the failure was thrown');
  assert.ok(started.length < 20, `started ${started.length}`);
  for (const n of [0, 1, 2]) assert.ok(finished.includes(n), `${n} started before the failure and finished`);
  assert.ok(!finished.includes(3));
  const all: number[] = [];
  await forEachLimited([1, 2, 3], 8, async (n) => void all.push(n));
  assert.deepEqual(all, [1, 2, 3]);
});
