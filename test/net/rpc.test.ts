import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { NotFoundError, NotLeaderError } from '../../node/common/errors.ts';
import { call, callStream, defineMethod, serve, serveStream } from '../../node/net/rpc.ts';
import {
  cell,
  echo,
  jsonCodec,
  mebibyte,
  newKey,
  type Pair,
  patternChunks,
  sha256Hex,
  startHost,
  transfer,
} from './_helpers.ts';

const transferBytes = 64 * mebibyte;

/** Two member hosts; B serves echo and transfer. */
async function twoHosts(t: import('node:test').TestContext) {
  const a = await newKey();
  const b = await newKey();
  const members = cell(a, b);
  const hostA = await startHost(t, a, members.isMember);
  const hostB = await startHost(t, b, members.isMember);
  let slowCallsStarted = 0;
  await serve(hostB, {
    ...echo,
    async handler(request, context) {
      assert.equal(context.peerId, a.peerId);
      switch (request.code) {
        case 'missing':
          throw new NotFoundError(`no such thing: ${request.message}`);
        case 'not-leader':
          throw new NotLeaderError('ask the primary');
        case 'bug':
          throw new TypeError('a bug with secret details');
        case 'slow':
          slowCallsStarted += 1;
          await new Promise((resolve) => setTimeout(resolve, Number(request.message)));
          return { code: 'ok', message: 'late' };
        default:
          return { code: 'ok', message: request.message };
      }
    },
  });
  await serveStream(hostB, {
    ...transfer,
    async *handler(request, context) {
      if (request.code === 'download') {
        const totalBytes = Number(request.message);
        for (const chunk of patternChunks(totalBytes, 3 * mebibyte + 17)) yield chunk;
        return { code: 'ok', message: String(totalBytes) };
      }
      if (request.code === 'fail-midway') {
        yield* patternChunks(5 * mebibyte, mebibyte);
        throw new NotFoundError('the object vanished');
      }
      const hash = createHash('sha256');
      let received = 0;
      for await (const chunk of context.data) {
        hash.update(chunk);
        received += chunk.byteLength;
      }
      return { code: String(received), message: hash.digest('hex') };
    },
  });
  return { a, b, hostA, hostB, addressB: hostB.multiaddrs()[0]!, slowCallsStarted: () => slowCallsStarted };
}

test('rpc: unary calls, typed errors round-trip with their code, internal errors stay vague', async (t) => {
  const { hostA, hostB, addressB } = await twoHosts(t);
  assert.deepEqual(await call(hostA, addressB, echo, { code: 'echo', message: 'hello' }), {
    code: 'ok',
    message: 'hello',
  });
  // By peer id, reusing the connection.
  assert.deepEqual(await call(hostA, hostB.peerId, echo, { code: 'echo', message: 'again' }), {
    code: 'ok',
    message: 'again',
  });
  assert.equal(hostA.libp2p.getConnections(hostB.peerId).length, 1, 'one connection, reused');
  await assert.rejects(call(hostA, addressB, echo, { code: 'missing', message: 'x' }), (error: Error) => {
    assert.ok(error instanceof NotFoundError);
    assert.equal((error as { code?: string }).code, 'NOT_FOUND');
    assert.match(error.message, /no such thing: x/);
    return true;
  });
  await assert.rejects(call(hostA, addressB, echo, { code: 'not-leader', message: '' }), NotLeaderError);
  await assert.rejects(call(hostA, addressB, echo, { code: 'bug', message: '' }), (error: Error) => {
    assert.equal((error as { code?: string }).code, 'IO_ERROR');
    assert.doesNotMatch(error.message, /secret/);
    return true;
  });
  // The host still serves after all that.
  assert.equal((await call(hostA, addressB, echo, { code: 'echo', message: 'still' })).message, 'still');
});

