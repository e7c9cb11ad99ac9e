import assert from 'node:assert/strict';
import { test } from 'node:test';
import { streamPair } from '@libp2p/utils';
import fc from 'fast-check';
import { Uint8ArrayList } from 'uint8arraylist';
import { type Chunk, encodeFrame, encodeVarint, readFrames, writeFrame } from '../../node/net/frames.ts';

async function* fromChunks(chunks: Chunk[]): AsyncGenerator<Chunk> {
  for (const chunk of chunks) yield chunk;
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const frames: Uint8Array[] = [];
  for await (const frame of source) frames.push(frame);
  return frames;
}

function concat(frames: Uint8Array[]): Uint8Array {
  return new Uint8ArrayList(...frames).subarray();
}

/** Split `bytes` at the given cut points, alternating Uint8Array and Uint8ArrayList chunks. */
function split(bytes: Uint8Array, cuts: number[]): Chunk[] {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.byteLength + 1)))].sort((a, b) => a - b);
  const chunks: Chunk[] = [];
  let start = 0;
  for (const [index, point] of [...points, bytes.byteLength].entries()) {
    const piece = bytes.subarray(start, point);
    chunks.push(index % 2 === 0 ? piece : new Uint8ArrayList(piece.subarray(0, 1), piece.subarray(1)));
    start = point;
  }
  return chunks;
}

test('frames: varint encoding matches LEB128', () => {
  assert.deepEqual([...encodeVarint(0)], [0]);
  assert.deepEqual([...encodeVarint(127)], [127]);
  assert.deepEqual([...encodeVarint(128)], [0x80, 0x01]);
  assert.deepEqual([...encodeVarint(300)], [0xac, 0x02]);
  assert.deepEqual([...encodeVarint(16 * 1024 * 1024)], [0x80, 0x80, 0x80, 0x08]);
  assert.deepEqual([...encodeVarint(2 ** 53 - 1)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
});

test('frames: random frames under random chunking round-trip (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ minLength: 0, maxLength: 3000 }), { maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      async (frames, cuts) => {
        const bytes = concat(frames.map((frame) => encodeFrame(frame).subarray()));
        const decoded = await collect(readFrames(fromChunks(split(bytes, cuts)), { frameBytesMax: 3000 }));
        assert.equal(decoded.length, frames.length);
        for (const [index, frame] of frames.entries()) assert.deepEqual(decoded[index], frame);
      },
    ),
    { numRuns: 300 },
  );
});

test('frames: any proper prefix of a frame stream ends in a truncation DecodeError (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 500 }), { minLength: 1, maxLength: 5 }),
      fc.nat(),
      async (frames, cut) => {
        const bytes = concat(frames.map((frame) => encodeFrame(frame).subarray()));
        const boundaries = new Set<number>([0]);
        let offset = 0;
        for (const frame of frames) {
          offset += encodeFrame(frame).byteLength;
          boundaries.add(offset);
        }
        const length = cut % bytes.byteLength;
        fc.pre(!boundaries.has(length));
        await assert.rejects(collect(readFrames(fromChunks([bytes.subarray(0, length)]))), {
          code: 'DECODE_ERROR',
        });
      },
    ),
    { numRuns: 200 },
  );
});

test('frames: an oversize length prefix is refused before its frame is buffered', async () => {
  let pulled = 0;
  async function* source(): AsyncGenerator<Uint8Array> {
    pulled += 1;
    yield encodeVarint(1025); // the prefix only: the frame's bytes never come
    pulled += 1;
    yield new Uint8Array(1025);
  }
  await assert.rejects(collect(readFrames(source(), { frameBytesMax: 1024 })), { code: 'FRAME_TOO_LARGE' });
  assert.equal(pulled, 1, 'the reader stopped at the prefix');
  // A prefix that is already too large after its first bytes, even though unfinished.
  await assert.rejects(
    collect(readFrames(fromChunks([Uint8Array.from([0xff, 0xff, 0xff])]), { frameBytesMax: 1024 })),
    {
      code: 'FRAME_TOO_LARGE',
    },
  );
  assert.throws(() => encodeFrame(new Uint8Array(2000), { frameBytesMax: 1024 }), {
    code: 'FRAME_TOO_LARGE',
  });
  const exact = await collect(
    readFrames(fromChunks([encodeFrame(new Uint8Array(1024)).subarray()]), { frameBytesMax: 1024 }),
  );
  assert.equal(exact[0]?.byteLength, 1024);
});

