import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CellClient } from '../../node/client/cell-client.ts';
import { LocalCell } from '../../node/client/local-cell.ts';
import { NO_OPERATION_MESSAGE } from '../../node/metadata/records.ts';
import { patternBytes, tempDirectory } from '../helpers.ts';

const caller = { uid: 1000, gid: 1000 };
const KiB = 1024;
const chunkBytes = 64 * KiB;

async function openCell(t: import('node:test').TestContext, directory = tempDirectory(t)) {
  const cell = await LocalCell.open({ directory, servers: 2, backendsPerServer: 1, tickMs: 10 });
  t.after(() => cell.close());
  return { cell, directory, client: new CellClient(cell, { chunkBytes }) };
}

async function readAll(client: CellClient, path: string): Promise<Buffer> {
  const handle = await client.open(path, { mode: 'read' });
  try {
    const size = (await handle.attributes()).size;
    return Buffer.from(await handle.read(0, size + 100));
  } finally {
    await handle.close();
  }
}

test('files: write across chunks, read back, sparse holes, attributes, two replicas on two servers', async (t) => {
  const { cell, client } = await openCell(t);
  await client.mkdir('/docs', 0o755, caller);
  const handle = await client.create('/docs/a.bin', 0o644, caller, { mode: 'readWrite' });
  const data = patternBytes(300 * KiB + 17, 1);
  assert.equal(await handle.write(0, data), data.length);
  assert.ok(
    Buffer.from(await handle.read(100, 1000)).equals(data.subarray(100, 1100)),
    'reads see uncommitted writes',
  );
  await handle.write(1024 * KiB, Buffer.from('tail')); // leaves a hole
  await handle.close();
  const attributes = await client.getattr('/docs/a.bin');
  assert.equal(attributes.size, 1024 * KiB + 4);
  assert.equal(attributes.type, 'file');
  assert.equal(attributes.mode, 0o100644);
  assert.equal(attributes.uid, 1000);
  assert.ok(attributes.blocks * 512 < 400 * KiB, 'the hole is not stored');
  const back = await readAll(client, '/docs/a.bin');
  assert.equal(back.length, 1024 * KiB + 4);
  assert.ok(back.subarray(0, data.length).equals(data));
  assert.ok(back.subarray(data.length, 1024 * KiB).equals(Buffer.alloc(1024 * KiB - data.length)));
  assert.equal(back.subarray(1024 * KiB).toString(), 'tail');
  // Every chunk object is on both backends (2 servers, 2 replicas).
  const counts = [];
  for (const backend of cell.backends) {
    let objects = 0;
    for await (const entry of backend.scan()) if (entry.kind === 'object') objects++;
    counts.push(objects);
  }
  assert.deepEqual(counts, [6, 6], 'five data chunks + the tail chunk on each backend');
});

