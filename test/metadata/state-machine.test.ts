import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LevelKv, MemoryKv } from '../../node/metadata/kv.ts';
import { commandCodec, METADATA_LEVEL, NO_OPERATION_MESSAGE } from '../../node/metadata/records.ts';
import {
  MetadataStateMachine,
  SESSION_IDLE_MS,
  SESSION_RESULTS_MAX,
} from '../../node/metadata/state-machine.ts';
import { tempDirectory } from '../helpers.ts';
import { Harness, id, sha256 } from './harness.ts';

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

test('a new cell has a root and lost+found', async () => {
  const h = await Harness.create();
  const root = await h.machine.inode(h.rootId);
  assert.equal(root?.type, 'DIRECTORY');
  assert.equal(root?.nlink, 3);
  assert.deepEqual(await h.names(h.rootId), ['lost+found']);
  assert.equal((await h.machine.lookup(h.rootId, 'lost+found'))?.mode, 0o700);
  const again = await h.run({
    initCell: { cell: 'x', rootId: id(), uid: 0, gid: 0, mode: 0o755, lostFoundId: id() },
  });
  assert.equal(again.code, 'ALREADY_EXISTS');
});

test('create, lookup, paged readdir, and the errors of create', async () => {
  const h = await Harness.create();
  const dir = await h.mkdir(h.rootId, 'docs');
  assert.equal(dir.code, 'OK');
  const docs = dir.inode!.id;
  for (const name of ['b', 'a', 'ä', 'c d', 'z', 'e'])
    assert.equal((await h.createFile(docs, name)).code, 'OK');
  assert.deepEqual(await h.names(docs), ['a', 'b', 'c d', 'e', 'z', 'ä']);
  assert.equal((await h.createFile(docs, 'a')).code, 'ALREADY_EXISTS');
  assert.equal((await h.createFile(id(), 'x')).code, 'NOT_FOUND');
  const file = (await h.machine.lookup(docs, 'a'))!;
  assert.equal((await h.createFile(file.id, 'x')).code, 'NOT_A_DIRECTORY');
  assert.equal((await h.createFile(docs, 'x/y')).code, 'INVALID_ARGUMENT');
  assert.equal((await h.createFile(docs, '..')).code, 'INVALID_ARGUMENT');
  assert.equal((await h.createFile(docs, '')).code, 'INVALID_ARGUMENT');
  assert.equal((await h.createFile(docs, 'x'.repeat(256))).code, 'NAME_TOO_LONG');
  assert.equal((await h.createFile(docs, 'x'.repeat(255))).code, 'OK');
  const parent = (await h.machine.inode(docs))!;
  assert.equal(parent.entries, 7);
  assert.equal((await h.machine.inode(h.rootId))!.nlink, 4, 'a subdirectory adds a link to its parent');
  const symlink = await h.run({
    create: {
      parent: docs,
      name: 'link',
      id: id(),
      type: 'SYMLINK',
      mode: 0o777,
      uid: 0,
      gid: 0,
      symlinkTarget: Buffer.from('a'),
    },
  });
  assert.equal(symlink.inode?.size, 1);
});

test('resolve walks a path in one read: the deepest inode reached and how many names it took', async () => {
  const h = await Harness.create();
  const a = (await h.mkdir(h.rootId, 'a')).inode!.id;
  const b = (await h.mkdir(a, 'b')).inode!.id;
  assert.equal((await h.createFile(b, 'f')).code, 'OK');
  const walk = async (names: string[]) => {
    const found = await h.machine.resolve(h.rootId, names);
    return [found.inode === undefined ? undefined : hex(found.inode.id), found.depth];
  };
  const f = (await h.machine.lookup(b, 'f'))!;
  assert.deepEqual(await walk([]), [hex(h.rootId), 0]);
  assert.deepEqual(await walk(['a', 'b', 'f']), [hex(f.id), 3]);
  assert.deepEqual(await walk(['a', 'nope', 'f']), [hex(a), 1], 'stops before the missing name');
  assert.deepEqual(await walk(['a', 'b', 'f', 'under']), [hex(f.id), 3], 'stops at a file');
  assert.deepEqual(await h.machine.resolve(id(), ['a']), { depth: 0 }, 'an unknown start');
});

test('unlink and rmdir: types, emptiness, link counts', async () => {
  const h = await Harness.create();
  const d = (await h.mkdir(h.rootId, 'd')).inode!.id;
  await h.createFile(d, 'f');
  assert.equal((await h.run({ unlink: { parent: h.rootId, name: 'd', directory: true } })).code, 'NOT_EMPTY');
  assert.equal(
    (await h.run({ unlink: { parent: h.rootId, name: 'd', directory: false } })).code,
    'IS_A_DIRECTORY',
  );
  assert.equal((await h.run({ unlink: { parent: d, name: 'f', directory: true } })).code, 'NOT_A_DIRECTORY');
  assert.equal((await h.run({ unlink: { parent: d, name: 'nope', directory: false } })).code, 'NOT_FOUND');
  assert.equal((await h.run({ unlink: { parent: d, name: 'f', directory: false } })).code, 'OK');
  assert.equal((await h.run({ unlink: { parent: h.rootId, name: 'd', directory: true } })).code, 'OK');
  assert.equal(await h.machine.inode(d), undefined);
  assert.equal((await h.machine.inode(h.rootId))!.nlink, 3);
  assert.deepEqual(await h.names(h.rootId), ['lost+found']);
});

