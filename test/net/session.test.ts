import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import type { Stream } from '@libp2p/interface';
import { NotFoundError, NotLeaderError } from '../../node/common/errors.ts';
import { encodeFrame, encodeVarint, readFrames } from '../../node/net/frames.ts';
import { createHost, type Host } from '../../node/net/host.ts';
import { call, defineMethod, serve } from '../../node/net/rpc.ts';
import { openSession, type Session, serveSession } from '../../node/net/session.ts';
import { codec } from '../../proto/index.ts';
import { cell, echo, type Keyed, newKey, type Pair, pairCodec, startHost } from './_helpers.ts';

const session = defineMethod<Pair, Pair>({
  name: 'test-session',
  requestCodec: pairCodec,
  responseCodec: pairCodec,
  frameBytesMax: 64 * 1024,
});
const envelope = codec<{ requestId?: number; error?: { code: string }; response?: Uint8Array }>(
  'zhsm.net.Envelope',
);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, probe: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Served {
  notifications: Pair[];
  running: number;
  maxRunning: number;
}

/**
 * The session service the tests use: `echo` answers at once, `sleep` after `message` ms,
 * `missing`/`not-leader` throw typed errors, `bug` a plain one, `hang` waits for the session to end.
 */
async function serveTest(host: Host, options: { inFlightMax?: number; openToNonMembers?: boolean } = {}) {
  const served: Served = { notifications: [], running: 0, maxRunning: 0 };
  const service = await serveSession(host, {
    ...session,
    ...options,
    async handler(request, context) {
      served.running += 1;
      served.maxRunning = Math.max(served.maxRunning, served.running);
      try {
        switch (request.code) {
          case 'sleep':
            await sleep(Number(request.message));
            return { code: 'ok', message: request.message };
          case 'missing':
            throw new NotFoundError(`no such thing: ${request.message}`);
          case 'not-leader':
            throw new NotLeaderError('ask the primary');
          case 'bug':
            throw new TypeError('a bug with secret details');
          case 'hang':
            await new Promise((resolve) => context.signal.addEventListener('abort', resolve, { once: true }));
            return { code: 'ok', message: 'too late' };
          case 'peer':
            return { code: 'ok', message: context.peerId };
          default:
            return { code: 'ok', message: request.message };
        }
      } finally {
        served.running -= 1;
      }
    },
    onNotify(request) {
      served.notifications.push(request);
    },
  });
  return { served, service };
}

async function pair(t: TestContext) {
  const a = await newKey();
  const b = await newKey();
  const members = cell(a, b);
  const hostA = await startHost(t, a, members.isMember);
  const hostB = await startHost(t, b, members.isMember);
  return { a, b, hostA, hostB, addressB: hostB.multiaddrs()[0]! };
}

function closeAfter(t: TestContext, opened: Session<Pair, Pair>) {
  t.after(() => opened.close());
  return opened;
}

test('session: calls answer out of order on one stream', { timeout: 20_000 }, async (t) => {
  const { a, hostA, hostB, addressB } = await pair(t);
  await serveTest(hostB);
  const opened = closeAfter(t, await openSession(hostA, addressB, session));
  assert.equal(opened.peer, hostB.peerId.toString());
  const finished: string[] = [];
  await Promise.all(
    ['300', '150', '0'].map(async (delay) => {
      const response = await opened.call({ code: 'sleep', message: delay });
      assert.deepEqual(response, { code: 'ok', message: delay });
      finished.push(delay);
    }),
  );
  assert.deepEqual(finished, ['0', '150', '300'], 'the fastest answer comes first');
  assert.deepEqual(await opened.call({ code: 'peer', message: '' }), { code: 'ok', message: a.peerId });
  // An empty request (all fields default: zero bytes on the wire) is still a request.
  assert.deepEqual(await opened.call({ code: '', message: '' }), { code: 'ok', message: '' });
  // Everything went over one stream.
  const streams = hostA.libp2p
    .getConnections(hostB.peerId)
    .flatMap((connection) => connection.streams.filter((stream) => stream.protocol === session.protocol));
  assert.equal(streams.length, 1);
});

