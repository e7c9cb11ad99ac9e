/**
 * Consensus membership and leadership by hand (`zhsm controllers transfer|pin|unpin|add|remove`).
 *
 * Primary side (`controllerAction`, a `controller` metadata request served by the primary's
 * ControllerRole):
 * - transfer ID: the core's leadership transfer (catch the target up, TimeoutNow); answered once
 *   the target leads or after TRANSFER_WAIT_MS. Without a pin the lowest-id rule hands leadership
 *   back to a lower live voter after two election timeouts.
 * - pin ID / unpin: manual mode (consensus/raft.ts: only the pinned voter campaigns and is voted
 *   for; a leader hands over to it once it is caught up). Replicated as `setPinnedLeader` (key
 *   `meta:pin`); every controller applies the stored pin to its core (`syncPinnedLeader`, at start
 *   and with its duties), so a pin survives restarts and failovers.
 * - add PEER: the member gets a controller id (an `admitMember` with a one-off token, as a join
 *   with --controller does). The primary adds it as a learner at once and promotes it once caught
 *   up; the node itself notices (`reconcileControllerRole`, within seconds), starts the controller
 *   role in its running daemon and writes its node.json.
 * - remove ID: refused for the last voter, the primary, the pinned controller, and when the
 *   remaining voters that answer would not make a quorum. The member is retired first
 *   (`retireController`: controller id 0, so the primary does not add it back), then removed from
 *   the consensus membership; the removed node notices, stops its controller role and writes
 *   controllerId 0 to its node.json.
 */
import { rename, stat } from 'node:fs/promises';
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotFoundError,
  NotPermittedError,
  ZhsmError,
} from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import type { ControllerReplica } from '../controller/replica.ts';
import type { Member } from '../metadata/records.ts';
import { paths, readConfig, writeConfig } from './config.ts';
import type { MemberDirectory } from './directory.ts';
import type { ZhsmNode } from './node.ts';
import { type ControllerAnswer, type ControllerRequest, newJoinToken, secretHash } from './protocols.ts';

/** A transfer or a pin is answered once the target leads, or after this long. */
const TRANSFER_WAIT_MS = 5_000;
/** remove: remaining voters must acknowledge a fresh entry within this long to count as live. */
const LIVENESS_WAIT_MS = 2_000;
/** remove: wait this long for the removed controller to receive its retirement. */
const RETIRE_WAIT_MS = 3_000;
/** remove: retry a membership change refused while another one is pending for this long. */
const CONFIG_CHANGE_WAIT_MS = 5_000;
/** Controllers check their own member record at the primary this often (a removal they missed). */
const SELF_CHECK_INTERVAL_MS = 10_000;