test('hard links keep the inode until the last name goes', async () => {
  const h = await Harness.create();
  const file = (await h.createFile(h.rootId, 'a')).inode!;
  assert.equal((await h.run({ link: { id: file.id, parent: h.rootId, name: 'b' } })).inode?.nlink, 2);
  assert.equal((await h.run({ link: { id: file.id, parent: h.rootId, name: 'b' } })).code, 'ALREADY_EXISTS');
  assert.equal(
    (await h.run({ link: { id: h.lostFoundId, parent: h.rootId, name: 'c' } })).code,
    'NOT_PERMITTED',
  );
  await h.run({ unlink: { parent: h.rootId, name: 'a', directory: false } });
  assert.equal((await h.machine.inode(file.id))?.nlink, 1);
  const last = await h.run({ unlink: { parent: h.rootId, name: 'b', directory: false } });
  assert.deepEqual(
    last.releasedObjects.map(hex),
    [],
    'no chunks; the inode itself is not an object to delete',
  );
  assert.equal(await h.machine.inode(file.id), undefined);
  // Its META objects on the backends become tombstones: the header writer finds it marked.
  assert.equal((await h.machine.deletedInode(file.id))?.name, 'b', 'its last name (a went first)');
  const mark = (await h.machine.headerMarks(100)).find((m) => hex(m.id) === hex(file.id));
  assert.ok(mark !== undefined, 'marked for the header writer');
  await h.run({ headersDone: { files: [mark] } });
  assert.equal(await h.machine.deletedInode(file.id), undefined, 'tombstones written: the record goes');
});

test('every name of a file is indexed; the recorded name moves to another when it goes', async () => {
  const h = await Harness.create();
  const d = (await h.mkdir(h.rootId, 'd')).inode!.id;
  const file = (await h.createFile(h.rootId, 'a')).inode!;
  const names = async () =>
    (await h.machine.names(file.id))
      .map((n) => `${hex(n.parent) === hex(h.rootId) ? '/' : '/d/'}${n.name}`)
      .sort();
  const recorded = async () => {
    const inode = (await h.machine.inode(file.id))!;
    return `${hex(inode.parent) === hex(h.rootId) ? '/' : '/d/'}${inode.name}`;
  };
  assert.deepEqual(await names(), ['/a']);
  await h.run({ link: { id: file.id, parent: d, name: 'b' } });
  await h.run({ link: { id: file.id, parent: h.rootId, name: 'c' } });
  assert.deepEqual(await names(), ['/a', '/c', '/d/b']);
  // The recorded name (the META objects' parent and name) goes: another name is recorded.
  await h.run({ unlink: { parent: h.rootId, name: 'a', directory: false } });
  assert.deepEqual(await names(), ['/c', '/d/b']);
  assert.ok(['/c', '/d/b'].includes(await recorded()), await recorded());
  // A rename of a name moves it in the index; a rename over a name of the file's removes it.
  await h.run({ rename: { parent: d, name: 'b', newParent: h.rootId, newName: 'e' } });
  assert.deepEqual(await names(), ['/c', '/e']);
  assert.equal(await recorded(), '/e');
  const other = (await h.createFile(h.rootId, 'x')).inode!;
  await h.run({ rename: { parent: h.rootId, name: 'x', newParent: h.rootId, newName: 'e' } });
  assert.deepEqual(await names(), ['/c']);
  assert.equal(await recorded(), '/c');
  assert.deepEqual(
    (await h.machine.names(other.id)).map((n) => n.name),
    ['e'],
  );
  await h.run({ unlink: { parent: h.rootId, name: 'c', directory: false } });
  assert.deepEqual(await names(), []);
  assert.equal(await h.machine.inode(file.id), undefined);
});

