/**
 * Admission to a cell, against a running daemon (in this process): a peer that is not a member is
 * refused on every zhsm protocol with PERMISSION_DENIED; joining with a wrong secret, an unknown
 * token id, a malformed, expired or revoked token is refused with a clear error and the peer
 * stays a non-member; a valid token admits it and it is served at once. The CLI path too:
 * `zhsm-node join` with a bad token fails with a clear message, `zhsm-node token create` talks to
 * the running daemon and prints a token that works. Every connection is Noise-encrypted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import fc from 'fast-check';
import { CellClient } from '../../node/client/cell-client.ts';
import { paths } from '../../node/daemon/config.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import {
  cellInfoMethod,
  formatJoinToken,
  joinMethod,
  metaMethod,
  parseJoinToken,
} from '../../node/daemon/protocols.ts';
import { encodeFrame } from '../../node/net/frames.ts';
import type { Host } from '../../node/net/host.ts';
import { call } from '../../node/net/rpc.ts';
import { openSession } from '../../node/net/session.ts';
import { StorageClient } from '../../node/storage/client.ts';
import {
  admitHost,
  attack,
  envelopeCodec,
  hostOf,
  type InProcessCell,
  JOIN_PROTOCOL,
  joinNode,
  LOOPBACK,
  rawHost,
  startCell,
} from './_inprocess.ts';

const root = join(import.meta.dirname, '..', '..');
const zhsmNodeBin = join(root, 'bin', 'zhsm-node');
const caller = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
/** The protocols every controller + storage server serves besides join (more may be added). */
const EXPECTED_PROTOCOLS = [
  '/zhsm/admin/1.0.0',
  '/zhsm/cell-info/1.0.0',
  '/zhsm/meta/1.0.0',
  '/zhsm/raft/1.0.0',
  '/zhsm/storage/write/1.0.0',
  '/zhsm/storage/read/1.0.0',
  '/zhsm/storage/delete/1.0.0',
  '/zhsm/storage/space/1.0.0',
  '/zhsm/storage/head/1.0.0',
  '/zhsm/storage/fetch/1.0.0',
  '/zhsm/storage/meta/1.0.0',
  '/zhsm/storage/list/1.0.0',
  '/zhsm/storage/verify/1.0.0',
];
/** zhsm protocols on raw streams (no frames, so no error trailer): a non-member is reset. */
const UNFRAMED_PROTOCOLS = new Set(['/zhsm/probe/1.0.0']);

/** A request frame as any framed zhsm protocol expects first (its body is irrelevant here). */
const requestFrame = () =>
  encodeFrame(envelopeCodec.encode({ requestId: 1, request: new Uint8Array(0) })).subarray();

function zhsmProtocols(node: ZhsmNode): string[] {
  return node.host.libp2p
    .getProtocols()
    .filter((protocol) => protocol.startsWith('/zhsm/') && protocol !== JOIN_PROTOCOL)
    .sort();
}

/** Every connection between `host` and the node is encrypted with Noise (and muxed with yamux). */
function assertNoise(host: Host, node: ZhsmNode): void {
  const connections = host.libp2p.getConnections(node.host.peerId);
  assert.ok(connections.length > 0, 'there is a connection to check');
  for (const connection of connections) {
    assert.equal(connection.encryption, '/noise', `connection ${connection.id} is Noise-encrypted`);
    assert.equal(connection.multiplexer, '/yamux/1.0.0');
  }
  for (const connection of node.host.libp2p.getConnections(host.peerId))
    assert.equal(connection.encryption, '/noise', 'the daemon side agrees');
}

/** The peer is refused on every zhsm protocol of the node (except join). */
async function assertRefusedEverywhere(peer: Host, cell: InProcessCell, label: string): Promise<void> {
  const node = cell.first;
  for (const protocol of zhsmProtocols(node)) {
    const before = node.host.counters.refusedStreams;
    const outcome = await attack(peer, cell.peer, protocol, requestFrame());
    if (UNFRAMED_PROTOCOLS.has(protocol)) {
      assert.ok(['reset', 'closed'].includes(outcome.kind), `${label}: ${protocol} gave ${outcome.kind}`);
    } else {
      assert.equal(outcome.kind, 'PERMISSION_DENIED', `${label}: ${protocol} gave ${outcome.kind}`);
      assert.match(outcome.message ?? '', /not a member/);
    }
    assert.ok(node.host.counters.refusedStreams > before, `${label}: ${protocol} refusal counted`);
  }
}