test('session: 5,000 calls with 256 in flight', { timeout: 60_000 }, async (t) => {
  const { hostA, hostB } = await pair(t);
  await serveTest(hostB);
  const opened = closeAfter(t, await openSession(hostA, hostB.multiaddrs()[0]!, session));
  await opened.call({ code: 'echo', message: 'warm up' });
  // By peer id, on the connection that is open now.
  const byPeerId = closeAfter(t, await openSession(hostA, hostB.peerId, session));
  assert.equal((await byPeerId.call({ code: 'echo', message: 'id' })).message, 'id');

  const sequential = 500;
  let started = performance.now();
  for (let i = 0; i < sequential; i += 1) await opened.call({ code: 'echo', message: String(i) });
  const sequentialRate = sequential / ((performance.now() - started) / 1000);

  const total = 5_000;
  const inFlight = 256;
  let next = 0;
  let answered = 0;
  started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < total) {
        const i = next++;
        const response = await opened.call({ code: 'echo', message: `call ${i}` });
        assert.equal(response.message, `call ${i}`);
        answered += 1;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  assert.equal(answered, total);
  const message =
    `session: ${total} calls with ${inFlight} in flight: ${Math.round(total / seconds)} calls/s; ` +
    `sequential: ${Math.round(sequentialRate)} calls/s`;
  console.log(message);
  t.diagnostic(message);
});

test('session: notifications arrive in order and get no answer', { timeout: 20_000 }, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  const { served } = await serveTest(hostB);
  const opened = closeAfter(t, await openSession(hostA, addressB, session));
  for (let i = 0; i < 1000; i += 1) assert.equal(opened.notify({ code: 'n', message: String(i) }), true);
  await waitFor('1000 notifications', () => served.notifications.length === 1000);
  assert.deepEqual(
    served.notifications.map((n) => Number(n.message)),
    Array.from({ length: 1000 }, (_, i) => i),
  );
  // Calls still work alongside.
  assert.equal((await opened.call({ code: 'echo', message: 'x' })).message, 'x');
  // A notification a codec cannot encode is the caller's bug: it throws.
  assert.throws(() => opened.notify({ code: 7 as unknown as string, message: '' }), {
    code: 'INVALID_ARGUMENT',
  });
  // Notifications queued before close() are delivered; afterwards notify() says no.
  for (let i = 0; i < 10; i += 1) opened.notify({ code: 'last', message: String(i) });
  await opened.close();
  assert.equal(opened.notify({ code: 'n', message: 'after' }), false);
  await waitFor('the last notifications', () => served.notifications.length === 1010);
});

test('session: remote errors keep their class and code; internal errors stay vague', {
  timeout: 20_000,
}, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  await serveTest(hostB);
  const opened = closeAfter(t, await openSession(hostA, addressB, session));
  await assert.rejects(opened.call({ code: 'missing', message: 'thing' }), (error: Error) => {
    assert.ok(error instanceof NotFoundError);
    assert.equal((error as Error & { code: string }).code, 'NOT_FOUND');
    assert.match(error.message, /no such thing: thing/);
    return true;
  });
  await assert.rejects(opened.call({ code: 'not-leader', message: '' }), (error: Error) => {
    assert.ok(error instanceof NotLeaderError);
    return true;
  });
  await assert.rejects(opened.call({ code: 'bug', message: '' }), (error: Error) => {
    assert.equal((error as Error & { code: string }).code, 'IO_ERROR');
    assert.match(error.message, /internal error/);
    assert.doesNotMatch(error.message, /secret/);
    return true;
  });
  // A request the codec cannot encode fails before it is sent.
  await assert.rejects(opened.call({ code: 7 as unknown as string, message: '' }), {
    code: 'INVALID_ARGUMENT',
  });
  // A request over the method's frame limit fails alone.
  await assert.rejects(opened.call({ code: 'echo', message: 'x'.repeat(70 * 1024) }), {
    code: 'FRAME_TOO_LARGE',
  });
  assert.equal(opened.closed, false, 'errors of single calls leave the session open');
  assert.equal((await opened.call({ code: 'echo', message: 'still here' })).message, 'still here');
});