test('rename: over files, over empty directories, into itself, no-replace, across directories', async () => {
  const h = await Harness.create();
  const a = (await h.mkdir(h.rootId, 'a')).inode!.id;
  const b = (await h.mkdir(h.rootId, 'b')).inode!.id;
  const f = (await h.createFile(a, 'f')).inode!;
  const g = (await h.createFile(b, 'g')).inode!;
  await h.run({
    commitWrite: {
      id: g.id,
      size: 10,
      chunks: [{ id: id(), offset: 0, size: 10, hash: sha256('x') }],
      mtimeMs: 0,
    },
  });
  const over = await h.run({ rename: { parent: a, name: 'f', newParent: b, newName: 'g' } });
  assert.equal(over.code, 'OK');
  assert.equal(over.releasedObjects.length, 1, "the replaced file's chunk is released");
  assert.deepEqual(await h.names(a), []);
  assert.deepEqual(await h.names(b), ['g']);
  assert.equal(hex((await h.machine.lookup(b, 'g'))!.id), hex(f.id));
  assert.equal((await h.machine.inode(f.id))!.name, 'g');
  const c = (await h.mkdir(a, 'c')).inode!.id;
  assert.equal(
    (await h.run({ rename: { parent: h.rootId, name: 'a', newParent: c, newName: 'x' } })).code,
    'INVALID_ARGUMENT',
  );
  assert.equal(
    (await h.run({ rename: { parent: h.rootId, name: 'a', newParent: a, newName: 'x' } })).code,
    'INVALID_ARGUMENT',
  );
  assert.equal(
    (await h.run({ rename: { parent: b, name: 'g', newParent: a, newName: 'c' } })).code,
    'IS_A_DIRECTORY',
  );
  assert.equal(
    (await h.run({ rename: { parent: a, name: 'c', newParent: b, newName: 'g' } })).code,
    'NOT_A_DIRECTORY',
  );
  await h.createFile(c, 'inside');
  const e = (await h.mkdir(b, 'e')).inode!.id;
  assert.equal(
    (await h.run({ rename: { parent: b, name: 'e', newParent: a, newName: 'c' } })).code,
    'NOT_EMPTY',
  );
  assert.equal((await h.run({ rename: { parent: a, name: 'c', newParent: b, newName: 'e' } })).code, 'OK');
  assert.equal(await h.machine.inode(e), undefined, 'the empty directory that was replaced is gone');
  assert.equal((await h.machine.inode(a))!.nlink, 2);
  assert.equal((await h.machine.inode(b))!.nlink, 3);
  assert.equal(
    (await h.run({ rename: { parent: b, name: 'g', newParent: b, newName: 'e', noReplace: true } })).code,
    'ALREADY_EXISTS',
  );
  assert.equal(
    (await h.run({ rename: { parent: b, name: 'g', newParent: b, newName: 'g' } })).code,
    'OK',
    'rename onto itself',
  );
  assert.deepEqual(await h.names(b), ['e', 'g']);
});

test('writeChunks: new chunks merged into the list as the cell has it', async () => {
  const h = await Harness.create();
  const file = (await h.createFile(h.rootId, 'big')).inode!;
  const backend = id();
  const MiB4 = 4 << 20;
  const chunkAt = (index: number, size = MiB4) => ({
    id: id(),
    offset: index * MiB4,
    size,
    hash: sha256(`${index}`),
  });
  const first = [chunkAt(0), chunkAt(1), chunkAt(2)];
  const one = await h.run({
    writeChunks: { id: file.id, sizeFloor: 3 * MiB4, chunks: first, mtimeMs: 10, storedOn: [backend] },
  });
  assert.equal(one.code, 'OK');
  assert.equal(one.inode?.size, 3 * MiB4);
  assert.equal(one.inode?.version, 1);
  // Another writer's chunk 1, then this writer's chunk 0 and a new last chunk: chunk 1 is kept
  // (no rebase needed), the replaced chunk 0 released, the new chunks located.
  const other = chunkAt(1);
  assert.equal(
    (await h.run({ writeChunks: { id: file.id, sizeFloor: 0, chunks: [other], mtimeMs: 11 } })).code,
    'OK',
  );
  const mine = [chunkAt(0), chunkAt(5, 100)];
  const two = await h.run({
    writeChunks: { id: file.id, sizeFloor: 5 * MiB4 + 100, chunks: mine, mtimeMs: 12, storedOn: [backend] },
  });
  assert.equal(two.code, 'OK');
  assert.deepEqual(two.inode!.chunks, [], 'the answer leaves the chunk list out');
  assert.equal(two.inode!.version, 3);
  assert.deepEqual(
    (await h.machine.inode(file.id))!.chunks.map((chunk) => hex(chunk.id)),
    [mine[0]!, other, first[2]!, mine[1]!].map((chunk) => hex(chunk.id)),
  );
  assert.equal(two.inode!.size, 5 * MiB4 + 100);
  assert.deepEqual(two.releasedObjects.map(hex), [hex(first[0]!.id)]);
  assert.equal((await h.machine.locations(mine[1]!.id))[0]?.location.current, true);
  assert.deepEqual(await h.machine.locations(first[0]!.id), []);
  // The size never shrinks through a merge; a smaller floor keeps it.
  const three = await h.run({
    writeChunks: { id: file.id, sizeFloor: 1, chunks: [chunkAt(2)], mtimeMs: 13 },
  });
  assert.equal(three.inode!.size, 5 * MiB4 + 100);
  // Refused: out of order, overlapping the file's chunks, past the size, a directory.
  const refused = async (op: NonNullable<Parameters<typeof h.run>[0]['writeChunks']>) =>
    (await h.run({ writeChunks: op })).code;
  assert.equal(
    await refused({ id: file.id, sizeFloor: 0, chunks: [chunkAt(3), chunkAt(2)], mtimeMs: 0 }),
    'INVALID_ARGUMENT',
  );
  assert.equal(
    await refused({ id: file.id, sizeFloor: 0, chunks: [{ ...chunkAt(0), offset: 100 }], mtimeMs: 0 }),
    'INVALID_ARGUMENT',
  );
  assert.equal(
    await refused({ id: file.id, sizeFloor: 0, chunks: [chunkAt(9)], mtimeMs: 0 }),
    'INVALID_ARGUMENT',
  );
  assert.equal(await refused({ id: h.rootId, sizeFloor: 0, chunks: [], mtimeMs: 0 }), 'IS_A_DIRECTORY');
  // A file with inline data: STALE unless chunk 0 replaces it.
  const small = (await h.createFile(h.rootId, 'small')).inode!;
  await h.run({
    commitWrite: { id: small.id, size: 3, chunks: [], inlineData: Buffer.from('abc'), mtimeMs: 0 },
  });
  assert.equal(await refused({ id: small.id, sizeFloor: 0, chunks: [chunkAt(1)], mtimeMs: 0 }), 'STALE');
  const replaced = await h.run({
    writeChunks: { id: small.id, sizeFloor: 5, chunks: [chunkAt(0, 5)], mtimeMs: 0 },
  });
  assert.equal(replaced.code, 'OK');
  assert.equal(replaced.inode!.inlineData.length, 0);
  assert.equal(replaced.inode!.size, 5);
});

