/**
 * planRebuild on hand-made META objects: the new cell's own root and lost+found, whichever of
 * them the scan found, are never restored as children or orphans.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import type { Inode } from '../../node/metadata/records.ts';
import { newInode } from '../../node/metadata/state-machine.ts';
import { metaObjectOf } from '../../node/recovery/meta-header.ts';
import { type FoundMeta, planRebuild } from '../../node/recovery/rebuild-plan.ts';

const id = () => new Uint8Array(randomBytes(16));
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

const inode = (
  type: Inode['type'],
  self: Uint8Array,
  parent: Uint8Array,
  name: string,
  time: number,
): Inode =>
  newInode({
    id: self,
    type,
    mode: type === 'DIRECTORY' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    time,
    parent,
    name,
  });

const found = (node: Inode, changeIndex: number): FoundMeta => ({
  backend: 'b1',
  server: 's1',
  ...metaObjectOf(node, changeIndex),
});

test('the new cell root or lost+found found alone by the scan is not restored', () => {
  const [oldRoot, oldLostFound, file, newRoot, newLostFound] = [id(), id(), id(), id(), id()];
  const before = [
    found(inode('DIRECTORY', oldRoot, oldRoot, '', 1_000), 1),
    found(inode('DIRECTORY', oldLostFound, oldRoot, 'lost+found', 1_000), 2),
    found(inode('FILE', file, oldRoot, 'a.txt', 2_000), 3),
  ];
  const newRootMeta = found(inode('DIRECTORY', newRoot, newRoot, '', 9_000), 1);
  const newLostFoundMeta = found(inode('DIRECTORY', newLostFound, newRoot, 'lost+found', 9_000), 2);
  for (const [label, extra] of [
    ['neither', []],
    ['both', [newRootMeta, newLostFoundMeta]],
    ['only the new lost+found', [newLostFoundMeta]],
    ['only the new root', [newRootMeta]],
  ] as const) {
    const plan = planRebuild({
      metas: [...before, ...extra],
      data: new Map(),
      rootId: newRoot,
      lostFoundId: newLostFound,
    });
    assert.equal(plan.orphans, 0, label);
    assert.deepEqual(
      plan.restores.map((r) => [hex(r.inode.id), r.inode.name]),
      [
        [hex(newRoot), ''],
        [hex(newLostFound), 'lost+found'],
        [hex(file), 'a.txt'],
      ],
      `${label}: the former root's and lost+found's attributes, then the file`,
    );
    assert.equal(hex(plan.restores[2]!.inode.parent), hex(newRoot), label);
    assert.deepEqual(plan.replacedIds.map(hex).sort(), [hex(oldRoot), hex(oldLostFound)].sort(), label);
  }
});