test('session: a call times out alone; its late answer is dropped', { timeout: 20_000 }, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  await serveTest(hostB);
  const opened = closeAfter(t, await openSession(hostA, addressB, session));
  const started = Date.now();
  await assert.rejects(opened.call({ code: 'sleep', message: '400' }, { timeoutMs: 100 }), {
    code: 'TIMEOUT',
  });
  assert.ok(Date.now() - started < 380);
  const controller = new AbortController();
  const aborted = opened.call({ code: 'sleep', message: '400' }, { signal: controller.signal });
  controller.abort(new NotLeaderError('changed my mind'));
  await assert.rejects(aborted, { code: 'NOT_LEADER' });
  await sleep(450); // the late answers arrive and are ignored
  assert.equal(opened.closed, false);
  assert.equal((await opened.call({ code: 'echo', message: 'after' })).message, 'after');
});

test('session: the server stops reading above inFlightMax', { timeout: 20_000 }, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  const { served } = await serveTest(hostB, { inFlightMax: 4 });
  const opened = closeAfter(t, await openSession(hostA, addressB, session));
  const responses = await Promise.all(
    Array.from({ length: 40 }, (_, i) => opened.call({ code: 'sleep', message: String(10 + (i % 3)) })),
  );
  assert.equal(responses.length, 40);
  assert.ok(served.maxRunning <= 4, `at most 4 calls ran at once (saw ${served.maxRunning})`);
  assert.ok(served.maxRunning >= 2, 'calls did run concurrently');
});

test('session: a reset fails the calls in flight with ClosedError; a new session works', {
  timeout: 20_000,
}, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  const { served } = await serveTest(hostB);
  const opened = closeAfter(t, await openSession(hostA, addressB, session));
  const reasons: Error[] = [];
  opened.onClose((reason) => reasons.push(reason));
  const pending = Array.from({ length: 5 }, () =>
    assert.rejects(
      opened.call({ code: 'hang', message: '' }),
      (error: Error & { code?: string; context?: Record<string, unknown> }) => {
        assert.equal(error.code, 'CLOSED');
        assert.equal(error.context?.retryable, true);
        return true;
      },
    ),
  );
  await waitFor('calls running', () => served.running === 5);
  // Kill the stream under the session (as a dying connection would).
  const [stream] = hostA.libp2p
    .getConnections(hostB.peerId)
    .flatMap((connection) => connection.streams.filter((s) => s.protocol === session.protocol));
  stream!.abort(new Error('cable cut'));
  await Promise.all(pending);
  assert.equal(opened.closed, true);
  assert.equal((opened.closedReason as Error & { code?: string }).code, 'CLOSED');
  await waitFor('close listener', () => reasons.length === 1);
  await assert.rejects(opened.call({ code: 'echo', message: '' }), { code: 'CLOSED' });
  assert.equal(opened.notify({ code: 'n', message: '' }), false);
  // The server's handlers learn that the session ended.
  await waitFor('handlers ended', () => served.running === 0);
  let late: Error | undefined;
  opened.onClose((reason) => {
    late = reason;
  });
  await waitFor('late close listener', () => late !== undefined);

  // The whole connection going away does the same.
  const second = closeAfter(t, await openSession(hostA, addressB, session));
  assert.equal((await second.call({ code: 'echo', message: 'again' })).message, 'again');
  const hanging = assert.rejects(second.call({ code: 'hang', message: '' }), { code: 'CLOSED' });
  await waitFor('call running', () => served.running === 1);
  await hostA.libp2p.hangUp(hostB.peerId);
  await hanging;
  assert.equal(second.closed, true);

  // close() fails calls in flight, and the server stopping closes its sessions.
  const third = closeAfter(t, await openSession(hostA, addressB, session));
  const inFlight = assert.rejects(third.call({ code: 'hang', message: '' }), { code: 'CLOSED' });
  await waitFor('call running', () => served.running === 1);
  await third.close();
  await inFlight;
  await waitFor('handlers ended', () => served.running === 0);
});

test('session: stopping the service closes its sessions', { timeout: 20_000 }, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  const { service } = await serveTest(hostB);
  const opened = closeAfter(t, await openSession(hostA, addressB, session));
  const hanging = assert.rejects(opened.call({ code: 'hang', message: '' }), { code: 'CLOSED' });
  await sleep(50);
  await service.stop();
  await hanging;
  await waitFor('closed', () => opened.closed);
  await assert.rejects(openSession(hostA, addressB, session), { code: 'IO_ERROR' });
});

