/** The mount's read-ahead (fuse/read-ahead.ts) over a fake handle: no mount needed. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ReadAhead, ReadAheadBudget, type ReadFunction } from '../../fuse/read-ahead.ts';
import { ChunkBufferPool } from '../../node/client/buffer-pool.ts';

const piece = 1024;
const request = 128;

/** A file of `size` bytes (byte i = i mod 251) read through a fake handle that logs every call. */
function fakeFile(size: number) {
  const file = { size, calls: [] as Array<[number, number]>, failing: false };
  const bytesAt = (offset: number, length: number) =>
    Uint8Array.from(
      { length: Math.max(0, Math.min(length, file.size - offset)) },
      (_, i) => (offset + i) % 251,
    );
  const read = async (offset: number, length: number) => {
    file.calls.push([offset, length]);
    await new Promise((resolve) => setImmediate(resolve));
    if (file.failing) throw new Error('unreachable');
    return bytesAt(offset, length);
  };
  return { file, read, bytesAt };
}

/** A read-ahead of 3 pieces that fetches into buffers of a pool of its own. */
function pooledReadAhead(read: ReadFunction) {
  const buffers = new ChunkBufferPool(piece, 16);
  const ahead = new ReadAhead(read, {
    pieceBytes: piece,
    pieces: 3,
    budget: new ReadAheadBudget(64 * piece),
    buffers,
  });
  return { ahead, buffers };
}

