/**
 * The consensus transport between controller replicas over libp2p: protocol `/zhsm/raft/1.0.0`,
 * served as a session (node/net/session.ts) whose frames are one-way notifications. Each frame's
 * request is a `zhsm.raft.RaftBatch` (proto/raft.proto): consensus messages in send order, each
 * encoded with consensus/codec.ts `encodeMessage`.
 *
 * Sending, per destination controller:
 * - a bounded queue (`queueMessagesMax` / `queueBytesMax`): above either limit the oldest
 *   messages are dropped (Raft tolerates loss; the newest message is always kept, so one large
 *   InstallSnapshot still goes out);
 * - a sender that opens a session lazily: it resolves the controller id to its peer id and
 *   addresses (the cell's directory, which may change: a changed peer id closes the session),
 *   adds the addresses to the libp2p peer store and dials by peer id;
 * - each frame takes whatever is queued, up to `batchBytesMax` (a larger message goes alone);
 * - on a failure (cannot open, session closed) everything queued is dropped (stale by the time
 *   the peer is back; Raft sends fresh messages), and the next attempt waits a capped exponential
 *   backoff (`backoffMinMs` .. `backoffMaxMs`; the backoff restarts after a session that lived
 *   longer than `backoffMaxMs`). Nothing is retried in a tight loop and no queue is unbounded.
 *
 * Receiving: each message is decoded (undecodable ones are dropped with a warning); a message is
 * delivered only if it is addressed to this controller and its `from` resolves to the peer id the
 * session comes from: a member cannot speak for another controller (dropped and counted).
 * Membership of the sending peer is checked by the session layer like every zhsm protocol.
 *
 * Limits: a frame (so one message, e.g. an InstallSnapshot carrying the whole metadata snapshot)
 * is at most `raftFrameBytesMax` = 256 MiB; a larger snapshot cannot be sent (it is dropped and
 * logged, the follower stays behind). Snapshots are sent, encoded and decoded as one piece (a few
 * copies of the snapshot in memory, each some tens of ms for the largest); chunked snapshot
 * transfer is future work.
 */

import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { decodeMessage, encodeMessage } from '../../consensus/codec.ts';
import type { Message, NodeId } from '../../consensus/types.ts';
import { type Codec, codec } from '../../proto/index.ts';
import { ClosedError, InvalidArgumentError } from '../common/errors.ts';
import { Fifo } from '../common/fifo.ts';
import type { Logger } from '../common/log.ts';
import type { Host } from '../net/host.ts';
import { type CallContext, defineMethod } from '../net/rpc.ts';
import { openSession, type Session, serveSession } from '../net/session.ts';
import type { ReplicaTransport } from './replica.ts';

/** The largest raft frame (one RaftBatch). */
export const raftFrameBytesMax = 256 * 1024 * 1024;
/** Envelope and RaftBatch framing around one message, at most. */
const batchOverheadBytesMax = 64;
/** The largest single consensus message that can be sent. */
export const raftMessageBytesMax = raftFrameBytesMax - batchOverheadBytesMax;
export const queueMessagesMaxDefault = 4096;
export const queueBytesMaxDefault = 64 * 1024 * 1024;
export const batchBytesMaxDefault = 1024 * 1024;
export const backoffMinMsDefault = 50;
export const backoffMaxMsDefault = 1_000;
/** Opening a session to another controller must complete within this time. */
export const openTimeoutMs = 5_000;
/** Repeated warnings of one kind are logged at most this often. */
const warningIntervalMs = 5_000;

/** Frames carry encoded RaftBatch bytes: the transport encodes and decodes them itself. */
const bytesCodec: Codec<Uint8Array> = {
  typeName: 'bytes',
  encode: (bytes) => bytes,
  decode: (bytes) => bytes,
};

interface RaftBatch {
  messages: Uint8Array[];
}
const raftBatchCodec = codec<RaftBatch>('zhsm.raft.RaftBatch');

/** `/zhsm/raft/1.0.0`: one-way notifications, each an encoded RaftBatch. */
export const raftMethod = defineMethod<Uint8Array, Uint8Array>({
  name: 'raft',
  requestCodec: bytesCodec,
  responseCodec: bytesCodec,
  frameBytesMax: raftFrameBytesMax,
});

/** Encode a RaftBatch (for tests and tools that speak the protocol directly). */
export function encodeRaftBatch(messages: readonly Uint8Array[]): Uint8Array {
  return raftBatchCodec.encode({ messages: [...messages] });
}

export interface ControllerPeer {
  readonly peerId: string;
  /** Multiaddrs to dial (with or without the trailing `/p2p/<peer id>`). */
  readonly addresses: readonly string[];
}