export interface ControllerAdminContext {
  readonly id: number;
  readonly replica: ControllerReplica;
  readonly directory: MemberDirectory;
  readonly log: Logger;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

function notPermitted(message: string): never {
  throw new NotPermittedError(message);
}

function answer(context: ControllerAdminContext, done: boolean, message: string, controllerId = 0) {
  const status = context.replica.status();
  return {
    done,
    message,
    leaderId: status.leader,
    pinnedLeader: status.pinnedLeader,
    controllerId,
    voters: [...status.membership.voters].sort((a, b) => a - b),
    learners: [...status.membership.learners].sort((a, b) => a - b),
  } satisfies ControllerAnswer;
}

/** Every controller id the cell knows: consensus members and members with a controller id. */
function knownIds(context: ControllerAdminContext): number[] {
  const { membership } = context.replica.status();
  const ids = new Set([
    ...membership.voters,
    ...membership.learners,
    ...context.directory.controllers().map((m) => m.controllerId),
  ]);
  return [...ids].sort((a, b) => a - b);
}

function checkKnown(context: ControllerAdminContext, id: number): void {
  if (!Number.isSafeInteger(id) || id <= 0)
    throw new InvalidArgumentError('a controller id is a positive integer');
  const ids = knownIds(context);
  if (!ids.includes(id))
    throw new NotFoundError(`no controller ${id} (controllers: ${ids.join(', ') || 'none'})`);
}

/** Serve one `controller` metadata request (the primary only; the caller checked). */
export async function controllerAction(
  context: ControllerAdminContext,
  request: ControllerRequest,
): Promise<ControllerAnswer> {
  const id = request.controllerId ?? 0;
  switch (request.action) {
    case 'transfer':
      return transfer(context, id);
    case 'pin':
      return pin(context, id);
    case 'unpin':
      return pin(context, 0);
    case 'add':
      return add(context, request.peerId ?? '');
    case 'remove':
      return remove(context, id);
    default:
      throw new InvalidArgumentError(
        `unknown controller action ${JSON.stringify(request.action)} (transfer, pin, unpin, add, remove)`,
      );
  }
}

async function transfer(context: ControllerAdminContext, id: number): Promise<ControllerAnswer> {
  checkKnown(context, id);
  const status = context.replica.status();
  if (status.leader === id) return answer(context, true, `controller ${id} is already the primary`);
  if (!status.membership.voters.includes(id))
    throw new InvalidArgumentError(
      `controller ${id} is not a voter (${status.membership.learners.includes(id) ? 'a learner still catching up' : 'not in the consensus membership yet'}): only voters can lead`,
    );
  if (status.pinnedLeader !== 0 && status.pinnedLeader !== id)
    notPermitted(
      `leadership is pinned to controller ${status.pinnedLeader}: unpin it first (zhsm controllers unpin) or pin controller ${id}`,
    );
  if (!context.replica.transferLeadership(id))
    notPermitted(`the consensus core refused to transfer leadership to controller ${id}`);
  context.log.info({ to: id }, 'leadership transfer asked for by an administrator');
  const done = await waitUntil(() => context.replica.status().leader === id, TRANSFER_WAIT_MS);
  if (!done)
    return answer(
      context,
      false,
      `controller ${id} did not take over within ${TRANSFER_WAIT_MS / 1000} s (unreachable or not caught up)`,
    );
  const lower = status.membership.voters.some((voter) => voter < id);
  return answer(
    context,
    true,
    `controller ${id} is the primary now${lower && status.pinnedLeader === 0 ? `; without a pin the lowest-id rule hands leadership back to a lower live voter within seconds (zhsm controllers pin ${id} keeps it)` : ''}`,
  );
}

async function pin(context: ControllerAdminContext, id: number): Promise<ControllerAnswer> {
  const status = context.replica.status();
  if (id !== 0) {
    checkKnown(context, id);
    if (!status.membership.voters.includes(id))
      throw new InvalidArgumentError(
        `controller ${id} is not a voter: only a voter can be pinned as the primary`,
      );
  }
  if (status.pinnedLeader === id && (await context.replica.machine.pinnedLeader()) === id)
    return answer(
      context,
      true,
      id === 0 ? 'leadership is not pinned' : `leadership is already pinned to controller ${id}`,
    );
  const result = await context.replica.propose({ setPinnedLeader: { controllerId: id } });
  if (result.code !== 'OK') throw new ZhsmError('IO_ERROR', `cannot store the pin: ${result.message}`);
  context.replica.setPinnedLeader(id);
  context.log.info({ pinned: id }, id === 0 ? 'leadership unpinned' : 'leadership pinned');
  if (id === 0)
    return answer(context, true, 'leadership is not pinned any more: the lowest live up-to-date voter leads');
  if (id === context.id)
    return answer(
      context,
      true,
      `leadership is pinned to controller ${id} (the primary): only it can lead now`,
    );
  const done = await waitUntil(() => context.replica.status().leader === id, TRANSFER_WAIT_MS);
  return answer(
    context,
    done,
    done
      ? `leadership is pinned to controller ${id}, the primary now: only it can lead (no failover while it is down)`
      : `leadership is pinned to controller ${id}, but it did not take over within ${TRANSFER_WAIT_MS / 1000} s (the primary hands over once it is caught up and answering)`,
  );
}

/** A member by peer id or a unique prefix of one. */
function resolveMember(members: readonly Member[], text: string): Member {
  const wanted = text.trim();
  if (wanted === '') throw new InvalidArgumentError('name a member by its peer id');
  const exact = members.find((m) => m.peerId === wanted);
  if (exact !== undefined) return exact;
  const byPrefix = members.filter((m) => m.peerId.startsWith(wanted));
  if (byPrefix.length === 1) return byPrefix[0]!;
  if (byPrefix.length > 1)
    throw new InvalidArgumentError(`peer id prefix ${wanted} matches ${byPrefix.length} members`);
  throw new NotFoundError(`no member with peer id ${wanted} (members join with: zhsm-node join)`);
}

async function add(context: ControllerAdminContext, peerId: string): Promise<ControllerAnswer> {
  const member = resolveMember(await context.replica.machine.members(), peerId);
  if (member.controllerId > 0)
    throw new AlreadyExistsError(`member ${member.peerId} is already controller ${member.controllerId}`);
  // The state machine gives an existing member a controller id when it is admitted again with
  // controller set: the same path as a join with --controller, with a token for this one use.
  const token = newJoinToken();
  const now = Date.now();
  const created = await context.replica.propose({
    createJoinToken: {
      token: {
        id: token.id,
        secretHash: secretHash(token.secret),
        expiresMs: now + 60_000,
        revoked: false,
        createdMs: now,
      },
    },
  });
  if (created.code !== 'OK')
    throw new ZhsmError('IO_ERROR', `cannot create a one-off token: ${created.message}`);
  try {
    const admitted = await context.replica.propose({
      admitMember: {
        peerId: member.peerId,
        tokenId: token.id,
        secretHash: secretHash(token.secret),
        controller: true,
        addresses: [],
      },
    });
    const controllerId = admitted.member?.controllerId ?? 0;
    if (admitted.code !== 'OK' || controllerId === 0)
      throw new ZhsmError(
        'IO_ERROR',
        `cannot make ${member.peerId} a controller: ${admitted.code} ${admitted.message}`,
      );
    context.log.info({ peer: member.peerId, controller: controllerId }, 'a member was made a controller');
    return answer(
      context,
      true,
      `member ${member.peerId} is controller ${controllerId}; its daemon starts the controller role within seconds: it joins as a learner and becomes a voter once caught up`,
      controllerId,
    );
  } finally {
    await context.replica.propose({ revokeJoinToken: { id: token.id } }).catch(() => {});
  }
}

async function remove(context: ControllerAdminContext, id: number): Promise<ControllerAnswer> {
  checkKnown(context, id);
  const status = context.replica.status();
  const { voters, learners } = status.membership;
  const isVoter = voters.includes(id);
  if (isVoter && voters.length === 1)
    notPermitted(`cannot remove controller ${id}: it is the last voter (the cell would have no controller)`);
  if (id === context.id)
    notPermitted(
      `cannot remove controller ${id}: it is the primary; transfer leadership first (zhsm controllers transfer ID)`,
    );
  if (status.pinnedLeader === id)
    notPermitted(
      `cannot remove controller ${id}: leadership is pinned to it; unpin first (zhsm controllers unpin)`,
    );
  if (isVoter) await checkQuorumWithout(context, id);

  // Retire first: the primary adds members with a controller id to the consensus membership.
  const member = context.directory.controllers().find((m) => m.controllerId === id);
  if (member !== undefined) {
    const retired = await context.replica.propose({ retireController: { peerId: member.peerId } });
    if (retired.code !== 'OK')
      throw new ZhsmError('IO_ERROR', `cannot retire controller ${id}: ${retired.message}`);
    await waitUntil(() => context.directory.controller(id) === undefined, 2_000);
  }
  if (!isVoter && !learners.includes(id))
    return answer(context, true, `controller ${id} was not in the consensus membership; it is retired`);
  // Let the removed controller learn that it was retired (then it reconfigures itself); a down one
  // finds out from the primary when it comes back.
  const retiredAt = context.replica.status().commitIndex;
  const informed = await waitUntil(
    () => (context.replica.status().progress.get(id)?.matchIndex ?? 0) >= retiredAt,
    RETIRE_WAIT_MS,
  );
  if (informed) await sleep(300); // a heartbeat or two carry the commit index there
  const deadline = Date.now() + CONFIG_CHANGE_WAIT_MS;
  let index = 0;
  for (;;) {
    const proposed = context.replica.proposeConfigChange({ kind: 'remove', node: id });
    if (proposed.ok) {
      index = proposed.index;
      break;
    }
    if (proposed.reason !== 'configChangePending' || Date.now() > deadline)
      notPermitted(`the consensus core refused to remove controller ${id} (${proposed.reason})`);
    await sleep(100);
  }
  const committed = await waitUntil(() => {
    const now = context.replica.status();
    return (
      now.commitIndex >= index && !now.membership.voters.includes(id) && !now.membership.learners.includes(id)
    );
  }, CONFIG_CHANGE_WAIT_MS);
  context.log.info({ removed: id, committed }, 'a controller was removed from the consensus membership');
  const after = context.replica.status().membership;
  return answer(
    context,
    committed,
    committed
      ? `controller ${id} removed (voters ${after.voters.join(', ')}); ${informed ? 'its daemon stops the controller role within seconds' : 'it did not answer: when it comes back it finds out and stops the controller role'}`
      : `the removal of controller ${id} did not commit within ${CONFIG_CHANGE_WAIT_MS / 1000} s`,
  );
}

/** Refuse a removal that leaves fewer live voters than a quorum of the remaining ones. */
async function checkQuorumWithout(context: ControllerAdminContext, id: number): Promise<void> {
  // A fresh entry: voters that acknowledge it within LIVENESS_WAIT_MS are live.
  const fresh = await context.replica.propose({ expireTokens: { nowMs: Date.now() } });
  if (fresh.code !== 'OK') throw new ZhsmError('IO_ERROR', `cannot check the voters: ${fresh.message}`);
  const mark = context.replica.status().lastIndex;
  const remaining = context.replica.status().membership.voters.filter((voter) => voter !== id);
  const quorum = Math.floor(remaining.length / 2) + 1;
  const live = () => {
    const status = context.replica.status();
    return remaining.filter(
      (voter) => voter === context.id || (status.progress.get(voter)?.matchIndex ?? 0) >= mark,
    );
  };
  await waitUntil(() => live().length === remaining.length, LIVENESS_WAIT_MS);
  const answering = live();
  if (answering.length < quorum)
    notPermitted(
      `cannot remove controller ${id}: the remaining voters (${remaining.join(', ')}) need ${quorum} for a quorum, but only ${answering.length} answer (${answering.join(', ') || 'none'}); bring the others back first`,
    );
}

/** Apply the cell's pin (stored in the metadata) to this controller's consensus core. */
export async function syncPinnedLeader(replica: ControllerReplica): Promise<void> {
  const stored = await replica.machine.pinnedLeader();
  if (replica.status().pinnedLeader !== stored) replica.setPinnedLeader(stored);
}

// ---- the node side -------------------------------------------------------------------------------

const selfChecks = new WeakMap<ZhsmNode, { lastAskMs: number; noted: string; lastWarnMs: number }>();

/**
 * Called from the node's directory loop: when the cell made this node a controller (`controllers
 * add`) or retired it (`controllers remove`), start or stop the controller role in the running
 * daemon and write the new controller id to node.json (a new controller's stale raft/ and
 * metadata/ directories are moved aside first: it starts from an empty log). Controllers ask the primary for their own record every SELF_CHECK_INTERVAL_MS:
 * a removed controller's own metadata stops at its removal.
 */
export async function reconcileControllerRole(node: ZhsmNode): Promise<void> {
  const state = selfChecks.get(node) ?? { lastAskMs: 0, noted: '', lastWarnMs: 0 };
  selfChecks.set(node, state);
  let cellId = node.directory.member(node.peerId)?.controllerId;
  if (node.controller !== undefined && !node.controller.isLeader() && cellId !== 0) {
    const now = Date.now();
    if (now - state.lastAskMs < SELF_CHECK_INTERVAL_MS) return;
    state.lastAskMs = now;
    const members = (await node.remote.request({ read: { members: {} } }, { retryMs: 2_000 })).members
      ?.members;
    cellId = members?.find((m) => m.peerId === node.peerId)?.controllerId;
  }
  if (cellId === undefined) return;
  const config = await readConfig(node.data);
  if (config.controllerId === cellId) return;
  const { initialVoters: _dropped, ...rest } = config;
  if (cellId > 0 && config.controllerId === 0) {
    if (node.controller !== undefined) {
      // Retired and made a controller again before a restart: the open raft log is the old id's.
      const note = `restart:${cellId}`;
      if (state.noted !== note)
        node.log.warn(
          { controller: cellId },
          'this node was made a controller again: restart its daemon (twice)',
        );
      state.noted = note;
      return;
    }
    const where = paths(node.data);
    for (const directory of [where.raft, where.metadata]) {
      const exists = await stat(directory).then(
        () => true,
        () => false,
      );
      if (exists) await rename(directory, `${directory}.retired-${Date.now()}`);
    }
    // node.json only once the role runs: a start that failed is tried again on the next round.
    try {
      await node.startControllerRole(cellId);
    } catch (error) {
      const now = Date.now();
      if (now - state.lastWarnMs >= 60_000) {
        state.lastWarnMs = now;
        node.log.warn({ controller: cellId, err: error }, 'cannot start the controller role; trying again');
      }
      return;
    }
    await writeConfig(node.data, { ...rest, controllerId: cellId });
    return;
  }
  await writeConfig(node.data, { ...rest, controllerId: 0 });
  await node.stopControllerRole();
}