test('rpc: a call times out with TimeoutError; a caller abort ends it', async (t) => {
  const { hostA, addressB } = await twoHosts(t);
  const started = performance.now();
  await assert.rejects(call(hostA, addressB, echo, { code: 'slow', message: '3000' }, { timeoutMs: 200 }), {
    code: 'TIMEOUT',
  });
  assert.ok(performance.now() - started < 2000);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error('caller gave up')), 100);
  await assert.rejects(
    call(hostA, addressB, echo, { code: 'slow', message: '3000' }, { signal: controller.signal }),
    /caller gave up/,
  );
  // Unknown protocol: a clear error, not a hang.
  const unknown = defineMethod({
    name: 'test-nothing',
    requestCodec: jsonCodec('x'),
    responseCodec: jsonCodec('y'),
  });
  await assert.rejects(call(hostA, addressB, unknown, {}, { timeoutMs: 5000 }), { code: 'IO_ERROR' });
});

test('rpc: 500 concurrent calls all answer correctly', async (t) => {
  const { hostA, addressB } = await twoHosts(t);
  const started = performance.now();
  const results = await Promise.all(
    Array.from({ length: 500 }, (_, index) =>
      call(hostA, addressB, echo, { code: 'echo', message: `m${index}` }),
    ),
  );
  for (const [index, result] of results.entries()) assert.equal(result.message, `m${index}`);
  t.diagnostic(`500 concurrent calls in ${Math.round(performance.now() - started)} ms`);
});

test('rpc: streaming download and upload of 64 MiB keep SHA-256 equal', { timeout: 60_000 }, async (t) => {
  const { hostA, addressB } = await twoHosts(t);
  const expected = sha256Hex(patternChunks(transferBytes, 3 * mebibyte + 17));

  const download = await callStream(hostA, addressB, transfer, {
    code: 'download',
    message: String(transferBytes),
  });
  const hash = createHash('sha256');
  let received = 0;
  let largestChunk = 0;
  for await (const chunk of download.data) {
    hash.update(chunk);
    received += chunk.byteLength;
    largestChunk = Math.max(largestChunk, chunk.byteLength);
  }
  assert.equal(received, transferBytes);
  assert.equal(hash.digest('hex'), expected);
  assert.ok(largestChunk <= mebibyte, 'data arrives in frames of at most 1 MiB');
  assert.deepEqual(await download.response(), { code: 'ok', message: String(transferBytes) });

  const upload = await callStream(
    hostA,
    addressB,
    transfer,
    { code: 'upload', message: '' },
    {
      upload: patternChunks(transferBytes, 3 * mebibyte + 17),
    },
  );
  assert.deepEqual(await upload.response(), { code: String(transferBytes), message: expected });
});

test('rpc: a slow reader holds the sender back (bounded buffers end to end)', {
  timeout: 60_000,
}, async (t) => {
  const { hostA, hostB, addressB } = await twoHosts(t);
  const download = await callStream(hostA, addressB, transfer, {
    code: 'download',
    message: String(48 * mebibyte),
  });
  let received = 0;
  let maxServerBuffered = 0;
  let maxClientBuffered = 0;
  let stalledAt = 0;
  let longStall = false;
  for await (const chunk of download.data) {
    received += chunk.byteLength;
    for (const connection of hostB.libp2p.getConnections()) {
      for (const stream of connection.streams)
        maxServerBuffered = Math.max(maxServerBuffered, stream.writeBufferLength);
    }
    for (const connection of hostA.libp2p.getConnections()) {
      for (const stream of connection.streams)
        maxClientBuffered = Math.max(maxClientBuffered, stream.readBufferLength);
    }
    // A reader that stalls 20 ms per MiB for the first 16 MiB, and once for a whole second.
    if (received < 16 * mebibyte && received - stalledAt >= mebibyte) {
      stalledAt = received;
      await new Promise((resolve) => setTimeout(resolve, received >= 8 * mebibyte && !longStall ? 1000 : 20));
      if (received >= 8 * mebibyte) longStall = true;
    }
  }
  assert.equal(received, 48 * mebibyte);
  t.diagnostic(`max server send buffer ${maxServerBuffered}, max client read buffer ${maxClientBuffered}`);
  assert.ok(maxServerBuffered <= 3 * mebibyte, `server send buffer bounded: ${maxServerBuffered}`);
  assert.ok(maxClientBuffered <= 21 * mebibyte, `client read buffer bounded: ${maxClientBuffered}`);
});