test('frames: malformed varints, garbage and empty frames', async () => {
  const tooLong = Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
  await assert.rejects(collect(readFrames(fromChunks([tooLong]), { frameBytesMax: 2 ** 53 - 1 })), {
    code: 'DECODE_ERROR',
  });
  await assert.rejects(collect(readFrames(fromChunks([Uint8Array.from([0x85])]))), { code: 'DECODE_ERROR' });
  // Random garbage: always a typed error or frames, never anything else.
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (garbage) => {
      try {
        await collect(readFrames(fromChunks([garbage]), { frameBytesMax: 64 }));
      } catch (error) {
        assert.ok(
          ['DECODE_ERROR', 'FRAME_TOO_LARGE'].includes((error as { code?: string }).code ?? ''),
          String(error),
        );
      }
    }),
    { numRuns: 300 },
  );
  const empties = await collect(readFrames(fromChunks([Uint8Array.from([0, 0, 0])])));
  assert.deepEqual(
    empties.map((frame) => frame.byteLength),
    [0, 0, 0],
  );
});

/** A sink like a libp2p stream whose muxer takes `windowBytes` until a reader frees space. */
class FakeSink extends EventTarget {
  writeBufferLength = 0;
  writableNeedsDrain = false;
  status = 'open';
  readonly windowBytes = 128 * 1024;
  readonly received: Uint8Array[] = [];
  send(data: Uint8Array | Uint8ArrayList): boolean {
    this.received.push(data.subarray());
    this.writeBufferLength += data.byteLength;
    this.writableNeedsDrain = this.writeBufferLength > this.windowBytes;
    return !this.writableNeedsDrain;
  }
  /** The bug of @libp2p/utils 7.4: resolves at once after the first drain. */
  onDrain(): Promise<void> {
    return Promise.resolve();
  }
  /** A reader takes `bytes`; like a yamux window update, this emits 'drain' while data waits. */
  take(bytes: number): void {
    this.writeBufferLength = Math.max(0, this.writeBufferLength - bytes);
    this.writableNeedsDrain = false;
    this.dispatchEvent(new Event('drain'));
  }
}

test('frames: the writer waits for the send buffer to fall below its high-water mark', async () => {
  const sink = new FakeSink();
  const frameBytes = 256 * 1024;
  let written = 0;
  const writer = (async () => {
    for (let index = 0; index < 32; index += 1) {
      await writeFrame(sink, new Uint8Array(frameBytes), { writeHighWaterBytes: 512 * 1024 });
      written += 1;
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(written <= 3, `writer was held back (${written} frames written)`);
  let maxBuffered = 0;
  while (written < 32) {
    maxBuffered = Math.max(maxBuffered, sink.writeBufferLength);
    sink.take(64 * 1024); // many small drains, as yamux window updates give
    await new Promise((resolve) => setImmediate(resolve));
  }
  await writer;
  assert.ok(maxBuffered <= 512 * 1024 + frameBytes + 16, `send buffer stayed bounded (${maxBuffered})`);
});

test('frames: round trip over a libp2p stream pair', async () => {
  const [outbound, inbound] = await streamPair();
  const frameCount = 64;
  const frameBytes = 256 * 1024;
  const writer = (async () => {
    for (let index = 0; index < frameCount; index += 1) {
      await writeFrame(outbound, new Uint8Array(frameBytes).fill(index));
    }
    await outbound.close();
  })();
  let index = 0;
  for await (const frame of readFrames(inbound, { highWaterBytes: 512 * 1024 })) {
    assert.equal(frame.byteLength, frameBytes);
    assert.equal(frame[0], index);
    assert.equal(frame[frameBytes - 1], index);
    index += 1;
    if (index % 8 === 0) await new Promise((resolve) => setTimeout(resolve, 1)); // a slow reader
  }
  await writer;
  assert.equal(index, frameCount);
});

test('frames: a reset stream ends the reader with ClosedError', async () => {
  const [outbound, inbound] = await streamPair();
  await writeFrame(outbound, Uint8Array.from([1, 2, 3]));
  const frames = readFrames(inbound);
  assert.deepEqual([...((await frames.next()).value as Uint8Array)], [1, 2, 3]);
  outbound.abort(new Error('gone'));
  await assert.rejects(frames.next(), { code: 'CLOSED' });
  await assert.rejects(writeFrame(outbound, Uint8Array.from([4])), { code: 'CLOSED' });
});