/** The peer is served on every zhsm protocol of the node (an answer that is not a refusal). */
async function assertServedEverywhere(peer: Host, cell: InProcessCell, label: string): Promise<void> {
  for (const protocol of zhsmProtocols(cell.first)) {
    if (UNFRAMED_PROTOCOLS.has(protocol)) continue;
    const outcome = await attack(peer, cell.peer, protocol, requestFrame());
    assert.notEqual(outcome.kind, 'PERMISSION_DENIED', `${label}: ${protocol} still refuses`);
    assert.ok(
      ['response', 'INVALID_ARGUMENT', 'NOT_FOUND'].includes(outcome.kind),
      `${label}: ${protocol} gave ${outcome.kind} ${outcome.message ?? ''}`,
    );
  }
}

async function isMember(cell: InProcessCell, peerId: string): Promise<boolean> {
  const members = await cell.first.remote.members();
  return members.some((member) => member.peerId === peerId);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

test('a non-member is refused on every zhsm protocol, with PERMISSION_DENIED, over Noise', {
  timeout: 60_000,
}, async (t) => {
  const cell = await startCell(t);
  const protocols = zhsmProtocols(cell.first);
  for (const expected of EXPECTED_PROTOCOLS) assert.ok(protocols.includes(expected), `${expected} served`);

  const outsider = await rawHost(t);
  await assertRefusedEverywhere(outsider, cell, 'outsider');
  assertNoise(outsider, cell.first);

  // The same refusals through the typed clients: each fails with a PermissionDeniedError.
  await assert.rejects(call(outsider, cell.peer, cellInfoMethod, {}), { code: 'PERMISSION_DENIED' });
  const meta = await openSession(outsider, cell.peer, metaMethod);
  await assert.rejects(meta.call({ read: { root: {} } }, { timeoutMs: 10_000 }), {
    code: 'PERMISSION_DENIED',
  });
  assert.equal((meta.closedReason as { code?: string } | undefined)?.code, 'PERMISSION_DENIED');
  const storage = new StorageClient(outsider);
  await assert.rejects(storage.space(cell.first.peerId), { code: 'PERMISSION_DENIED' });
  await assert.rejects(storage.head(cell.first.peerId, new Uint8Array(16), new Uint8Array(16)), {
    code: 'PERMISSION_DENIED',
  });
  await assert.rejects(storage.read(cell.first.peerId, new Uint8Array(16), new Uint8Array(16), 0, 10), {
    code: 'PERMISSION_DENIED',
  });
  await assert.rejects(
    storage.write(
      cell.first.peerId,
      new Uint8Array(16),
      new Uint8Array(16),
      new Uint8Array(3),
      3,
      new Uint8Array(32),
    ),
    { code: 'PERMISSION_DENIED' },
  );
  // Garbage on the join protocol (the one open to non-members): typed errors, no admission.
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        fc.uint8Array({ maxLength: 200 }).map((bytes) => encodeFrame(bytes).subarray()),
        fc
          .uint8Array({ maxLength: 200 })
          .map((body) => encodeFrame(envelopeCodec.encode({ requestId: 1, request: body })).subarray()),
      ),
      async (bytes) => {
        const outcome = await attack(outsider, cell.peer, JOIN_PROTOCOL, bytes);
        assert.ok(
          ['DECODE_ERROR', 'FRAME_TOO_LARGE', 'PERMISSION_DENIED', 'UNAVAILABLE', 'reset'].includes(
            outcome.kind,
          ),
          `${outcome.kind} ${outcome.message ?? ''}`,
        );
      },
    ),
    { seed: 0xad17, numRuns: 40 },
  );

  // Still not a member, and still refused after all that.
  assert.equal(await isMember(cell, outsider.peerId.toString()), false);
  assert.equal(cell.first.directory.isMember(outsider.peerId.toString()), false);
  await assertRefusedEverywhere(outsider, cell, 'outsider again');

  // A flood of join attempts is cut off with UNAVAILABLE (at most 20 answered per second)...
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  const valid = parseJoinToken(cell.token);
  const flood = await Promise.all(
    Array.from({ length: 40 }, () =>
      call(outsider, cell.peer, joinMethod, {
        tokenId: valid.id,
        secret: new Uint8Array(randomBytes(32)),
        controller: false,
        addresses: [],
      }).then(
        () => 'admitted',
        (error: Error & { code?: string }) => error.code ?? error.message,
      ),
    ),
  );
  assert.ok(!flood.includes('admitted'));
  assert.ok(
    flood.every((code) => code === 'PERMISSION_DENIED' || code === 'UNAVAILABLE'),
    flood.join(),
  );
  assert.ok(flood.filter((code) => code === 'UNAVAILABLE').length >= 20, flood.join());
  // ...and a second later a valid token admits the peer, which is then served everywhere.
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  await call(outsider, cell.peer, joinMethod, {
    tokenId: valid.id,
    secret: valid.secret,
    controller: false,
    addresses: [],
  });
  assert.equal(await isMember(cell, outsider.peerId.toString()), true);
  await assertServedEverywhere(outsider, cell, 'admitted outsider');
  assert.equal((await call(outsider, cell.peer, cellInfoMethod, {})).role, 'leader');
  assertNoise(outsider, cell.first);
});