export interface NetReplicaTransportOptions {
  readonly host: Host;
  readonly selfId: NodeId;
  /** The cell's directory of controllers; consulted on every send attempt and every message. */
  readonly resolve: (controllerId: NodeId) => ControllerPeer | undefined;
  readonly logger?: Logger;
  readonly queueMessagesMax?: number;
  readonly queueBytesMax?: number;
  readonly batchBytesMax?: number;
  readonly backoffMinMs?: number;
  readonly backoffMaxMs?: number;
}

export interface NetReplicaTransportStats {
  /** Messages / frames handed to a session. */
  sentMessages: number;
  sentBatches: number;
  /** Dropped because a destination's queue was over its limit (oldest first). */
  droppedQueueFull: number;
  /** Dropped because the session could not be opened or failed. */
  droppedSendFailure: number;
  /** Dropped because the destination controller is not in the directory. */
  droppedUnresolved: number;
  /** Dropped because it could not be encoded or is larger than raftMessageBytesMax. */
  droppedUnsendable: number;
  sessionsOpened: number;
  sessionFailures: number;
  /** Messages delivered to the replica / frames received. */
  receivedMessages: number;
  receivedBatches: number;
  /** Received messages whose `from` is not the sending peer's controller. */
  droppedImpersonation: number;
  /** Received frames or messages that did not decode. */
  droppedUndecodable: number;
  /** Received messages addressed to another controller. */
  droppedMisaddressed: number;
  /** Received before the replica listened. */
  droppedNoReceiver: number;
}

export interface NetReplicaTransport extends ReplicaTransport {
  stats(): NetReplicaTransportStats;
  /** Stop serving and sending; open sessions are closed. */
  close(): Promise<void>;
}

/** Addresses for the peer store: valid multiaddrs without this peer's own trailing `/p2p/<id>`. */
function dialAddresses(peer: ControllerPeer, log: Logger) {
  const addresses = [];
  for (const address of peer.addresses) {
    try {
      let parsed = multiaddr(address);
      const components = parsed.getComponents();
      const last = components[components.length - 1];
      if (last?.name === 'p2p') {
        if (last.value !== peer.peerId) {
          log.warn({ address, peerId: peer.peerId }, 'controller address names another peer; skipped');
          continue;
        }
        parsed = multiaddr(components.slice(0, -1));
      }
      addresses.push(parsed);
    } catch (error) {
      log.warn({ address, err: error }, 'invalid controller address; skipped');
    }
  }
  return addresses;
}

/** Warnings that may repeat at the rate of incoming traffic: at most one per kind and interval. */
class Warnings {
  readonly #log: Logger;
  readonly #last = new Map<string, { at: number; suppressed: number }>();
  constructor(log: Logger) {
    this.#log = log;
  }
  warn(kind: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    const last = this.#last.get(kind);
    if (last !== undefined && now - last.at < warningIntervalMs) {
      last.suppressed += 1;
      return;
    }
    this.#last.set(kind, { at: now, suppressed: 0 });
    const suppressed = last?.suppressed ?? 0;
    this.#log.warn(suppressed > 0 ? { ...fields, suppressed } : fields, message);
  }
}

interface Shared {
  readonly host: Host;
  readonly resolve: (controllerId: NodeId) => ControllerPeer | undefined;
  readonly log: Logger;
  readonly warnings: Warnings;
  readonly stats: NetReplicaTransportStats;
  readonly queueMessagesMax: number;
  readonly queueBytesMax: number;
  readonly batchBytesMax: number;
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  readonly closing: AbortSignal;
}

/** The queue and sender of one destination controller. */
class Destination {
  readonly #id: NodeId;
  readonly #shared: Shared;
  readonly #queue = new Fifo<Uint8Array>();
  #queuedBytes = 0;
  #session: Session<Uint8Array, Uint8Array> | undefined;
  #sessionPeer = '';
  #sessionOpenedAt = 0;
  #backoffMs: number;
  #retryAt = 0;
  #wake: (() => void) | undefined;
  #running: Promise<void> | undefined;

  constructor(id: NodeId, shared: Shared) {
    this.#id = id;
    this.#shared = shared;
    this.#backoffMs = shared.backoffMinMs;
  }

