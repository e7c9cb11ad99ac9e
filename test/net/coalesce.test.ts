import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import type { MultiaddrConnection } from '@libp2p/interface';
import { coalesceWrites } from '../../node/net/coalesce.ts';

/** A connected socket pair on loopback; both ends closed after the test. */
async function socketPair(t: TestContext): Promise<{ client: Socket; server: Socket }> {
  const listener = createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const address = listener.address();
  assert.ok(address !== null && typeof address === 'object');
  const accepted = once(listener, 'connection');
  const client = connect(address.port, '127.0.0.1');
  client.setNoDelay(true);
  await once(client, 'connect');
  const [server] = (await accepted) as [Socket];
  t.after(() => {
    client.destroy();
    server.destroy();
    listener.close();
  });
  return { client, server };
}

/** What @libp2p/tcp's connection does: one socket.write per buffer of a send. */
function tcpLikeConnection(socket: Socket) {
  return {
    socket,
    sendData(data: Uint8Array[]) {
      let canSendMore = true;
      for (const buffer of data) canSendMore = socket.write(buffer);
      return { sentBytes: data.reduce((sum, buffer) => sum + buffer.length, 0), canSendMore };
    },
  };
}

/** Count the socket's calls into its transport (Writable's _write / _writev). */
function countWrites(socket: Socket) {
  const counts = { write: 0, writev: 0, chunks: 0 };
  const target = socket as unknown as {
    _write: (...args: unknown[]) => void;
    _writev: (chunks: unknown[], ...rest: unknown[]) => void;
  };
  const write = target._write;
  const writev = target._writev;
  target._write = (...args) => {
    counts.write += 1;
    counts.chunks += 1;
    write.apply(socket, args);
  };
  target._writev = (chunks, ...rest) => {
    counts.writev += 1;
    counts.chunks += chunks.length;
    writev.apply(socket, [chunks, ...rest]);
  };
  return counts;
}

async function receive(socket: Socket, bytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let received = 0;
  while (received < bytes) {
    const [part] = (await once(socket, 'data')) as [Buffer];
    parts.push(part);
    received += part.length;
  }
  return Buffer.concat(parts);
}

describe('coalesced socket writes', () => {
  it("sends a tick's buffers in one write, in order", async (t) => {
    const { client, server } = await socketPair(t);
    const connection = tcpLikeConnection(client);
    coalesceWrites(connection as unknown as MultiaddrConnection);
    const counts = countWrites(client);
    const sends = [
      [Buffer.from([0, 3]), Buffer.from('abc')],
      [Buffer.from([0, 5]), Buffer.from('defgh')],
    ];
    const results = sends.map((data) => connection.sendData(data));
    assert.equal(client.writableCorked, 1, 'corked until the next tick');
    assert.deepEqual(
      results.map((result) => result.sentBytes),
      [5, 7],
    );
    const arrived = receive(server, 12);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(client.writableCorked, 0);
    assert.deepEqual(counts, { write: 0, writev: 1, chunks: 4 });
    assert.equal((await arrived).toString('latin1'), '\u0000\u0003abc\u0000\u0005defgh');

    // The next tick's sends are a burst of their own.
    connection.sendData([Buffer.from('ij'), Buffer.from('kl')]);
    const more = receive(server, 4);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(counts, { write: 0, writev: 2, chunks: 6 });
    assert.equal((await more).toString(), 'ijkl');
  });

  it('keeps back-pressure: a full buffer still says so, and drain follows', async (t) => {
    const { client, server } = await socketPair(t);
    const connection = tcpLikeConnection(client);
    coalesceWrites(connection as unknown as MultiaddrConnection);
    const big = Buffer.alloc(client.writableHighWaterMark + 1, 7);
    const result = connection.sendData([big]);
    assert.equal(result.canSendMore, false);
    const drained = once(client, 'drain');
    const arrived = receive(server, big.length);
    await drained;
    assert.equal((await arrived).length, big.length);
  });

  it('leaves connections that are not sockets alone', () => {
    const sendData = () => ({ sentBytes: 0, canSendMore: true });
    const relayed = { socket: undefined, sendData };
    coalesceWrites(relayed as unknown as MultiaddrConnection);
    assert.equal(relayed.sendData, sendData);
  });
});
