/**
 * Protobuf encoding of consensus records (proto/consensus.proto): what LevelRaftStorage writes
 * and the wire form of Raft messages. Every decode validates the record before handing it out
 * (DecodeError on anything malformed), every encode validates before writing.
 */
import { DecodeError, InvalidArgumentError } from '../node/common/errors.ts';
import { codec } from '../proto/index.ts';
import type { Entry, EntryType, HardState, Membership, Message, Snapshot, SnapshotMeta } from './types.ts';

interface HardStateRecord {
  term: number;
  votedFor: number;
  commitIndex: number;
}
interface EntryRecord {
  term: number;
  index: number;
  type: string;
  data: Uint8Array;
}
interface MembershipRecord {
  voters: number[];
  learners: number[];
}
interface SnapshotMetaRecord {
  index: number;
  term: number;
  membership?: MembershipRecord | null;
}
interface SnapshotRecord {
  meta?: SnapshotMetaRecord | null;
  data: Uint8Array;
}
interface MessageRecord {
  type: string;
  from: number;
  to: number;
  term: number;
  lastLogIndex: number;
  lastLogTerm: number;
  preVote: boolean;
  transfer: boolean;
  granted: boolean;
  prevLogIndex: number;
  prevLogTerm: number;
  entries: EntryRecord[];
  leaderCommit: number;
  readContext: number;
  success: boolean;
  matchIndex: number;
  conflictIndex: number;
  conflictTerm: number;
  snapshot?: SnapshotRecord | null;
}

const hardStateCodec = codec<HardStateRecord>('zhsm.consensus.HardState');
const entryCodec = codec<EntryRecord>('zhsm.consensus.Entry');
const snapshotCodec = codec<SnapshotRecord>('zhsm.consensus.Snapshot');
const messageCodec = codec<MessageRecord>('zhsm.consensus.Message');

const entryTypeToWire: Readonly<Record<EntryType, string>> = {
  normal: 'NORMAL',
  noop: 'NOOP',
  config: 'CONFIG',
};
const entryTypeFromWire: Readonly<Record<string, EntryType>> = {
  NORMAL: 'normal',
  NOOP: 'noop',
  CONFIG: 'config',
};

const messageTypeToWire: Readonly<Record<Message['type'], string>> = {
  RequestVote: 'REQUEST_VOTE',
  RequestVoteResponse: 'REQUEST_VOTE_RESPONSE',
  AppendEntries: 'APPEND_ENTRIES',
  AppendEntriesResponse: 'APPEND_ENTRIES_RESPONSE',
  InstallSnapshot: 'INSTALL_SNAPSHOT',
  InstallSnapshotResponse: 'INSTALL_SNAPSHOT_RESPONSE',
  TimeoutNow: 'TIMEOUT_NOW',
};

/** protobufjs hands out Buffers (or views of the input): copy into a plain, unshared Uint8Array. */
function plainBytes(bytes: Uint8Array | null | undefined): Uint8Array {
  return bytes === null || bytes === undefined ? new Uint8Array(0) : new Uint8Array(bytes);
}

function checkCount(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new DecodeError(`${what}: not a non-negative integer`, { value });
  }
  return value;
}

