import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Backend } from '../../node/store/backend.ts';
import { newObjectId } from '../../node/store/object-id.ts';
import { patternBytes } from '../helpers.ts';

/** Mount a small tmpfs for the test; undefined (with the reason) when this machine cannot. */
function mountSmallFilesystem(t: import('node:test').TestContext, sizeBytes: number): string | undefined {
  const mountpoint = mkdtempSync(join(tmpdir(), 'zhsm-enospc-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'zhsm-test-tmpfs', mountpoint], {
      stdio: 'pipe',
    });
  } catch (error) {
    rmSync(mountpoint, { recursive: true, force: true });
    t.skip(`cannot mount a size-limited tmpfs here (needs root): ${(error as Error).message.split('\n')[0]}`);
    return undefined;
  }
  t.after(() => {
    try {
      execFileSync('umount', [mountpoint], { stdio: 'pipe' });
    } catch {
      execFileSync('umount', ['-l', mountpoint], { stdio: 'pipe' });
    }
    rmSync(mountpoint, { recursive: true, force: true });
  });
  return mountpoint;
}

test('a full backend gives BACKEND_FULL, keeps what it stored and leaves no temp garbage', async (t) => {
  const mountpoint = mountSmallFilesystem(t, 4 * 1024 * 1024);
  if (mountpoint === undefined) return;
  const root = join(mountpoint, 'backend');
  const backend = await Backend.create(root, { cell: 'full' });
  const stored: Array<{ id: Uint8Array; body: Buffer }> = [];
  let full: unknown;
  // No announced size: the real ENOSPC path during the write.
  for (let i = 0; i < 100 && full === undefined; i++) {
    const id = newObjectId();
    const body = patternBytes(300_000, i + 1);
    try {
      await backend.ingest({ id }, body);
      stored.push({ id, body });
    } catch (error) {
      full = error;
    }
  }
  assert.ok(full !== undefined, 'the backend filled up');
  assert.equal((full as { code?: string }).code, 'BACKEND_FULL');
  assert.ok(stored.length >= 5, `stored ${stored.length} objects before filling up`);
  assert.deepEqual(readdirSync(join(root, 'tmp')), [], 'no temp garbage');
  for (const object of stored) assert.ok((await backend.readAll(object.id)).equals(object.body));
  // With an announced size the check happens before anything is written.
  await assert.rejects(
    backend.ingest({ id: newObjectId(), bodySize: 10_000_000 }, patternBytes(10_000_000, 9)),
    {
      code: 'BACKEND_FULL',
    },
  );
  assert.deepEqual(readdirSync(join(root, 'tmp')), []);
  // A header update that must rewrite the object fails cleanly and leaves it intact.
  const victim = stored[0]!;
  const big = Array.from({ length: 60 }, (_, i) => ({ name: `user.a${i}`, value: patternBytes(1000, i) }));
  const fill = patternBytes(200_000, 77);
  for (let i = 0; i < 20; i++) await backend.ingest({ id: newObjectId() }, fill).catch(() => {});
  await assert.rejects(
    backend.updateHeader(victim.id, (h) => ({ ...h, xattrs: big })),
    { code: 'BACKEND_FULL' },
  );
  assert.ok((await backend.readAll(victim.id)).equals(victim.body));
  assert.deepEqual(readdirSync(join(root, 'tmp')), []);
  // Space freed: ingest works again.
  for (const object of stored.slice(0, 3)) await backend.remove(object.id);
  const again = newObjectId();
  await backend.ingest({ id: again }, patternBytes(300_000, 99));
  assert.ok((await backend.readAll(again)).equals(patternBytes(300_000, 99)));
  const reopened = await Backend.open(root, { cell: 'full' });
  const report = await reopened.scrub();
  assert.deepEqual(report.corrupt, []);
});