test('overwrite in the middle, append mode, truncate, O_TRUNC, exclusive create', async (t) => {
  const { client } = await openCell(t);
  const h = await client.create('/f', 0o600, caller, { mode: 'readWrite' });
  await h.write(0, Buffer.alloc(200 * KiB, 1));
  await h.flush();
  await h.write(70 * KiB, Buffer.alloc(10, 2));
  await h.close();
  const content = await readAll(client, '/f');
  assert.equal(content[70 * KiB], 2);
  assert.equal(content[70 * KiB + 10], 1);
  const appender = await client.open('/f', { mode: 'append' });
  await appender.write(0, Buffer.from('END'));
  await appender.close();
  assert.equal((await readAll(client, '/f')).subarray(-3).toString(), 'END');
  await client.truncate('/f', 5);
  assert.deepEqual([...(await readAll(client, '/f'))], [1, 1, 1, 1, 1]);
  await client.truncate('/f', 10);
  assert.deepEqual(
    [...(await readAll(client, '/f'))],
    [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    'extension reads zeros',
  );
  const truncating = await client.open('/f', { mode: 'write', truncate: true });
  await truncating.close();
  assert.equal((await client.getattr('/f')).size, 0);
  await assert.rejects(client.create('/f', 0o600, caller, { mode: 'write', exclusive: true }), {
    code: 'ALREADY_EXISTS',
  });
  const reader = await client.open('/f', { mode: 'read' });
  await assert.rejects(reader.write(0, Buffer.from('x')), { code: 'PERMISSION_DENIED' });
  await reader.close();
  await assert.rejects(reader.read(0, 1), { code: 'CLOSED' });
});

test('namespace: readdir, rename, unlink, rmdir, symlink, link, xattrs, chmod/chown/utimens, errors', async (t) => {
  const { client } = await openCell(t);
  await client.mkdir('/a', 0o755, caller);
  await client.mkdir('/a/b', 0o700, caller);
  for (const name of ['x', 'y', 'z'])
    await (await client.create(`/a/${name}`, 0o644, caller, { mode: 'write' })).close();
  assert.deepEqual(await client.readdir('/a'), ['b', 'x', 'y', 'z']);
  assert.deepEqual(await client.readdir('/'), ['a', 'lost+found']);
  await client.rename('/a/x', '/a/b/x2');
  await client.rename('/a/y', '/a/z'); // over an existing file
  assert.deepEqual(await client.readdir('/a'), ['b', 'z']);
  await assert.rejects(client.rename('/a', '/a/b/inside'), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(client.rmdir('/a/b'), { code: 'NOT_EMPTY' });
  await assert.rejects(client.unlink('/a/b'), { code: 'IS_A_DIRECTORY' });
  await assert.rejects(client.rmdir('/a/z'), { code: 'NOT_A_DIRECTORY' });
  await assert.rejects(client.getattr('/a/nope'), { code: 'NOT_FOUND' });
  await assert.rejects(client.getattr('/a/z/under-a-file'), { code: 'NOT_A_DIRECTORY' });
  await assert.rejects(client.mkdir('/a/b', 0o755, caller), { code: 'ALREADY_EXISTS' });
  await client.symlink('../a/z', '/a/link', caller);
  assert.equal(await client.readlink('/a/link'), '../a/z');
  assert.equal((await client.getattr('/a/link')).type, 'symlink');
  const linked = await client.link('/a/z', '/a/z-hard');
  assert.equal(linked.nlink, 2);
  await client.setxattr('/a/z', 'user.color', Buffer.from('blue'), {});
  assert.equal(Buffer.from(await client.getxattr('/a/z', 'user.color')).toString(), 'blue');
  assert.deepEqual(await client.listxattr('/a/z-hard'), ['user.color'], 'hard links share xattrs');
  await assert.rejects(client.getxattr('/a/z', 'user.none'), { code: 'NO_DATA' });
  await assert.rejects(client.setxattr('/a/z', 'user.color', Buffer.from('x'), { create: true }), {
    code: 'ALREADY_EXISTS',
  });
  await client.removexattr('/a/z', 'user.color');
  await client.chmod('/a/z', 0o4711);
  await client.chown('/a/z', 42, -1);
  await client.utimens('/a/z', 1_600_000_000_123, 1_500_000_000_456);
  const attributes = await client.getattr('/a/z');
  assert.deepEqual(
    [attributes.mode, attributes.uid, attributes.gid, attributes.atimeMs, attributes.mtimeMs],
    [0o104711, 42, 1000, 1_600_000_000_123, 1_500_000_000_456],
  );
  await client.mknod('/a/fifo', 0o010644, 0, caller);
  assert.equal((await client.getattr('/a/fifo')).type, 'fifo');
  const statistics = await client.statfs();
  assert.ok(statistics.totalBytes > 0 && statistics.availableBytes <= statistics.totalBytes);
  assert.equal((await client.getattr('/')).ino, 1);
});

test('unlinked while open: still readable through the handle, gone after close', async (t) => {
  const { cell, client } = await openCell(t);
  const writer = await client.create('/tmpfile', 0o600, caller, { mode: 'readWrite' });
  await writer.write(0, patternBytes(100 * KiB, 3));
  await writer.flush();
  await client.unlink('/tmpfile');
  await assert.rejects(client.getattr('/tmpfile'), { code: 'NOT_FOUND' });
  assert.ok(Buffer.from(await writer.read(0, 100 * KiB)).equals(patternBytes(100 * KiB, 3)));
  await writer.close();
  for (const backend of cell.backends) {
    for await (const entry of backend.scan())
      assert.notEqual(entry.kind, 'object', 'chunks are deleted after the last close');
  }
});

test('close-to-open between two clients; concurrent writers of different chunks both survive', async (t) => {
  const { cell } = await openCell(t);
  const a = new CellClient(cell, { chunkBytes });
  const b = new CellClient(cell, { chunkBytes });
  const create = await a.create('/shared', 0o644, caller, { mode: 'readWrite' });
  await create.write(0, Buffer.alloc(3 * chunkBytes, 0));
  await create.close();
  const writerA = await a.open('/shared', { mode: 'readWrite' });
  const writerB = await b.open('/shared', { mode: 'readWrite' });
  await writerA.write(0, Buffer.from('AAAA'));
  await writerB.write(2 * chunkBytes, Buffer.from('BBBB'));
  await writerA.close();
  await writerB.close(); // commits over A's newer version: rebases, keeps A's chunk
  const content = await readAll(b, '/shared');
  assert.equal(content.subarray(0, 4).toString(), 'AAAA');
  assert.equal(content.subarray(2 * chunkBytes, 2 * chunkBytes + 4).toString(), 'BBBB');
  assert.equal(content.length, 3 * chunkBytes);
});

test('the cell keeps its files across a restart', async (t) => {
  const directory = tempDirectory(t);
  const first = await LocalCell.open({ directory, tickMs: 10 });
  const client = new CellClient(first, { chunkBytes });
  const h = await client.create('/keep', 0o644, caller, { mode: 'write' });
  await h.write(0, patternBytes(150 * KiB, 9));
  await h.close();
  await first.close();
  const second = await LocalCell.open({ directory, tickMs: 10 });
  t.after(() => second.close());
  const again = new CellClient(second, { chunkBytes });
  assert.ok((await readAll(again, '/keep')).equals(patternBytes(150 * KiB, 9)));
  assert.equal((await second.metadata.backends()).length, 2, 're-registered, not duplicated');
});

test('a full write buffer commits the chunks already stored and keeps writing; overwrites and reads stay exact', async (t) => {
  const directory = tempDirectory(t);
  const cell = await LocalCell.open({ directory, servers: 2, backendsPerServer: 1, tickMs: 10 });
  t.after(() => cell.close());
  // A buffer of 16 chunks (6 uploads in flight at most): a 60-chunk file goes through partial commits.
  const client = new CellClient(cell, { chunkBytes, writeBufferBytesMax: 16 * chunkBytes });
  const size = 60 * chunkBytes + 123;
  const expected = Buffer.from(patternBytes(size, 7));
  const handle = await client.create('/big', 0o644, caller, { mode: 'readWrite' });
  for (let offset = 0; offset < size; offset += 3 * KiB + 5) {
    await handle.write(offset, expected.subarray(offset, Math.min(size, offset + 3 * KiB + 5)));
    if (offset % (10 * chunkBytes) < 3 * KiB + 5 && offset > 0) {
      // Overwrite something early (likely committed already) and read it back through the handle.
      const patch = Buffer.from(patternBytes(1000, offset));
      const at = Math.floor(offset / 3);
      patch.copy(expected, at);
      await handle.write(at, patch);
      assert.ok(Buffer.from(await handle.read(at, 1000)).equals(patch), 'the handle reads its own overwrite');
    }
  }
  // Other readers see a consistent prefix while the writer is still open.
  const partial = (await client.getattr('/big')).size;
  assert.ok(partial <= size);
  await handle.close();
  assert.equal((await client.getattr('/big')).size, size);
  assert.ok((await readAll(client, '/big')).equals(expected), 'the whole file reads back exactly');
});

function withoutResolve<T extends { resolve?: unknown }>(metadata: T): Omit<T, 'resolve'> {
  const { resolve: _resolve, ...rest } = metadata;
  return rest;
}

test('fast paths: create+open in one batch, one-trip path walks, remembered directories and when they are forgotten', async (t) => {
  const { cell } = await openCell(t);
  const calls = { batches: 0, proposals: 0, resolves: 0, lookups: 0 };
  // The cell as the client sees it, counting what crosses (and, for the fallback, without resolve).
  const counting = (withResolve: boolean) => ({
    clientId: cell.clientId,
    nowMs: () => cell.nowMs(),
    propose: (command: Parameters<typeof cell.propose>[0]) => {
      calls.proposals++;
      return cell.propose(command);
    },
    proposeBatch: (commands: Parameters<typeof cell.proposeBatch>[0]) => {
      calls.batches++;
      return cell.proposeBatch(commands);
    },
    writeChunk: cell.writeChunk.bind(cell),
    readChunk: cell.readChunk.bind(cell),
    deleteObjects: cell.deleteObjects.bind(cell),
    metadata: {
      ...withoutResolve(cell.metadata),
      lookup: (parent: Uint8Array, name: string) => {
        calls.lookups++;
        return cell.metadata.lookup(parent, name);
      },
      ...(withResolve
        ? {
            resolve: (start: Uint8Array, names: readonly string[]) => {
              calls.resolves++;
              return cell.metadata.resolve!(start, names);
            },
          }
        : {}),
    },
  });
  const client = new CellClient(counting(true), { chunkBytes, directoryCacheMs: 60_000 });
  await client.mkdir('/d', 0o755, caller);
  await client.mkdir('/d/e', 0o755, caller);
  Object.assign(calls, { batches: 0, proposals: 0, resolves: 0, lookups: 0 });
  const handle = await client.create('/d/e/f', 0o640, caller, { mode: 'write' });
  assert.deepEqual([calls.batches, calls.proposals], [1, 0], 'the create and its open token: one round trip');
  assert.equal(calls.lookups, 0, 'the path is walked by the primary');
  await handle.write(0, Buffer.from('hello'));
  await handle.close();
  assert.equal((await client.getattr('/d/e/f')).mode & 0o777, 0o640);
  // An existing name: a non-exclusive create opens it, an exclusive one fails; no token leaks.
  const again = await client.create('/d/e/f', 0o600, caller, { mode: 'read' });
  assert.equal(Buffer.from(await again.read(0, 5)).toString(), 'hello');
  await again.close();
  await assert.rejects(client.create('/d/e/f', 0o600, caller, { mode: 'write', exclusive: true }), {
    code: 'ALREADY_EXISTS',
  });
  assert.equal((await cell.replicas[0]!.machine.tokens()).length, 0, 'failed and closed opens hold no token');
  // Remembered directories: a second create in /d/e walks nothing.
  calls.resolves = 0;
  await (await client.create('/d/e/g', 0o644, caller, { mode: 'write' })).close();
  assert.equal(calls.resolves, 0, '/d/e is remembered');
  // A rename through this client forgets them: the old path is gone at once.
  await client.rename('/d/e', '/d/e2');
  await assert.rejects(client.create('/d/e/h', 0o644, caller, { mode: 'write' }), { code: 'NOT_FOUND' });
  await (await client.create('/d/e2/h', 0o644, caller, { mode: 'write' })).close();
  assert.deepEqual(await client.readdir('/d/e2'), ['f', 'g', 'h']);
  await client.unlink('/d/e2/f');
  await client.unlink('/d/e2/g');
  await client.unlink('/d/e2/h');
  await client.rmdir('/d/e2');
  await assert.rejects(client.create('/d/e2/x', 0o644, caller, { mode: 'write' }), { code: 'NOT_FOUND' });
  // Errors of the one-trip walk keep their codes.
  await assert.rejects(client.getattr('/d/nope/x'), { code: 'NOT_FOUND' });
  await client.mkdir('/d/e', 0o755, caller);
  await (await client.create('/d/e/file', 0o644, caller, { mode: 'write' })).close();
  await assert.rejects(client.getattr('/d/e/file/x'), { code: 'NOT_A_DIRECTORY' });
  await assert.rejects(client.create('/d/e/file/x', 0o644, caller, { mode: 'write' }), {
    code: 'NOT_A_DIRECTORY',
  });
  // Deferred releases: a close's token release rides with the next create (one batch), or goes
  // alone after releaseDelayMs; close() resolves only once the token is released either way.
  const deferring = new CellClient(counting(true), {
    chunkBytes,
    directoryCacheMs: 60_000,
    releaseDelayMs: 10_000,
  });
  const first = await deferring.create('/d/e/r1', 0o644, caller, { mode: 'write' });
  Object.assign(calls, { batches: 0, proposals: 0 });
  let closed = false;
  const closing = first.close().then(() => {
    closed = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(closed, false, 'the release waits for the next create');
  assert.equal((await cell.replicas[0]!.machine.tokens()).length, 1);
  const second = await deferring.create('/d/e/r2', 0o644, caller, { mode: 'write' });
  await closing;
  assert.deepEqual([calls.batches, calls.proposals], [1, 0], 'the release went with the create');
  assert.equal((await cell.replicas[0]!.machine.tokens()).length, 1, 'only the second file is open');
  const lastClose = second.close();
  await deferring.closeAll(); // does not wait out the delay
  await lastClose;
  assert.equal((await cell.replicas[0]!.machine.tokens()).length, 0);
  const quick = new CellClient(counting(true), { chunkBytes, releaseDelayMs: 5 });
  await (await quick.create('/d/e/r3', 0o644, caller, { mode: 'write' })).close();
  assert.equal((await cell.replicas[0]!.machine.tokens()).length, 0, 'alone after the delay');
  // Without the one-trip walk (a controller of an earlier version): one lookup per name.
  calls.lookups = 0;
  const older = new CellClient(counting(false), { chunkBytes });
  assert.equal((await older.getattr('/d/e/file')).size, 0);
  assert.equal(calls.lookups, 3);
  await assert.rejects(older.getattr('/d/e/file/x'), { code: 'NOT_A_DIRECTORY' });
});

test('reads of a read-only handle run side by side; a read-write handle keeps its order', async (t) => {
  const { cell } = await openCell(t);
  let running = 0;
  let most = 0;
  // The cell, with chunk reads that take a while and are counted while they run.
  const slow = {
    clientId: cell.clientId,
    nowMs: () => cell.nowMs(),
    metadata: cell.metadata,
    propose: cell.propose.bind(cell),
    proposeBatch: cell.proposeBatch.bind(cell),
    writeChunk: cell.writeChunk.bind(cell),
    deleteObjects: cell.deleteObjects.bind(cell),
    readChunk: async (...args: Parameters<typeof cell.readChunk>) => {
      running++;
      most = Math.max(most, running);
      await new Promise((resolve) => setTimeout(resolve, 30));
      try {
        return await cell.readChunk(...args);
      } finally {
        running--;
      }
    },
  };
  const client = new CellClient(slow, { chunkBytes });
  const bytes = patternBytes(4 * chunkBytes, 5);
  const writer = await client.create('/four', 0o644, caller, { mode: 'write' });
  await writer.write(0, bytes);
  await writer.close();
  const pieces = [0, 1, 2, 3].map((i) => [i * chunkBytes, chunkBytes] as const);
  for (const mode of ['read', 'readWrite'] as const) {
    most = 0;
    const handle = await client.open('/four', { mode });
    const parts = await Promise.all(pieces.map(([offset, length]) => handle.read(offset, length)));
    assert.ok(Buffer.concat(parts).equals(Buffer.from(bytes)), `${mode}: the bytes`);
    await handle.close();
    assert.equal(most, mode === 'read' ? 4 : 1, `${mode}: chunk reads at once`);
  }
});

test('a remembered directory that another client removed and made again: changes go to the new one', async (t) => {
  const { cell } = await openCell(t);
  const a = new CellClient(cell, { chunkBytes, directoryCacheMs: 60_000 });
  const b = new CellClient(cell, { chunkBytes });
  await a.mkdir('/x', 0o755, caller);
  await a.mkdir('/y', 0o755, caller);
  await (await a.create('/x/first', 0o644, caller, { mode: 'write' })).close(); // a remembers /x
  await (await a.create('/y/first', 0o644, caller, { mode: 'write' })).close(); // and /y
  const again = async () => {
    for (const directory of ['/x', '/y']) {
      for (const name of await b.readdir(directory)) {
        const path = `${directory}/${name}`;
        if ((await b.getattr(path)).type === 'directory') await b.rmdir(path);
        else await b.unlink(path);
      }
      await b.rmdir(directory);
      await b.mkdir(directory, 0o755, caller);
    }
  };
  await again();
  await (await a.create('/x/f', 0o644, caller, { mode: 'write' })).close();
  await a.mkdir('/x/d', 0o755, caller);
  await a.symlink('f', '/x/s', caller);
  await a.link('/x/f', '/y/hard');
  assert.deepEqual(await b.readdir('/x'), ['d', 'f', 's']);
  assert.deepEqual(await b.readdir('/y'), ['hard']);
  await again();
  await (await b.create('/x/g', 0o644, caller, { mode: 'write' })).close();
  await a.rename('/x/g', '/y/g');
  assert.deepEqual(await b.readdir('/y'), ['g']);
  await again();
  await (await b.create('/y/h', 0o644, caller, { mode: 'write' })).close();
  await a.unlink('/y/h');
  assert.deepEqual(await b.readdir('/y'), []);
  await assert.rejects(a.unlink('/y/none'), { code: 'NOT_FOUND' }, 'a name that is not there');
});

test('a write whose buffer is taken away before its turn fails and leaves the file as it was', async (t) => {
  const { client } = await openCell(t);
  const handle = await client.create('/f.bin', 0o644, caller, { mode: 'readWrite' });
  await handle.write(0, patternBytes(3 * chunkBytes, 1));
  // Queued behind the handle's earlier work: the buffer is read only when its turn comes. A
  // mount's kernel buffer is detached when its request times out; so is this one (transferred).
  for (const [offset, length] of [
    [10, 100], // into a chunk being written (in place)
    [5 * chunkBytes, 100], // a new chunk past the end
  ] as const) {
    const data = new Uint8Array(patternBytes(length, 2));
    const pending = handle.write(offset, data);
    structuredClone(data.buffer, { transfer: [data.buffer as ArrayBuffer] });
    assert.equal(data.length, 0);
    await assert.rejects(pending, /no longer there/);
  }
  await handle.close();
  assert.deepEqual(await readAll(client, '/f.bin'), Buffer.from(patternBytes(3 * chunkBytes, 1)));
});

test('reused write buffers: holes and gaps read as zeros, whatever a former file left in them', async (t) => {
  const { client } = await openCell(t);
  // Fill the pool: whole chunks of 0xff, committed (their buffers come back to the pool).
  const full = await client.create('/ff.bin', 0o644, caller, { mode: 'write' });
  await full.write(0, Buffer.alloc(4 * chunkBytes, 0xff));
  await full.close();
  assert.ok(client.chunkBuffers.idle >= 4, 'committed chunk buffers are kept for reuse');
  // A file written with gaps in its chunks: each chunk's buffer is a reused one.
  const handle = await client.create('/gaps.bin', 0o644, caller, { mode: 'readWrite' });
  await handle.write(chunkBytes / 2, Buffer.alloc(100, 1)); // chunk 0: zeros up to it
  await handle.write(chunkBytes / 2 + 1000, Buffer.alloc(chunkBytes / 4, 2)); // a gap inside chunk 0
  await handle.write(2 * chunkBytes + chunkBytes / 4, Buffer.alloc(chunkBytes / 2, 3)); // chunk 1 a hole
  const expected = Buffer.alloc(2 * chunkBytes + (3 * chunkBytes) / 4);
  expected.fill(1, chunkBytes / 2, chunkBytes / 2 + 100);
  expected.fill(2, chunkBytes / 2 + 1000, chunkBytes / 2 + 1000 + chunkBytes / 4);
  expected.fill(3, 2 * chunkBytes + chunkBytes / 4);
  assert.ok(Buffer.from(await handle.read(0, expected.length)).equals(expected), 'uncommitted reads');
  await handle.close();
  assert.ok((await readAll(client, '/gaps.bin')).equals(expected), 'committed reads');
  // A read of dirty bytes is a copy: the buffer it came from is reused after the commit.
  const writer = await client.create('/copy.bin', 0o644, caller, { mode: 'readWrite' });
  await writer.write(0, Buffer.alloc(chunkBytes, 7));
  const seen = await writer.read(0, chunkBytes);
  await writer.close();
  const other = await client.create('/other.bin', 0o644, caller, { mode: 'write' });
  await other.write(0, Buffer.alloc(chunkBytes, 9));
  await other.close();
  assert.ok(Buffer.from(seen).equals(Buffer.alloc(chunkBytes, 7)), 'an earlier read keeps its bytes');
});

test('commits send only the new chunks; with controllers that do not know that command, whole lists', async (t) => {
  const { cell } = await openCell(t);
  const commands: string[] = [];
  const wrapped = (oldControllers: boolean) => ({
    clientId: cell.clientId,
    nowMs: () => cell.nowMs(),
    propose: async (command: Parameters<typeof cell.propose>[0]) => {
      const kind = Object.keys(command).find(
        (key) => (command as Record<string, unknown>)[key] !== undefined,
      )!;
      commands.push(kind);
      if (oldControllers && kind === 'writeChunks')
        return { code: 'INVALID_ARGUMENT' as const, message: NO_OPERATION_MESSAGE, releasedObjects: [] };
      return cell.propose(command);
    },
    writeChunk: cell.writeChunk.bind(cell),
    readChunk: cell.readChunk.bind(cell),
    deleteObjects: cell.deleteObjects.bind(cell),
    metadata: cell.metadata,
  });
  for (const oldControllers of [false, true]) {
    commands.length = 0;
    const client = new CellClient(wrapped(oldControllers), {
      chunkBytes,
      writeBufferBytesMax: 4 * chunkBytes,
    });
    const path = `/merge-${oldControllers}.bin`;
    const data = patternBytes(20 * chunkBytes + 99, oldControllers ? 5 : 6);
    const handle = await client.create(path, 0o644, caller, { mode: 'readWrite' });
    for (let offset = 0; offset < data.length; offset += 3 * chunkBytes)
      await handle.write(offset, data.subarray(offset, offset + 3 * chunkBytes));
    await handle.write(chunkBytes + 5, Buffer.from('patched')); // a committed chunk again
    data.set(Buffer.from('patched'), chunkBytes + 5);
    await handle.close();
    assert.ok((await readAll(client, path)).equals(data), 'the file reads back as written');
    const commits = commands.filter((kind) => kind === 'writeChunks' || kind === 'commitWrite');
    if (oldControllers) {
      assert.equal(
        commits.filter((kind) => kind === 'writeChunks').length,
        1,
        'asked once, then whole lists',
      );
      assert.ok(commits.filter((kind) => kind === 'commitWrite').length >= 2);
      assert.equal(client.chunkMerges, false);
    } else {
      assert.ok(commits.length >= 2, 'several commits (the write buffer filled)');
      assert.ok(
        commits.every((kind) => kind === 'writeChunks'),
        commits.join(' '),
      );
    }
  }
});
