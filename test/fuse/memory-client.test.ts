/** The in-memory FsClient double on its own: POSIX semantics and error codes, no mount needed. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ZhsmError } from '../../node/common/errors.ts';
import { MemoryFsClient } from './memory-client.ts';

const caller = { uid: 1000, gid: 1000 };

async function code(action: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await action();
  } catch (error) {
    assert.ok(error instanceof ZhsmError, `expected a ZhsmError, got ${error}`);
    return error.code;
  }
  return undefined;
}

describe('MemoryFsClient', () => {
  test('files: create, write, read, sparse holes, truncate, append handles', async () => {
    const client = new MemoryFsClient();
    const handle = await client.create('/f', 0o644, caller, { mode: 'readWrite', exclusive: true });
    await handle.write(0, Buffer.from('abc'));
    await handle.write(200_000, Buffer.from('z'));
    const attributes = await handle.attributes();
    assert.equal(attributes.size, 200_001);
    assert.equal(attributes.mode, 0o100644);
    assert.equal(attributes.uid, 1000);
    assert.deepEqual([...(await handle.read(0, 4))], [97, 98, 99, 0]);
    assert.equal((await handle.read(199_999, 10)).length, 2);
    await handle.truncate(2);
    assert.equal(Buffer.from(await handle.read(0, 10)).toString(), 'ab');
    await handle.close();
    assert.equal(await code(() => handle.read(0, 1)), 'CLOSED');
    const appender = await client.open('/f', { mode: 'append' });
    await appender.write(0, Buffer.from('++'));
    await appender.close();
    const reader = await client.open('/f', { mode: 'read' });
    assert.equal(Buffer.from(await reader.read(0, 10)).toString(), 'ab++');
    assert.equal(await code(() => reader.write(0, Buffer.from('x'))), 'PERMISSION_DENIED');
    assert.equal(
      await code(() => client.create('/f', 0o644, caller, { mode: 'write', exclusive: true })),
      'ALREADY_EXISTS',
    );
    const truncating = await client.create('/f', 0o644, caller, { mode: 'write', truncate: true });
    assert.equal((await truncating.attributes()).size, 0);
  });

  test('names: errors by code', async () => {
    const client = new MemoryFsClient();
    await client.mkdir('/d', 0o755, caller);
    await (await client.create('/d/f', 0o600, caller, { mode: 'write' })).close();
    assert.equal(await code(() => client.getattr('/missing')), 'NOT_FOUND');
    assert.equal(await code(() => client.getattr('/d/f/x')), 'NOT_A_DIRECTORY');
    assert.equal(await code(() => client.mkdir('/d', 0o755, caller)), 'ALREADY_EXISTS');
    assert.equal(await code(() => client.rmdir('/d')), 'NOT_EMPTY');
    assert.equal(await code(() => client.rmdir('/d/f')), 'NOT_A_DIRECTORY');
    assert.equal(await code(() => client.unlink('/d')), 'IS_A_DIRECTORY');
    assert.equal(await code(() => client.open('/d', { mode: 'write' })), 'IS_A_DIRECTORY');
    assert.equal(await code(() => client.readlink('/d/f')), 'INVALID_ARGUMENT');
    assert.equal(await code(() => client.link('/d', '/d2')), 'PERMISSION_DENIED');
    assert.deepEqual(await client.readdir('/d'), ['f']);
  });

  test('rename: replace files, empty directories; refuse the rest', async () => {
    const client = new MemoryFsClient();
    for (const path of ['/a', '/b'])
      await (await client.create(path, 0o644, caller, { mode: 'write' })).close();
    await client.mkdir('/empty', 0o755, caller);
    await client.mkdir('/full', 0o755, caller);
    await client.mkdir('/full/inner', 0o755, caller);
    const inoA = (await client.getattr('/a')).ino;
    await client.rename('/a', '/b');
    assert.equal((await client.getattr('/b')).ino, inoA);
    assert.equal(await code(() => client.getattr('/a')), 'NOT_FOUND');
    assert.equal(await code(() => client.rename('/b', '/empty')), 'IS_A_DIRECTORY');
    assert.equal(await code(() => client.rename('/empty', '/b')), 'NOT_A_DIRECTORY');
    assert.equal(await code(() => client.rename('/empty', '/full')), 'NOT_EMPTY');
    assert.equal(await code(() => client.rename('/full', '/full/inner/x')), 'INVALID_ARGUMENT');
    assert.equal(await code(() => client.rename('/b', '/full/inner', { noReplace: true })), 'ALREADY_EXISTS');
    await client.rename('/full/inner', '/empty');
    assert.deepEqual((await client.readdir('/')).sort(), ['b', 'empty', 'full']);
    assert.equal((await client.getattr('/full')).nlink, 2);
  });

  test('hard links, symlinks, setgid directories, statfs accounting', async () => {
    const client = new MemoryFsClient({ totalBytes: 1 << 20 });
    await (await client.create('/f', 0o644, caller, { mode: 'write' })).close();
    await client.link('/f', '/g');
    assert.equal((await client.getattr('/f')).nlink, 2);
    await client.unlink('/f');
    assert.equal((await client.getattr('/g')).nlink, 1);
    await client.symlink('g', '/s', caller);
    assert.equal(await client.readlink('/s'), 'g');
    assert.equal((await client.getattr('/s')).mode, 0o120777);
    await client.mkdir('/shared', 0o2775, { uid: 0, gid: 50 });
    await client.mkdir('/shared/sub', 0o755, caller);
    const sub = await client.getattr('/shared/sub');
    assert.equal(sub.gid, 50);
    assert.equal(sub.mode & 0o2000, 0o2000);
    const before = await client.statfs();
    const handle = await client.create('/big', 0o644, caller, { mode: 'write' });
    await handle.write(0, new Uint8Array(65536 * 2));
    assert.equal((await client.statfs()).freeBytes, before.freeBytes - 65536 * 2);
    assert.equal(await code(() => handle.write(0, new Uint8Array(2 << 20))), 'BACKEND_FULL');
  });

  test('xattrs: a missing attribute is NOT_FOUND with context.attribute', async () => {
    const client = new MemoryFsClient();
    await client.mkdir('/d', 0o755, caller);
    await client.setxattr('/d', 'user.a', Buffer.from('1'), { create: true });
    assert.equal(
      await code(() => client.setxattr('/d', 'user.a', Buffer.from('2'), { create: true })),
      'ALREADY_EXISTS',
    );
    try {
      await client.getxattr('/d', 'user.none');
      assert.fail('no error');
    } catch (error) {
      assert.ok(error instanceof ZhsmError);
      assert.equal(error.code, 'NOT_FOUND');
      assert.equal(error.context.attribute, 'user.none');
    }
    assert.deepEqual(await client.listxattr('/d'), ['user.a']);
    await client.removexattr('/d', 'user.a');
    assert.equal(await code(() => client.removexattr('/d', 'user.a')), 'NOT_FOUND');
  });

  test('utimens leaves an undefined time unchanged', async () => {
    let now = 1000;
    const client = new MemoryFsClient({ now: () => now });
    await client.mkdir('/d', 0o755, caller);
    now = 2000;
    await client.utimens('/d', 5, undefined);
    let attributes = await client.getattr('/d');
    assert.deepEqual([attributes.atimeMs, attributes.mtimeMs, attributes.ctimeMs], [5, 1000, 2000]);
    await client.utimens('/d', undefined, 7);
    attributes = await client.getattr('/d');
    assert.deepEqual([attributes.atimeMs, attributes.mtimeMs], [5, 7]);
  });
});
