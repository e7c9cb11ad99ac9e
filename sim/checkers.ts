/**
 * Safety checkers. The simulation reports what it observes (Readies, messages, applies,
 * client acknowledgements) as it happens, so every check runs after every event; the first
 * violation throws a SimViolation with a stable code, which ends the run.
 */
import type { Entry, HardState, NodeId } from '../consensus/types.ts';

export type ViolationCode =
  | 'election-safety'
  | 'log-matching'
  | 'leader-completeness'
  | 'leader-append-only'
  | 'state-machine-safety'
  | 'commit-changed'
  | 'term-backwards'
  | 'vote-changed'
  | 'commit-backwards'
  | 'double-vote'
  | 'unpersisted-send'
  | 'acknowledged-write-lost'
  | 'not-linearizable'
  | 'linearizability-budget'
  | 'no-leader'
  | 'not-lowest-id-leader'
  | 'divergent-state'
  | 'not-caught-up'
  | 'scenario'
  | 'core-error'
  | 'contract';

export class SimViolation extends Error {
  override readonly name = 'SimViolation';
  readonly code: ViolationCode;
  readonly atUs: number;

  constructor(code: ViolationCode, message: string, atUs: number) {
    super(`${code}: ${message}`);
    this.code = code;
    this.atUs = atUs;
  }
}

// --- hashing entries and log prefixes (two 32-bit lanes folded into a safe integer) ---

const LANE_HIGH_MASK = 0x1f_ffff;

function mix32(h: number, x: number): number {
  let k = Math.imul(x | 0, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  let r = h ^ k;
  r = (r << 13) | (r >>> 19);
  return (Math.imul(r, 5) + 0xe6546b64) | 0;
}

function fold(low: number, high: number): number {
  return (high & LANE_HIGH_MASK) * 0x1_0000_0000 + (low >>> 0);
}

/** A hash of one entry's identity and content. */
export function hashEntry(entry: Entry): number {
  let low = mix32(0x12345, entry.term);
  let high = mix32(0x6789a, entry.index);
  low = mix32(low, entry.index);
  high = mix32(high, entry.term);
  const type = entry.type === 'normal' ? 1 : entry.type === 'noop' ? 2 : 3;
  low = mix32(low, type);
  high = mix32(high, type * 7);
  const data = entry.data;
  for (let i = 0; i < data.length; i++) {
    low = mix32(low, data[i]!);
    high = mix32(high, data[i]! + 0x100);
  }
  low = mix32(low, data.length);
  return fold(low, high);
}

/** The hash of a log prefix ending with an entry of hash `entryHash`. */
export function chainHash(previous: number, entryHash: number): number {
  const low = mix32(mix32(previous >>> 0, entryHash >>> 0), 0x3b);
  const high = mix32(mix32(Math.floor(previous / 0x1_0000_0000), Math.floor(entryHash / 0x1_0000_0000)), low);
  return fold(low, high);
}

/**
 * The simulator's mirror of one node's log (what the core told it to persist): per index the
 * term and the hash of the whole prefix up to it. A snapshot becomes the base of the log.
 */
export class ShadowLog {
  baseIndex = 0;
  baseTerm = 0;
  basePrefix = 0;
  readonly terms: number[] = [];
  readonly prefixes: number[] = [];
  readonly types: Entry['type'][] = [];

  get lastIndex(): number {
    return this.baseIndex + this.terms.length;
  }

  get lastTerm(): number {
    return this.terms.length === 0 ? this.baseTerm : this.terms[this.terms.length - 1]!;
  }

  /** undefined when the index is compacted away or beyond the log. */
  termAt(index: number): number | undefined {
    if (index === this.baseIndex) return this.baseTerm;
    return this.terms[index - this.baseIndex - 1];
  }

  prefixAt(index: number): number | undefined {
    if (index === this.baseIndex) return this.basePrefix;
    return this.prefixes[index - this.baseIndex - 1];
  }

  typeAt(index: number): Entry['type'] | undefined {
    return this.types[index - this.baseIndex - 1];
  }

  /** Append (replacing any suffix at >= entries[0].index). Returns how many entries were cut. */
  append(entries: readonly Entry[]): number {
    const first = entries[0]!.index;
    if (first <= this.baseIndex) throw new Error(`entry ${first} at or below the snapshot ${this.baseIndex}`);
    if (first > this.lastIndex + 1) throw new Error(`gap: entry ${first} after last index ${this.lastIndex}`);
    const keep = first - this.baseIndex - 1;
    const cut = this.terms.length - keep;
    this.terms.length = keep;
    this.prefixes.length = keep;
    this.types.length = keep;
    let prefix = this.prefixAt(first - 1)!;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      if (entry.index !== first + i) throw new Error(`entries not contiguous at ${entry.index}`);
      prefix = chainHash(prefix, hashEntry(entry));
      this.terms.push(entry.term);
      this.prefixes.push(prefix);
      this.types.push(entry.type);
    }
    return cut;
  }

  /** Install a snapshot received from the leader: it replaces the whole log (the storage contract). */
  installSnapshot(index: number, term: number, prefix: number): void {
    this.#rebase(index, term, prefix, this.terms.length);
  }

  #rebase(index: number, term: number, prefix: number, drop: number): void {
    this.terms.splice(0, drop);
    this.prefixes.splice(0, drop);
    this.types.splice(0, drop);
    this.baseIndex = index;
    this.baseTerm = term;
    this.basePrefix = prefix;
  }

  /** Log compaction up to index (which must be in the log). */
  compactTo(index: number): void {
    if (index <= this.baseIndex) return;
    const term = this.termAt(index);
    const prefix = this.prefixAt(index);
    if (term === undefined || prefix === undefined) throw new Error(`compact beyond the log: ${index}`);
    this.#rebase(index, term, prefix, index - this.baseIndex);
  }

  reset(): void {
    this.baseIndex = 0;
    this.baseTerm = 0;
    this.basePrefix = 0;
    this.terms.length = 0;
    this.prefixes.length = 0;
    this.types.length = 0;
  }
}