/** A host whose isMember knows nobody but itself, with an optional confirmMember. */
async function lonelyHost(t: TestContext, key: Keyed, confirmMember?: (peerId: string) => Promise<boolean>) {
  const host = await createHost({
    privateKey: key.privateKey,
    isMember: (peerId) => peerId === key.peerId,
    ...(confirmMember === undefined ? {} : { confirmMember }),
  });
  t.after(() => host.stop());
  return host;
}

test('session: non-members are refused; openToNonMembers and confirmMember admit them', {
  timeout: 20_000,
}, async (t) => {
  const a = await newKey();
  const b = await newKey();
  const c = await newKey();
  const hostA = await startHost(t, a, () => true);
  const asked: string[] = [];
  const confirmed = new Set<string>();
  const hostB = await lonelyHost(t, b, async (peerId) => {
    asked.push(peerId);
    await sleep(20);
    return confirmed.has(peerId);
  });
  await serveTest(hostB);
  const addressB = hostB.multiaddrs()[0]!;

  // Refused: the first call (and every later one) gets PERMISSION_DENIED, the session closes.
  const refused = closeAfter(t, await openSession(hostA, addressB, session));
  await assert.rejects(refused.call({ code: 'echo', message: '' }), { code: 'PERMISSION_DENIED' });
  await waitFor('closed', () => refused.closed);
  assert.equal((refused.closedReason as Error & { code?: string }).code, 'PERMISSION_DENIED');
  assert.equal(hostB.counters.refusedStreams, 1);
  assert.deepEqual(asked, [a.peerId], 'confirmMember was consulted');

  // rpc.ts serves the same rules.
  await serve(hostB, { ...echo, handler: async (request) => request });
  await assert.rejects(call(hostA, addressB, echo, { code: 'x', message: '' }), {
    code: 'PERMISSION_DENIED',
  });

  // The primary confirms a brand-new member: admitted without any change to isMember.
  const hostC = await startHost(t, c, () => true);
  confirmed.add(c.peerId);
  const admitted = closeAfter(t, await openSession(hostC, addressB, session));
  assert.deepEqual(await admitted.call({ code: 'peer', message: '' }), { code: 'ok', message: c.peerId });
  assert.deepEqual(await call(hostC, addressB, echo, { code: 'y', message: 'z' }), {
    code: 'y',
    message: 'z',
  });

  // A throwing confirmMember counts as "no".
  const d = await newKey();
  const hostD = await lonelyHost(t, d, async () => {
    throw new Error('the primary is unreachable');
  });
  await serveTest(hostD);
  const broken = closeAfter(t, await openSession(hostA, hostD.multiaddrs()[0]!, session));
  await assert.rejects(broken.call({ code: 'echo', message: '' }), { code: 'PERMISSION_DENIED' });

  // openToNonMembers: the join protocol serves anyone.
  const e = await newKey();
  const hostE = await lonelyHost(t, e);
  await serveTest(hostE, { openToNonMembers: true });
  await serve(hostE, { ...echo, openToNonMembers: true, handler: async (request) => request });
  const open = closeAfter(t, await openSession(hostA, hostE.multiaddrs()[0]!, session));
  assert.deepEqual(await open.call({ code: 'peer', message: '' }), { code: 'ok', message: a.peerId });
  assert.deepEqual(await call(hostA, hostE.multiaddrs()[0]!, echo, { code: 'j', message: '' }), {
    code: 'j',
    message: '',
  });
});

/** Raw bytes on a fresh session stream: the answer's error code, 'reset', 'closed' or 'pending'. */
async function attack(client: Host, target: Host, bytes: Uint8Array): Promise<string> {
  const stream: Stream = await client.libp2p.dialProtocol(target.multiaddrs()[0]!, session.protocol);
  try {
    if (bytes.byteLength > 0) stream.send(bytes);
    const frames = readFrames(stream, { frameBytesMax: 64 * 1024 });
    const timer = setTimeout(() => stream.abort(new Error('test timeout: no answer')), 1500);
    try {
      const first = await frames.next();
      if (first.done === true) return 'closed';
      const answer = envelope.decode(first.value);
      if (answer.error !== undefined) {
        // An error frame is followed by a reset.
        await frames.next().then(
          () => {},
          () => {},
        );
        return answer.error.code;
      }
      return 'unexpected answer';
    } finally {
      clearTimeout(timer);
    }
  } catch (error) {
    if (/test timeout/.test(String((error as Error).message))) return 'pending';
    return 'reset';
  } finally {
    stream.abort(new Error('done'));
  }
}

