import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeCommand, encodeCommand, KvStore } from '../../sim/kv.ts';

describe('KvStore', () => {
  test('put and append; a retried command applies once', () => {
    const kv = new KvStore();
    assert.equal(kv.apply({ op: 'put', key: 'a', value: 'x', client: 1, id: 1 }), true);
    assert.equal(kv.apply({ op: 'append', key: 'a', value: 'y', client: 1, id: 2 }), true);
    assert.equal(kv.apply({ op: 'append', key: 'a', value: 'y', client: 1, id: 2 }), false);
    assert.equal(kv.apply({ op: 'append', key: 'a', value: 'z', client: 2, id: 1 }), true);
    assert.equal(kv.get('a'), 'xyz');
    assert.equal(kv.get('missing'), '');
  });

  test('equal states serialize to equal bytes and round-trip, sessions included', () => {
    const a = new KvStore();
    const b = new KvStore();
    a.apply({ op: 'put', key: 'k1', value: '1', client: 1, id: 1 });
    a.apply({ op: 'put', key: 'k2', value: '2', client: 2, id: 1 });
    b.apply({ op: 'put', key: 'k2', value: '2', client: 2, id: 1 });
    b.apply({ op: 'put', key: 'k1', value: '1', client: 1, id: 1 });
    assert.deepEqual(a.serialize(), b.serialize());
    const c = KvStore.deserialize(a.serialize());
    assert.deepEqual(c.serialize(), a.serialize());
    assert.equal(c.apply({ op: 'put', key: 'k1', value: 'again', client: 1, id: 1 }), false);
    assert.deepEqual(KvStore.deserialize(new Uint8Array()).serialize(), new KvStore().serialize());
  });

  test('commands round-trip; unknown ones are refused', () => {
    const command = { op: 'append', key: 'k', value: 'v', client: 3, id: 9 } as const;
    assert.deepEqual(decodeCommand(encodeCommand(command)), command);
    assert.throws(
      () => decodeCommand(new TextEncoder().encode('{"op":"drop","key":"k","value":"v"}')),
      /unknown/,
    );
  });
});