const TERM_KEY_MAX = 0x10_0000;

function indexTermKey(index: number, term: number): number {
  if (term >= TERM_KEY_MAX) throw new Error(`term ${term} over the checker's limit`);
  return index * TERM_KEY_MAX + term;
}

/** Global knowledge across all nodes and their restarts. */
export class SafetyChecker {
  #now: () => number;
  /** term -> the one leader of that term. */
  readonly leaders = new Map<number, NodeId>();
  /** (index, term) -> prefix hash: log matching. */
  readonly #prefixByIndexTerm = new Map<number, number>();
  /** index -> prefix hash of the committed log. */
  readonly #committedPrefix = new Map<number, number>();
  committedMax = 0;
  /** index -> hash of the entry applied there. */
  readonly #applied = new Map<number, number>();
  appliedMax = 0;
  /** node -> term -> the candidate it granted its vote to. */
  readonly #votes = new Map<NodeId, Map<number, NodeId>>();
  /** index -> entry hash of writes acknowledged to clients. */
  readonly acknowledged = new Map<number, number>();
  checks = 0;

  constructor(options: { now: () => number }) {
    this.#now = options.now;
  }

  fail(code: ViolationCode, message: string): never {
    throw new SimViolation(code, message, this.#now());
  }

  leaderElected(node: NodeId, term: number): void {
    this.checks++;
    const existing = this.leaders.get(term);
    if (existing !== undefined && existing !== node) {
      this.fail('election-safety', `term ${term} has two leaders: ${existing} and ${node}`);
    }
    this.leaders.set(term, node);
  }

  /** A node's log now holds `index` with `term` and prefix hash `prefix`. */
  logEntry(node: NodeId, index: number, term: number, prefix: number): void {
    this.checks++;
    const key = indexTermKey(index, term);
    const known = this.#prefixByIndexTerm.get(key);
    if (known === undefined) this.#prefixByIndexTerm.set(key, prefix);
    else if (known !== prefix) {
      this.fail(
        'log-matching',
        `node ${node}: entry ${index} of term ${term} follows a different log than another node's`,
      );
    }
  }

  /** Entries up to `index` with prefix hash `prefix` are committed (a node's commit index). */
  committed(node: NodeId, index: number, prefix: number): void {
    this.checks++;
    const known = this.#committedPrefix.get(index);
    if (known === undefined) this.#committedPrefix.set(index, prefix);
    else if (known !== prefix)
      this.fail('commit-changed', `node ${node}: committed log up to ${index} differs`);
    if (index > this.committedMax) this.committedMax = index;
  }

  committedPrefixAt(index: number): number | undefined {
    return this.#committedPrefix.get(index);
  }

  /** A new leader's log must hold every committed entry. */
  leaderLog(node: NodeId, term: number, log: ShadowLog): void {
    this.checks++;
    const committed = this.committedMax;
    if (committed === 0) return;
    if (log.lastIndex < committed) {
      this.fail(
        'leader-completeness',
        `leader ${node} of term ${term} has last index ${log.lastIndex} < committed ${committed}`,
      );
    }
    const at = Math.max(committed, log.baseIndex);
    const expected = this.#committedPrefix.get(at);
    const actual = log.prefixAt(at);
    if (expected !== undefined && actual !== undefined && expected !== actual) {
      this.fail('leader-completeness', `leader ${node} of term ${term} lacks committed entries up to ${at}`);
    }
  }

  applied(node: NodeId, index: number, entryHash: number, prefix: number | undefined): void {
    this.checks++;
    const known = this.#applied.get(index);
    if (known === undefined) this.#applied.set(index, entryHash);
    else if (known !== entryHash) {
      this.fail('state-machine-safety', `node ${node} applied a different entry at index ${index}`);
    }
    if (index > this.appliedMax) this.appliedMax = index;
    if (prefix !== undefined) this.committed(node, index, prefix);
    const acknowledged = this.acknowledged.get(index);
    if (acknowledged !== undefined && acknowledged !== entryHash) {
      this.fail(
        'acknowledged-write-lost',
        `node ${node} applied another entry where an acknowledged write was (${index})`,
      );
    }
  }

  appliedHashAt(index: number): number | undefined {
    return this.#applied.get(index);
  }

  acknowledge(index: number, entryHash: number): void {
    this.checks++;
    const applied = this.#applied.get(index);
    if (applied !== undefined && applied !== entryHash) {
      this.fail('acknowledged-write-lost', `acknowledged write at ${index} is not the entry applied there`);
    }
    this.acknowledged.set(index, entryHash);
  }

  /** Per node and life: term, vote and commit index never go backwards. */
  hardState(node: NodeId, previous: HardState, next: HardState, context: string): void {
    this.checks++;
    if (next.term < previous.term)
      this.fail('term-backwards', `node ${node} ${context}: term ${previous.term} -> ${next.term}`);
    if (next.term === previous.term && previous.votedFor !== 0 && next.votedFor !== previous.votedFor) {
      this.fail(
        'vote-changed',
        `node ${node} ${context}: vote in term ${next.term} ${previous.votedFor} -> ${next.votedFor}`,
      );
    }
    if (next.commitIndex < previous.commitIndex) {
      this.fail(
        'commit-backwards',
        `node ${node} ${context}: commit ${previous.commitIndex} -> ${next.commitIndex}`,
      );
    }
  }

  /** A node granted its (real, not pre-) vote: once per term, across restarts. */
  voteGranted(node: NodeId, term: number, candidate: NodeId): void {
    this.checks++;
    let votes = this.#votes.get(node);
    if (votes === undefined) {
      votes = new Map();
      this.#votes.set(node, votes);
    }
    const previous = votes.get(term);
    if (previous !== undefined && previous !== candidate) {
      this.fail('double-vote', `node ${node} voted for ${previous} and ${candidate} in term ${term}`);
    }
    votes.set(term, candidate);
  }
}