test('join tokens: bad ones are refused and the peer stays a non-member; a valid one admits it', {
  timeout: 90_000,
}, async (t) => {
  const cell = await startCell(t);
  const joinerData = join(cell.base, 'joiner');
  const joinWith = (token: string) =>
    ZhsmNode.join({
      peer: cell.peer,
      token,
      data: joinerData,
      listen: [LOOPBACK],
    });
  const valid = parseJoinToken(cell.token);
  const revoked = await cell.first.createJoinToken(60_000);
  await cell.first.revokeJoinToken(revoked.token);
  const expiring = await cell.first.createJoinToken(300);

  /** Refused with `code` and a message matching `message`; nothing of a node is left behind. */
  const refused = async (label: string, token: string, code: string, message: RegExp) => {
    await assert.rejects(joinWith(token), (error: Error & { code?: string }) => {
      assert.equal(error.code, code, `${label}: ${error.message}`);
      assert.match(error.message, message, label);
      return true;
    });
    assert.equal(await exists(paths(joinerData).config), false, `${label}: no node.json written`);
  };

  await refused(
    'wrong secret',
    formatJoinToken({ id: valid.id, secret: new Uint8Array(randomBytes(32)) }),
    'PERMISSION_DENIED',
    /join refused: wrong join token secret/,
  );
  await refused(
    'unknown token id',
    formatJoinToken({ id: new Uint8Array(randomBytes(16)), secret: valid.secret }),
    'PERMISSION_DENIED',
    /join refused: unknown join token/,
  );
  for (const malformed of [
    'zhsm1.nothex',
    `zhsm2.${'0'.repeat(32)}.${'0'.repeat(64)}`,
    `zhsm1.${'0'.repeat(31)}.${'0'.repeat(64)}`,
    `${cell.token}00`,
    '',
  ]) {
    await refused(
      `malformed ${JSON.stringify(malformed)}`,
      malformed,
      'INVALID_ARGUMENT',
      /malformed join token/,
    );
  }
  await refused('revoked', revoked.token, 'PERMISSION_DENIED', /join refused: join token revoked/);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiring.expiresMs - Date.now() + 100)));
  await refused('expired', expiring.token, 'PERMISSION_DENIED', /join refused: join token expired/);

  // A malformed token on the wire (the CLI never sends one): refused before any proposal.
  const joinerHost = await hostOf(t, joinerData);
  for (const [tokenId, secret] of [
    [new Uint8Array(3), valid.secret],
    [valid.id, new Uint8Array(0)],
    [new Uint8Array(0), new Uint8Array(0)],
    [new Uint8Array(17), new Uint8Array(33)],
  ] as const) {
    await assert.rejects(
      call(joinerHost, cell.peer, joinMethod, { tokenId, secret, controller: true, addresses: [] }),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, 'PERMISSION_DENIED');
        assert.match(error.message, /malformed join token/);
        return true;
      },
    );
  }

  // After all those attempts the peer is no member and is refused everywhere.
  const joinerPeerId = joinerHost.peerId.toString();
  assert.equal(await isMember(cell, joinerPeerId), false);
  assert.equal(cell.first.directory.isMember(joinerPeerId), false);
  await assertRefusedEverywhere(joinerHost, cell, 'refused joiner');
  assertNoise(joinerHost, cell.first);
  await joinerHost.stop(); // the node below has the same identity

  // A valid token admits the same peer; it is served at once, on every protocol.
  const fresh = await cell.first.createJoinToken(60_000);
  const joined = await joinWith(fresh.token);
  assert.equal(joined.peerId, joinerPeerId, 'the identity of the refused attempts');
  assert.equal(joined.member.controllerId, 0);
  assert.equal(await isMember(cell, joinerPeerId), true);
  assert.equal(cell.first.directory.isMember(joinerPeerId), true);
  const member = await hostOf(t, joinerData);
  await assertServedEverywhere(member, cell, 'admitted joiner');
  const info = await call(member, cell.peer, cellInfoMethod, {});
  assert.equal(info.cell, 'inproc');
  assert.ok(info.members.some((m) => m.peerId === joinerPeerId));
  assertNoise(member, cell.first);
  // Another node of the cell (a storage server it never contacted) serves it at once too.
  const server = await joinNode(t, cell, 'server', { backend: true });
  const serverAddress = server.host
    .multiaddrs()
    .map(String)
    .find((address) => address.includes('127.0.0.1'))!;
  const late = await cell.first.createJoinToken(60_000);
  const lateHost = await rawHost(t);
  await admitHost(lateHost, cell, late.token);
  assert.equal(server.directory.isMember(lateHost.peerId.toString()), false, 'not known to the server yet');
  assert.equal((await new StorageClient(lateHost).space(serverAddress)).length, 1);
  assert.equal((await call(lateHost, serverAddress, cellInfoMethod, {})).peerId, server.peerId);
  await lateHost.stop();
  await member.stop();

  // The admitted node runs and uses the cell (metadata through the primary, data to storage).
  const node = await ZhsmNode.start(joinerData, { tickMs: 50 });
  t.after(() => node.stop());
  const fs = new CellClient(node.remote);
  await fs.mkdir('/joined', 0o755, caller);
  const handle = await fs.create('/joined/f', 0o644, caller, { mode: 'write', exclusive: true });
  await handle.write(0, new Uint8Array(100_000).fill(7));
  await handle.close();
  assert.equal((await fs.readdir('/joined')).length, 1);
  assertNoise(node.host, cell.first);

  // A used token is not consumed (it admits until it expires or is revoked), a revoked one is not.
  await cell.first.revokeJoinToken(fresh.token);
  const otherData = join(cell.base, 'other');
  await assert.rejects(
    ZhsmNode.join({
      peer: cell.peer,
      token: fresh.token,
      data: otherData,
      listen: [LOOPBACK],
    }),
    { code: 'PERMISSION_DENIED', message: /revoked/ },
  );
});