test('metadata levels: a newer command waits until every controller runs software for it', async () => {
  // A cell made before levels (level 0) with two controllers, one on older software.
  const h = await Harness.create(undefined, undefined, 0);
  assert.equal(await h.machine.metadataLevel(), 0);
  const file = (await h.createFile(h.rootId, 'f')).inode!;
  const chunk = { id: id(), offset: 0, size: 10, hash: sha256('c') };
  const writeChunks = { id: file.id, sizeFloor: 10, chunks: [chunk], mtimeMs: 1 };
  // Refused with exactly the answer an older controller gives (clients fall back on it).
  const early = await h.run({ writeChunks });
  assert.deepEqual([early.code, early.message], ['INVALID_ARGUMENT', NO_OPERATION_MESSAGE]);
  assert.equal((await h.machine.inode(file.id))!.version, 0, 'nothing applied');
  const admit = async (peerId: string, softwareLevel: number) => {
    const token = {
      id: id(),
      secretHash: sha256(peerId),
      expiresMs: h.timeMs + 60_000,
      revoked: false,
      createdMs: 0,
    };
    await h.run({ createJoinToken: { token } });
    return h.run({
      admitMember: {
        peerId,
        tokenId: token.id,
        secretHash: token.secretHash,
        controller: true,
        softwareLevel,
      },
    });
  };
  assert.equal((await admit('new', METADATA_LEVEL)).member?.softwareLevel, METADATA_LEVEL);
  assert.equal((await admit('old', 0)).code, 'OK', 'at level 0 any controller may join');
  const blocked = await h.run({ setMetadataLevel: { level: 1 } });
  assert.equal(blocked.code, 'INVALID_ARGUMENT');
  assert.match(blocked.message, /controller 2 \(old\) runs zhsm of metadata level 0/);
  assert.equal(await h.machine.metadataLevel(), 0);
  // The old controller is upgraded and announces its level: the level goes up.
  const announced = await h.run({ setMemberAddresses: { peerId: 'old', addresses: [], softwareLevel: 1 } });
  assert.equal(announced.member?.softwareLevel, 1);
  assert.equal((await h.run({ setMetadataLevel: { level: 1 } })).code, 'OK');
  assert.equal(await h.machine.metadataLevel(), 1);
  assert.equal((await h.run({ writeChunks })).code, 'OK');
  // Levels never go down; a controller on older software cannot join or be promoted now.
  assert.equal((await h.run({ setMetadataLevel: { level: 1 } })).code, 'OK');
  assert.equal(await h.machine.metadataLevel(), 1);
  const late = await admit('late', 0);
  assert.equal(late.code, 'INVALID_ARGUMENT');
  assert.match(late.message, /upgrade zhsm on it/);
  const token = {
    id: id(),
    secretHash: sha256('s'),
    expiresMs: h.timeMs + 60_000,
    revoked: false,
    createdMs: 0,
  };
  await h.run({ createJoinToken: { token } });
  const storage = await h.run({
    admitMember: { peerId: 'storage', tokenId: token.id, secretHash: token.secretHash, controller: false },
  });
  assert.equal(storage.code, 'OK', 'members that are not controllers do not apply the log');
  assert.equal((await admit('storage', 0)).code, 'INVALID_ARGUMENT', 'nor is an old member promoted');
  // A new cell starts at the level given at init.
  assert.equal(await (await Harness.create()).machine.metadataLevel(), METADATA_LEVEL);
});

