/**
 * One RaftStorage compliance suite, two worlds: MemoryRaftStorage and LevelRaftStorage run the
 * same tests. `reopen` models a restart: memory keeps its exported plain state, LevelDB reopens
 * the directory.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  decodeEntry,
  decodeHardState,
  decodeMessage,
  decodeSnapshot,
  encodeEntry,
  encodeHardState,
  encodeMessage,
  encodeSnapshot,
} from '../../consensus/codec.ts';
import { entryKey, LevelRaftStorage } from '../../consensus/storage-level.ts';
import { MemoryRaftStorage } from '../../consensus/storage-memory.ts';
import type { Entry, Message, RaftStorage, Snapshot } from '../../consensus/types.ts';

interface World {
  readonly name: string;
  create(): Promise<RaftStorage>;
  reopen(storage: RaftStorage): Promise<RaftStorage>;
}

const temporaryDirectories: string[] = [];
after(async () => {
  for (const directory of temporaryDirectories) await rm(directory, { recursive: true, force: true });
});

const worlds: World[] = [
  {
    name: 'memory',
    create: async () => new MemoryRaftStorage(),
    reopen: async (storage) => {
      const state = (storage as MemoryRaftStorage).exportState();
      await storage.close();
      return new MemoryRaftStorage(state);
    },
  },
  {
    name: 'level',
    create: async () => {
      const directory = await mkdtemp(join(tmpdir(), 'zhsm-raft-'));
      temporaryDirectories.push(directory);
      const storage = await LevelRaftStorage.open(join(directory, 'raft'));
      locations.set(storage, join(directory, 'raft'));
      return storage;
    },
    reopen: async (storage) => {
      const location = locations.get(storage)!;
      await storage.close();
      const reopened = await LevelRaftStorage.open(location);
      locations.set(reopened, location);
      return reopened;
    },
  },
];
const locations = new WeakMap<RaftStorage, string>();

const encoder = new TextEncoder();

function entry(index: number, term: number, data = `e${index}`): Entry {
  return { index, term, type: 'normal', data: encoder.encode(data) };
}

function entries(from: number, to: number, term: number): Entry[] {
  return Array.from({ length: to - from + 1 }, (_, i) => entry(from + i, term));
}

function snapshot(index: number, term: number): Snapshot {
  return {
    meta: { index, term, membership: { voters: [1, 2, 3], learners: [4] } },
    data: encoder.encode(`state@${index}`),
  };
}

function indexes(list: readonly Entry[]): number[] {
  return list.map((e) => e.index);
}

for (const world of worlds) {
  describe(`RaftStorage (${world.name})`, () => {
    test('a new storage is empty', async () => {
      const storage = await world.create();
      const loaded = await storage.load();
      assert.deepEqual(loaded.hardState, { term: 0, votedFor: 0, commitIndex: 0 });
      assert.equal(loaded.snapshot, undefined);
      assert.deepEqual(loaded.entries, []);
      await storage.close();
    });

    test('entries and hard state survive a restart', async () => {
      let storage = await world.create();
      await storage.save({ hardState: { term: 2, votedFor: 1, commitIndex: 3 }, entries: entries(1, 5, 2) });
      storage = await world.reopen(storage);
      const loaded = await storage.load();
      assert.deepEqual(loaded.hardState, { term: 2, votedFor: 1, commitIndex: 3 });
      assert.deepEqual(indexes(loaded.entries), [1, 2, 3, 4, 5]);
      assert.deepEqual(loaded.entries[2], entry(3, 2));
      await storage.close();
    });

    test('entries at >= the first new index are replaced (conflict truncation)', async () => {
      let storage = await world.create();
      await storage.save({ hardState: { term: 1, votedFor: 1, commitIndex: 0 }, entries: entries(1, 10, 1) });
      await storage.save({
        hardState: { term: 3, votedFor: 2, commitIndex: 0 },
        entries: [entry(4, 3, 'new')],
      });
      storage = await world.reopen(storage);
      const loaded = await storage.load();
      assert.deepEqual(indexes(loaded.entries), [1, 2, 3, 4]);
      assert.deepEqual(loaded.entries[3], entry(4, 3, 'new'));
      await storage.close();
    });

    test('entries iterate in index order across byte boundaries', async () => {
      let storage = await world.create();
      await storage.save({
        hardState: { term: 1, votedFor: 0, commitIndex: 0 },
        entries: entries(1, 300, 1),
      });
      storage = await world.reopen(storage);
      assert.deepEqual(
        indexes((await storage.load()).entries),
        Array.from({ length: 300 }, (_, i) => i + 1),
      );
      await storage.close();
    });

    test('compact replaces the prefix with the snapshot', async () => {
      let storage = await world.create();
      await storage.save({ hardState: { term: 2, votedFor: 1, commitIndex: 8 }, entries: entries(1, 10, 2) });
      await storage.compact(snapshot(6, 2));
      storage = await world.reopen(storage);
      const loaded = await storage.load();
      assert.deepEqual(loaded.snapshot, snapshot(6, 2));
      assert.deepEqual(indexes(loaded.entries), [7, 8, 9, 10]);
      // An older snapshot is ignored.
      await storage.compact(snapshot(4, 2));
      assert.deepEqual((await storage.load()).snapshot?.meta.index, 6);
      await storage.close();
    });

    test('compact refuses a snapshot whose term differs from the stored entry', async () => {
      const storage = await world.create();
      await storage.save({ hardState: { term: 2, votedFor: 1, commitIndex: 8 }, entries: entries(1, 10, 2) });
      await assert.rejects(storage.compact(snapshot(6, 1)), { name: 'AssertionError' });
      await storage.close();
    });

    test('a received snapshot drops every stored entry, then new entries follow it', async () => {
      let storage = await world.create();
      await storage.save({ hardState: { term: 1, votedFor: 1, commitIndex: 2 }, entries: entries(1, 5, 1) });
      await storage.save({
        hardState: { term: 3, votedFor: 0, commitIndex: 20 },
        snapshot: snapshot(20, 3),
        entries: entries(21, 22, 3),
      });
      storage = await world.reopen(storage);
      const loaded = await storage.load();
      assert.equal(loaded.snapshot?.meta.index, 20);
      assert.deepEqual(indexes(loaded.entries), [21, 22]);
      assert.deepEqual(loaded.hardState, { term: 3, votedFor: 0, commitIndex: 20 });
      await storage.close();
    });

    test('a gap in the log is refused', async () => {
      const storage = await world.create();
      await storage.save({ hardState: { term: 1, votedFor: 0, commitIndex: 0 }, entries: entries(1, 3, 1) });
      await assert.rejects(storage.save({ entries: [entry(5, 1)] }), { name: 'AssertionError' });
      assert.deepEqual(indexes((await storage.load()).entries), [1, 2, 3]);
      await storage.close();
    });

    test('writes issued without waiting apply in order', async () => {
      let storage = await world.create();
      await Promise.all([
        storage.save({ hardState: { term: 1, votedFor: 1, commitIndex: 0 }, entries: entries(1, 5, 1) }),
        storage.save({ entries: entries(6, 8, 1) }),
        storage.save({ hardState: { term: 2, votedFor: 2, commitIndex: 4 }, entries: [entry(7, 2)] }),
        storage.compact(snapshot(3, 1)),
      ]);
      storage = await world.reopen(storage);
      const loaded = await storage.load();
      assert.equal(loaded.snapshot?.meta.index, 3);
      assert.deepEqual(indexes(loaded.entries), [4, 5, 6, 7]);
      assert.equal(loaded.entries[3]?.term, 2);
      assert.deepEqual(loaded.hardState, { term: 2, votedFor: 2, commitIndex: 4 });
      await storage.close();
    });

    test('a closed storage refuses with CLOSED', async () => {
      const storage = await world.create();
      await storage.close();
      await assert.rejects(storage.load(), { code: 'CLOSED' });
      await assert.rejects(storage.save({ entries: [] }), { code: 'CLOSED' });
    });
  });
}

describe('codec', () => {
  test('entry keys are fixed-width big-endian', () => {
    assert.deepEqual([...entryKey(258)], [0x65, 0, 0, 0, 0, 0, 0, 1, 2]);
  });

  test('records round-trip', () => {
    const e: Entry = { index: 7, term: 3, type: 'config', data: encoder.encode('{"v":1}') };
    assert.deepEqual(decodeEntry(encodeEntry(e)), e);
    assert.deepEqual(decodeHardState(encodeHardState({ term: 9, votedFor: 2, commitIndex: 4 })), {
      term: 9,
      votedFor: 2,
      commitIndex: 4,
    });
    assert.deepEqual(decodeSnapshot(encodeSnapshot(snapshot(5, 2))), snapshot(5, 2));
  });

  test('every message type round-trips', () => {
    const messages: Message[] = [
      {
        type: 'RequestVote',
        from: 1,
        to: 2,
        term: 3,
        lastLogIndex: 9,
        lastLogTerm: 2,
        preVote: true,
        transfer: false,
      },
      { type: 'RequestVoteResponse', from: 2, to: 1, term: 3, granted: true, preVote: true },
      {
        type: 'AppendEntries',
        from: 1,
        to: 2,
        term: 3,
        prevLogIndex: 4,
        prevLogTerm: 2,
        entries: [entry(5, 3), { index: 6, term: 3, type: 'noop', data: new Uint8Array(0) }],
        leaderCommit: 4,
        readContext: 7,
      },
      {
        type: 'AppendEntriesResponse',
        from: 2,
        to: 1,
        term: 3,
        success: false,
        matchIndex: 0,
        conflictIndex: 3,
        conflictTerm: 2,
        readContext: 7,
      },
      { type: 'InstallSnapshot', from: 1, to: 2, term: 3, snapshot: snapshot(20, 3) },
      { type: 'InstallSnapshotResponse', from: 2, to: 1, term: 3, matchIndex: 20 },
      { type: 'TimeoutNow', from: 1, to: 2, term: 3 },
    ];
    for (const message of messages) assert.deepEqual(decodeMessage(encodeMessage(message)), message);
  });

  test('garbage decodes to DECODE_ERROR', () => {
    assert.throws(() => decodeMessage(Uint8Array.of(0xff, 0xff, 0xff)), { code: 'DECODE_ERROR' });
    assert.throws(() => decodeEntry(Uint8Array.of(0x08)), { code: 'DECODE_ERROR' });
  });
});
