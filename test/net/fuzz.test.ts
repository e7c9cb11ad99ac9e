/**
 * Fuzzing the serving side: random, truncated, oversize and ill-typed frames on every kind of
 * zhsm protocol. Each stream must end with an error trailer or a reset, and the host must go on
 * answering valid calls.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Stream } from '@libp2p/interface';
import fc from 'fast-check';
import { Uint8ArrayList } from 'uint8arraylist';
import { encodeFrame, encodeVarint, readFrames } from '../../node/net/frames.ts';
import type { Host } from '../../node/net/host.ts';
import { call, callStream, defineMethod, serve, serveStream } from '../../node/net/rpc.ts';
import { codec } from '../../proto/index.ts';
import {
  cell,
  echo,
  mebibyte,
  newKey,
  type Pair,
  pairCodec,
  patternChunks,
  startHost,
  transfer,
} from './_helpers.ts';

const envelope = codec<Record<string, unknown>>('zhsm.net.Envelope');
const smallFrames = defineMethod<Pair, Pair>({
  name: 'test-small',
  requestCodec: pairCodec,
  responseCodec: pairCodec,
  frameBytesMax: 4096,
});

/** Send raw bytes on a fresh stream; return the error code of the trailer, or 'reset'. */
async function attack(client: Host, target: Host, protocol: string, bytes: Uint8Array, closeAfter = true) {
  const stream: Stream = await client.libp2p.dialProtocol(target.multiaddrs()[0]!, protocol);
  try {
    if (bytes.byteLength > 0) stream.send(bytes);
    if (closeAfter) await stream.close();
    const frames = readFrames(stream, { frameBytesMax: 64 * 1024 });
    // A stream left open may legitimately wait for more: give it a short time only.
    const timer = setTimeout(
      () => stream.abort(new Error('test timeout: no answer')),
      closeAfter ? 10_000 : 1500,
    );
    try {
      const first = await frames.next();
      if (first.done === true) return 'closed';
      const answer = envelope.decode(first.value) as { error?: { code: string } };
      return answer.error?.code ?? 'unexpected answer';
    } finally {
      clearTimeout(timer);
    }
  } catch (error) {
    if (/test timeout/.test(String((error as Error).message))) {
      if (closeAfter) throw error;
      return 'pending';
    }
    return 'reset';
  } finally {
    stream.abort(new Error('done'));
  }
}