test('session: malformed and oversize frames get an error and a reset; the server keeps serving', {
  timeout: 30_000,
}, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  await serveTest(hostB);
  const bystander = closeAfter(t, await openSession(hostA, addressB, session));
  const request = (message: string) =>
    envelope.encode({ requestId: 1, request: pairCodec.encode({ code: 'echo', message }) } as never);
  const cases: Array<[string, Uint8Array, string[]]> = [
    ['oversize prefix', encodeVarint(1 << 30), ['FRAME_TOO_LARGE']],
    ['just over the limit', encodeFrame(new Uint8Array(64 * 1024 + 1)).subarray(), ['FRAME_TOO_LARGE']],
    ['varint too long', new Uint8Array(12).fill(0x80), ['DECODE_ERROR', 'FRAME_TOO_LARGE']],
    ['garbage envelope', encodeFrame(Uint8Array.from([0xff, 0xff, 0xff, 0x07])).subarray(), ['DECODE_ERROR']],
    [
      'a response instead of a request',
      encodeFrame(envelope.encode({ requestId: 3, response: new Uint8Array(3) })).subarray(),
      ['DECODE_ERROR'],
    ],
    ['unknown body', encodeFrame(Uint8Array.from([0x08, 0x01, 0x7a, 0x00])).subarray(), ['DECODE_ERROR']],
    ['truncated frame', encodeFrame(request('hello')).subarray(0, 5), ['pending']],
  ];
  for (const [name, bytes, expected] of cases) {
    const outcome = await attack(hostA, hostB, bytes);
    assert.ok(expected.includes(outcome), `${name}: got ${outcome}, expected one of ${expected.join(', ')}`);
  }
  // A request body the codec cannot decode fails only that call: the session answers the next.
  const stream: Stream = await hostA.libp2p.dialProtocol(addressB, session.protocol);
  t.after(() => stream.abort(new Error('done')));
  stream.send(
    encodeFrame(envelope.encode({ requestId: 5, request: Uint8Array.from([0x0a, 0x7f]) } as never)),
  );
  stream.send(encodeFrame(request('valid')));
  const frames = readFrames(stream, { frameBytesMax: 64 * 1024 });
  const answers = new Map<number, { error?: { code: string }; response?: Uint8Array }>();
  for (let i = 0; i < 2; i += 1) {
    const next = await frames.next();
    assert.equal(next.done, false);
    const answer = envelope.decode(next.value as Uint8Array);
    answers.set(answer.requestId ?? 0, answer);
  }
  assert.equal(answers.get(5)?.error?.code, 'DECODE_ERROR');
  assert.deepEqual(pairCodec.decode(answers.get(1)!.response!), { code: 'ok', message: 'valid' });
  // A malformed notification is dropped quietly.
  stream.send(encodeFrame(envelope.encode({ request: Uint8Array.from([0x0a, 0x7f]) } as never)));

  assert.equal(bystander.closed, false);
  assert.equal((await bystander.call({ code: 'echo', message: 'fine' })).message, 'fine');
  const fresh = closeAfter(t, await openSession(hostA, addressB, session));
  assert.equal((await fresh.call({ code: 'echo', message: 'new' })).message, 'new');
});

test('session: open failures are typed and bounded in time', { timeout: 20_000 }, async (t) => {
  const { hostA, hostB, addressB } = await pair(t);
  // Nothing serves the protocol.
  await assert.rejects(openSession(hostA, addressB, session), { code: 'IO_ERROR' });
  // A peer that is gone.
  const address = hostB.multiaddrs()[0]!;
  await hostB.stop();
  await assert.rejects(openSession(hostA, address, session, { openTimeoutMs: 3_000 }), (error: Error) => {
    assert.ok(['IO_ERROR', 'TIMEOUT'].includes((error as Error & { code: string }).code));
    return true;
  });
  // An aborted open.
  await assert.rejects(
    openSession(hostA, address, session, { signal: AbortSignal.abort(new NotLeaderError('stop')) }),
    { code: 'NOT_LEADER' },
  );
});
