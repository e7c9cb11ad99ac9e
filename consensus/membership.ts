/**
 * Membership changes (Raft single-server changes, §4.1 of Ongaro's thesis).
 *
 * A config entry's data records the change AND the complete membership that results from it, so
 * the membership at any log position is simply the one of the latest config entry at or before
 * it (or the snapshot's, or the bootstrap membership). A new node joining with an empty initial
 * membership therefore learns the right membership from the log alone.
 *
 * Encoding: UTF-8 JSON `{"v":1,"change":{"kind":"addLearner","node":4},"voters":[1,2,3],"learners":[4]}`.
 * JSON keeps golden traces readable; the decoder validates every field.
 */
import { assert, DecodeError } from '../node/common/errors.ts';
import type { ConfigChange, Membership, NodeId } from './types.ts';

export interface ConfigRecord {
  readonly change: ConfigChange;
  readonly membership: Membership;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const CONFIG_FORMAT_VERSION = 1;
/** Upper bound on controllers in one cell (a membership is small by design). */
export const MEMBERS_MAX = 255;

function isNodeId(value: unknown): value is NodeId {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 && value <= 0xffffffff;
}

export function sortedMembership(voters: readonly NodeId[], learners: readonly NodeId[]): Membership {
  return { voters: [...voters].sort((a, b) => a - b), learners: [...learners].sort((a, b) => a - b) };
}

export function validateMembership(membership: Membership): void {
  const all = [...membership.voters, ...membership.learners];
  assert(all.length <= MEMBERS_MAX, `membership has more than ${MEMBERS_MAX} members`);
  assert(new Set(all).size === all.length, 'a node is listed twice in the membership');
  for (const node of all) assert(isNodeId(node), `invalid node id ${node}`);
}

export function membershipEquals(a: Membership, b: Membership): boolean {
  const sa = sortedMembership(a.voters, a.learners);
  const sb = sortedMembership(b.voters, b.learners);
  return (
    sa.voters.length === sb.voters.length &&
    sa.learners.length === sb.learners.length &&
    sa.voters.every((v, i) => v === sb.voters[i]) &&
    sa.learners.every((v, i) => v === sb.learners[i])
  );
}

/** Why a change cannot be applied to `membership`, or undefined if it can. */
export function configChangeProblem(membership: Membership, change: ConfigChange): string | undefined {
  if (!isNodeId(change.node)) return `invalid node id ${change.node}`;
  const isVoter = membership.voters.includes(change.node);
  const isLearner = membership.learners.includes(change.node);
  switch (change.kind) {
    case 'addLearner':
      if (isVoter || isLearner) return `node ${change.node} is already a member`;
      if (membership.voters.length + membership.learners.length >= MEMBERS_MAX) return 'membership is full';
      return undefined;
    case 'promote':
      if (!isLearner) return `node ${change.node} is not a learner`;
      return undefined;
    case 'remove':
      if (!isVoter && !isLearner) return `node ${change.node} is not a member`;
      if (isVoter && membership.voters.length === 1) return 'cannot remove the last voter';
      return undefined;
    default:
      return `unknown change kind ${(change as { kind: string }).kind}`;
  }
}

export function applyConfigChange(membership: Membership, change: ConfigChange): Membership {
  const problem = configChangeProblem(membership, change);
  assert(problem === undefined, `invalid config change: ${problem}`);
  const voters = membership.voters.filter((node) => node !== change.node);
  const learners = membership.learners.filter((node) => node !== change.node);
  if (change.kind === 'addLearner') learners.push(change.node);
  if (change.kind === 'promote') voters.push(change.node);
  return sortedMembership(voters, learners);
}

export function encodeConfigRecord(record: ConfigRecord): Uint8Array {
  validateMembership(record.membership);
  return encoder.encode(
    JSON.stringify({
      v: CONFIG_FORMAT_VERSION,
      change: { kind: record.change.kind, node: record.change.node },
      voters: record.membership.voters,
      learners: record.membership.learners,
    }),
  );
}

export function decodeConfigRecord(data: Uint8Array): ConfigRecord {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(data));
  } catch (error) {
    throw new DecodeError('malformed config entry', {}, { cause: error });
  }
  const record = parsed as {
    v?: unknown;
    change?: { kind?: unknown; node?: unknown };
    voters?: unknown;
    learners?: unknown;
  };
  if (typeof record !== 'object' || record === null || record.v !== CONFIG_FORMAT_VERSION) {
    throw new DecodeError('config entry: unsupported version', {});
  }
  const kind = record.change?.kind;
  const node = record.change?.node;
  if ((kind !== 'addLearner' && kind !== 'promote' && kind !== 'remove') || !isNodeId(node)) {
    throw new DecodeError('config entry: malformed change', {});
  }
  const voters = record.voters;
  const learners = record.learners;
  if (!Array.isArray(voters) || !Array.isArray(learners) || ![...voters, ...learners].every(isNodeId)) {
    throw new DecodeError('config entry: malformed membership', {});
  }
  const membership = sortedMembership(voters as NodeId[], learners as NodeId[]);
  try {
    validateMembership(membership);
  } catch (error) {
    throw new DecodeError('config entry: invalid membership', {}, { cause: error });
  }
  return { change: { kind, node }, membership };
}

/** Majority of n voters. */
export function quorumSize(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}
