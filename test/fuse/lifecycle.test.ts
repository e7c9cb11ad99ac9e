/**
 * Mount lifecycle on real mounts: clean unmount on SIGTERM, clearing the mount of a killed daemon,
 * the handler timeout, the default /.zhsm contents; and the pure pieces (options, flags, stat).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { statArray, statfsArray } from '../../fuse/attributes.ts';
import { openModeOf, openOptionsOf } from '../../fuse/flags.ts';
import { mountOptionString } from '../../fuse/mount.ts';
import { clearStuckMount, listFuseMounts } from '../../fuse/stuck-mount.ts';
import { errorCode, fuseSkipReason, isMounted, startMount } from './harness.ts';

const skip = await fuseSkipReason();

describe('mount lifecycle', { skip }, () => {
  test('SIGTERM unmounts cleanly and the daemon exits 0', async (t) => {
    const mount = await startMount();
    t.after(() => mount.stop());
    fs.writeFileSync(`${mount.mountpoint}/file`, 'x');
    assert.ok(isMounted(mount.mountpoint));
    const exited = new Promise<number | null>((resolve) => mount.child.once('exit', (code) => resolve(code)));
    mount.child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.ok(!isMounted(mount.mountpoint), 'no mount left behind');
    assert.deepEqual(fs.readdirSync(mount.mountpoint), [], 'the mountpoint is an empty directory again');
  });

  test('a killed daemon leaves a dead mount; clearStuckMount removes it', async (t) => {
    const mount = await startMount();
    t.after(() => mount.stop());
    const exited = new Promise<void>((resolve) => mount.child.once('exit', () => resolve()));
    mount.child.kill('SIGKILL');
    await exited;
    assert.ok(isMounted(mount.mountpoint), 'the kernel keeps the mount of a dead daemon');
    assert.equal(await errorCode(() => fs.statSync(`${mount.mountpoint}/x`)), 'ENOTCONN');
    assert.ok(listFuseMounts().some((entry) => entry.mountpoint === mount.mountpoint));
    const result = await clearStuckMount(mount.mountpoint);
    assert.equal(result.wasMounted, true);
    assert.ok(!isMounted(mount.mountpoint));
    assert.deepEqual(await clearStuckMount(mount.mountpoint), { aborted: false, wasMounted: false });
  });

  test('a new daemon refuses a stale mount, or replaces it when told to', async (t) => {
    const first = await startMount();
    t.after(() => first.stop());
    const exited = new Promise<void>((resolve) => first.child.once('exit', () => resolve()));
    first.child.kill('SIGKILL');
    await exited;
    const directory = first.mountpoint.slice(0, -'/mnt'.length);
    await assert.rejects(startMount({}, { directory }), /already a FUSE mount/);
    const second = await startMount({ replaceStaleMount: true }, { directory });
    t.after(async () => {
      await second.stop();
      await fs.promises.rm(directory, { recursive: true, force: true });
    });
    fs.writeFileSync(`${second.mountpoint}/works`, 'yes');
    assert.equal(fs.readFileSync(`${second.mountpoint}/works`, 'utf8'), 'yes');
    assert.equal(listFuseMounts().filter((entry) => entry.mountpoint === second.mountpoint).length, 1);
  });

  test('an operation slower than handlerTimeoutMs fails with ETIMEDOUT; the mount stays usable', async (t) => {
    const mount = await startMount({ handlerTimeoutMs: 300, slowGetattrMs: 1500 });
    t.after(() => mount.stop());
    assert.equal(await errorCode(() => fs.promises.stat(`${mount.mountpoint}/slow`)), 'ETIMEDOUT');
    fs.writeFileSync(`${mount.mountpoint}/fast`, 'y');
    assert.equal(fs.readFileSync(`${mount.mountpoint}/fast`, 'utf8'), 'y');
  });

  test('default /.zhsm: the mount reports its open files and state; listed when not hidden', async (t) => {
    const mount = await startMount({ hideVirtualFolder: false });
    t.after(() => mount.stop());
    const fd = fs.openSync(`${mount.mountpoint}/open-file`, 'w');
    try {
      const tokens = fs.readFileSync(`${mount.mountpoint}/.zhsm/tokens`, 'utf8');
      assert.match(tokens, /\twrite\t.*\t\/open-file\n/);
      assert.match(fs.readFileSync(`${mount.mountpoint}/.zhsm/status`, 'utf8'), /^mountpoint\t/);
      assert.ok(fs.readdirSync(mount.mountpoint).includes('.zhsm'));
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('mount pieces', () => {
  test('the option string carries the stack-notes options', () => {
    const options = mountOptionString({ allowOther: true });
    for (const option of [
      'big_writes',
      'max_write=131072',
      'use_ino',
      'hard_remove',
      'auto_cache',
      'attr_timeout=1',
      'entry_timeout=1',
      'negative_timeout=0',
      'default_permissions',
      'allow_other',
      'fsname=zhsm',
    ]) {
      assert.ok(options.split(/[-,]o?/).includes(option) || options.includes(option), option);
    }
    assert.match(
      mountOptionString({ dataCache: 'kernel', attributeTimeoutSeconds: 0 }),
      /kernel_cache.*|attr_timeout=0/,
    );
    assert.doesNotMatch(mountOptionString({ dataCache: 'none' }), /_cache/);
    assert.throws(() => mountOptionString({ maxWriteBytes: 1 << 20 }), RangeError);
    assert.throws(() => mountOptionString({ fsName: 'a,allow_other' }), RangeError);
    assert.throws(() => mountOptionString({ attributeTimeoutSeconds: -1 }), RangeError);
  });

  test('open flags map to token modes', () => {
    assert.equal(openModeOf(0o0), 'read');
    assert.equal(openModeOf(0o1), 'write');
    assert.equal(openModeOf(0o2), 'readWrite');
    assert.equal(openModeOf(0o1 | 0o2000), 'append');
    assert.equal(openModeOf(0o2 | 0o2000), 'append');
    assert.equal(openModeOf(0o0 | 0o2000), 'read');
    assert.deepEqual(openOptionsOf(0o1 | 0o1000), { mode: 'write', truncate: true });
  });

  test('stat and statfs arrays: 64-bit sizes, 32-bit counts scaled', () => {
    const ints = statArray({
      ino: 2 ** 40 + 5,
      type: 'file',
      mode: 0o100644,
      uid: 1,
      gid: 2,
      size: 5 * 2 ** 32 + 7,
      blocks: 10,
      nlink: 1,
      rdev: 0,
      atimeMs: 1,
      mtimeMs: 2 ** 41,
      ctimeMs: 3,
    });
    assert.equal(ints[3]! + ints[4]! * 2 ** 32, 5 * 2 ** 32 + 7);
    assert.equal(ints[7], 5);
    assert.equal(ints[14]! + ints[15]! * 2 ** 32, 2 ** 41);
    const huge = statfsArray({
      totalBytes: 2 ** 60,
      freeBytes: 2 ** 59,
      availableBytes: 2 ** 59,
      files: 2 ** 40,
      filesFree: 2 ** 39,
      nameBytesMax: 255,
      blockBytes: 4096,
    });
    assert.equal(huge[2]! * huge[1]!, 2 ** 60);
    assert.equal(huge[5], 0xffff_ffff);
  });
});
