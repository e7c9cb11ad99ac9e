/**
 * Fuzzing every protocol decoder of a running daemon (controller + storage server, in this
 * process) as a MEMBER of the cell: raw streams carrying random bytes, truncated frames, garbage
 * envelopes, envelopes of the wrong kind or with another protocol's request, oversize length
 * prefixes, overlong varints, streams closed or reset mid-frame (seeded: failures replay). Then
 * well-formed but semantically bad requests on the metadata session and the storage service.
 *
 * Every answer must be a typed error trailer with a stable code (or a valid answer, or the stream
 * ending), never a hang, never "internal error"; after every batch the daemon must still serve:
 * cell-info answers, a fresh client writes metadata and a file, nothing was thrown uncaught.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { Uint8ArrayList } from 'uint8arraylist';
import { encodeMessage } from '../../consensus/codec.ts';
import type { Message } from '../../consensus/types.ts';
import { CellClient } from '../../node/client/cell-client.ts';
import type { ErrorCode } from '../../node/common/errors.ts';
import { encodeRaftBatch, raftMethod } from '../../node/controller/net-transport.ts';
import {
  adminMethod,
  cellInfoMethod,
  joinMethod,
  type MetaRequest,
  metaMethod,
} from '../../node/daemon/protocols.ts';
import { encodeFrame, encodeVarint } from '../../node/net/frames.ts';
import { call, callStream, type Method } from '../../node/net/rpc.ts';
import { openSession } from '../../node/net/session.ts';
import { StorageClient } from '../../node/storage/client.ts';
import {
  storageDelete,
  storageFetch,
  storageHead,
  storageList,
  storageMeta,
  storageRead,
  storageSpace,
  storageVerify,
  storageWrite,
} from '../../node/storage/service.ts';
import { emptyHeader } from '../../node/store/format.ts';
import { newObjectId as newId } from '../../node/store/object-id.ts';
import {
  admitHost,
  attack,
  captureLogger,
  envelopeCodec,
  joinNode,
  type Outcome,
  rawHost,
  startCell,
} from './_inprocess.ts';

const SEED = 0x5eed_2024;
const caller = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
/** Every stable error code (node/common/errors.ts): a trailer must carry one of these. */
const ERROR_CODES: readonly ErrorCode[] = [
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'NOT_A_BACKEND',
  'WRONG_CELL',
  'BACKEND_FULL',
  'CORRUPT_OBJECT',
  'UNSUPPORTED_FORMAT',
  'HASH_MISMATCH',
  'SIZE_MISMATCH',
  'STRAY_FILE',
  'DECODE_ERROR',
  'FRAME_TOO_LARGE',
  'IO_ERROR',
  'NOT_LEADER',
  'TIMEOUT',
  'CLOSED',
  'PERMISSION_DENIED',
  'NOT_EMPTY',
  'NOT_A_DIRECTORY',
  'IS_A_DIRECTORY',
  'NO_DATA',
  'NAME_TOO_LONG',
  'NOT_PERMITTED',
  'READ_ONLY',
  'STALE',
  'UNAVAILABLE',
];
/** Outcomes that are always acceptable: a typed error, an answer, the stream ending. */
const ACCEPTABLE = new Set<string>([...ERROR_CODES, 'response', 'data', 'closed', 'reset']);

type Kind = 'unary' | 'stream' | 'session';
interface Target {
  readonly protocol: string;
  readonly kind: Kind;
  readonly frameBytesMax: number;
  /** A valid request body of this protocol. */
  readonly sample: Uint8Array;
}

const frame = (payload: Uint8Array | Uint8ArrayList) =>
  encodeFrame(payload, { frameBytesMax: 2 ** 40 }).subarray();
const envelope = (fields: Parameters<typeof envelopeCodec.encode>[0]) => frame(envelopeCodec.encode(fields));
const requestEnvelope = (body: Uint8Array, requestId = 1) => envelope({ requestId, request: body });
const concat = (...parts: Uint8Array[]) => new Uint8ArrayList(...parts).subarray();