test('rpc: an error after some data reaches the caller as the typed error', async (t) => {
  const { hostA, addressB } = await twoHosts(t);
  const failing = await callStream(hostA, addressB, transfer, { code: 'fail-midway', message: '' });
  let received = 0;
  await assert.rejects(
    (async () => {
      for await (const chunk of failing.data) received += chunk.byteLength;
    })(),
    NotFoundError,
  );
  assert.equal(received, 5 * mebibyte);
  await assert.rejects(failing.response(), NotFoundError);
  // An upload whose source fails: the caller sees its own error, the server keeps serving.
  async function* brokenSource(): AsyncGenerator<Uint8Array> {
    yield new Uint8Array(mebibyte);
    throw new Error('disk read failed');
  }
  const broken = await callStream(
    hostA,
    addressB,
    transfer,
    { code: 'upload', message: '' },
    { upload: brokenSource() },
  );
  await assert.rejects(broken.response(), /disk read failed/);
  assert.equal((await call(hostA, addressB, echo, { code: 'echo', message: 'ok' })).message, 'ok');
});

test('rpc: a non-member is refused on every protocol, and members are still served', async (t) => {
  const { a, b, hostB, addressB } = await twoHosts(t);
  const stranger = await newKey();
  // The stranger believes everyone is a member; B does not.
  const hostStranger = await startHost(t, stranger, () => true);
  await assert.rejects(call(hostStranger, addressB, echo, { code: 'echo', message: 'hi' }), {
    code: 'PERMISSION_DENIED',
  });
  const stream = await callStream(hostStranger, addressB, transfer, { code: 'download', message: '1000' });
  await assert.rejects(stream.response(), { code: 'PERMISSION_DENIED' });
  const upload = await callStream(
    hostStranger,
    addressB,
    transfer,
    { code: 'upload', message: '' },
    {
      upload: patternChunks(4 * mebibyte, mebibyte),
    },
  );
  await assert.rejects(upload.response(), { code: 'PERMISSION_DENIED' });
  assert.equal(hostB.counters.refusedStreams, 3);
  assert.ok(a.peerId !== b.peerId);
});

test('rpc: a peer that is gone is a typed error, not a hang', async (t) => {
  const { hostA, hostB, addressB } = await twoHosts(t);
  await hostB.stop();
  const started = performance.now();
  await assert.rejects(
    call(hostA, addressB, echo, { code: 'echo', message: 'anyone?' }, { timeoutMs: 10_000 }),
    (error: { code?: string }) => ['IO_ERROR', 'CLOSED'].includes(error.code ?? ''),
  );
  await assert.rejects(
    callStream(hostA, addressB, transfer, { code: 'download', message: '10' }, { openTimeoutMs: 10_000 }),
    (error: { code?: string }) => ['IO_ERROR', 'CLOSED'].includes(error.code ?? ''),
  );
  assert.ok(performance.now() - started < 9000, 'failed fast');
  await assert.rejects(call(hostA, 'not a peer', echo, { code: '', message: '' }), {
    code: 'INVALID_ARGUMENT',
  });
});

test('rpc: method definitions are validated', () => {
  assert.throws(
    () => defineMethod({ name: 'Bad Name', requestCodec: jsonCodec('a'), responseCodec: jsonCodec('b') }),
    {
      code: 'INVALID_ARGUMENT',
    },
  );
  assert.equal(
    defineMethod({ name: 'store/read', requestCodec: jsonCodec<Pair>('a'), responseCodec: jsonCodec('b') })
      .protocol,
    '/zhsm/store/read/1.0.0',
  );
});
