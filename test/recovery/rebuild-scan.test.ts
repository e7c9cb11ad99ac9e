/**
 * The rebuild's scan keeps what it found out of the listing pages: a page is up to 4 MiB, and a
 * hash or body that is a view of it would keep every page in memory until the rebuild ends.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { newInode } from '../../node/metadata/state-machine.ts';
import { inodeOfMeta, metaObjectOf } from '../../node/recovery/meta-header.ts';
import { recordFound } from '../../node/recovery/rebuild.ts';
import type { FoundData, FoundMeta } from '../../node/recovery/rebuild-plan.ts';
import type { ListedObject } from '../../node/storage/service.ts';
import { emptyHeader, headerCodec } from '../../node/store/format.ts';

const id = () => new Uint8Array(randomBytes(16));

test('found objects do not hold on to the listing page', () => {
  const node = newInode({
    id: id(),
    type: 'FILE',
    mode: 0o644,
    uid: 1,
    gid: 2,
    time: 1_700_000_000_000,
    parent: id(),
    name: 'a file',
  });
  const meta = metaObjectOf(node, 7);
  const dataId = id();
  const dataHeader = { ...emptyHeader(), id: dataId, mainType: 'DATA' as const, bodySize: 4096 };
  dataHeader.contentHash = new Uint8Array(randomBytes(34));
  // One page buffer holding every encoded header and body, decoded as the wire decodes it (views).
  const parts = [headerCodec.encode(meta.header), meta.body, headerCodec.encode(dataHeader)];
  const page = new Uint8Array(4 * 1024 * 1024);
  let at = 0;
  const views = parts.map((part) => {
    page.set(part, at);
    const view = page.subarray(at, at + part.length);
    at += part.length;
    return view;
  });
  const listed: ListedObject[] = [
    { id: node.id, header: headerCodec.decode(views[0]!), body: views[1]!, errorCode: '', error: '' },
    { id: dataId, header: headerCodec.decode(views[2]!), body: new Uint8Array(0), errorCode: '', error: '' },
    { id: id(), header: null, body: new Uint8Array(0), errorCode: 'CORRUPT', error: 'bad header' },
  ];
  assert.equal(listed[1]!.header!.contentHash.buffer, page.buffer, 'the decoded hash is a view of the page');

  const findings = { metas: [] as FoundMeta[], data: new Map<string, FoundData[]>() };
  assert.deepEqual(
    listed.map((object) => recordFound(findings, 'b1', 's1', object)),
    ['meta', 'data', 'damaged'],
  );
  const [found] = findings.metas;
  assert.ok(found !== undefined);
  const copies = findings.data.get(Buffer.from(dataId).toString('hex'));
  assert.equal(copies?.length, 1);
  const held = [found.body, found.header.id, found.header.contentHash, copies[0]!.contentHash];
  for (const bytes of held) assert.notEqual(bytes.buffer, page.buffer);
  assert.equal(copies[0]!.backend, 'b1');
  assert.equal(copies[0]!.size, 4096);
  assert.ok(Buffer.from(copies[0]!.contentHash).equals(dataHeader.contentHash));
  // What was kept still reads as the inode.
  // Byte fields as hex (a Buffer's toJSON runs before a replacer sees it: look at the holder).
  const plain = (value: unknown) =>
    JSON.stringify(value, function (this: Record<string, unknown>, key, field) {
      const raw = this[key];
      return raw instanceof Uint8Array ? Buffer.from(raw).toString('hex') : field;
    });
  assert.equal(plain(inodeOfMeta(found.header, found.body)), plain(inodeOfMeta(meta.header, meta.body)));

  // A second copy of the same object on another backend joins the first.
  recordFound(findings, 'b2', 's2', listed[1]!);
  assert.deepEqual(
    findings.data.get(Buffer.from(dataId).toString('hex'))?.map((copy) => copy.backend),
    ['b1', 'b2'],
  );
});
