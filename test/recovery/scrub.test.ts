/**
 * `zhsm scrub` on a real cell: a byte corrupted in one of two copies is found and repaired from
 * the good copy; a corrupted single copy is reported (exit 4) and never served; a damaged META
 * object is rewritten. `zhsm fsck` lists a deleted copy (exit 4), and `--repair` fixes it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { test } from 'node:test';
import type { Inode } from '../../node/metadata/records.ts';
import { metaObjectOf } from '../../node/recovery/meta-header.ts';
import { newObjectId } from '../../node/store/object-id.ts';
import { waitFor } from '../daemon/_cell.ts';
import { patternBytes } from '../helpers.ts';
import { getFile, headersWritten, jsonOf, objectFile, putFile, recoveryCell, zhsmRun } from './_recovery.ts';

const _caller = { uid: 0, gid: 0 };

/**
 * Flip one byte of an object file: by default in its body (near its end: the body is at the end
 * of the file), or at `at` (e.g. in the first header slot).
 */
async function corrupt(path: string, at?: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const { size } = await handle.stat();
    const position = at ?? size - 1000;
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, position);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, position);
  } finally {
    await handle.close();
  }
}

interface ScrubJson {
  report: {
    damaged: Array<{ object: string; path?: string; code: string }>;
    repaired: number;
    unrepaired: Array<{ object: string; path?: string }>;
    metaRewritten: number;
    objectsChecked: number;
    bytesChecked: number;
  };
}