test('writes: commit, versions, stale writers, truncate releases chunks, locations', async () => {
  const h = await Harness.create();
  const file = (await h.createFile(h.rootId, 'data')).inode!;
  const backend = id();
  const chunks = [
    { id: id(), offset: 0, size: 4 << 20, hash: sha256('1') },
    { id: id(), offset: 4 << 20, size: 4 << 20, hash: sha256('2') },
  ];
  const write = await h.run({
    commitWrite: { id: file.id, size: 8 << 20, chunks, mtimeMs: 1234, storedOn: [backend] },
  });
  assert.equal(write.inode?.version, 1);
  assert.equal(write.inode?.mtimeMs, 1234);
  assert.equal((await h.machine.locations(chunks[1]!.id))[0]?.location.current, true);
  const stale = await h.run({
    commitWrite: {
      id: file.id,
      size: 1,
      chunks: [],
      inlineData: Buffer.from('x'),
      mtimeMs: 0,
      checkVersion: true,
      expectedVersion: 0,
    },
  });
  assert.equal(stale.code, 'STALE');
  const bad = await h.run({ commitWrite: { id: file.id, size: 5, chunks, mtimeMs: 0 } });
  assert.equal(bad.code, 'INVALID_ARGUMENT', 'chunks past the size');
  const truncated = await h.run({ setAttributes: { id: file.id, attributes: { size: 5 << 20 } } });
  assert.equal(truncated.inode?.chunks.length, 2);
  assert.equal(truncated.inode?.chunks[1]?.size, 1 << 20);
  const shorter = await h.run({ setAttributes: { id: file.id, attributes: { size: 100 } } });
  assert.deepEqual(shorter.releasedObjects.map(hex), [hex(chunks[1]!.id)]);
  assert.deepEqual(await h.machine.locations(chunks[1]!.id), []);
  const inline = await h.run({
    commitWrite: { id: file.id, size: 3, chunks: [], inlineData: Buffer.from('abc'), mtimeMs: 0 },
  });
  assert.deepEqual(inline.releasedObjects.map(hex), [hex(chunks[0]!.id)]);
  assert.equal(Buffer.from(inline.inode!.inlineData).toString(), 'abc');
  assert.equal(
    (await h.run({ commitWrite: { id: h.rootId, size: 0, chunks: [], mtimeMs: 0 } })).code,
    'IS_A_DIRECTORY',
  );
  const attributes = await h.run({
    setAttributes: { id: file.id, attributes: { mode: 0o4755, uid: 7, gid: 8, atimeMs: 5, mtimeMs: 6 } },
  });
  assert.deepEqual(
    [
      attributes.inode?.mode,
      attributes.inode?.uid,
      attributes.inode?.gid,
      attributes.inode?.atimeMs,
      attributes.inode?.mtimeMs,
    ],
    [0o4755, 7, 8, 5, 6],
  );
});

test('xattrs: set, create-only, replace-only, remove', async () => {
  const h = await Harness.create();
  const file = (await h.createFile(h.rootId, 'f')).inode!;
  assert.equal(
    (await h.run({ setXattr: { id: file.id, name: 'user.b', value: Buffer.from('1') } })).code,
    'OK',
  );
  assert.equal(
    (await h.run({ setXattr: { id: file.id, name: 'user.a', value: Buffer.from('2') } })).code,
    'OK',
  );
  assert.equal(
    (await h.run({ setXattr: { id: file.id, name: 'user.a', value: Buffer.from('3'), createOnly: true } }))
      .code,
    'ALREADY_EXISTS',
  );
  assert.equal(
    (await h.run({ setXattr: { id: file.id, name: 'user.c', value: Buffer.from('3'), replaceOnly: true } }))
      .code,
    'NO_DATA',
  );
  assert.deepEqual(
    (await h.machine.inode(file.id))!.xattrs.map((x) => x.name),
    ['user.a', 'user.b'],
  );
  assert.equal((await h.run({ removeXattr: { id: file.id, name: 'user.a' } })).code, 'OK');
  assert.equal((await h.run({ removeXattr: { id: file.id, name: 'user.a' } })).code, 'NO_DATA');
});

