import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FileHandleLike, FileSystem } from '../../node/common/fs.ts';
import { nodeFileSystem } from '../../node/common/fs.ts';
import { DirectoryHandles } from '../../node/store/directory-handles.ts';

/** Directory handles that count opens and closes, and fail a sync after their close. */
function countingFs(options: { failOpen?: Set<string> } = {}) {
  const opened: string[] = [];
  const closed: string[] = [];
  const syncs: string[] = [];
  const fs: FileSystem = {
    ...nodeFileSystem,
    async open(path) {
      await Promise.resolve();
      if (options.failOpen?.has(path)) {
        throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      }
      opened.push(path);
      let isClosed = false;
      const handle: FileHandleLike = {
        read: async () => 0,
        write: async (_buffer, _offset, length) => length,
        truncate: async () => {},
        async sync() {
          if (isClosed) throw Object.assign(new Error('EBADF: sync of a closed handle'), { code: 'EBADF' });
          syncs.push(path);
        },
        setTimes: async () => {},
        stat: async () => ({ size: 0, blocks: 0, mtimeMs: 0, isFile: false, isDirectory: true }),
        async close() {
          assert.ok(!isClosed, `${path} closed twice`);
          isClosed = true;
          closed.push(path);
        },
      };
      return handle;
    },
  };
  return { fs, opened, closed, syncs };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test('a lease keeps its handle open when the cache evicts it; the last release closes it', async () => {
  const { fs, opened, closed, syncs } = countingFs();
  const handles = new DirectoryHandles(fs, 1);
  const a = await handles.acquire('/a');
  const b = await handles.acquire('/b'); // evicts /a from the cache, which a lease still holds
  await settle();
  assert.deepEqual(closed, []);
  await a.sync();
  a.release();
  a.release(); // a second release changes nothing
  await settle();
  assert.deepEqual(closed, ['/a']);
  // /b stays cached after its lease: a later lease reuses the handle.
  b.release();
  await handles.sync('/b');
  assert.deepEqual(opened, ['/a', '/b']);
  assert.deepEqual(syncs, ['/a', '/b']);
  await settle();
  assert.deepEqual(closed, ['/a']);
  await handles.close();
  assert.deepEqual(closed, ['/a', '/b']);
});

test('leases of one directory share one open; an idle evicted handle is closed at once', async () => {
  const { fs, opened, closed } = countingFs();
  const handles = new DirectoryHandles(fs, 2);
  const leases = await Promise.all([handles.acquire('/x'), handles.acquire('/x'), handles.acquire('/x')]);
  assert.deepEqual(opened, ['/x']);
  for (const lease of leases) lease.release();
  await handles.sync('/y');
  await handles.sync('/z'); // evicts /x, which nobody leases
  await settle();
  assert.deepEqual(closed, ['/x']);
});

test('a directory that cannot be opened fails its lease and is tried again next time', async () => {
  const failOpen = new Set(['/missing']);
  const { fs, opened } = countingFs({ failOpen });
  const handles = new DirectoryHandles(fs, 4);
  await assert.rejects(handles.acquire('/missing'), /ENOENT/);
  await assert.rejects(handles.sync('/missing'), /ENOENT/);
  failOpen.clear();
  await handles.sync('/missing');
  assert.deepEqual(opened, ['/missing']);
});

test('close() closes idle handles now and leased ones at their release', async () => {
  const { fs, closed } = countingFs();
  const handles = new DirectoryHandles(fs, 8);
  await handles.sync('/idle');
  const lease = await handles.acquire('/busy');
  await handles.close();
  assert.deepEqual(closed, ['/idle']);
  await lease.sync();
  lease.release();
  await settle();
  assert.deepEqual(closed, ['/idle', '/busy']);
});

test('many concurrent syncs over more directories than the cache holds never use a closed handle', async () => {
  const { fs, opened, closed, syncs } = countingFs();
  const handles = new DirectoryHandles(fs, 4);
  const paths = Array.from({ length: 400 }, (_, index) => `/d${index % 37}`);
  await Promise.all(
    paths.map(async (path) => {
      const lease = await handles.acquire(path);
      await settle();
      await lease.sync();
      lease.release();
    }),
  );
  assert.equal(syncs.length, 400);
  await handles.close();
  await settle();
  assert.equal(closed.length, opened.length, 'every handle opened is closed once');
});
