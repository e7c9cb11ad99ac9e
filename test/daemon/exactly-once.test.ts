/**
 * Exactly-once proposals through RemoteCell: the primary applies a command and its answer is lost
 * (the primary fails before replying); the client retries and must get the first result, not a
 * second application (ALREADY_EXISTS for a create, or a second rename).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ZhsmError } from '../../node/common/errors.ts';
import { MemberDirectory } from '../../node/daemon/directory.ts';
import type { CellInfo, MetaRequest, MetaResponse } from '../../node/daemon/protocols.ts';
import { type LocalController, RemoteCell } from '../../node/daemon/remote-cell.ts';
import { commandCodec, type Result } from '../../node/metadata/records.ts';
import type { Host } from '../../node/net/host.ts';
import { Harness, id } from '../metadata/harness.ts';

/** A primary over a real state machine that loses the answer of selected proposals. */
class LossyPrimary implements LocalController {
  readonly peerId = 'primary';
  readonly harness: Harness;
  /** Lose the answer of the next `n` proposals (after applying them). */
  loseAnswers = 0;
  readonly seen: Array<{ sequence: number; acknowledged: number }> = [];

  constructor(harness: Harness) {
    this.harness = harness;
  }

  isLeader(): boolean {
    return true;
  }

  info(): CellInfo {
    return { role: 'leader', term: 1, peerId: this.peerId, leaderPeerId: this.peerId } as unknown as CellInfo;
  }

  async handleMeta(request: MetaRequest): Promise<MetaResponse> {
    const commands =
      request.propose !== undefined ? [request.propose] : (request.proposeBatch?.commands ?? []);
    const results: Result[] = [];
    for (const command of commands) {
      // Through the codec, as over the network and the consensus log.
      const decoded = commandCodec.decode(commandCodec.encode(command));
      this.seen.push({ sequence: decoded.sequence ?? 0, acknowledged: decoded.acknowledged ?? 0 });
      results.push(await this.harness.run(decoded));
    }
    if (this.loseAnswers > 0) {
      this.loseAnswers -= 1;
      throw new ZhsmError('CLOSED', 'the primary went away before answering');
    }
    return request.propose !== undefined ? { result: results[0]! } : { results: { results } };
  }
}

const fakeHost = { peerId: { toString: () => 'client' } } as unknown as Host;

test('a proposal whose answer was lost is retried with the same sequence and answered once', async () => {
  const harness = await Harness.create();
  const primary = new LossyPrimary(harness);
  const cell = new RemoteCell({
    host: fakeHost,
    directory: new MemberDirectory(),
    local: primary,
    retryMs: 5_000,
  });
  const create = (name: string) =>
    cell.propose({
      create: { parent: harness.rootId, name, id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
    });

  primary.loseAnswers = 1;
  const first = await create('f1');
  assert.equal(first.code, 'OK', 'the retry gets the saved OK, not ALREADY_EXISTS');
  assert.deepEqual(
    primary.seen.map((s) => s.sequence),
    [1, 1],
    'the retry resent sequence 1',
  );
  assert.equal((await harness.machine.lookup(harness.rootId, 'f1'))?.id.length, 16);

  // A rename whose answer is lost twice is applied once: the retries do not fail with NOT_FOUND.
  primary.loseAnswers = 2;
  const renamed = await cell.propose({
    rename: { parent: harness.rootId, name: 'f1', newParent: harness.rootId, newName: 'f2' },
  });
  assert.equal(renamed.code, 'OK');
  assert.equal(await harness.machine.lookup(harness.rootId, 'f1'), undefined);

  // Batches: each command its own sequence, retried together.
  primary.loseAnswers = 1;
  const batch = await cell.proposeBatch([
    { create: { parent: harness.rootId, name: 'b1', id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 } },
    { create: { parent: harness.rootId, name: 'b2', id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 } },
  ]);
  assert.deepEqual(
    batch.map((result) => result.code),
    ['OK', 'OK'],
  );

  // Answered commands are acknowledged by the next one, so the cell can drop their results.
  const last = primary.seen.at(-1)!;
  assert.equal(
    last.acknowledged,
    last.sequence - 1,
    "everything before the batch's last command was answered",
  );
  await cell.close();
});
