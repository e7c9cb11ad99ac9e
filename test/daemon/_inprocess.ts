/**
 * In-process cells for the daemon tests: every node is a `ZhsmNode` in the test process (no child
 * processes), on loopback, stopped when the test ends. Also raw libp2p hosts (members or not) and a
 * helper that sends raw bytes on a zhsm protocol and reports how the daemon answered.
 */
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey, Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { createLogger, type Logger } from '../../node/common/log.ts';
import { paths } from '../../node/daemon/config.ts';
import { type StartOptions, ZhsmNode } from '../../node/daemon/node.ts';
import { joinMethod, parseJoinToken } from '../../node/daemon/protocols.ts';
import { readFrames } from '../../node/net/frames.ts';
import { createHost, type Host } from '../../node/net/host.ts';
import { loadOrCreateIdentity } from '../../node/net/identity.ts';
import { call } from '../../node/net/rpc.ts';
import { codec } from '../../proto/index.ts';
import { tempDirectory } from '../helpers.ts';

export const LOOPBACK = '/ip4/127.0.0.1/tcp/0';
export const JOIN_PROTOCOL = joinMethod.protocol;

export interface InProcessCell {
  readonly base: string;
  readonly first: ZhsmNode;
  /** A loopback multiaddr of the first node, ending in /p2p/<peer id>. */
  readonly peer: string;
  /** The join token `init` printed. */
  readonly token: string;
}

const nodesOf = new WeakMap<TestContext, ZhsmNode[]>();

/**
 * Stop a node when the test ends, the last started first: the first node (the primary) goes last,
 * so the others' orderly shutdown (a storage server deregisters) does not wait for a primary.
 */
function stopAfter(t: TestContext, node: ZhsmNode): ZhsmNode {
  nodesStoppedAfter(t).push(node);
  return node;
}

/**
 * The nodes stopped when `t` ends. Called before the test's temporary directory is made: hooks
 * run in the order they were added, and the nodes must stop before their directory is removed
 * (a node still running would make object directories in it again).
 */
function nodesStoppedAfter(t: TestContext): ZhsmNode[] {
  let nodes = nodesOf.get(t);
  if (nodes === undefined) {
    const list: ZhsmNode[] = [];
    nodes = list;
    nodesOf.set(t, list);
    t.after(async () => {
      for (const started of list.reverse()) await started.stop();
    });
  }
  return nodes;
}

/** A logger that keeps its entries (level 30 info, 40 warn, 50 error) for the test to inspect. */
export function captureLogger(level = 'warn'): { logger: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const logger = createLogger({
    component: 'test',
    level,
    destination: {
      write(line: string) {
        entries.push(JSON.parse(line) as LogEntry);
      },
    },
  });
  return { logger, entries };
}

