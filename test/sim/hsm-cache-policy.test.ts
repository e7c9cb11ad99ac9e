/** node/hsm/cache-policy.ts: admission, LRU eviction by bytes, coherence. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CachePolicy } from '../../node/hsm/cache-policy.ts';

test('admits on every read with k = 1 and evicts the least recently used by bytes', () => {
  const evicted: string[] = [];
  const cache = new CachePolicy({ maxBytes: 100, admitAfterReads: 1, windowMs: 1000 }, (e) =>
    evicted.push(e.id),
  );
  assert.equal(cache.noteRead({ id: 'a', size: 20, version: 1 }, 0), true);
  assert.equal(cache.noteRead({ id: 'b', size: 20, version: 1 }, 0), true);
  assert.equal(cache.lookup('a', 1), 'hit'); // a is now the most recent
  assert.equal(cache.noteRead({ id: 'c', size: 20, version: 1 }, 0), true);
  assert.equal(cache.noteRead({ id: 'd', size: 25, version: 1 }, 0), true); // 85 bytes
  assert.equal(cache.noteRead({ id: 'e', size: 26, version: 1 }, 0), false, 'larger than a quarter');
  assert.equal(cache.noteRead({ id: 'f', size: 24, version: 1 }, 0), true); // 109 > 100: evict b
  assert.deepEqual(evicted, ['b']);
  assert.equal(cache.bytes, 89);
  assert.equal(cache.lookup('b', 1), 'miss');
  assert.equal(cache.stats.evictions, 1);
});

test('admits on the k-th read within the window only', () => {
  const cache = new CachePolicy({ maxBytes: 1000, admitAfterReads: 3, windowMs: 100 });
  const entry = { id: 'x', size: 10, version: 1 };
  assert.equal(cache.noteRead(entry, 0), false);
  assert.equal(cache.noteRead(entry, 50), false);
  assert.equal(cache.noteRead(entry, 200), false, 'the first two fell out of the window');
  assert.equal(cache.noteRead(entry, 250), false);
  assert.equal(cache.noteRead(entry, 260), true);
  assert.equal(cache.holds('x', 1), true);
});

test('a newer version or an invalidation drops the cached copy; size 0 or k = 0 disables it', () => {
  const cache = new CachePolicy({ maxBytes: 1000, admitAfterReads: 1, windowMs: 100 });
  cache.noteRead({ id: 'x', size: 10, version: 1 }, 0);
  assert.equal(cache.lookup('x', 2), 'stale');
  assert.equal(cache.holds('x', 1), false);
  cache.noteRead({ id: 'x', size: 10, version: 2 }, 0);
  assert.equal(cache.invalidateIfStale('x', 2), false);
  assert.equal(cache.invalidate('x'), true);
  assert.equal(cache.lookup('x', 2), 'miss');
  assert.equal(cache.stats.invalidations, 2);
  for (const off of [
    new CachePolicy({ maxBytes: 0, admitAfterReads: 1, windowMs: 1 }),
    new CachePolicy({ maxBytes: 100, admitAfterReads: 0, windowMs: 1 }),
  ]) {
    assert.equal(off.enabled, false);
    assert.equal(off.noteRead({ id: 'x', size: 1, version: 1 }, 0), false);
    assert.equal(off.lookup('x', 1), 'miss');
  }
});