function checkNonNegative(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what}: not a non-negative integer`, { value });
  }
}

export function encodeHardState(hardState: HardState): Uint8Array {
  checkNonNegative(hardState.term, 'hardState.term');
  checkNonNegative(hardState.votedFor, 'hardState.votedFor');
  checkNonNegative(hardState.commitIndex, 'hardState.commitIndex');
  return hardStateCodec.encode({ ...hardState });
}

export function decodeHardState(bytes: Uint8Array): HardState {
  const record = hardStateCodec.decode(bytes);
  return {
    term: checkCount(record.term, 'hardState.term'),
    votedFor: checkCount(record.votedFor, 'hardState.votedFor'),
    commitIndex: checkCount(record.commitIndex, 'hardState.commitIndex'),
  };
}

function entryToRecord(entry: Entry): EntryRecord {
  checkNonNegative(entry.term, 'entry.term');
  checkNonNegative(entry.index, 'entry.index');
  const type = entryTypeToWire[entry.type];
  if (type === undefined) throw new InvalidArgumentError(`unknown entry type ${entry.type}`, {});
  return { term: entry.term, index: entry.index, type, data: entry.data };
}

function entryFromRecord(record: EntryRecord): Entry {
  const type = entryTypeFromWire[record.type];
  if (type === undefined) throw new DecodeError(`entry: unknown type ${record.type}`, {});
  const index = checkCount(record.index, 'entry.index');
  if (index === 0) throw new DecodeError('entry: index 0', {});
  return { term: checkCount(record.term, 'entry.term'), index, type, data: plainBytes(record.data) };
}

export function encodeEntry(entry: Entry): Uint8Array {
  return entryCodec.encode(entryToRecord(entry));
}

export function decodeEntry(bytes: Uint8Array): Entry {
  return entryFromRecord(entryCodec.decode(bytes));
}

function membershipFromRecord(record: MembershipRecord | null | undefined): Membership {
  if (record === null || record === undefined) throw new DecodeError('snapshot: missing membership', {});
  return {
    voters: record.voters.map((node) => checkCount(node, 'membership.voter')),
    learners: record.learners.map((node) => checkCount(node, 'membership.learner')),
  };
}

function snapshotToRecord(snapshot: Snapshot): SnapshotRecord {
  checkNonNegative(snapshot.meta.index, 'snapshot.index');
  checkNonNegative(snapshot.meta.term, 'snapshot.term');
  return {
    meta: {
      index: snapshot.meta.index,
      term: snapshot.meta.term,
      membership: {
        voters: [...snapshot.meta.membership.voters],
        learners: [...snapshot.meta.membership.learners],
      },
    },
    data: snapshot.data,
  };
}

function snapshotFromRecord(record: SnapshotRecord | null | undefined): Snapshot {
  if (record === null || record === undefined) throw new DecodeError('missing snapshot', {});
  const meta = record.meta;
  if (meta === null || meta === undefined) throw new DecodeError('snapshot: missing meta', {});
  const snapshotMeta: SnapshotMeta = {
    index: checkCount(meta.index, 'snapshot.index'),
    term: checkCount(meta.term, 'snapshot.term'),
    membership: membershipFromRecord(meta.membership),
  };
  return { meta: snapshotMeta, data: plainBytes(record.data) };
}

export function encodeSnapshot(snapshot: Snapshot): Uint8Array {
  return snapshotCodec.encode(snapshotToRecord(snapshot));
}

export function decodeSnapshot(bytes: Uint8Array): Snapshot {
  return snapshotFromRecord(snapshotCodec.decode(bytes));
}

/** Wire form of a Raft message (for the daemon's transport). */
export function encodeMessage(message: Message): Uint8Array {
  const record: Partial<MessageRecord> = {
    type: messageTypeToWire[message.type],
    from: message.from,
    to: message.to,
    term: message.term,
  };
  switch (message.type) {
    case 'RequestVote':
      Object.assign(record, {
        lastLogIndex: message.lastLogIndex,
        lastLogTerm: message.lastLogTerm,
        preVote: message.preVote,
        transfer: message.transfer,
      });
      break;
    case 'RequestVoteResponse':
      Object.assign(record, { granted: message.granted, preVote: message.preVote });
      break;
    case 'AppendEntries':
      Object.assign(record, {
        prevLogIndex: message.prevLogIndex,
        prevLogTerm: message.prevLogTerm,
        entries: message.entries.map(entryToRecord),
        leaderCommit: message.leaderCommit,
        readContext: message.readContext,
      });
      break;
    case 'AppendEntriesResponse':
      Object.assign(record, {
        success: message.success,
        matchIndex: message.matchIndex,
        conflictIndex: message.conflictIndex,
        conflictTerm: message.conflictTerm,
        readContext: message.readContext,
      });
      break;
    case 'InstallSnapshot':
      record.snapshot = snapshotToRecord(message.snapshot);
      break;
    case 'InstallSnapshotResponse':
      record.matchIndex = message.matchIndex;
      break;
    case 'TimeoutNow':
      break;
  }
  return messageCodec.encode(record as MessageRecord);
}

export function decodeMessage(bytes: Uint8Array): Message {
  const record = messageCodec.decode(bytes);
  const base = {
    from: checkCount(record.from, 'message.from'),
    to: checkCount(record.to, 'message.to'),
    term: checkCount(record.term, 'message.term'),
  };
  switch (record.type) {
    case 'REQUEST_VOTE':
      return {
        ...base,
        type: 'RequestVote',
        lastLogIndex: checkCount(record.lastLogIndex, 'lastLogIndex'),
        lastLogTerm: checkCount(record.lastLogTerm, 'lastLogTerm'),
        preVote: record.preVote,
        transfer: record.transfer,
      };
    case 'REQUEST_VOTE_RESPONSE':
      return { ...base, type: 'RequestVoteResponse', granted: record.granted, preVote: record.preVote };
    case 'APPEND_ENTRIES': {
      const entries = record.entries.map(entryFromRecord);
      const prevLogIndex = checkCount(record.prevLogIndex, 'prevLogIndex');
      entries.forEach((entry, i) => {
        if (entry.index !== prevLogIndex + 1 + i)
          throw new DecodeError('AppendEntries: entries not contiguous', {});
      });
      return {
        ...base,
        type: 'AppendEntries',
        prevLogIndex,
        prevLogTerm: checkCount(record.prevLogTerm, 'prevLogTerm'),
        entries,
        leaderCommit: checkCount(record.leaderCommit, 'leaderCommit'),
        readContext: checkCount(record.readContext, 'readContext'),
      };
    }
    case 'APPEND_ENTRIES_RESPONSE':
      return {
        ...base,
        type: 'AppendEntriesResponse',
        success: record.success,
        matchIndex: checkCount(record.matchIndex, 'matchIndex'),
        conflictIndex: checkCount(record.conflictIndex, 'conflictIndex'),
        conflictTerm: checkCount(record.conflictTerm, 'conflictTerm'),
        readContext: checkCount(record.readContext, 'readContext'),
      };
    case 'INSTALL_SNAPSHOT':
      return { ...base, type: 'InstallSnapshot', snapshot: snapshotFromRecord(record.snapshot) };
    case 'INSTALL_SNAPSHOT_RESPONSE':
      return {
        ...base,
        type: 'InstallSnapshotResponse',
        matchIndex: checkCount(record.matchIndex, 'matchIndex'),
      };
    case 'TIMEOUT_NOW':
      return { ...base, type: 'TimeoutNow' };
    default:
      throw new DecodeError(`message: unknown type ${record.type}`, {});
  }
}
