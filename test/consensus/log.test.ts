import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RaftLog } from '../../consensus/log.ts';
import {
  applyConfigChange,
  configChangeProblem,
  decodeConfigRecord,
  encodeConfigRecord,
} from '../../consensus/membership.ts';
import type { Entry } from '../../consensus/types.ts';

function log(snapshotIndex: number, snapshotTerm: number, terms: number[]): RaftLog {
  const entries: Entry[] = terms.map((term, i) => ({
    term,
    index: snapshotIndex + 1 + i,
    type: 'normal',
    data: new Uint8Array(0),
  }));
  return new RaftLog({
    snapshotIndex,
    snapshotTerm,
    entries,
    committed: snapshotIndex,
    applied: snapshotIndex,
  });
}

describe('RaftLog', () => {
  test('term lookups by binary search', () => {
    const l = log(3, 1, [1, 1, 2, 2, 2, 5, 5, 7]); // indexes 4..11
    assert.deepEqual(
      [0, 1, 2, 3, 5, 6, 7, 8].map((t) => l.lastIndexOfTerm(t)),
      [0, 5, 8, 0, 10, 0, 11, 0],
    );
    assert.deepEqual(
      [4, 5, 6, 8, 9, 10, 11].map((i) => l.firstIndexOfTermAt(i)),
      [4, 4, 6, 6, 9, 9, 11],
    );
    assert.equal(l.term(2), undefined, 'compacted');
    assert.equal(l.term(3), 1, 'the snapshot base');
    assert.equal(l.term(12), undefined, 'beyond the end');
  });

  test('up-to-date check compares last term, then last index', () => {
    const l = log(0, 0, [1, 2, 2]);
    assert.equal(l.isUpToDate(3, 2), true);
    assert.equal(l.isUpToDate(2, 2), false);
    assert.equal(l.isUpToDate(1, 3), true);
    assert.equal(l.isUpToDate(10, 1), false);
  });

  test('truncation, stability and compaction', () => {
    const l = log(0, 0, [1, 1, 1, 1]);
    assert.equal(l.stableIndex, 4);
    l.truncateFrom(3);
    assert.equal(l.lastIndex(), 2);
    assert.equal(l.stableIndex, 2);
    l.append([{ term: 2, index: 3, type: 'noop', data: new Uint8Array(0) }]);
    assert.deepEqual(
      l.unstableEntries().map((e) => e.index),
      [3],
    );
    l.stableTo(3, 1); // stale acknowledgement (wrong term): ignored
    assert.equal(l.stableIndex, 2);
    l.stableTo(3, 2);
    assert.equal(l.stableIndex, 3);
    l.compactTo(2);
    assert.equal(l.firstIndex(), 3);
    assert.equal(l.snapshotTerm, 1);
    assert.throws(() => l.slice(2, 3), { name: 'AssertionError' });
    assert.throws(
      () => l.append([{ term: 1, index: 4, type: 'noop', data: new Uint8Array(0) }]),
      { name: 'AssertionError' },
      'a term below the last one',
    );
  });
});

describe('membership', () => {
  test('changes validate against the current membership', () => {
    const m = { voters: [1, 2, 3], learners: [] };
    assert.equal(configChangeProblem(m, { kind: 'promote', node: 4 }), 'node 4 is not a learner');
    assert.equal(configChangeProblem(m, { kind: 'addLearner', node: 2 }), 'node 2 is already a member');
    assert.equal(
      configChangeProblem({ voters: [1], learners: [] }, { kind: 'remove', node: 1 }),
      'cannot remove the last voter',
    );
    const added = applyConfigChange(m, { kind: 'addLearner', node: 4 });
    assert.deepEqual(added, { voters: [1, 2, 3], learners: [4] });
    assert.deepEqual(applyConfigChange(added, { kind: 'promote', node: 4 }), {
      voters: [1, 2, 3, 4],
      learners: [],
    });
  });

  test('config records round-trip and reject garbage', () => {
    const record = {
      change: { kind: 'remove' as const, node: 3 },
      membership: { voters: [1, 2], learners: [] },
    };
    assert.deepEqual(decodeConfigRecord(encodeConfigRecord(record)), record);
    assert.throws(() => decodeConfigRecord(new TextEncoder().encode('{"v":1}')), { code: 'DECODE_ERROR' });
    assert.throws(() => decodeConfigRecord(Uint8Array.of(0xff)), { code: 'DECODE_ERROR' });
  });
});
