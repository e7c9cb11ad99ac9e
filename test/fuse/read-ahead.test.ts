/** The mount's read-ahead (fuse/read-ahead.ts) over a fake handle: no mount needed. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ReadAhead, ReadAheadBudget } from '../../fuse/read-ahead.ts';

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
});
