/**
 * Circuit relay v2 for members only: A reaches C only through B (C has no address of its own,
 * only a reservation on B). Members' relayed connections carry large transfers; a non-member
 * gets no reservation and cannot relay through B.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { call, callStream, serve, serveStream } from '../../node/net/rpc.ts';
import { cell, echo, mebibyte, newKey, patternChunks, sha256Hex, startHost, transfer } from './_helpers.ts';

const transferBytes = 64 * mebibyte;

async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

test('relay: members transfer 64 MiB through a relay; non-members get nothing', {
  timeout: 90_000,
}, async (t) => {
  const [a, b, c, stranger] = await Promise.all([newKey(), newKey(), newKey(), newKey()]);
  const members = cell(a, b, c);
  const relay = await startHost(t, b, members.isMember);
  const relayAddress = relay.multiaddrs()[0]!;
  // C listens nowhere but on the relay: the only way to reach it is through B.
  const target = await startHost(t, c, members.isMember, { listen: [] });
  await target.listenViaRelay(relayAddress);
  await waitFor(
    () => target.multiaddrs().some((address) => address.toString().includes('/p2p-circuit')),
    'C to announce its relayed address',
  );
  assert.ok(target.multiaddrs().every((address) => address.toString().includes('/p2p-circuit')));
  const client = await startHost(t, a, members.isMember);
  await serve(target, { ...echo, handler: async (request) => ({ code: 'ok', message: request.message }) });
  await serveStream(target, {
    ...transfer,
    async *handler(request, context) {
      if (request.code === 'download') {
        yield* patternChunks(Number(request.message), mebibyte);
        return { code: 'ok', message: '' };
      }
      const hash = createHash('sha256');
      for await (const chunk of context.data) hash.update(chunk);
      return { code: 'ok', message: hash.digest('hex') };
    },
  });

  const circuit = `${relayAddress.toString()}/p2p-circuit/p2p/${c.peerId}`;
  assert.equal((await call(client, circuit, echo, { code: 'x', message: 'via B' })).message, 'via B');
  const connections = client.libp2p.getConnections(target.peerId);
  assert.equal(connections.length, 1);
  assert.ok(connections[0]!.remoteAddr.toString().includes('/p2p-circuit'), 'the connection to C is relayed');
  assert.equal(connections[0]!.limits, undefined, 'a member relayed connection has no limits');

  const expected = sha256Hex(patternChunks(transferBytes, mebibyte));
  const started = performance.now();
  const download = await callStream(client, circuit, transfer, {
    code: 'download',
    message: String(transferBytes),
  });
  const hash = createHash('sha256');
  let received = 0;
  for await (const chunk of download.data) {
    hash.update(chunk);
    received += chunk.byteLength;
  }
  await download.response();
  assert.equal(received, transferBytes);
  assert.equal(hash.digest('hex'), expected);
  t.diagnostic(`64 MiB relayed download: ${(64 / ((performance.now() - started) / 1000)).toFixed(0)} MiB/s`);
  const upload = await callStream(
    client,
    circuit,
    transfer,
    { code: 'upload', message: '' },
    {
      upload: patternChunks(transferBytes, mebibyte),
    },
  );
  assert.equal((await upload.response()).message, expected);

  // A non-member: B refuses its reservation and refuses to relay it to C.
  const outsider = await startHost(t, stranger, () => true);
  const refusedBefore = relay.counters.refusedRelays;
  await assert.rejects(outsider.listenViaRelay(relayAddress));
  assert.ok(relay.counters.refusedRelays > refusedBefore, 'the reservation was refused by B');
  assert.equal(relay.libp2p.getConnections().length >= 2, true);
  await assert.rejects(
    call(outsider, circuit, echo, { code: 'x', message: 'sneak' }, { timeoutMs: 10_000 }),
    {
      code: 'IO_ERROR',
    },
  );
  assert.ok(relay.counters.refusedRelays >= refusedBefore + 2, 'the relayed connection was refused by B');
  // The members' path still works.
  assert.equal((await call(client, circuit, echo, { code: 'x', message: 'still' })).message, 'still');
});