test('open tokens: unlinked while open stays until the last release; expiry releases', async () => {
  const h = await Harness.create();
  const file = (await h.createFile(h.rootId, 'f')).inode!;
  const chunk = id();
  await h.run({
    commitWrite: {
      id: file.id,
      size: 10,
      chunks: [{ id: chunk, offset: 0, size: 10, hash: sha256('c') }],
      mtimeMs: 0,
    },
  });
  const t1 = id();
  const t2 = id();
  const token = (tokenId: Uint8Array, expiresMs: number) => ({
    id: tokenId,
    object: file.id,
    mode: 'READ' as const,
    holder: 'peer-a',
    expiresMs,
    openedMs: 0,
  });
  assert.equal((await h.run({ open: { token: token(t1, 5_000_000_000_000) } })).code, 'OK');
  assert.equal((await h.run({ open: { token: token(t2, 1) } })).code, 'OK');
  assert.equal((await h.machine.tokens()).length, 2);
  const unlinked = await h.run({ unlink: { parent: h.rootId, name: 'f', directory: false } });
  assert.deepEqual(unlinked.releasedObjects, [], 'still open');
  assert.equal((await h.machine.inode(file.id))?.nlink, 0);
  assert.equal(
    (await h.run({ open: { token: token(id(), 9e12) } })).code,
    'NOT_FOUND',
    'no new opens of a deleted file',
  );
  const expired = await h.run({ expireTokens: { nowMs: 1000 } });
  assert.deepEqual(expired.releasedObjects, []);
  assert.equal((await h.machine.tokens()).length, 1);
  assert.equal(
    (await h.run({ renew: { id: t1, expiresMs: 6_000_000_000_000 } })).token?.expiresMs,
    6_000_000_000_000,
  );
  const released = await h.run({ release: { id: t1 } });
  assert.deepEqual(released.releasedObjects.map(hex), [hex(chunk)]);
  assert.equal(await h.machine.inode(file.id), undefined);
  assert.equal((await h.run({ release: { id: t1 } })).code, 'NOT_FOUND');
  const other = (await h.createFile(h.rootId, 'g')).inode!;
  await h.run({
    commitWrite: { id: other.id, size: 3, chunks: [], inlineData: Buffer.from('abc'), mtimeMs: 0 },
  });
  const truncating = await h.run({
    open: { token: { ...token(id(), 9e12), object: other.id, mode: 'WRITE' }, truncate: true },
  });
  assert.equal(truncating.inode?.size, 0);
});

test('membership: join tokens admit members; wrong, expired and revoked tokens do not; controller ids in join order', async () => {
  const h = await Harness.create();
  const tokenId = id();
  await h.run({
    createJoinToken: {
      token: {
        id: tokenId,
        secretHash: sha256('secret'),
        expiresMs: h.timeMs + 1_000_000,
        revoked: false,
        createdMs: h.timeMs,
      },
    },
  });
  const admit = (peerId: string, secret: string, controller: boolean, token = tokenId) =>
    h.run({
      admitMember: {
        peerId,
        tokenId: token,
        secretHash: sha256(secret),
        controller,
        softwareLevel: METADATA_LEVEL,
      },
    });
  assert.equal((await admit('p1', 'secret', true)).member?.controllerId, 1);
  assert.equal((await admit('p2', 'secret', false)).member?.controllerId, 0);
  assert.equal((await admit('p3', 'secret', true)).member?.controllerId, 2);
  assert.equal(
    (await admit('p2', 'secret', true)).member?.controllerId,
    3,
    'a storage server that becomes a controller',
  );
  assert.equal((await admit('p1', 'secret', true)).member?.controllerId, 1, 'idempotent');
  assert.equal((await admit('p4', 'wrong', false)).code, 'PERMISSION_DENIED');
  assert.equal((await admit('p4', 'secret', false, id())).code, 'PERMISSION_DENIED');
  await h.run({ revokeJoinToken: { id: tokenId } });
  assert.equal((await admit('p4', 'secret', false)).code, 'PERMISSION_DENIED');
  const shortLived = id();
  await h.run({
    createJoinToken: {
      token: {
        id: shortLived,
        secretHash: sha256('s'),
        expiresMs: h.timeMs + 2,
        revoked: false,
        createdMs: h.timeMs,
      },
    },
  });
  h.timeMs += 10;
  assert.equal((await admit('p5', 's', false, shortLived)).code, 'PERMISSION_DENIED');
  assert.deepEqual((await h.machine.members()).map((m) => m.peerId).sort(), ['p1', 'p2', 'p3']);
});