export interface LogEntry {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A one-controller cell (with one backend unless `backend: false`), running in this process. */
export async function startCell(
  t: TestContext,
  options: { backend?: boolean; logger?: Logger; start?: StartOptions } = {},
): Promise<InProcessCell> {
  nodesStoppedAfter(t);
  const base = tempDirectory(t, 'zhsm-inproc-');
  const data = join(base, 'c1');
  const init = await ZhsmNode.init({
    data,
    cell: 'inproc',
    listen: [LOOPBACK],
    backends: options.backend === false ? [] : [join(base, 'c1-backend')],
  });
  const first = stopAfter(
    t,
    await ZhsmNode.start(data, {
      tickMs: 50,
      ...options.start,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    }),
  );
  const peer = first.host
    .multiaddrs()
    .map(String)
    .find((address) => address.includes('127.0.0.1'));
  if (peer === undefined) throw new Error('the first node has no loopback address');
  return { base, first, peer, token: init.token };
}

/** Join a new node (data directory `name` under the cell's base) and start it. */
export async function joinNode(
  t: TestContext,
  cell: InProcessCell,
  name: string,
  options: { token?: string; controller?: boolean; backend?: boolean; start?: StartOptions } = {},
): Promise<ZhsmNode> {
  const data = join(cell.base, name);
  await ZhsmNode.join({
    peer: cell.peer,
    token: options.token ?? cell.token,
    data,
    listen: [LOOPBACK],
    controller: options.controller === true,
    backends: options.backend === true ? [join(cell.base, `${name}-backend`)] : [],
  });
  return stopAfter(t, await ZhsmNode.start(data, { tickMs: 50, ...options.start }));
}

/** Start a node again from its data directory (after `stop`); stopped when the test ends. */
export async function restartNode(t: TestContext, data: string, start: StartOptions = {}): Promise<ZhsmNode> {
  return stopAfter(t, await ZhsmNode.start(data, { tickMs: 50, ...start }));
}

/** A bare libp2p host with a fresh key that serves nothing and trusts nobody. */
export async function rawHost(t: TestContext, privateKey?: PrivateKey): Promise<Host> {
  const host = await createHost({
    privateKey: privateKey ?? (await generateKeyPair('Ed25519')),
    listen: [LOOPBACK],
    isMember: () => false,
    relayServer: false,
  });
  t.after(() => host.stop());
  return host;
}

/** A raw host with the identity of data directory `data` (e.g. of a refused join). */
export async function hostOf(t: TestContext, data: string): Promise<Host> {
  const identity = await loadOrCreateIdentity(paths(data).base);
  return rawHost(t, identity.privateKey);
}

/** Make a raw host a member of the cell with the join protocol (as `zhsm-node join` does). */
export async function admitHost(host: Host, cell: InProcessCell, token = cell.token): Promise<void> {
  const parts = parseJoinToken(token);
  await call(
    host,
    cell.peer,
    joinMethod,
    { tokenId: parts.id, secret: parts.secret, controller: false, addresses: [] },
    { timeoutMs: 10_000 },
  );
}

export const envelopeCodec = codec<{
  requestId?: number;
  request?: Uint8Array;
  response?: Uint8Array;
  error?: { code: string; message: string };
  data?: Uint8Array;
  end?: Record<string, never>;
}>('zhsm.net.Envelope');

export interface Outcome {
  /**
   * The daemon's first frame: an error trailer's code, 'response' / 'data' for a successful
   * answer, 'undecodable' for a frame that is not an Envelope; or how the stream ended without a
   * frame: 'closed' (cleanly), 'reset'; or 'pending' (no answer within `answerMs`).
   */
  readonly kind: string;
  readonly message?: string;
}

/**
 * Open `protocol` on `target` (a multiaddr ending in /p2p/<peer id>) from `client`, send `bytes` (in one or several writes), then close
 * the write side (or reset the stream with `reset: true`, or leave it open with `close: false`),
 * and report the first frame the daemon sends back within `answerMs`.
 */
export async function attack(
  client: Host,
  target: string,
  protocol: string,
  bytes: Uint8Array | readonly Uint8Array[],
  options: { close?: boolean; reset?: boolean; answerMs?: number } = {},
): Promise<Outcome> {
  const stream: Stream = await client.libp2p.dialProtocol(multiaddr(target), protocol, {
    signal: AbortSignal.timeout(10_000),
  });
  const pieces = bytes instanceof Uint8Array ? [bytes] : bytes;
  const answerMs = options.answerMs ?? 10_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    stream.abort(new Error('test: no answer in time'));
  }, answerMs);
  try {
    for (const piece of pieces) if (piece.byteLength > 0) stream.send(piece);
    if (options.reset === true) {
      // Let the bytes go out, then reset: the daemon sees a stream that dies mid-way.
      await new Promise((resolve) => setTimeout(resolve, 5));
      stream.abort(new Error('test: reset mid-frame'));
      return { kind: 'reset' };
    }
    if (options.close !== false) await stream.close({ signal: AbortSignal.timeout(answerMs) });
    const frames = readFrames(stream, { frameBytesMax: 16 * 1024 * 1024 });
    const first = await frames.next();
    if (first.done === true) return { kind: 'closed' };
    try {
      const envelope = envelopeCodec.decode(first.value);
      if (envelope.error !== undefined) return { kind: envelope.error.code, message: envelope.error.message };
      if (envelope.response !== undefined) return { kind: 'response' };
      if (envelope.data !== undefined) return { kind: 'data' };
      return { kind: 'undecodable' };
    } catch {
      return { kind: 'undecodable' };
    }
  } catch {
    return { kind: timedOut ? 'pending' : 'reset' };
  } finally {
    clearTimeout(timer);
    stream.abort(new Error('test: done'));
  }
}