test('fuzz: every protocol decoder of a running daemon, by a member', { timeout: 150_000 }, async (t) => {
  // Anything thrown outside a handler would be a crash of a real daemon.
  const uncaught: unknown[] = [];
  const onUncaught = (error: unknown) => uncaught.push(error);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  t.after(() => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  });

  const log = captureLogger('warn');
  const cell = await startCell(t, { logger: log.logger });
  const daemon = cell.first;
  const storage = daemon.storage;
  assert.ok(storage !== undefined, 'the first node is a storage server');
  const backend = Uint8Array.from(Buffer.from([...storage.backends.keys()][0]!, 'hex'));
  // The well-behaved client: a member node; the attacker: a bare host admitted with a token.
  const client = await joinNode(t, cell, 'client');
  const attacker = await rawHost(t);
  await admitHost(attacker, cell);
  const term = daemon.controller!.info().term;

  const targets: Target[] = [
    {
      protocol: joinMethod.protocol,
      kind: 'unary',
      frameBytesMax: joinMethod.frameBytesMax,
      sample: joinMethod.requestCodec.encode({
        tokenId: newId(),
        secret: new Uint8Array(randomBytes(32)),
        controller: false,
        addresses: ['/ip4/127.0.0.1/tcp/1'],
      }),
    },
    {
      protocol: cellInfoMethod.protocol,
      kind: 'unary',
      frameBytesMax: cellInfoMethod.frameBytesMax,
      sample: new Uint8Array(0),
    },
    {
      protocol: adminMethod.protocol,
      kind: 'unary',
      frameBytesMax: adminMethod.frameBytesMax,
      sample: adminMethod.requestCodec.encode({ json: '{"op":"pid"}' }),
    },
    {
      protocol: metaMethod.protocol,
      kind: 'session',
      frameBytesMax: metaMethod.frameBytesMax,
      sample: metaMethod.requestCodec.encode({
        propose: {
          timeMs: 0,
          create: {
            parent: newId(),
            name: 'fuzz',
            id: newId(),
            type: 'DIRECTORY',
            mode: 0o755,
            uid: 0,
            gid: 0,
            rdev: 0,
            symlinkTarget: new Uint8Array(0),
          },
        },
      } as MetaRequest),
    },
    {
      protocol: raftMethod.protocol,
      kind: 'session',
      frameBytesMax: raftMethod.frameBytesMax,
      sample: encodeRaftBatch([randomBytes(20)]),
    },
    {
      protocol: storageWrite.protocol,
      kind: 'stream',
      frameBytesMax: storageWrite.frameBytesMax,
      sample: storageWrite.requestCodec.encode({
        backend,
        id: newId(),
        size: 10,
        contentHash: new Uint8Array(32),
        mtimeMs: 0,
      }),
    },
    {
      protocol: storageRead.protocol,
      kind: 'stream',
      frameBytesMax: storageRead.frameBytesMax,
      sample: storageRead.requestCodec.encode({ backend, id: newId(), offset: 0, length: 10 }),
    },
    {
      protocol: storageDelete.protocol,
      kind: 'unary',
      frameBytesMax: storageDelete.frameBytesMax,
      sample: storageDelete.requestCodec.encode({ ids: [newId()], backend: new Uint8Array(0) }),
    },
    {
      protocol: storageSpace.protocol,
      kind: 'unary',
      frameBytesMax: storageSpace.frameBytesMax,
      sample: storageSpace.requestCodec.encode({ countObjects: false }),
    },
    {
      protocol: storageHead.protocol,
      kind: 'unary',
      frameBytesMax: storageHead.frameBytesMax,
      sample: storageHead.requestCodec.encode({ backend, id: newId() }),
    },
    {
      protocol: storageFetch.protocol,
      kind: 'unary',
      frameBytesMax: storageFetch.frameBytesMax,
      sample: storageFetch.requestCodec.encode({
        backend,
        id: newId(),
        size: 10,
        contentHash: new Uint8Array(32),
        sourceBackend: newId(),
      }),
    },
    {
      protocol: storageMeta.protocol,
      kind: 'unary',
      frameBytesMax: storageMeta.frameBytesMax,
      sample: storageMeta.requestCodec.encode({
        backend,
        objects: [
          {
            header: { ...emptyHeader(), id: newId(), mainType: 'META', subType: 'FILE' },
            body: new Uint8Array(3),
          },
        ],
      }),
    },
    {
      protocol: storageList.protocol,
      kind: 'unary',
      frameBytesMax: storageList.frameBytesMax,
      sample: storageList.requestCodec.encode({
        backend,
        after: new Uint8Array(0),
        limit: 10,
        metaOnly: false,
      }),
    },
    {
      protocol: storageVerify.protocol,
      kind: 'unary',
      frameBytesMax: storageVerify.frameBytesMax,
      sample: storageVerify.requestCodec.encode({ backend, ids: [newId()], bytesPerSecond: 0 }),
    },
  ];
  // Every framed zhsm protocol the daemon serves is fuzzed here (a new one needs its target).
  const served = daemon.host.libp2p
    .getProtocols()
    .filter((protocol) => protocol.startsWith('/zhsm/') && protocol !== '/zhsm/probe/1.0.0');
  assert.deepEqual(served.sort(), targets.map((target) => target.protocol).sort());

  const histogram = new Map<string, number>();
  let cases = 0;
  const hit = async (
    target: Target,
    label: string,
    bytes: Uint8Array | Uint8Array[],
    expected: readonly string[] | undefined,
    options: { reset?: boolean } = {},
  ): Promise<Outcome> => {
    const outcome = await attack(attacker, cell.peer, target.protocol, bytes, {
      answerMs: 10_000,
      ...options,
    });
    cases += 1;
    histogram.set(outcome.kind, (histogram.get(outcome.kind) ?? 0) + 1);
    const where = `${target.protocol} ${label}: got ${outcome.kind} ${outcome.message ?? ''}`;
    assert.ok(ACCEPTABLE.has(outcome.kind), where);
    assert.doesNotMatch(outcome.message ?? '', /internal error/, where);
    if (ERROR_CODES.includes(outcome.kind as ErrorCode))
      assert.ok((outcome.message ?? '').length > 0, `${where}: an error says what is wrong`);
    if (expected !== undefined) assert.ok(expected.includes(outcome.kind), `${where}; expected ${expected}`);
    return outcome;
  };

  let checks = 0;
  /** The daemon still serves: cell-info, a fresh metadata session, a client's file, storage. */
  const assertServing = async (label: string) => {
    checks += 1;
    assert.deepEqual(uncaught, [], `${label}: nothing thrown uncaught`);
    // Unexpected exceptions in handlers are logged at error level ("handler failed").
    const errors = log.entries.filter((entry) => entry.level >= 50);
    assert.deepEqual(
      errors.map((entry) => `${entry.msg}: ${JSON.stringify(entry.err ?? '')}`.slice(0, 400)),
      [],
      `${label}: no errors logged`,
    );
    assert.equal(daemon.host.counters.refusedStreams, 0, `${label}: the member was never refused`);
    const info = await call(attacker, cell.peer, cellInfoMethod, {}, { timeoutMs: 5_000 });
    assert.equal(info.role, 'leader', label);
    assert.equal(info.term, term, `${label}: no forged message changed the term`);
    const session = await openSession(attacker, cell.peer, metaMethod, { openTimeoutMs: 5_000 });
    try {
      const root = (await session.call({ read: { root: {} } }, { timeoutMs: 5_000 })).root;
      assert.ok(root !== undefined && root.byteLength === 16, label);
      const created = await session.call(
        {
          propose: {
            timeMs: 0,
            create: {
              parent: root,
              name: `alive-${checks}`,
              id: newId(),
              type: 'DIRECTORY',
              mode: 0o755,
              uid: caller.uid,
              gid: caller.gid,
              rdev: 0,
              symlinkTarget: new Uint8Array(0),
            },
          },
        } as MetaRequest,
        { timeoutMs: 5_000 },
      );
      assert.equal(created.result?.code, 'OK', `${label}: ${created.result?.message}`);
    } finally {
      await session.close();
    }
    const fs = new CellClient(client.remote);
    const path = `/alive-${checks}/file`;
    const content = randomBytes(70_000 + checks);
    const handle = await fs.create(path, 0o644, caller, { mode: 'write', exclusive: true });
    await handle.write(0, content);
    await handle.close();
    const reader = await fs.open(path, { mode: 'read' });
    assert.deepEqual(Buffer.from(await reader.read(0, content.byteLength)), content, label);
    await reader.close();
    const space = await new StorageClient(attacker).space(daemon.peerId);
    assert.equal(space.length, 1, label);
  };

  await assertServing('before fuzzing');

  await t.test(
    'framing: truncated, oversize, overlong, garbage, wrong kinds',
    { timeout: 60_000 },
    async () => {
      for (const target of targets) {
        const session = target.kind === 'session';
        const valid = requestEnvelope(target.sample);
        const bodyField = concat(
          Uint8Array.from([0x12]),
          encodeVarint(target.sample.byteLength),
          target.sample,
        );
        const endFrame = envelope({ requestId: 1, end: {} });
        const emptyEnd = session ? ['closed'] : ['DECODE_ERROR', 'reset'];
        const structured: Array<[string, Uint8Array | Uint8Array[], readonly string[] | undefined]> = [
          ['nothing at all', new Uint8Array(0), emptyEnd],
          ['a truncated length prefix', Uint8Array.from([0x85]), ['DECODE_ERROR', 'reset']],
          [
            'a frame cut in half',
            valid.subarray(0, Math.ceil(valid.byteLength / 2)),
            ['DECODE_ERROR', 'reset'],
          ],
          ['the last byte missing', valid.subarray(0, valid.byteLength - 1), ['DECODE_ERROR', 'reset']],
          [
            'closed mid-frame (prefix 200, 50 bytes)',
            [encodeVarint(200), new Uint8Array(50).fill(0x12)],
            ['DECODE_ERROR', 'reset'],
          ],
          [
            `a prefix of frameBytesMax + 1`,
            encodeVarint(target.frameBytesMax + 1),
            ['FRAME_TOO_LARGE', 'reset'],
          ],
          ['a prefix of 2^53 - 1', encodeVarint(2 ** 53 - 1), ['FRAME_TOO_LARGE', 'reset']],
          [
            'a prefix of exactly frameBytesMax, then the end',
            concat(encodeVarint(target.frameBytesMax), new Uint8Array(100)),
            ['DECODE_ERROR', 'reset'],
          ],
          ['varint overflow (0xff x 11)', new Uint8Array(11).fill(0xff), ['FRAME_TOO_LARGE', 'reset']],
          [
            'overlong varint (0x80 x 10, 0x01)',
            concat(new Uint8Array(10).fill(0x80), Uint8Array.from([0x01])),
            ['DECODE_ERROR', 'reset'],
          ],
          [
            'a non-minimal varint of zero, then a zero-length frame',
            Uint8Array.from([0x80, 0x80, 0x80, 0x00]),
            ['DECODE_ERROR', 'reset'],
          ],
          ['garbage protobuf', frame(Uint8Array.from([0xff, 0xff, 0xff, 0x07])), ['DECODE_ERROR', 'reset']],
          ['a wire-type 7 tag', frame(Uint8Array.from([0x0f, 0x01, 0x02])), ['DECODE_ERROR', 'reset']],
          [
            'a length beyond the frame',
            frame(Uint8Array.from([0x12, 0x7f, 0x01])),
            ['DECODE_ERROR', 'reset'],
          ],
          ['an empty envelope', frame(new Uint8Array(0)), ['DECODE_ERROR', 'reset']],
          [
            'a response envelope',
            envelope({ requestId: 1, response: target.sample }),
            ['DECODE_ERROR', 'reset'],
          ],
          [
            'a data envelope',
            envelope({ requestId: 1, data: new Uint8Array(10) }),
            ['DECODE_ERROR', 'reset'],
          ],
          ['an end envelope', envelope({ requestId: 1, end: {} }), ['DECODE_ERROR', 'reset']],
          [
            'an error envelope',
            envelope({ requestId: 1, error: { code: 'IO_ERROR', message: 'x'.repeat(10_000) } }),
            ['DECODE_ERROR', 'reset'],
          ],
          [
            'an unknown body field',
            frame(Uint8Array.from([0x08, 0x01, 0x7a, 0x00])),
            ['DECODE_ERROR', 'reset'],
          ],
          // Request ids above 2^53 cannot be echoed: refused at decoding (they were "internal errors").
          [
            'a valid request with request id 2^64 - 1',
            [
              frame(
                concat(
                  Uint8Array.from([0x08]),
                  new Uint8Array(9).fill(0xff),
                  Uint8Array.from([0x01]),
                  bodyField,
                ),
              ),
              endFrame,
            ],
            ['DECODE_ERROR', 'reset'],
          ],
          [
            'a valid request with request id 2^53',
            [
              frame(
                concat(
                  Uint8Array.from([0x08]),
                  new Uint8Array(7).fill(0x80),
                  Uint8Array.from([0x10]),
                  bodyField,
                ),
              ),
              endFrame,
            ],
            ['DECODE_ERROR', 'reset'],
          ],
          [
            'a request with a malformed body',
            requestEnvelope(Uint8Array.from([0x0a, 0x7f, 0x01])),
            // The raft session takes raw bytes (its batches are decoded by the transport).
            target.protocol === raftMethod.protocol ? ['INVALID_ARGUMENT'] : ['DECODE_ERROR', 'reset'],
          ],
          ['a valid request, then garbage', [valid, Uint8Array.from([0xff, 0xff, 0xff])], undefined],
          ['two requests', [valid, valid], undefined],
        ];
        // Another protocol's request body in a well-formed envelope.
        for (const other of targets) {
          if (other.protocol === target.protocol) continue;
          structured.push([`the request of ${other.protocol}`, requestEnvelope(other.sample), undefined]);
        }
        for (const [label, bytes, expected] of structured) await hit(target, label, bytes, expected);
        // Reset (not closed) mid-frame: no answer is possible; the daemon must just cope.
        for (const cut of [0, 1, Math.floor(valid.byteLength / 2)]) {
          await hit(target, `reset after ${cut} bytes`, valid.subarray(0, cut), ['reset'], { reset: true });
        }
        // A session notification (request id 0) with a bad body: dropped, nothing answers.
        if (session) {
          await hit(target, 'a malformed notification', requestEnvelope(Uint8Array.from([0x0a, 0x7f]), 0), [
            'closed',
          ]);
        }
        await assertServing(`after the framing cases on ${target.protocol}`);
      }
    },
  );

  await t.test('random bytes and mutated frames (seeded)', { timeout: 60_000 }, async () => {
    const targetArb = fc.constantFrom(...targets);
    const input = targetArb.chain((target) =>
      fc.tuple(
        fc.constant(target),
        fc.oneof(
          // Raw random bytes.
          fc.uint8Array({ maxLength: 400 }),
          // A valid length prefix around a random envelope.
          fc.uint8Array({ maxLength: 300 }).map((bytes) => frame(bytes)),
          // A well-formed envelope around a random request body.
          fc
            .tuple(fc.nat(0xffff), fc.uint8Array({ maxLength: 300 }))
            .map(([id, body]) => requestEnvelope(body, id)),
          // A valid request with a few bytes overwritten.
          fc
            .array(fc.tuple(fc.nat(1000), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 })
            .map((edits) => {
              const bytes = Uint8Array.from(requestEnvelope(target.sample));
              for (const [at, value] of edits) bytes[at % bytes.byteLength] = value;
              return bytes;
            }),
          // A valid request cut anywhere.
          fc.nat(1000).map((cut) => {
            const bytes = requestEnvelope(target.sample);
            return bytes.subarray(0, cut % bytes.byteLength);
          }),
          // A random length prefix (possibly huge) then a little data.
          fc
            .tuple(fc.nat({ max: 2 ** 40 }), fc.uint8Array({ maxLength: 64 }))
            .map(([length, bytes]) => concat(encodeVarint(length), bytes)),
        ),
        fc.constantFrom('close', 'close', 'close', 'reset'),
      ),
    );
    for (let batch = 0; batch < 3; batch += 1) {
      await fc.assert(
        fc.asyncProperty(input, async ([target, bytes, end]) => {
          await hit(
            target,
            `random ${Buffer.from(bytes.subarray(0, 24)).toString('hex')}`,
            bytes,
            undefined,
            {
              reset: end === 'reset',
            },
          );
        }),
        { seed: SEED + 100 * batch, numRuns: 100, endOnFailure: true },
      );
      await assertServing(`after random batch ${batch + 1}`);
    }
    // Concurrency: many malformed streams at once on one connection.
    const samples = fc.sample(input, { seed: SEED + 1, numRuns: 120 });
    await Promise.all(samples.map(([target, bytes]) => hit(target, 'concurrent', bytes, undefined)));
    await assertServing('after the concurrent cases');
  });

  await t.test(
    'raft: forged and misaddressed consensus messages are dropped',
    { timeout: 30_000 },
    async () => {
      const raft = targets.find((target) => target.protocol === raftMethod.protocol)!;
      const forged: Message[] = [
        // Claims to be the daemon itself (controller 1), or controllers that do not exist.
        {
          type: 'RequestVote',
          from: 1,
          to: 1,
          term: term + 100,
          lastLogIndex: 1e6,
          lastLogTerm: term + 99,
          preVote: false,
          transfer: true,
        },
        { type: 'TimeoutNow', from: 2, to: 1, term: term + 100 },
        {
          type: 'AppendEntries',
          from: 7,
          to: 1,
          term: term + 100,
          prevLogIndex: 0,
          prevLogTerm: 0,
          entries: [],
          leaderCommit: 1e6,
          readContext: 0,
        },
        {
          type: 'RequestVote',
          from: 2,
          to: 99,
          term: term + 100,
          lastLogIndex: 0,
          lastLogTerm: 0,
          preVote: true,
          transfer: false,
        },
      ];
      const batch = encodeRaftBatch([...forged.map((message) => encodeMessage(message)), randomBytes(40)]);
      for (const requestId of [0, 5]) {
        await hit(raft, `forged messages (request id ${requestId})`, requestEnvelope(batch, requestId), [
          requestId === 0 ? 'closed' : 'INVALID_ARGUMENT',
        ]);
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      await assertServing('after forged raft messages');
    },
  );

  await t.test('meta: semantically bad requests get clear errors', { timeout: 60_000 }, async () => {
    const session = await openSession(attacker, cell.peer, metaMethod, { openTimeoutMs: 5_000 });
    t.after(() => session.close());
    const ask = (request: MetaRequest) => session.call(request, { timeoutMs: 20_000 });
    const root = (await ask({ read: { root: {} } })).root!;
    const create = (fields: Record<string, unknown>): MetaRequest =>
      ({
        propose: {
          timeMs: 0,
          create: {
            parent: root,
            name: 'x',
            id: newId(),
            type: 'DIRECTORY',
            mode: 0o755,
            uid: 0,
            gid: 0,
            rdev: 0,
            symlinkTarget: new Uint8Array(0),
            ...fields,
          },
        },
      }) as MetaRequest;
    const resultCode = async (label: string, request: MetaRequest, code: string) => {
      const response = await ask(request);
      assert.equal(response.result?.code, code, `${label}: ${response.result?.message}`);
      assert.ok((response.result?.message ?? '').length > 0 || code === 'OK', `${label}: a message`);
    };
    await resultCode('a 3-byte parent id', create({ parent: new Uint8Array(3) }), 'INVALID_ARGUMENT');
    await resultCode('an empty parent id', create({ parent: new Uint8Array(0) }), 'INVALID_ARGUMENT');
    await resultCode('a 1 KiB inode id', create({ id: new Uint8Array(1024) }), 'INVALID_ARGUMENT');
    await resultCode('an unknown parent', create({ parent: newId() }), 'NOT_FOUND');
    await resultCode('a 256-byte name', create({ name: 'n'.repeat(256) }), 'NAME_TOO_LONG');
    await resultCode('a 4 MiB name', create({ name: 'n'.repeat(4 * 1024 * 1024) }), 'NAME_TOO_LONG');
    await resultCode('the name ".."', create({ name: '..' }), 'INVALID_ARGUMENT');
    await resultCode('a name with a slash', create({ name: 'a/b' }), 'INVALID_ARGUMENT');
    await resultCode('an empty name', create({ name: '' }), 'INVALID_ARGUMENT');
    await resultCode(
      'a command without an operation',
      { propose: { timeMs: 0 } } as MetaRequest,
      'INVALID_ARGUMENT',
    );
    await resultCode(
      'too many member addresses',
      {
        propose: {
          timeMs: 0,
          setMemberAddresses: {
            peerId: attacker.peerId.toString(),
            addresses: Array(1000).fill('/ip4/1.2.3.4'),
          },
        },
      } as MetaRequest,
      'INVALID_ARGUMENT',
    );
    await resultCode(
      'a revocation of an unknown join token',
      { propose: { timeMs: 0, revokeJoinToken: { id: newId() } } } as MetaRequest,
      'NOT_FOUND',
    );

    // Reads with odd arguments.
    assert.ok((await ask({ read: { lookup: { parent: root, name: 'n'.repeat(4 * 1024 * 1024) } } })).none);
    assert.ok((await ask({ read: { lookup: { parent: new Uint8Array(0), name: '' } } })).none);
    assert.ok((await ask({ read: { inode: new Uint8Array(0) } })).none);
    assert.ok((await ask({ read: { inode: new Uint8Array(1024 * 1024) } })).none);
    const page = await ask({ read: { readdir: { parent: root, after: '', limit: 2 ** 32 - 1 } } });
    assert.ok(page.entries !== undefined && page.entries.entries.length > 0, 'readdir with limit 2^32-1');
    const after = await ask({
      read: { readdir: { parent: root, after: '\uffff'.repeat(100_000), limit: 1 } },
    });
    assert.deepEqual(after.entries?.entries ?? [], []);
    assert.deepEqual(
      (await ask({ read: { readdir: { parent: newId(), after: '', limit: 0 } } })).entries?.entries ?? [],
      [],
    );
    assert.deepEqual((await ask({ read: { locations: new Uint8Array(3) } })).locations?.entries ?? [], []);

    // Whole requests that make no sense.
    await assert.rejects(ask({}), { code: 'INVALID_ARGUMENT', message: /empty metadata request/ });
    await assert.rejects(ask({ read: {} }), { code: 'INVALID_ARGUMENT', message: /unknown metadata read/ });
    const commands = Array.from({ length: 5000 }, () => create({ name: `b-${Math.random()}` }).propose!);
    await assert.rejects(ask({ proposeBatch: { commands } }), {
      code: 'INVALID_ARGUMENT',
      message: /at most 4096 commands per batch/,
    });
    assert.deepEqual((await ask({ proposeBatch: { commands: [] } })).results?.results ?? [], []);
    const mixed = await ask({
      proposeBatch: {
        commands: [
          create({ parent: new Uint8Array(1) }).propose!,
          create({ name: 'batch-ok' }).propose!,
          { timeMs: 0 },
        ],
      },
    });
    assert.deepEqual(
      mixed.results?.results.map((result) => result.code),
      ['INVALID_ARGUMENT', 'OK', 'INVALID_ARGUMENT'],
    );

    // Unknown fields: skipped by the decoder, so the request is empty (a clear error, no crash).
    const raw = (bytes: Uint8Array) =>
      attack(attacker, cell.peer, metaMethod.protocol, requestEnvelope(bytes), { answerMs: 10_000 });
    const unknownOnly = await raw(Uint8Array.from([0xf8, 0x06, 0x01])); // field 111, varint 1
    assert.equal(unknownOnly.kind, 'INVALID_ARGUMENT', unknownOnly.message);
    const unknownInCommand = await raw(
      Uint8Array.from([0x0a, 0x05, 0xa8, 0x1f, 0x01, 0x08, 0x00]), // propose {field 501: 1, time_ms: 0}
    );
    assert.ok(['INVALID_ARGUMENT', 'closed'].includes(unknownInCommand.kind), unknownInCommand.kind);
    // The cell cannot be initialized twice.
    const again = await ask({
      propose: {
        timeMs: 0,
        initCell: { cell: 'again', rootId: newId(), uid: 0, gid: 0, mode: 0o777, lostFoundId: newId() },
      },
    } as MetaRequest);
    assert.equal(again.result?.code, 'ALREADY_EXISTS');
    assert.deepEqual((await ask({ read: { root: {} } })).root, root);

    // A notification (request id 0) on the metadata session is dropped; the session goes on.
    assert.equal(session.notify({ read: { root: {} } }), true);
    // Many calls at once on one session (above the server's in-flight limit): all answered.
    const many = await Promise.all(Array.from({ length: 1500 }, () => ask({ read: { root: {} } })));
    assert.ok(many.every((response) => response.root !== undefined));
    await assertServing('after bad metadata requests');
  });

  await t.test('meta: a create with an unknown node type is refused', { timeout: 30_000 }, async () => {
    const session = await openSession(attacker, cell.peer, metaMethod, { openTimeoutMs: 5_000 });
    t.after(() => session.close());
    const root = (await session.call({ read: { root: {} } })).root!;
    const id = new Uint8Array(16).fill(0x11); // no byte of it looks like the enum's tag
    const request = metaMethod.requestCodec.encode({
      propose: {
        timeMs: 0,
        create: {
          parent: root,
          name: 'unknown-type',
          id,
          type: 'DIRECTORY',
          mode: 0o755,
          uid: 0,
          gid: 0,
          rdev: 0,
          symlinkTarget: new Uint8Array(0),
        },
      },
    } as MetaRequest);
    const patched = Buffer.from(request);
    const at = patched.indexOf(Buffer.from([0x20, 0x02])); // CreateNode.type (field 4) = DIRECTORY
    assert.ok(at >= 0);
    patched[at + 1] = 99;
    const outcome = await attack(attacker, cell.peer, metaMethod.protocol, requestEnvelope(patched), {
      close: false,
      answerMs: 5_000,
    });
    assert.ok(ACCEPTABLE.has(outcome.kind), outcome.kind);
    const inode = (await session.call({ read: { inode: id } })).inode;
    assert.equal(inode, undefined, `an inode of type ${inode?.type} was created`);
  });

  await t.test('storage: semantically bad requests get clear errors', { timeout: 60_000 }, async () => {
    const peer = cell.peer;
    const unary = async <Q, R>(method: Method<Q, R>, request: Q) =>
      call(attacker, peer, method, request, { timeoutMs: 10_000 });
    const write = async (
      request: Parameters<typeof storageWrite.requestCodec.encode>[0],
      body: Uint8Array[],
    ) => {
      const running = await callStream(attacker, peer, storageWrite, request, {
        upload: body,
        openTimeoutMs: 10_000,
      });
      return running.response();
    };
    const read = async (request: Parameters<typeof storageRead.requestCodec.encode>[0]) => {
      const running = await callStream(attacker, peer, storageRead, request, { openTimeoutMs: 10_000 });
      const parts: Uint8Array[] = [];
      for await (const part of running.data) parts.push(part);
      return { bytes: Buffer.concat(parts), response: await running.response() };
    };
    const rejects = async (label: string, promise: Promise<unknown>, code: string | string[]) =>
      assert.rejects(promise, (error: Error & { code?: string }) => {
        const codes = typeof code === 'string' ? [code] : code;
        assert.ok(codes.includes(error.code ?? ''), `${label}: ${error.code} ${error.message}`);
        assert.doesNotMatch(error.message, /internal error/, label);
        return true;
      });
    const unknownBackend = newId();
    const body = randomBytes(1000);
    const hash = createHash('sha256').update(body).digest();
    const id = newId();

    // head
    await rejects(
      'head: 15-byte backend',
      unary(storageHead, { backend: new Uint8Array(15), id }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'head: no backend',
      unary(storageHead, { backend: new Uint8Array(0), id }),
      'INVALID_ARGUMENT',
    );
    await rejects('head: unknown backend', unary(storageHead, { backend: unknownBackend, id }), 'NOT_FOUND');
    await rejects(
      'head: 0-byte id',
      unary(storageHead, { backend, id: new Uint8Array(0) }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'head: 1 MiB id',
      unary(storageHead, { backend, id: new Uint8Array(1 << 20) }),
      'INVALID_ARGUMENT',
    );
    await rejects('head: absent object', unary(storageHead, { backend, id }), 'NOT_FOUND');

    // fetch: bad fields are clear errors; an unknown source fails without storing anything
    const fetch = { backend, id, size: body.byteLength, contentHash: hash, sourceBackend: unknownBackend };
    await rejects(
      'fetch: 15-byte backend',
      unary(storageFetch, { ...fetch, backend: new Uint8Array(15) }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'fetch: no source',
      unary(storageFetch, { ...fetch, sourceBackend: new Uint8Array(0) }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'fetch: 31-byte hash',
      unary(storageFetch, { ...fetch, contentHash: new Uint8Array(31) }),
      'INVALID_ARGUMENT',
    );
    await rejects('fetch: size -1', unary(storageFetch, { ...fetch, size: -1 }), 'INVALID_ARGUMENT');
    await rejects(
      'fetch: from itself',
      unary(storageFetch, { ...fetch, sourceBackend: backend }),
      'INVALID_ARGUMENT',
    );
    await rejects('fetch: unknown source', unary(storageFetch, fetch), [
      'NOT_FOUND',
      'UNAVAILABLE',
      'IO_ERROR',
    ]);
    await rejects('fetch: nothing stored', unary(storageHead, { backend, id }), 'NOT_FOUND');

    // meta, list, verify: bad fields are clear errors
    const metaHeader = { ...emptyHeader(), id: newId(), mainType: 'META' as const, subType: 'FILE' as const };
    await rejects(
      'meta: a DATA header',
      unary(storageMeta, {
        backend,
        objects: [{ header: { ...metaHeader, mainType: 'DATA' }, body: new Uint8Array(0) }],
      }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'meta: 15-byte id',
      unary(storageMeta, {
        backend,
        objects: [{ header: { ...metaHeader, id: new Uint8Array(15) }, body: new Uint8Array(0) }],
      }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'meta: body over 64 KiB',
      unary(storageMeta, { backend, objects: [{ header: metaHeader, body: new Uint8Array(65 * 1024) }] }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'meta: unknown backend',
      unary(storageMeta, { backend: unknownBackend, objects: [] }),
      'NOT_FOUND',
    );
    await rejects(
      'list: 3-byte after',
      unary(storageList, { backend, after: new Uint8Array(3), limit: 1, metaOnly: false }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'verify: 2,000 ids',
      unary(storageVerify, { backend, ids: Array.from({ length: 2000 }, () => newId()), bytesPerSecond: 0 }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'verify: 0-byte id',
      unary(storageVerify, { backend, ids: [new Uint8Array(0)], bytesPerSecond: 0 }),
      'INVALID_ARGUMENT',
    );
    const verified = await unary(storageVerify, { backend, ids: [newId()], bytesPerSecond: 0 });
    assert.equal((verified as { results: Array<{ errorCode: string }> }).results[0]!.errorCode, 'NOT_FOUND');

    // write
    const good = { backend, id, size: body.byteLength, contentHash: hash, mtimeMs: 0 };
    await rejects('write: unknown backend', write({ ...good, backend: unknownBackend }, [body]), 'NOT_FOUND');
    await rejects(
      'write: 17-byte id',
      write({ ...good, id: new Uint8Array(17) }, [body]),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'write: 31-byte hash',
      write({ ...good, contentHash: new Uint8Array(31) }, [body]),
      'INVALID_ARGUMENT',
    );
    await rejects('write: size -1', write({ ...good, size: -1 }, [body]), 'INVALID_ARGUMENT');
    await rejects('write: mtime -5', write({ ...good, mtimeMs: -5 }, [body]), 'INVALID_ARGUMENT');
    await rejects(
      'write: fewer bytes than announced',
      write({ ...good, size: 2000 }, [body]),
      'SIZE_MISMATCH',
    );
    await rejects('write: more bytes than announced', write({ ...good, size: 10 }, [body]), 'SIZE_MISMATCH');
    await rejects('write: size 2^53 - 1', write({ ...good, size: 2 ** 53 - 1 }, [body]), [
      'BACKEND_FULL',
      'SIZE_MISMATCH',
    ]);
    // The largest mtime a header holds (a number above 2^53 is refused like -5 above).
    const late = newId();
    const lateWrite = await write({ ...good, id: late, mtimeMs: 2 ** 53 - 1 }, [body]);
    assert.equal(lateWrite.mtimeMs, 2 ** 53 - 1);
    assert.equal((await unary(storageHead, { backend, id: late })).mtimeMs, 2 ** 53 - 1);
    await rejects(
      'write: wrong hash',
      write({ ...good, contentHash: new Uint8Array(32) }, [body]),
      'HASH_MISMATCH',
    );
    await rejects('write: absent after the failures', unary(storageHead, { backend, id }), 'NOT_FOUND');
    assert.equal((await write(good, [body])).size, body.byteLength);
    assert.equal((await unary(storageHead, { backend, id })).size, body.byteLength);

    // read
    const whole = await read({ backend, id, offset: 0, length: 2 ** 53 - 1 });
    assert.deepEqual(whole.bytes, body);
    assert.deepEqual(whole.response, { bytesSent: body.byteLength, objectSize: body.byteLength });
    assert.equal((await read({ backend, id, offset: body.byteLength, length: 10 })).bytes.byteLength, 0);
    assert.equal((await read({ backend, id, offset: 10, length: 0 })).bytes.byteLength, 0);
    await rejects(
      'read: offset beyond the end',
      read({ backend, id, offset: body.byteLength + 1, length: 1 }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'read: offset 2^53 - 1',
      read({ backend, id, offset: 2 ** 53 - 1, length: 1 }),
      'INVALID_ARGUMENT',
    );
    await rejects('read: offset -1', read({ backend, id, offset: -1, length: 1 }), 'INVALID_ARGUMENT');
    await rejects('read: length -1', read({ backend, id, offset: 0, length: -1 }), 'INVALID_ARGUMENT');
    await rejects(
      'read: unknown backend',
      read({ backend: unknownBackend, id, offset: 0, length: 1 }),
      'NOT_FOUND',
    );
    await rejects('read: absent object', read({ backend, id: newId(), offset: 0, length: 1 }), 'NOT_FOUND');
    await rejects(
      'read: 3-byte id',
      read({ backend, id: new Uint8Array(3), offset: 0, length: 1 }),
      'INVALID_ARGUMENT',
    );

    // delete and space
    await rejects(
      'delete: 70000 ids',
      unary(storageDelete, { ids: Array.from({ length: 70_000 }, () => new Uint8Array(16)), backend }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'delete: a 15-byte id',
      unary(storageDelete, { ids: [new Uint8Array(15)], backend }),
      'INVALID_ARGUMENT',
    );
    await rejects(
      'delete: unknown backend',
      unary(storageDelete, { ids: [id], backend: unknownBackend }),
      'NOT_FOUND',
    );
    await rejects(
      'delete: 5-byte backend',
      unary(storageDelete, { ids: [id], backend: new Uint8Array(5) }),
      'INVALID_ARGUMENT',
    );
    assert.equal((await unary(storageDelete, { ids: [], backend: new Uint8Array(0) })).removed, 0);
    assert.equal((await unary(storageDelete, { ids: [newId()], backend: new Uint8Array(0) })).removed, 0);
    const space = await unary(storageSpace, { countObjects: true });
    assert.equal(space.backends.length, 1);
    assert.ok(space.backends[0]!.objectsCounted && space.backends[0]!.objects >= 1);
    assert.equal((await unary(storageDelete, { ids: [id], backend })).removed, 1);
    await rejects('head: deleted object', unary(storageHead, { backend, id }), 'NOT_FOUND');
    await assertServing('after bad storage requests');
  });

  const warnings = new Map<string, number>();
  for (const entry of log.entries) warnings.set(entry.msg, (warnings.get(entry.msg) ?? 0) + 1);
  t.diagnostic(`daemon log: ${[...warnings].map(([msg, count]) => `${count}x ${msg}`).join('; ')}`);
  t.diagnostic(
    `${cases} raw fuzz cases; outcomes: ${[...histogram].map(([kind, count]) => `${kind} ${count}`).join(', ')}`,
  );
  assert.ok(cases >= 400, `${cases} cases`);
  assert.deepEqual(uncaught, []);
});