test('servers and backends; a failing command leaves no partial writes', async () => {
  const h = await Harness.create();
  const s1 = id();
  const s2 = id();
  const server = (uuid: Uint8Array, name: string) => ({
    uuid,
    peerId: name,
    name,
    addresses: ['/ip4/127.0.0.1/tcp/1'],
    power: 'ON' as const,
    registeredMs: 0,
    lastSeenMs: 0,
    online: true,
  });
  const backend = (uuid: Uint8Array) => ({
    uuid,
    serverUuid: new Uint8Array(0),
    path: '/srv/b',
    capacityBytes: 100,
    freeBytes: 50,
    tags: ['ssd'],
    updatedMs: 0,
  });
  assert.equal(
    (await h.run({ registerBackends: { serverUuid: s1, backends: [backend(id())] } })).code,
    'NOT_FOUND',
  );
  await h.run({ registerServer: { server: server(s1, 'one') } });
  await h.run({ registerServer: { server: server(s2, 'two') } });
  const b1 = id();
  assert.equal((await h.run({ registerBackends: { serverUuid: s1, backends: [backend(b1)] } })).code, 'OK');
  const fresh = id();
  const clash = await h.run({
    registerBackends: { serverUuid: s2, backends: [backend(fresh), backend(b1)] },
  });
  assert.equal(clash.code, 'ALREADY_EXISTS');
  assert.deepEqual(
    (await h.machine.backends()).map((b) => hex(b.uuid)),
    [hex(b1)],
    'the first backend of the failed command was not written',
  );
  await h.run({ deregisterServer: { serverUuid: s1 } });
  assert.deepEqual((await h.machine.servers()).map((s) => [s.name, s.online]).sort(), [
    ['one', false],
    ['two', true],
  ]);
});

test('determinism: the same log on memory and LevelDB gives byte-identical snapshots; restore round-trips', async (t) => {
  const ids = { root: id(), lostFound: id() };
  const memory = await Harness.create(new MemoryKv(), ids);
  const level = await Harness.create(await LevelKv.open(tempDirectory(t)), ids);
  const log: Uint8Array[] = [];
  let time = 1_000;
  const dirs = [ids.root];
  const fileIds: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) {
    const kind = i % 7;
    let command: Parameters<typeof commandCodec.encode>[0];
    if (kind === 0) {
      const d = id();
      command = {
        timeMs: time,
        create: {
          parent: dirs[i % dirs.length]!,
          name: `d${i}`,
          id: d,
          type: 'DIRECTORY',
          mode: 0o755,
          uid: 1,
          gid: 1,
        },
      };
      dirs.push(d);
    } else if (kind < 4) {
      const f = id();
      fileIds.push(f);
      command = {
        timeMs: time,
        create: {
          parent: dirs[i % dirs.length]!,
          name: `f${i}`,
          id: f,
          type: 'FILE',
          mode: 0o644,
          uid: 1,
          gid: 1,
        },
      };
    } else if (kind === 4) {
      command = {
        timeMs: time,
        commitWrite: {
          id: fileIds[i % fileIds.length]!,
          size: 3,
          chunks: [],
          inlineData: Buffer.from(`v${i}`).subarray(0, 3),
          mtimeMs: time,
        },
      };
    } else if (kind === 5) {
      command = {
        timeMs: time,
        rename: { parent: dirs[0]!, name: `f${i - 2}`, newParent: dirs[1 % dirs.length]!, newName: `r${i}` },
      };
    } else {
      command = { timeMs: time, unlink: { parent: dirs[0]!, name: `f${i - 6}`, directory: false } };
    }
    time += 3;
    log.push(commandCodec.encode(command));
  }
  const base = memory.machine.appliedIndex;
  const entries = log.map((data, i) => ({ index: base + i + 1, data }));
  const memoryResults = await memory.machine.apply(entries.slice(0, 150));
  await memory.machine.apply(entries.slice(150));
  const levelResults = [];
  for (const entry of entries) levelResults.push(...(await level.machine.apply([entry])));
  assert.deepEqual(
    memoryResults.map((r) => r.code),
    levelResults.slice(0, 150).map((r) => r.code),
  );
  const snapshot = await memory.machine.snapshot();
  assert.ok(
    Buffer.from(snapshot).equals(Buffer.from(await level.machine.snapshot())),
    'byte-identical state',
  );
  const restored = await MetadataStateMachine.open(new MemoryKv());
  await restored.restore(snapshot);
  assert.equal(restored.appliedIndex, memory.machine.appliedIndex);
  assert.ok(Buffer.from(await restored.snapshot()).equals(Buffer.from(snapshot)));
  const reopened = await MetadataStateMachine.open(new MemoryKv());
  assert.equal(reopened.appliedIndex, 0);
});

test('garbage entries are rejected as results, not crashes; no-op entries advance the index', async () => {
  const h = await Harness.create();
  const index = h.machine.appliedIndex;
  const results = await h.machine.apply([
    { index: index + 1, data: new Uint8Array([0xff, 0xff, 0xff]) },
    { index: index + 2, data: new Uint8Array(0) },
    { index: index + 3, data: commandCodec.encode({ timeMs: 1 }) },
  ]);
  assert.deepEqual(
    results.map((r) => r.code),
    ['INVALID_ARGUMENT', 'OK', 'INVALID_ARGUMENT'],
  );
  assert.equal(h.machine.appliedIndex, index + 3);
  await assert.rejects(h.machine.apply([{ index: index + 5, data: new Uint8Array(0) }]), /out of order/);
});