test('scrub repairs a corrupt copy from a good one and reports a corrupt single copy', async (t) => {
  const cell = await recoveryCell(t, { servers: 2, replicas: 2, cell: 'scrub' });
  const { c1 } = cell;
  const fs = cell.fs;
  const twice = patternBytes(300_000, 1);
  const once = patternBytes(200_000, 2);
  await putFile(fs, '/twice.bin', twice);
  // A file with one copy only.
  await cell.stopClient();
  const single = await cell.restartClient(1);
  await putFile(single, '/once.bin', once);
  await headersWritten(c1);
  const backendOf = async (object: Uint8Array) =>
    (await single.cell.metadata.locations(object)).map((copy) => Buffer.from(copy.backend).toString('hex'));
  const backendDirs = new Map<string, string>();
  for (const backend of await single.cell.metadata.backends())
    backendDirs.set(Buffer.from(backend.uuid).toString('hex'), backend.path);

  // A clean cell: nothing to report.
  const clean = await zhsmRun(['scrub', '--data', c1.data, '--json']);
  assert.equal(clean.code, 0, clean.stdout);
  assert.equal(jsonOf<ScrubJson>(clean.stdout).report.damaged.length, 0);

  // One byte of one of two copies.
  const twiceInode = await single.resolve('/twice.bin');
  const chunk = twiceInode.chunks[0]!;
  const [first, second] = await backendOf(chunk.id);
  assert.ok(first !== undefined && second !== undefined, 'two copies');
  const damagedFile = objectFile(backendDirs.get(first)!, chunk.id);
  await corrupt(damagedFile);
  // A META object too (the root directory's, on whichever backend has one).
  const root = await single.resolve('/');
  const rootMeta = [...backendDirs.values()].map((dir) => objectFile(dir, root.id));
  let metaDamaged = 0;
  for (const path of rootMeta) {
    try {
      await corrupt(path, 40); // inside the header of slot A (slot B was never written)
      metaDamaged += 1;
      break;
    } catch {
      // not on this backend
    }
  }
  assert.equal(metaDamaged, 1, 'a META object of the root');

  const repaired = await zhsmRun(['scrub', '--data', c1.data, '--json', '--repair-wait', '60']);
  const report = jsonOf<ScrubJson>(repaired.stdout).report;
  t.diagnostic(
    `scrub: ${report.objectsChecked} objects, ${report.bytesChecked} bytes; damaged ${JSON.stringify(report.damaged)}`,
  );
  assert.equal(repaired.code, 0, repaired.stdout);
  assert.deepEqual(
    report.damaged.map((problem) => problem.object).sort(),
    [Buffer.from(chunk.id).toString('hex'), Buffer.from(root.id).toString('hex')].sort(),
  );
  assert.equal(report.damaged.find((problem) => problem.path === '/twice.bin')?.code, 'CORRUPT_OBJECT');
  assert.equal(report.metaRewritten, 1);
  assert.equal(report.repaired, 2);
  assert.equal(report.unrepaired.length, 0);
  // The copy on disk is whole again, and the file reads back.
  const again = await zhsmRun(['scrub', '--data', c1.data, '--json']);
  assert.equal(again.code, 0, again.stdout);
  assert.equal(jsonOf<ScrubJson>(again.stdout).report.damaged.length, 0);
  assert.equal(
    createHash('sha256')
      .update(await getFile(single, '/twice.bin'))
      .digest('hex'),
    createHash('sha256').update(twice).digest('hex'),
  );

  // The only copy of a chunk: reported, not repaired, and never served.
  const onceInode = await single.resolve('/once.bin');
  const [only] = await backendOf(onceInode.chunks[0]!.id);
  await corrupt(objectFile(backendDirs.get(only!)!, onceInode.chunks[0]!.id));
  const unrepairable = await zhsmRun(['scrub', '--data', c1.data, '--json', '--repair-wait', '5']);
  assert.equal(unrepairable.code, 4, unrepairable.stdout);
  const left = jsonOf<ScrubJson>(unrepairable.stdout).report;
  assert.deepEqual(
    left.unrepaired.map((problem) => problem.path),
    ['/once.bin'],
  );
  await assert.rejects(getFile(single, '/once.bin'), (error: Error & { code?: string }) => {
    assert.match(error.code ?? '', /CORRUPT_OBJECT|HASH_MISMATCH|IO_ERROR|UNAVAILABLE/);
    return true;
  });
  const human = await zhsmRun(['scrub', '--data', c1.data, '--repair-wait', '1']);
  assert.equal(human.code, 4);
  assert.match(human.stdout, /NOT REPAIRED: \/once\.bin/);

  // fsck: a copy deleted on disk is a difference; --repair has the mover copy it again.
  await rm(damagedFile);
  const listed = await zhsmRun(['fsck', '--data', c1.data, '--json']);
  assert.equal(listed.code, 4, listed.stdout);
  const counts = jsonOf<{ report: { counts: Record<string, number> } }>(listed.stdout).report.counts;
  assert.equal(counts['copy-missing'], 1, JSON.stringify(counts));
  assert.equal((await zhsmRun(['fsck', '--data', c1.data, '--repair'])).code, 0);
  await waitFor('the deleted copy is back', async () => {
    const result = await zhsmRun(['fsck', '--data', c1.data, '--json']);
    const now = jsonOf<{ report: { counts: Record<string, number> } }>(result.stdout).report.counts;
    return now['copy-missing'] === undefined ? true : undefined;
  });

  // Unreferenced objects (here without a grace period): a DATA object no file references is
  // collected; a META object of an inode the metadata does not have goes to lost+found.
  const backend = (await single.cell.metadata.backends())[0]!.uuid;
  const strayBytes = patternBytes(5000, 9);
  await single.cell.writeChunk(
    backend,
    newObjectId(),
    strayBytes,
    createHash('sha256').update(strayBytes).digest(),
  );
  const lost: Inode = {
    ...twiceInode,
    id: newObjectId(),
    name: 'lost.txt',
    chunks: [],
    size: 5,
    inlineData: Buffer.from('hello'),
  };
  await cell.client!.remote.putMeta(backend, [metaObjectOf(lost, 1)]);
  const collected = await zhsmRun([
    'scrub',
    '--data',
    c1.data,
    '--json',
    '--grace',
    '0',
    '--repair-wait',
    '1',
  ]);
  const after = jsonOf<ScrubJson & { report: { orphanDataDeleted: number; restoredToLostFound: string[] } }>(
    collected.stdout,
  ).report;
  assert.equal(after.orphanDataDeleted, 1, collected.stdout);
  const lostPath = `/lost+found/lost.txt.${Buffer.from(lost.id).toString('hex').slice(0, 8)}`;
  assert.deepEqual(after.restoredToLostFound, [lostPath]);
  assert.equal((await getFile(single, lostPath)).toString(), 'hello');

  // Bad arguments are usage errors; the jobs run on controllers only.
  for (const args of [
    ['scrub', '--rate', 'fast'],
    ['scrub', '--grace', '-1'],
    ['rebuild', '--expect-servers', 'two'],
    ['conflicts', '--limit', 'x'],
  ]) {
    const bad = await zhsmRun([...args, '--data', c1.data]);
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stdout}`);
  }
  const notController = await zhsmRun(['fsck', '--data', cell.client!.data]);
  assert.equal(notController.code, 1);
  assert.match(notController.stdout, /recovery jobs run on a controller/);
  await cell.stopClient();
});