describe('ReadAhead', () => {
  test('sequential reads are answered from whole aligned pieces fetched ahead', async () => {
    const { file, read, bytesAt } = fakeFile(10 * piece + 300);
    const budget = new ReadAheadBudget(64 * piece);
    const ahead = new ReadAhead(read, { pieceBytes: piece, pieces: 3, budget });
    for (let offset = 0; offset < file.size; offset += request) {
      assert.deepEqual(await ahead.read(offset, request), bytesAt(offset, request), `at ${offset}`);
    }
    // The first read goes through; from the second on, pieces: the rest of piece 0, then whole
    // aligned pieces, none twice, up to the last (short) one.
    assert.deepEqual(file.calls[0], [0, request]);
    assert.deepEqual(file.calls[1], [request, piece - request]);
    // (The read across the end of the last piece's data goes to the handle, as at any file end.)
    const starts = file.calls.slice(2).map(([offset]) => offset);
    assert.deepEqual(
      starts.filter((offset) => offset % piece === 0 && offset < file.size),
      Array.from({ length: 10 }, (_, i) => (i + 1) * piece),
    );
    const fetched = file.calls.reduce(
      (sum, [offset, length]) => sum + Math.max(0, Math.min(length, file.size - offset)),
      0,
    );
    assert.ok(fetched <= file.size + 2 * request, `${fetched} bytes fetched for ${file.size}`);
    ahead.close();
    assert.equal(budget.bytes, 0, 'closing gives the memory back');
  });

  test('out-of-order sequential reads (parallel kernel requests) still use the pieces', async () => {
    const { file, read, bytesAt } = fakeFile(8 * piece);
    const ahead = new ReadAhead(read, { pieceBytes: piece, pieces: 2, budget: new ReadAheadBudget(1 << 20) });
    await ahead.read(0, request);
    const offsets = [request, 3 * request, 2 * request, 5 * request, 4 * request, 6 * request, 7 * request];
    const answers = await Promise.all(offsets.map((offset) => ahead.read(offset, request)));
    for (const [i, answer] of answers.entries()) assert.deepEqual(answer, bytesAt(offsets[i]!, request));
    assert.ok(file.calls.length <= 4, `calls: ${JSON.stringify(file.calls)}`);
    ahead.close();
  });

  test('random reads pass through unchanged', async () => {
    const { file, read, bytesAt } = fakeFile(64 * piece);
    const ahead = new ReadAhead(read, { pieceBytes: piece, pieces: 4, budget: new ReadAheadBudget(1 << 20) });
    for (const offset of [5000, 40_000, 100, 20_000, 60_000]) {
      assert.deepEqual(await ahead.read(offset, 64), bytesAt(offset, 64));
    }
    assert.deepEqual(
      file.calls.map(([, length]) => length),
      [64, 64, 64, 64, 64],
    );
    ahead.close();
  });

  test('a file that grows after its end was read is read again from the handle (tail -f)', async () => {
    const { file, read, bytesAt } = fakeFile(2 * piece + 100);
    const ahead = new ReadAhead(read, { pieceBytes: piece, pieces: 4, budget: new ReadAheadBudget(1 << 20) });
    let offset = 0;
    for (; offset + request <= file.size; offset += request) await ahead.read(offset, request);
    assert.deepEqual(await ahead.read(offset, request), bytesAt(offset, request), 'short at the end');
    file.size += 5000; // another peer appended
    const calls = file.calls.length;
    assert.deepEqual(await ahead.read(offset, request), bytesAt(offset, request));
    assert.equal((await ahead.read(offset, request)).length, request, 'the new bytes are seen');
    assert.ok(file.calls.length > calls, 'asked the handle again');
    ahead.close();
  });

  test('polling the end of a growing file (tail -f) reads only the new bytes', async () => {
    const { file, read, bytesAt } = fakeFile(3 * piece + 10);
    const ahead = new ReadAhead(read, { pieceBytes: piece, pieces: 4, budget: new ReadAheadBudget(1 << 20) });
    let offset = 0;
    for (;;) {
      const data = await ahead.read(offset, request);
      offset += data.length;
      if (data.length < request) break;
    }
    for (let poll = 0; poll < 5; poll++) {
      file.size += 20;
      const calls = file.calls.length;
      const data = await ahead.read(offset, request);
      assert.deepEqual(data, bytesAt(offset, request));
      assert.equal(data.length, 20);
      offset += data.length;
      assert.deepEqual(file.calls.slice(calls), [[offset - 20, request]], 'one small read per poll');
    }
    ahead.close();
  });

  test('a failing piece falls back to the handle, which reports the error', async () => {
    const { file, read } = fakeFile(8 * piece);
    const ahead = new ReadAhead(read, { pieceBytes: piece, pieces: 2, budget: new ReadAheadBudget(1 << 20) });
    await ahead.read(0, request);
    file.failing = true;
    await assert.rejects(ahead.read(request, request), /unreachable/);
    file.failing = false;
    assert.equal((await ahead.read(2 * request, request)).length, request);
    ahead.close();
  });

  test('the budget caps the memory of all read-aheads; over it, reads pass through', async () => {
    const { file, read, bytesAt } = fakeFile(16 * piece);
    const budget = new ReadAheadBudget(piece);
    const ahead = new ReadAhead(read, { pieceBytes: piece, pieces: 4, budget });
    for (let offset = 0; offset < file.size; offset += request) {
      assert.deepEqual(await ahead.read(offset, request), bytesAt(offset, request));
      assert.ok(budget.bytes <= piece);
    }
    ahead.close();
    assert.equal(budget.bytes, 0);
  });

  test('pieces are fetched into reused buffers; every answer is exact when copied out at once', async () => {
    const { file, bytesAt } = fakeFile(40 * piece + 77);
    const buffersSeen = new Set<ArrayBufferLike>();
    let fetches = 0;
    const read = async (offset: number, length: number, into?: Uint8Array) => {
      if (into === undefined) return bytesAt(offset, length);
      // Piece fetches take a while: some of a dropped piece's are still running when new pieces
      // are fetched.
      await new Promise((resolve) => setTimeout(resolve, ((offset / piece) * 7) % 9));
      const bytes = bytesAt(offset, length);
      fetches += 1;
      buffersSeen.add(into.buffer);
      into.fill(0xee); // whatever the buffer held must never show
      into.set(bytes);
      return into.subarray(0, bytes.length);
    };
    const { ahead, buffers } = pooledReadAhead(read);
    // Sequential, and in bursts of parallel out-of-order requests (as the kernel sends them),
    // each answer copied out as soon as it arrives (as the FUSE read does).
    for (let offset = 0; offset < file.size; offset += 4 * request) {
      const offsets = [offset + request, offset, offset + 3 * request, offset + 2 * request];
      const answers = await Promise.all(
        offsets.map(async (at) => Buffer.from(await ahead.read(at, request))),
      );
      for (const [i, answer] of answers.entries())
        assert.deepEqual(new Uint8Array(answer), bytesAt(offsets[i]!, request), `at ${offsets[i]}`);
      if ((offset / (4 * request)) % 5 === 4) {
        // A short read at the end of the file drops every piece, some still being fetched.
        const tail = Buffer.from(await ahead.read(file.size - 10, request));
        assert.deepEqual(new Uint8Array(tail), bytesAt(file.size - 10, request));
      }
    }
    ahead.close();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(fetches >= 30, `${fetches} pieces fetched into buffers`);
    assert.ok(buffersSeen.size <= 8, `${buffersSeen.size} buffers for ${fetches} pieces`);
    assert.ok(buffers.idle > 0, 'dropped pieces give their buffers back');
  });

  test('a dropped piece gives its buffer back only after its fetch settled and a turn passed', async () => {
    const pending: Array<{ offset: number; length: number; into?: Uint8Array; done: () => void }> = [];
    const read = (offset: number, length: number, into?: Uint8Array) =>
      new Promise<Uint8Array>((resolve) => {
        pending.push({
          offset,
          length,
          ...(into === undefined ? {} : { into }),
          done: () => resolve(into ?? new Uint8Array(length)),
        });
        if (into === undefined) pending.pop()!.done();
      });
    const { ahead, buffers } = pooledReadAhead(read);
    await ahead.read(0, request);
    const second = ahead.read(request, request); // sequential: fetches the rest of piece 0 ahead
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(
      pending.length >= 1 && pending.every((fetch) => fetch.into !== undefined),
      'a piece is being fetched',
    );
    ahead.clear(); // drops it while its fetch runs
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(buffers.idle, 0, 'not back while its fetch may still write into it');
    for (const fetch of pending.splice(0)) fetch.done();
    await second;
    assert.equal(buffers.idle, 0, 'not back in the turn its fetch settled (answers copy out then)');
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(buffers.idle >= 1, 'back once a turn has passed');
    ahead.close();
  });
});
