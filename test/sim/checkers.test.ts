import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Entry } from '../../consensus/types.ts';
import { hashEntry, SafetyChecker, ShadowLog, SimViolation } from '../../sim/checkers.ts';

function entry(index: number, term: number, text = `e${index}.${term}`): Entry {
  return { index, term, type: 'normal', data: new TextEncoder().encode(text) };
}

function code(fn: () => void): string | undefined {
  try {
    fn();
  } catch (error) {
    if (error instanceof SimViolation) return error.code;
    throw error;
  }
  return undefined;
}

function checker(): SafetyChecker {
  return new SafetyChecker({ now: () => 1234 });
}

describe('ShadowLog', () => {
  test('appends, truncates a conflicting suffix and reports the cut', () => {
    const log = new ShadowLog();
    assert.equal(log.append([entry(1, 1), entry(2, 1), entry(3, 1)]), 0);
    const before = log.prefixAt(2);
    assert.equal(log.append([entry(3, 2), entry(4, 2)]), 1);
    assert.equal(log.lastIndex, 4);
    assert.equal(log.termAt(3), 2);
    assert.equal(log.prefixAt(2), before);
    assert.throws(() => log.append([entry(7, 2)]), /gap/);
  });

  test('equal prefixes hash equal, different ones differ', () => {
    const a = new ShadowLog();
    const b = new ShadowLog();
    a.append([entry(1, 1), entry(2, 1)]);
    b.append([entry(1, 1), entry(2, 1, 'other')]);
    assert.equal(a.prefixAt(1), b.prefixAt(1));
    assert.notEqual(a.prefixAt(2), b.prefixAt(2));
  });

  test('compaction keeps the suffix and the prefix hashes; a snapshot replaces the log', () => {
    const log = new ShadowLog();
    log.append([entry(1, 1), entry(2, 1), entry(3, 2)]);
    const prefix3 = log.prefixAt(3);
    log.compactTo(2);
    assert.equal(log.baseIndex, 2);
    assert.equal(log.termAt(2), 1);
    assert.equal(log.prefixAt(3), prefix3);
    log.installSnapshot(10, 4, 99);
    assert.equal(log.lastIndex, 10);
    assert.equal(log.lastTerm, 4);
    assert.equal(log.termAt(3), undefined);
  });
});

describe('SafetyChecker', () => {
  test('election safety: one leader per term', () => {
    const c = checker();
    c.leaderElected(1, 1);
    c.leaderElected(1, 1);
    c.leaderElected(2, 2);
    assert.equal(
      code(() => c.leaderElected(3, 2)),
      'election-safety',
    );
  });

  test('log matching: the same (index, term) must follow the same prefix', () => {
    const c = checker();
    c.logEntry(1, 5, 2, 111);
    c.logEntry(2, 5, 2, 111);
    c.logEntry(3, 5, 3, 222);
    assert.equal(
      code(() => c.logEntry(3, 5, 2, 333)),
      'log-matching',
    );
  });

  test('state machine safety and committed prefixes never change', () => {
    const c = checker();
    c.applied(1, 1, hashEntry(entry(1, 1)), 10);
    c.applied(2, 1, hashEntry(entry(1, 1)), 10);
    assert.equal(
      code(() => c.applied(3, 1, hashEntry(entry(1, 2)), undefined)),
      'state-machine-safety',
    );
    assert.equal(
      code(() => c.committed(3, 1, 11)),
      'commit-changed',
    );
  });

  test('leader completeness: a new leader holds every committed entry', () => {
    const c = checker();
    const full = new ShadowLog();
    full.append([entry(1, 1), entry(2, 1)]);
    c.committed(1, 2, full.prefixAt(2)!);
    c.leaderLog(1, 2, full);
    const short = new ShadowLog();
    short.append([entry(1, 1)]);
    assert.equal(
      code(() => c.leaderLog(2, 3, short)),
      'leader-completeness',
    );
    const divergent = new ShadowLog();
    divergent.append([entry(1, 1), entry(2, 2), entry(3, 3)]);
    assert.equal(
      code(() => c.leaderLog(3, 4, divergent)),
      'leader-completeness',
    );
  });

  test('term, vote and commit index never go backwards', () => {
    const c = checker();
    const s = { term: 3, votedFor: 2, commitIndex: 5 };
    c.hardState(1, s, { term: 3, votedFor: 2, commitIndex: 6 }, 'ready');
    c.hardState(1, s, { term: 4, votedFor: 0, commitIndex: 5 }, 'ready');
    assert.equal(
      code(() => c.hardState(1, s, { term: 2, votedFor: 2, commitIndex: 5 }, 'ready')),
      'term-backwards',
    );
    assert.equal(
      code(() => c.hardState(1, s, { term: 3, votedFor: 1, commitIndex: 5 }, 'ready')),
      'vote-changed',
    );
    assert.equal(
      code(() => c.hardState(1, s, { term: 3, votedFor: 0, commitIndex: 5 }, 'restart')),
      'vote-changed',
    );
    assert.equal(
      code(() => c.hardState(1, s, { term: 3, votedFor: 2, commitIndex: 4 }, 'ready')),
      'commit-backwards',
    );
  });

  test('a node votes once per term, across restarts', () => {
    const c = checker();
    c.voteGranted(1, 3, 2);
    c.voteGranted(1, 3, 2);
    c.voteGranted(1, 4, 3);
    assert.equal(
      code(() => c.voteGranted(1, 3, 3)),
      'double-vote',
    );
  });

  test('an acknowledged write must be the entry applied at its index', () => {
    const c = checker();
    c.acknowledge(7, hashEntry(entry(7, 2)));
    assert.equal(
      code(() => c.applied(1, 7, hashEntry(entry(7, 3)), undefined)),
      'acknowledged-write-lost',
    );
    const d = checker();
    d.applied(1, 8, hashEntry(entry(8, 3)), undefined);
    assert.equal(
      code(() => d.acknowledge(8, hashEntry(entry(8, 2)))),
      'acknowledged-write-lost',
    );
  });

  test('violations carry the virtual time', () => {
    const c = checker();
    c.leaderElected(1, 1);
    try {
      c.leaderElected(2, 1);
      assert.fail('no violation');
    } catch (error) {
      assert.ok(error instanceof SimViolation);
      assert.equal(error.atUs, 1234);
      assert.equal(error.code, 'election-safety');
    }
  });
});