test('fuzz: malformed traffic gets errors or resets, and the host keeps serving', {
  timeout: 60_000,
}, async (t) => {
  const a = await newKey();
  const b = await newKey();
  const members = cell(a, b);
  const attacker = await startHost(t, a, members.isMember);
  const server = await startHost(t, b, members.isMember);
  const requestTimeoutMs = 500;
  await serve(server, {
    ...echo,
    requestTimeoutMs,
    handler: async (request) => ({ code: 'ok', message: request.message }),
  });
  await serve(server, {
    ...smallFrames,
    requestTimeoutMs,
    handler: async (request) => ({ code: 'ok', message: request.message }),
  });
  await serveStream(server, {
    ...transfer,
    requestTimeoutMs,
    async handler(_request, context) {
      let received = 0;
      for await (const chunk of context.data) received += chunk.byteLength;
      return { code: 'ok', message: String(received) };
    },
  });
  const protocols = [echo.protocol, smallFrames.protocol, transfer.protocol];
  const request = (message: string) =>
    encodeFrame(
      envelope.encode({ requestId: 1, request: pairCodec.encode({ code: 'x', message }) }),
    ).subarray();
  const allowed = ['DECODE_ERROR', 'FRAME_TOO_LARGE', 'reset', 'closed'];

  for (const protocol of protocols) {
    const cases: Array<[string, Uint8Array, string[]]> = [
      ['nothing at all', new Uint8Array(0), ['DECODE_ERROR', 'reset', 'closed']],
      ['truncated prefix', Uint8Array.from([0x85]), ['DECODE_ERROR', 'reset']],
      ['truncated frame', request('hello').subarray(0, 5), ['DECODE_ERROR', 'reset']],
      ['oversize prefix', encodeVarint(1 << 30), ['FRAME_TOO_LARGE', 'reset']],
      ['varint too long', new Uint8Array(12).fill(0x80), ['DECODE_ERROR', 'FRAME_TOO_LARGE', 'reset']],
      [
        'garbage envelope',
        encodeFrame(Uint8Array.from([0xff, 0xff, 0xff, 0x07])).subarray(),
        ['DECODE_ERROR', 'reset'],
      ],
      [
        'a response instead of a request',
        encodeFrame(envelope.encode({ requestId: 1, response: new Uint8Array(3) })).subarray(),
        ['DECODE_ERROR'],
      ],
      [
        'unknown message type',
        encodeFrame(Uint8Array.from([0x08, 0x01, 0x7a, 0x00])).subarray(),
        ['DECODE_ERROR'],
      ],
      [
        'malformed request body',
        encodeFrame(envelope.encode({ requestId: 1, request: Uint8Array.from([0x0a, 0x7f]) })).subarray(),
        ['DECODE_ERROR'],
      ],
    ];
    if (protocol === transfer.protocol) {
      cases.push([
        'request then a second request',
        new Uint8ArrayList(request('a'), request('b')).subarray(),
        ['DECODE_ERROR', 'reset'],
      ]);
      cases.push([
        'request then data without end',
        new Uint8ArrayList(
          request('a'),
          encodeFrame(envelope.encode({ requestId: 1, data: new Uint8Array(10) })),
        ).subarray(),
        ['CLOSED', 'reset'],
      ]);
    }
    for (const [name, bytes, expected] of cases) {
      const outcome = await attack(attacker, server, protocol, bytes);
      assert.ok(
        expected.includes(outcome),
        `${protocol} ${name}: got ${outcome}, expected one of ${expected}`,
      );
    }
    // A frame above this protocol's maximum.
    const big = protocol === smallFrames.protocol ? request('x'.repeat(5000)) : encodeVarint(17 * mebibyte);
    assert.ok(
      ['FRAME_TOO_LARGE', 'reset'].includes(await attack(attacker, server, protocol, big)),
      `${protocol} oversize`,
    );
  }

  // Random bytes, and random mutations of a valid request, on every protocol.
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...protocols),
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }),
        fc.tuple(fc.nat(40), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, noise]) => {
          const bytes = Uint8Array.from(request('mutate me'));
          bytes.set(
            noise.subarray(0, Math.max(0, bytes.byteLength - (at % bytes.byteLength))),
            at % bytes.byteLength,
          );
          return bytes;
        }),
      ),
      fc.boolean(),
      async (protocol, bytes, closeAfter) => {
        const outcome = await attack(
          attacker,
          server,
          protocol,
          bytes,
          closeAfter || protocol !== transfer.protocol,
        );
        // A mutation may still be a valid request: then any answer of the service is fine.
        assert.ok(
          allowed.includes(outcome) ||
            ['unexpected answer', 'CLOSED', 'pending', 'TIMEOUT'].includes(outcome),
          outcome,
        );
      },
    ),
    { numRuns: 150 },
  );

  // Still serving: unary, small-frame and streaming calls all work.
  assert.equal((await call(attacker, server.peerId, echo, { code: 'x', message: 'alive' })).message, 'alive');
  assert.equal(
    (await call(attacker, server.peerId, smallFrames, { code: 'x', message: 'alive' })).message,
    'alive',
  );
  const upload = await callStream(
    attacker,
    server.peerId,
    transfer,
    { code: 'x', message: '' },
    {
      upload: patternChunks(3 * mebibyte, mebibyte),
    },
  );
  assert.equal((await upload.response()).message, String(3 * mebibyte));
  // A client refuses to send a request above the maximum (FrameTooLargeError before any I/O).
  await assert.rejects(call(attacker, server.peerId, smallFrames, { code: 'x', message: 'y'.repeat(5000) }), {
    code: 'FRAME_TOO_LARGE',
  });
});
