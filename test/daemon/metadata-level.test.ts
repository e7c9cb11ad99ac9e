/**
 * Metadata levels (node/metadata/records.ts METADATA_LEVEL) on real nodes: a new cell is at this
 * software's level, a controller on older software cannot join it, the primary's decision to
 * raise the level, and a node refuses to run a controller on metadata newer than its software.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { paths } from '../../node/daemon/config.ts';
import { metadataLevelToRaise } from '../../node/daemon/controller.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import { joinMethod, parseJoinToken } from '../../node/daemon/protocols.ts';
import { LevelKv } from '../../node/metadata/kv.ts';
import { METADATA_LEVEL, type Member } from '../../node/metadata/records.ts';
import { keys } from '../../node/metadata/state-machine.ts';
import { call } from '../../node/net/rpc.ts';
import { rawHost, restartNode, startCell } from './_inprocess.ts';

const member = (controllerId: number, softwareLevel?: number): Member => ({
  peerId: `p${controllerId}`,
  controllerId,
  joinedMs: 0,
  joinToken: new Uint8Array(16),
  addresses: [],
  ...(softwareLevel === undefined ? {} : { softwareLevel }),
});

test('the primary raises the level to the lowest every controller runs, never past its own', () => {
  const voters = { voters: [1, 2], learners: [] };
  assert.equal(metadataLevelToRaise(0, [member(1, 3), member(2, 3)], voters, 3), 3);
  assert.equal(metadataLevelToRaise(0, [member(1, 3), member(2, 2)], voters, 3), 2);
  assert.equal(metadataLevelToRaise(0, [member(1, 3), member(2)], voters, 3), undefined, 'one is older');
  assert.equal(metadataLevelToRaise(2, [member(1, 3), member(2, 2)], voters, 3), undefined, 'already there');
  assert.equal(metadataLevelToRaise(0, [member(1, 5), member(2, 5)], voters, 3), 3, 'not past its own');
  // A learner counts; so does a consensus member whose record is no controller any more (being
  // removed): it still applies the log.
  assert.equal(
    metadataLevelToRaise(0, [member(1, 3), member(2, 3), member(3, 1)], { voters: [1, 2], learners: [3] }, 3),
    1,
  );
  assert.equal(
    metadataLevelToRaise(0, [member(1, 3), member(2, 3)], { voters: [1, 2, 4], learners: [] }, 3),
    undefined,
  );
  assert.equal(metadataLevelToRaise(0, [member(1, 3), member(0, 0)], { voters: [1], learners: [] }, 3), 3);
});

test('a cell at its level: old controllers cannot join; metadata newer than the software is refused', async (t) => {
  const cell = await startCell(t);
  const info = cell.first.controller!.info();
  assert.equal(info.metadataLevel, METADATA_LEVEL, 'a new cell is at this software level');
  assert.equal(
    info.members.find((m) => m.peerId === cell.first.peerId)?.softwareLevel,
    METADATA_LEVEL,
    'the first controller recorded its level',
  );

  // A joiner that reports no level (zhsm from before levels) is refused as a controller, and
  // admitted as a plain member.
  const old = await rawHost(t);
  const parts = parseJoinToken(cell.token);
  const join = (controller: boolean) =>
    call(
      old,
      cell.peer,
      joinMethod,
      { tokenId: parts.id, secret: parts.secret, controller, addresses: [] },
      { timeoutMs: 10_000 },
    );
  await assert.rejects(
    join(true),
    new RegExp(`older than the cell's level ${METADATA_LEVEL}: upgrade zhsm on it`),
  );
  await join(false);
  assert.equal(
    cell.first.controller!.info().members.find((m) => m.peerId === old.peerId.toString())?.controllerId,
    0,
  );

  // Metadata of a newer level than this software (e.g. after a downgrade): the node refuses to
  // run its controller rather than apply a log it does not understand.
  const data = `${cell.base}/c1`;
  await cell.first.stop();
  const kv = await LevelKv.open(paths(data).metadata);
  await kv.write([
    { type: 'put', key: keys.level, value: new TextEncoder().encode(String(METADATA_LEVEL + 1)) },
  ]);
  await kv.close();
  await assert.rejects(ZhsmNode.start(data, { tickMs: 50 }), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'UNSUPPORTED_FORMAT');
    assert.match(error.message, new RegExp(`level ${METADATA_LEVEL + 1}, newer than this zhsm`));
    return true;
  });

  // A cell from before levels (no level recorded): the primary raises it once every controller
  // reported its software's level (here the only one, on start).
  const kv2 = await LevelKv.open(paths(data).metadata);
  await kv2.write([{ type: 'del', key: keys.level }]);
  await kv2.close();
  const again = await restartNode(t, data);
  const deadline = Date.now() + 20_000;
  while (again.controller!.info().metadataLevel !== METADATA_LEVEL) {
    assert.ok(Date.now() < deadline, 'the level was not raised');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.equal(await again.controller!.replica.machine.metadataLevel(), METADATA_LEVEL);
});