test('client sessions: a retried command is applied once and answered with its first result', async () => {
  const h = await Harness.create();
  const session = id();
  const create = (sequence: number, name: string, acknowledged = sequence) =>
    h.run({
      session,
      sequence,
      acknowledged,
      create: { parent: h.rootId, name, id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
    });
  const first = await create(1, 'a');
  assert.equal(first.code, 'OK');
  // The retry carries another id (a client would resend the same one; this shows nothing re-runs).
  const retry = await create(1, 'a');
  assert.equal(retry.code, 'OK', 'a retry is answered with the saved result, not ALREADY_EXISTS');
  assert.deepEqual(retry.inode?.id, first.inode?.id);
  assert.equal((await h.machine.inode(h.rootId))!.entries, 2, 'lost+found and a, nothing more');
  // A failure is saved too: the retry gets the same failure even though the state changed since.
  const unlink = (sequence: number) =>
    h.run({ session, sequence, acknowledged: 2, unlink: { parent: h.rootId, name: 'b', directory: false } });
  assert.equal((await unlink(2)).code, 'NOT_FOUND');
  assert.equal((await create(3, 'b', 2)).code, 'OK');
  assert.equal((await unlink(2)).code, 'NOT_FOUND', 'the retry of 2 does not unlink the b that 3 made');
  assert.ok(await h.machine.lookup(h.rootId, 'b'));
  // Another session with the same sequence numbers is independent.
  const other = await h.run({
    session: id(),
    sequence: 1,
    create: { parent: h.rootId, name: 'c', id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 },
  });
  assert.equal(other.code, 'OK');
  // Commands without a session apply every time (internal commands of the controllers).
  const plain = () =>
    h.run({ create: { parent: h.rootId, name: 'd', id: id(), type: 'FILE', mode: 0o644, uid: 0, gid: 0 } });
  assert.equal((await plain()).code, 'OK');
  assert.equal((await plain()).code, 'ALREADY_EXISTS');
});

test('client sessions: acknowledged results are dropped, a cap bounds them, idle sessions expire', async () => {
  const kv = new MemoryKv();
  const h = await Harness.create(kv);
  const session = id();
  const count = async (prefix: string) => {
    let n = 0;
    for await (const _ of kv.range({ gte: prefix, lt: `${prefix}\uffff` })) n++;
    return n;
  };
  const results = `r:${hex(session)}:`;
  const setAttr = (sequence: number, acknowledged: number) =>
    h.run({ session, sequence, acknowledged, setAttributes: { id: h.rootId, attributes: { mode: 0o700 } } });
  for (let sequence = 1; sequence <= 10; sequence++) await setAttr(sequence, 1);
  assert.equal(await count(results), 10, 'nothing acknowledged yet: ten saved results');
  await setAttr(11, 9);
  assert.equal(await count(results), 3, 'results 9, 10 and 11 are kept');
  const gone = await setAttr(3, 9);
  assert.equal(gone.code, 'INVALID_ARGUMENT', 'a retry of an acknowledged command is refused');
  assert.match(gone.message, /answered already/);
  // acknowledged never drops the command's own result, even when a client sends it too high.
  assert.equal((await setAttr(12, 500)).code, 'OK');
  assert.equal((await setAttr(12, 500)).code, 'OK');
  // A client that never acknowledges keeps at most SESSION_RESULTS_MAX results.
  const greedy = id();
  const entries = Array.from({ length: SESSION_RESULTS_MAX + 50 }, (_, i) => ({
    session: greedy,
    sequence: i + 1,
    acknowledged: 1,
    setAttributes: { id: h.rootId, attributes: { mode: 0o755 } },
  }));
  for (let i = 0; i < entries.length; i += 500) await h.runBatch(entries.slice(i, i + 500));
  assert.equal(await count(`r:${hex(greedy)}:`), SESSION_RESULTS_MAX);
  // A jump far ahead drops every older result (by a scan, not a loop over the gap).
  await h.run({ ...entries[0]!, sequence: 10 * SESSION_RESULTS_MAX, acknowledged: 10 * SESSION_RESULTS_MAX });
  assert.equal(await count(`r:${hex(greedy)}:`), 1);
  // Idle sessions expire with the tokens' expiry; active ones stay.
  assert.equal(await count('c:'), 2);
  await h.run({ expireTokens: { nowMs: h.timeMs + SESSION_IDLE_MS - 10_000 } });
  assert.equal(await count('c:'), 2);
  await h.run({ expireTokens: { nowMs: h.timeMs + SESSION_IDLE_MS + 10_000 } });
  assert.equal(await count('c:'), 0);
  assert.equal(await count('r:'), 0);
  // Bad session fields are refused without touching the state.
  const bad = await h.run({
    session: new Uint8Array(3),
    sequence: 1,
    setAttributes: { id: h.rootId, attributes: {} },
  });
  assert.equal(bad.code, 'INVALID_ARGUMENT');
  const zero = await h.run({ session, sequence: 0, setAttributes: { id: h.rootId, attributes: {} } });
  assert.equal(zero.code, 'INVALID_ARGUMENT');
});