// ---- the command line ---------------------------------------------------------------------------

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(zhsmNodeBin, args, { timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function cliJoin(cell: InProcessCell, token: string, data: string): Promise<CliResult> {
  return runCli(['join', cell.peer, '--token', token, '--data', data, '--listen', LOOPBACK, '--json']);
}

test('CLI: join with a bad token fails clearly; token create/revoke talk to the running daemon', {
  timeout: 120_000,
}, async (t: TestContext) => {
  const cell = await startCell(t, { backend: false });
  const daemonData = cell.first.data;

  const malformed = await cliJoin(cell, 'zhsm1.bad', join(cell.base, 'bad1'));
  assert.notEqual(malformed.code, 0);
  assert.equal(malformed.code, 2, 'a malformed token is a usage error');
  assert.match(malformed.stderr, /^zhsm-node: malformed join token: expected zhsm1\.<32 hex>\.<64 hex>/m);
  assert.match(malformed.stderr, /\[INVALID_ARGUMENT\]/);
  assert.doesNotMatch(malformed.stderr, /\n\s+at /, 'no stack trace');
  assert.equal(malformed.stdout, '');

  const valid = parseJoinToken(cell.token);
  const wrongSecret = formatJoinToken({ id: valid.id, secret: new Uint8Array(randomBytes(32)) });
  const refusedData = join(cell.base, 'bad2');
  const refused = await cliJoin(cell, wrongSecret, refusedData);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^zhsm-node: join refused: wrong join token secret \[PERMISSION_DENIED\]$/m);
  assert.doesNotMatch(refused.stderr, /\n\s+at /, 'no stack trace');
  assert.equal(await exists(paths(refusedData).config), false);

  // token create against the running (in-process) daemon, through DIR/admin.sock.
  const created = await runCli(['token', 'create', '--data', daemonData, '--ttl', '10m']);
  assert.equal(created.code, 0, created.stderr);
  const token = created.stdout.trim();
  assert.match(token, /^zhsm1\.[0-9a-f]{32}\.[0-9a-f]{64}$/);
  const createdJson = await runCli(['token', 'create', '--data', daemonData, '--json']);
  assert.equal(createdJson.code, 0, createdJson.stderr);
  const parsed = JSON.parse(createdJson.stdout) as { token: string; expires: string };
  assert.match(parsed.token, /^zhsm1\./);
  assert.ok(Date.parse(parsed.expires) > Date.now() + 23 * 3_600_000, 'default lifetime 24h');

  // The printed token works: the peer that was refused joins with it.
  const joined = await cliJoin(cell, token, refusedData);
  assert.equal(joined.code, 0, joined.stderr);
  const result = JSON.parse(joined.stdout) as { cell: string; peerId: string; controllerId: number };
  assert.equal(result.cell, 'inproc');
  assert.equal(await isMember(cell, result.peerId), true);

  // Revoked through the CLI: refused.
  const revoked = await runCli(['token', 'revoke', parsed.token, '--data', daemonData]);
  assert.equal(revoked.code, 0, revoked.stderr);
  const afterRevoke = await cliJoin(cell, parsed.token, join(cell.base, 'bad3'));
  assert.equal(afterRevoke.code, 1);
  assert.match(afterRevoke.stderr, /join refused: join token revoked \[PERMISSION_DENIED\]/);

  // No daemon behind a data directory: a clear error.
  const noDaemon = await runCli(['token', 'create', '--data', join(cell.base, 'nothing-here')]);
  assert.notEqual(noDaemon.code, 0);
  assert.match(noDaemon.stderr, /no running zhsm node for .* \[UNAVAILABLE\]/);
});