  get #length(): number {
    return this.#queue.length;
  }

  enqueue(bytes: Uint8Array): void {
    const { stats, queueMessagesMax, queueBytesMax } = this.#shared;
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.byteLength;
    while (this.#length > 1 && (this.#length > queueMessagesMax || this.#queuedBytes > queueBytesMax)) {
      this.#take();
      stats.droppedQueueFull += 1;
    }
    this.#notify();
    this.#running ??= this.#run().finally(() => {
      this.#running = undefined;
    });
  }

  async close(): Promise<void> {
    const session = this.#session;
    this.#session = undefined;
    const closed = session?.close(); // also ends a wait for room in the session's send queue
    this.#notify();
    await this.#running;
    await closed;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #take(): Uint8Array {
    const bytes = this.#queue.shift()!;
    this.#queuedBytes -= bytes.byteLength;
    return bytes;
  }

  #dropAll(): number {
    const dropped = this.#length;
    this.#queue.clear();
    this.#queuedBytes = 0;
    return dropped;
  }

  /** Wait for `ms` or until woken (a new message, the session closing, the transport closing). */
  #sleep(ms?: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(() => this.#notify(), ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async #run(): Promise<void> {
    const shared = this.#shared;
    while (!shared.closing.aborted && this.#length > 0) {
      const peer = shared.resolve(this.#id);
      if (peer === undefined) {
        shared.stats.droppedUnresolved += this.#dropAll();
        shared.warnings.warn(
          `unresolved ${this.#id}`,
          { controller: this.#id },
          'no address for controller; messages dropped',
        );
        break;
      }
      let session = this.#session;
      if (session !== undefined && (session.closed || this.#sessionPeer !== peer.peerId)) {
        if (!session.closed)
          void session.close(); // the directory moved the controller
        else this.#failed(session.closedReason);
        this.#session = undefined;
        session = undefined;
        continue;
      }
      if (session === undefined) {
        const waitMs = this.#retryAt - Date.now();
        if (waitMs > 0) {
          await this.#sleep(waitMs);
          continue;
        }
        try {
          session = await this.#open(peer);
        } catch (error) {
          this.#failed(error);
          continue;
        }
      }
      await session.whenWritable();
      if (session.closed || shared.closing.aborted) continue;
      const messages = [this.#take()];
      let batchBytes = messages[0]!.byteLength;
      while (this.#length > 0) {
        const next = this.#queue.peek()!;
        if (batchBytes + next.byteLength > shared.batchBytesMax) break;
        messages.push(this.#take());
        batchBytes += next.byteLength;
      }
      let sent = false;
      try {
        sent = session.notify(raftBatchCodec.encode({ messages }));
      } catch (error) {
        shared.log.error({ controller: this.#id, err: error }, 'cannot send a raft batch');
      }
      if (sent) {
        shared.stats.sentBatches += 1;
        shared.stats.sentMessages += messages.length;
      } else {
        shared.stats.droppedSendFailure += messages.length;
      }
      // Let the replica's ready loop and the session's writer run between batches.
      if (this.#length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  async #open(peer: ControllerPeer): Promise<Session<Uint8Array, Uint8Array>> {
    const { host, log, stats, closing } = this.#shared;
    const peerId = peerIdFromString(peer.peerId);
    const addresses = dialAddresses(peer, log);
    if (addresses.length > 0) await host.libp2p.peerStore.merge(peerId, { multiaddrs: addresses });
    const session = await openSession(host, peerId, raftMethod, { openTimeoutMs, signal: closing });
    if (closing.aborted) {
      await session.close();
      throw new ClosedError('the transport is closed');
    }
    this.#session = session;
    this.#sessionPeer = peer.peerId;
    this.#sessionOpenedAt = Date.now();
    stats.sessionsOpened += 1;
    session.onClose(() => this.#notify());
    log.debug({ controller: this.#id, peer: peer.peerId }, 'raft session opened');
    return session;
  }

  /** A session could not be opened or died: drop what is queued, back off. */
  #failed(error: unknown): void {
    const { stats, backoffMinMs, backoffMaxMs, warnings, closing } = this.#shared;
    if (closing.aborted) return;
    stats.sessionFailures += 1;
    stats.droppedSendFailure += this.#dropAll();
    const now = Date.now();
    if (this.#sessionOpenedAt !== 0 && now - this.#sessionOpenedAt >= backoffMaxMs)
      this.#backoffMs = backoffMinMs;
    this.#sessionOpenedAt = 0;
    this.#retryAt = now + this.#backoffMs;
    warnings.warn(
      `failed ${this.#id}`,
      { controller: this.#id, retryInMs: this.#backoffMs, err: error },
      'raft session to controller failed',
    );
    this.#backoffMs = Math.min(this.#backoffMs * 2, backoffMaxMs);
  }
}

/** Start serving `/zhsm/raft/1.0.0` on `host` and return the transport of controller `selfId`. */
export async function createNetReplicaTransport(
  options: NetReplicaTransportOptions,
): Promise<NetReplicaTransport> {
  const { host, selfId, resolve } = options;
  const log = (options.logger ?? host.log).child({ module: 'raft-transport', controller: selfId });
  const stats: NetReplicaTransportStats = {
    sentMessages: 0,
    sentBatches: 0,
    droppedQueueFull: 0,
    droppedSendFailure: 0,
    droppedUnresolved: 0,
    droppedUnsendable: 0,
    sessionsOpened: 0,
    sessionFailures: 0,
    receivedMessages: 0,
    receivedBatches: 0,
    droppedImpersonation: 0,
    droppedUndecodable: 0,
    droppedMisaddressed: 0,
    droppedNoReceiver: 0,
  };
  const closing = new AbortController();
  const warnings = new Warnings(log);
  const shared: Shared = {
    host,
    resolve,
    log,
    warnings,
    stats,
    queueMessagesMax: Math.max(1, options.queueMessagesMax ?? queueMessagesMaxDefault),
    queueBytesMax: options.queueBytesMax ?? queueBytesMaxDefault,
    batchBytesMax: options.batchBytesMax ?? batchBytesMaxDefault,
    backoffMinMs: options.backoffMinMs ?? backoffMinMsDefault,
    backoffMaxMs: options.backoffMaxMs ?? backoffMaxMsDefault,
    closing: closing.signal,
  };
  const destinations = new Map<NodeId, Destination>();
  let receiver: ((message: Message) => void) | undefined;

  const deliver = (message: Message) => {
    if (receiver === undefined) {
      stats.droppedNoReceiver += 1;
      return;
    }
    stats.receivedMessages += 1;
    receiver(message);
  };

  const receive = (batchBytes: Uint8Array, context: CallContext) => {
    if (closing.signal.aborted) return;
    stats.receivedBatches += 1;
    let batch: RaftBatch;
    try {
      batch = raftBatchCodec.decode(batchBytes);
    } catch (error) {
      stats.droppedUndecodable += 1;
      warnings.warn(
        'undecodable batch',
        { peer: context.peerId, err: error },
        'undecodable raft batch dropped',
      );
      return;
    }
    for (const bytes of batch.messages) {
      let message: Message;
      try {
        message = decodeMessage(bytes);
      } catch (error) {
        stats.droppedUndecodable += 1;
        warnings.warn(
          'undecodable message',
          { peer: context.peerId, err: error },
          'undecodable raft message dropped',
        );
        continue;
      }
      if (message.to !== selfId) {
        stats.droppedMisaddressed += 1;
        warnings.warn(
          'misaddressed',
          { peer: context.peerId, to: message.to },
          'raft message for another controller dropped',
        );
        continue;
      }
      if (resolve(message.from)?.peerId !== context.peerId) {
        stats.droppedImpersonation += 1;
        warnings.warn(
          `impersonation ${context.peerId}`,
          { peer: context.peerId, from: message.from },
          'raft message claiming to come from another controller dropped',
        );
        continue;
      }
      deliver(message);
    }
  };

  const service = await serveSession(host, {
    ...raftMethod,
    handler: async () => {
      throw new InvalidArgumentError('the raft protocol takes one-way notifications only');
    },
    onNotify: receive,
  });

  return {
    send(message: Message): void {
      if (closing.signal.aborted) return;
      if (message.to === selfId) {
        setImmediate(() => deliver(message));
        return;
      }
      let bytes: Uint8Array;
      try {
        bytes = encodeMessage(message);
      } catch (error) {
        stats.droppedUnsendable += 1;
        log.error({ err: error, type: message.type, to: message.to }, 'cannot encode a raft message');
        return;
      }
      if (bytes.byteLength > raftMessageBytesMax) {
        stats.droppedUnsendable += 1;
        log.error(
          { type: message.type, to: message.to, bytes: bytes.byteLength, max: raftMessageBytesMax },
          'raft message larger than the frame limit dropped (chunked snapshots are not implemented)',
        );
        return;
      }
      let destination = destinations.get(message.to);
      if (destination === undefined) {
        destination = new Destination(message.to, shared);
        destinations.set(message.to, destination);
      }
      destination.enqueue(bytes);
    },
    listen(receive: (message: Message) => void): void {
      receiver = receive;
    },
    stats: () => ({ ...stats }),
    async close(): Promise<void> {
      if (closing.signal.aborted) return;
      closing.abort();
      await service
        .stop()
        .catch((error: unknown) => log.warn({ err: error }, 'cannot stop the raft service'));
      await Promise.all([...destinations.values()].map((destination) => destination.close()));
      destinations.clear();
    },
  };
}
