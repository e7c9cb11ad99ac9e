/**
 * Multiplexed sessions: many concurrent request/response calls, and one-way notifications, on ONE
 * long-lived libp2p stream per session (rpc.ts opens one stream per call, which caps a peer at a
 * few hundred calls per second; metadata traffic and consensus need more, and a steady channel).
 *
 * A session speaks a method's protocol `/zhsm/<name>/1.0.0` with the same length-prefixed
 * `zhsm.net.Envelope` frames as rpc.ts (proto/net.proto), both directions at once:
 *   client -> server: {request_id > 0, request}   a call
 *                     {request_id = 0, request}   a notification (no answer, ever)
 *   server -> client: {request_id, response | error}   answers, in any order
 *                     {request_id = 0, error}           the session is refused or broken; then the
 *                                                       server resets the stream
 * The client chooses request ids (unique among its calls in flight). A call that timed out on the
 * client is not cancelled on the server (the Envelope has no cancel frame): its late answer is
 * dropped. The session ends when either side closes or resets the stream; nothing reconnects
 * behind the caller's back: a closed session stays closed and callers open a new one.
 *
 * Writes are queued and coalesced: frames queued while the event loop is busy go out together in
 * one `send()` (one muxer frame, one Noise message) of up to `writeBatchBytesMax`, through
 * `writeFrame()`, which waits out the stream's backpressure. Each side's send queue is bounded
 * (`sendQueueBytesMax`): `notify()` returns false above it, `call()` waits for room.
 *
 * The server checks membership once per session, exactly as rpc.ts does per stream (isMember,
 * then the host's confirmMember; a refused peer gets PERMISSION_DENIED and a reset). It runs up to
 * `inFlightMax` calls at once per session; above that it stops reading, so the stream's flow
 * control holds the client back. A frame the server cannot parse (oversize, malformed, not a
 * request) gets an error frame and a reset, never a crash; a request body its codec cannot decode
 * fails only that call (DECODE_ERROR). Handler errors travel like in rpc.ts: a ZhsmError by its
 * code, anything else as IO_ERROR "internal error" (and is logged).
 *
 * Idle sessions: the stream's own inactivity timeout is disabled (`inactivityTimeout = 0`; the
 * libp2p version in use does not enforce one on streams at all). A dead peer is detected by the
 * connection monitor's pings (every 10 s, see host.ts), which close the connection and with it
 * the session.
 */
import { type Connection, isPeerId, type PeerId, type Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { Uint8ArrayList } from 'uint8arraylist';
import {
  ClosedError,
  DecodeError,
  FrameTooLargeError,
  IoError,
  TimeoutError,
  ZhsmError,
} from '../common/errors.ts';
import { Fifo } from '../common/fifo.ts';
import { encodeFrame, encodeVarint, type FrameSink, readFrameLists, writeFrame } from './frames.ts';
import type { Host } from './host.ts';
import {
  admitPeer,
  awaitPeerClose,
  bodyName,
  type CallContext,
  callController,
  callTimeoutMsDefault,
  decodeEnvelope,
  type Envelope,
  envelopeCodec,
  errorToRemote,
  lingerMsMax,
  type Method,
  type PeerTarget,
  peerLabel,
  type RemoteErrorRecord,
  refuse,
  remoteErrorToError,
  reusableConnection,
  type ServeOptions,
  type Service,
  toDialTarget,
} from './rpc.ts';

/** Calls a server runs at once per session unless the service says otherwise. */
export const sessionInFlightMaxDefault = 1024;
/** Sessions per connection and protocol, each direction. */
export const sessionsPerConnectionMax = 64;
/** Bytes a side lets wait in its send queue (above: notify() refuses, call() waits). */
export const sendQueueBytesMax = 8 * 1024 * 1024;
/** Frames are coalesced into writes of up to this many bytes (a larger frame goes alone). */
export const writeBatchBytesMax = 1024 * 1024;
/** Opening a session (dial + protocol negotiation) must complete within this time by default. */
export const openTimeoutMsDefault = 10_000;
/** Request ids wrap around below this value (the ids of calls in flight are skipped). */
const requestIdLimit = 0x7fffffff;
/** Longest error message put on the wire (a frame may be as small as 1 KiB). */
const errorMessageCharsMax = 512;

export type { Service };

/** A session service. Of the ServeOptions, `requestTimeoutMs` does not apply (sessions may idle). */
export interface SessionService<Request, Response> extends ServeOptions {
  /** Answers a call; runs concurrently with the session's other calls. */
  handler: (request: Request, context: CallContext) => Promise<Response>;
  /**
   * Receives notifications (frames with request id 0); nothing is sent back. Without it,
   * notifications are dropped. An exception is logged and otherwise ignored.
   */
  onNotify?: (request: Request, context: CallContext) => void;
  /** Calls run at once per session (default 1024); above it the server stops reading. */
  inFlightMax?: number;
}

export interface SessionCallOptions {
  /** Default 30 s; the call fails with TimeoutError after it (the server is not told). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface Session<Request, Response> {
  /** The peer id of the server. */
  readonly peer: string;
  /**
   * One call. A remote ZhsmError is rethrown with its class and code; a session that is or
   * becomes closed fails the call with ClosedError (context `retryable: true`: open a new session
   * and retry), or with the typed error the server closed the session with (PERMISSION_DENIED).
   */
  call(request: Request, options?: SessionCallOptions): Promise<Response>;
  /**
   * Send a notification (fire and forget). False when the session is closed or its send queue
   * holds more than `sendQueueBytesMax` bytes (then nothing was queued).
   */
  notify(request: Request): boolean;
  /** Resolves once the send queue has room again (immediately when it has, or when closed). */
  whenWritable(): Promise<void>;
  readonly closed: boolean;
  /** Why the session closed: ClosedError, or the typed error the server ended it with. */
  readonly closedReason: Error | undefined;
  /** Called once when the session closes (at once, asynchronously, if it already has). */
  onClose(listener: (reason: Error) => void): void;
  /** Close: calls in flight fail with ClosedError, queued notifications are flushed first. */
  close(): Promise<void>;
}

export interface OpenSessionOptions {
  readonly signal?: AbortSignal;
  /** Dialing and protocol negotiation must complete within this time; default 10 s. */
  readonly openTimeoutMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Frames

/** An Envelope `{request_id, request | response}` without copying the body (proto3 encoding). */
function bodyEnvelope(requestId: number, field: 'request' | 'response', body: Uint8Array): Uint8ArrayList {
  const header = new Uint8Array(1 + 10 + 1 + 10);
  let length = 0;
  if (requestId !== 0) {
    header[length++] = 0x08; // field 1, varint: request_id
    const id = encodeVarint(requestId);
    header.set(id, length);
    length += id.byteLength;
  }
  header[length++] = field === 'request' ? 0x12 : 0x1a; // field 2 or 3, length-delimited
  const size = encodeVarint(body.byteLength);
  header.set(size, length);
  length += size.byteLength;
  return new Uint8ArrayList(header.subarray(0, length), body);
}

function errorEnvelope(requestId: number, record: RemoteErrorRecord): Uint8Array {
  const message =
    record.message.length > errorMessageCharsMax
      ? `${record.message.slice(0, errorMessageCharsMax)}...`
      : record.message;
  return envelopeCodec.encode({ requestId, error: { code: record.code, message } } satisfies Envelope);
}

/**
 * `writeFrame()` writes one frame and then waits out the stream's backpressure (including the
 * workaround for libp2p's `onDrain()`). To put a whole batch into that one `send()`, the frames
 * queued before the last ride along through this view of the stream.
 */
function sinkWithPrefix(stream: Stream, prefix: Uint8ArrayList): FrameSink {
  return {
    send(frame) {
      if (prefix.byteLength === 0) return stream.send(frame);
      prefix.append(frame);
      return stream.send(prefix);
    },
    onDrain: (options) => stream.onDrain(options),
    addEventListener: (type, listener, options) =>
      stream.addEventListener(type as 'drain', listener as () => void, options),
    removeEventListener: (type, listener) =>
      stream.removeEventListener(type as 'drain', listener as () => void),
    get writeBufferLength() {
      return stream.writeBufferLength;
    },
    get writableNeedsDrain() {
      return stream.writableNeedsDrain;
    },
    get status() {
      return stream.status;
    },
  };
}

/** The send queue of one session side: coalescing, bounded, failing as a whole. */
class FrameWriter {
  /** Payload bytes queued and not yet handed to the stream. */
  queuedBytes = 0;
  readonly #stream: Stream;
  readonly #frameBytesMax: number;
  readonly #onFailure: (error: Error) => void;
  readonly #queue = new Fifo<Uint8Array | Uint8ArrayList>();
  #running = false;
  #failure: Error | undefined;
  #idleWaiters: Array<() => void> = [];
  #spaceWaiters: Array<() => void> = [];

  constructor(stream: Stream, frameBytesMax: number, onFailure: (error: Error) => void) {
    this.#stream = stream;
    this.#frameBytesMax = frameBytesMax;
    this.#onFailure = onFailure;
  }

  get failed(): boolean {
    return this.#failure !== undefined;
  }

  get hasRoom(): boolean {
    return this.queuedBytes <= sendQueueBytesMax;
  }

  /** Queue one frame's payload. Throws FrameTooLargeError, or the writer's failure. */
  enqueue(payload: Uint8Array | Uint8ArrayList): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (payload.byteLength > this.#frameBytesMax) {
      throw new FrameTooLargeError(
        `frame of ${payload.byteLength} bytes exceeds the maximum of ${this.#frameBytesMax}`,
        { frameBytes: payload.byteLength, frameBytesMax: this.#frameBytesMax },
      );
    }
    this.#queue.push(payload);
    this.queuedBytes += payload.byteLength;
    if (!this.#running) {
      this.#running = true;
      // Let everything queued in this turn of the event loop join the first write.
      setImmediate(() => void this.#run());
    }
  }

  /** Resolves when there is room in the queue (or the writer failed). */
  whenRoom(): Promise<void> {
    if (this.hasRoom || this.#failure !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.#spaceWaiters.push(resolve));
  }

  /** Resolves when everything queued was written (or the writer failed), at most after `timeoutMs`. */
  async flushed(timeoutMs: number): Promise<void> {
    if ((!this.#running && this.#queue.length === 0) || this.#failure !== undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.#idleWaiters.push(resolve)),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Drop everything queued; later enqueues throw `error`. */
  fail(error: Error): void {
    if (this.#failure !== undefined) return;
    this.#failure = error;
    this.#queue.clear();
    this.queuedBytes = 0;
    this.#wake();
  }

  #wake(): void {
    if (this.hasRoom || this.#failure !== undefined) {
      const waiters = this.#spaceWaiters;
      this.#spaceWaiters = [];
      for (const resolve of waiters) resolve();
    }
    if ((!this.#running && this.#queue.length === 0) || this.#failure !== undefined) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  async #run(): Promise<void> {
    try {
      while (this.#queue.length > 0 && this.#failure === undefined) {
        const prefix = new Uint8ArrayList();
        let last = this.#take();
        let batchBytes = last.byteLength;
        while (this.#queue.length > 0) {
          const next = this.#queue.peek()!;
          if (batchBytes + next.byteLength > writeBatchBytesMax) break;
          prefix.append(encodeFrame(last, { frameBytesMax: this.#frameBytesMax }));
          last = this.#take();
          batchBytes += last.byteLength;
        }
        await writeFrame(sinkWithPrefix(this.#stream, prefix), last, { frameBytesMax: this.#frameBytesMax });
        if (this.#failure !== undefined) break;
        this.queuedBytes -= batchBytes;
        this.#wake();
      }
    } catch (error) {
      const failure =
        error instanceof ZhsmError
          ? error
          : new ClosedError(`cannot write: ${(error as Error)?.message}`, {}, { cause: error });
      this.fail(failure);
      this.#onFailure(failure);
    } finally {
      this.#running = false;
      this.#wake();
    }
  }

  #take(): Uint8Array | Uint8ArrayList {
    return this.#queue.shift()!;
  }
}

/** Close our side, give the peer `lingerMsMax` to close its side, then reset. */
async function closeStream(stream: Stream): Promise<void> {
  if (stream.status !== 'open') return;
  try {
    await stream.close({ signal: AbortSignal.timeout(lingerMsMax) });
  } catch {
    stream.abort(new ClosedError('could not flush the session stream'));
    return;
  }
  if (stream.status !== 'open') return;
  await awaitPeerClose(stream, 'the peer did not close the session stream');
}

function isFramingError(error: unknown): boolean {
  return error instanceof ZhsmError && (error.code === 'FRAME_TOO_LARGE' || error.code === 'DECODE_ERROR');
}

// ---------------------------------------------------------------------------------------------
// Server

interface ServerSession {
  readonly stream: Stream;
  readonly controller: AbortController;
}

async function runServerSession<Request, Response>(
  host: Host,
  service: Method<Request, Response> & SessionService<Request, Response>,
  stream: Stream,
  connection: Connection,
  live: Set<ServerSession>,
): Promise<void> {
  const peerId = connection.remotePeer.toString();
  const protocol = service.protocol;
  if (!(await admitPeer(host, peerId, service.openToNonMembers === true))) {
    await refuse(host, stream, peerId, protocol);
    return;
  }
  stream.inactivityTimeout = 0; // idle sessions live on; see the header
  const inFlightMax = Math.max(1, service.inFlightMax ?? sessionInFlightMaxDefault);
  const controller = new AbortController();
  const { signal } = controller;
  const session: ServerSession = { stream, controller };
  live.add(session);
  const onClose = () => controller.abort(new ClosedError('the session was closed'));
  stream.addEventListener('close', onClose, { once: true });
  const writer = new FrameWriter(stream, service.frameBytesMax, (error) => {
    controller.abort(error);
    stream.abort(error);
  });
  let inFlight = 0;
  let wakeReader: (() => void) | undefined;
  const wake = () => {
    const resolve = wakeReader;
    wakeReader = undefined;
    resolve?.();
  };
  signal.addEventListener('abort', wake, { once: true });

  const sendError = (requestId: number, error: unknown) => {
    if (signal.aborted) return;
    const { record, expected } = errorToRemote(error);
    if (expected) host.log.debug({ peer: peerId, protocol, code: record.code }, record.message);
    else host.log.error({ peer: peerId, protocol, err: error }, 'session handler failed');
    try {
      writer.enqueue(errorEnvelope(requestId, record));
    } catch {
      // The session is failing; its reset tells the caller.
    }
  };

  const runCall = async (requestId: number, body: Uint8Array) => {
    try {
      const request = service.requestCodec.decode(body);
      const response = await service.handler(request, { peerId, requestId, signal });
      if (signal.aborted) return;
      writer.enqueue(bodyEnvelope(requestId, 'response', service.responseCodec.encode(response)));
    } catch (error) {
      sendError(requestId, error);
    }
  };

  const runNotify = (body: Uint8Array) => {
    if (service.onNotify === undefined) {
      host.log.debug({ peer: peerId, protocol }, 'notification dropped: the service takes none');
      return;
    }
    try {
      service.onNotify(service.requestCodec.decode(body), { peerId, requestId: 0, signal });
    } catch (error) {
      if (error instanceof ZhsmError && error.code === 'DECODE_ERROR')
        host.log.warn({ peer: peerId, protocol, err: error }, 'malformed notification dropped');
      else host.log.error({ peer: peerId, protocol, err: error }, 'notification handler failed');
    }
  };

  const frames = readFrameLists(stream, { frameBytesMax: service.frameBytesMax });
  try {
    for (;;) {
      // Backpressure: stop reading while too many calls run or too many answers wait to be sent.
      while (!signal.aborted && (inFlight >= inFlightMax || !writer.hasRoom)) {
        if (!writer.hasRoom) void writer.whenRoom().then(wake);
        await new Promise<void>((resolve) => {
          wakeReader = resolve;
        });
      }
      if (signal.aborted) break;
      const next = await frames.next();
      if (next.done === true) break;
      const envelope = decodeEnvelope(next.value);
      if (envelope.request === undefined)
        throw new DecodeError(`expected a request, got ${bodyName(envelope)}`);
      const requestId = envelope.requestId ?? 0;
      if (requestId === 0) {
        runNotify(envelope.request);
        continue;
      }
      inFlight += 1;
      void runCall(requestId, envelope.request).finally(() => {
        inFlight -= 1;
        wake();
      });
    }
    // The caller closed its side (or the service stops): answers still running are not wanted.
    if (!signal.aborted) {
      controller.abort(new ClosedError('the caller closed the session'));
      await writer.flushed(lingerMsMax);
      await closeStream(stream);
    }
  } catch (error) {
    const reason = error instanceof Error ? error : new Error(String(error));
    if (isFramingError(error) && !signal.aborted) {
      // The peer broke the protocol: tell it why, then reset (its frames can no longer be trusted).
      host.log.warn({ peer: peerId, protocol, err: error }, 'session protocol error; resetting');
      controller.abort(reason);
      try {
        writer.enqueue(errorEnvelope(0, errorToRemote(error).record));
        await writer.flushed(lingerMsMax);
        await stream.close({ signal: AbortSignal.timeout(lingerMsMax) }); // deliver it before the reset
      } catch {
        // Already failing: the reset below is all there is to say.
      }
    }
    controller.abort(reason);
    stream.abort(reason);
  } finally {
    if (!signal.aborted) controller.abort(new ClosedError('the session ended'));
    writer.fail(new ClosedError('the session ended'));
    stream.removeEventListener('close', onClose);
    live.delete(session);
    await frames.return(undefined).catch(() => {});
  }
}

/**
 * Serve a method as sessions: each inbound stream is a session carrying many calls (see the
 * header). `stop()` stops accepting sessions and resets the open ones.
 */
export async function serveSession<Request, Response>(
  host: Host,
  service: Method<Request, Response> & SessionService<Request, Response>,
): Promise<Service> {
  const protocol = service.protocol;
  const live = new Set<ServerSession>();
  const perConnection = service.streamsPerConnectionMax ?? sessionsPerConnectionMax;
  await host.libp2p.handle(
    protocol,
    (stream, connection) => {
      runServerSession(host, service, stream, connection, live).catch((error: unknown) => {
        host.log.error({ protocol, err: error }, 'session failed');
        stream.abort(error instanceof Error ? error : new Error(String(error)));
      });
    },
    { maxInboundStreams: perConnection, maxOutboundStreams: perConnection },
  );
  return {
    protocol,
    async stop() {
      await host.libp2p.unhandle(protocol);
      const stopped = new ClosedError('the service stopped', { retryable: true });
      for (const session of [...live]) {
        session.controller.abort(stopped);
        session.stream.abort(stopped);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Client

interface PendingCall<Response> {
  readonly resolve: (response: Response) => void;
  readonly reject: (error: Error) => void;
}

class ClientSession<Request, Response> implements Session<Request, Response> {
  readonly peer: string;
  readonly #host: Host;
  readonly #stream: Stream;
  readonly #method: Method<Request, Response>;
  readonly #writer: FrameWriter;
  readonly #pending = new Map<number, PendingCall<Response>>();
  readonly #listeners: Array<(reason: Error) => void> = [];
  #nextRequestId = 1;
  #closedReason: Error | undefined;
  /** The error calls in flight fail with once closed. */
  #callError: Error | undefined;
  #closing: Promise<void> | undefined;
  readonly #closedSignal = Promise.withResolvers<void>();

  constructor(host: Host, stream: Stream, method: Method<Request, Response>, peer: string) {
    this.#host = host;
    this.#stream = stream;
    this.#method = method;
    this.peer = peer;
    stream.inactivityTimeout = 0; // idle sessions live on; see the header
    this.#writer = new FrameWriter(stream, method.frameBytesMax, (error) =>
      this.#shut(this.#closedError('the session stream failed', error)),
    );
    void this.#read();
  }

  get closed(): boolean {
    return this.#closedReason !== undefined;
  }

  get closedReason(): Error | undefined {
    return this.#closedReason;
  }

  onClose(listener: (reason: Error) => void): void {
    const reason = this.#closedReason;
    if (reason !== undefined) queueMicrotask(() => listener(reason));
    else this.#listeners.push(listener);
  }

  whenWritable(): Promise<void> {
    if (this.closed || this.#writer.hasRoom) return Promise.resolve();
    return Promise.race([this.#writer.whenRoom(), this.#closedSignal.promise]);
  }

  notify(request: Request): boolean {
    if (this.closed || this.#closing !== undefined || !this.#writer.hasRoom) return false;
    this.#writer.enqueue(bodyEnvelope(0, 'request', this.#method.requestCodec.encode(request)));
    return true;
  }

  call(request: Request, options: SessionCallOptions = {}): Promise<Response> {
    if (this.#callError !== undefined) return Promise.reject(this.#callError);
    let payload: Uint8ArrayList;
    const requestId = this.#newRequestId();
    try {
      payload = bodyEnvelope(requestId, 'request', this.#method.requestCodec.encode(request));
    } catch (error) {
      return Promise.reject(error);
    }
    const what = `${this.#method.protocol} call to ${this.peer}`;
    const timeoutMs = options.timeoutMs ?? callTimeoutMsDefault;
    const signal = options.signal;
    return new Promise<Response>((resolve, reject) => {
      let settled = false;
      const settle = () => {
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#pending.delete(requestId);
      };
      const onAbort = () => {
        if (settled) return;
        settle();
        reject(signal?.reason instanceof Error ? signal.reason : new ClosedError(`${what} was aborted`));
      };
      const timer = setTimeout(() => {
        if (settled) return;
        settle();
        reject(new TimeoutError(`${what} timed out after ${timeoutMs} ms`, { requestId }));
      }, timeoutMs);
      this.#pending.set(requestId, {
        resolve: (response) => {
          if (settled) return;
          settle();
          resolve(response);
        },
        reject: (error) => {
          if (settled) return;
          settle();
          reject(error);
        },
      });
      if (signal?.aborted === true) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      const send = () => {
        if (settled) return;
        try {
          this.#writer.enqueue(payload);
        } catch (error) {
          this.#pending.get(requestId)?.reject(this.#callError ?? (error as Error));
        }
      };
      if (this.#writer.hasRoom) send();
      else void this.#writer.whenRoom().then(send);
    });
  }

  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    const reason = new ClosedError('the session was closed', { retryable: true });
    this.#closing = (async () => {
      if (this.closed) return;
      this.#shut(reason, reason, { keepQueue: true });
      await this.#writer.flushed(lingerMsMax);
      this.#writer.fail(reason);
      await closeStream(this.#stream);
    })();
    return this.#closing;
  }

  #newRequestId(): number {
    for (;;) {
      const id = this.#nextRequestId;
      this.#nextRequestId = id >= requestIdLimit ? 1 : id + 1;
      if (!this.#pending.has(id)) return id;
    }
  }

  #closedError(what: string, cause?: unknown): ZhsmError {
    if (cause instanceof ZhsmError && cause.code === 'CLOSED' && cause.context.retryable === true)
      return cause;
    const detail = cause === undefined ? '' : `: ${(cause as Error)?.message ?? String(cause)}`;
    return new ClosedError(`${what}${detail}`, { peer: this.peer, retryable: true }, { cause });
  }

  #failCalls(error: Error): void {
    if (this.#callError !== undefined) return;
    this.#callError = error;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const call of pending) call.reject(error);
  }

  /** Mark closed (once), fail the calls, drop the send queue, tell the listeners. */
  #shut(reason: Error, callError: Error = reason, options: { keepQueue?: boolean } = {}): void {
    if (this.#closedReason !== undefined) return;
    this.#closedReason = reason;
    this.#closedSignal.resolve();
    this.#failCalls(callError);
    if (options.keepQueue !== true) this.#writer.fail(callError);
    for (const listener of this.#listeners.splice(0)) {
      try {
        listener(reason);
      } catch (error) {
        this.#host.log.error({ err: error, peer: this.peer }, 'session close listener failed');
      }
    }
  }

  async #read(): Promise<void> {
    const frames = readFrameLists(this.#stream, { frameBytesMax: this.#method.frameBytesMax });
    try {
      for await (const frame of frames) {
        const envelope = decodeEnvelope(frame);
        const requestId = envelope.requestId ?? 0;
        if (requestId === 0) {
          if (envelope.error !== undefined) {
            // The server refused or gave up on the session: its error is what calls fail with.
            const error = remoteErrorToError(envelope.error, this.peer);
            this.#shut(error, error);
            this.#stream.abort(error);
            return;
          }
          throw new DecodeError(`unexpected ${bodyName(envelope)} without a request id`);
        }
        const call = this.#pending.get(requestId);
        if (call === undefined) continue; // timed out or aborted here: the late answer is dropped
        if (envelope.error !== undefined) call.reject(remoteErrorToError(envelope.error, this.peer));
        else if (envelope.response !== undefined) {
          try {
            call.resolve(this.#method.responseCodec.decode(envelope.response));
          } catch (error) {
            call.reject(error as Error);
          }
        } else call.reject(new DecodeError(`expected a response, got ${bodyName(envelope)}`));
      }
      this.#shut(this.#closedError('the peer closed the session'));
      void closeStream(this.#stream);
    } catch (error) {
      if (isFramingError(error) && !this.closed) {
        this.#host.log.warn({ peer: this.peer, err: error }, 'session protocol error from the server');
      }
      this.#shut(this.#closedError('the session stream failed', error));
      this.#stream.abort(error instanceof Error ? error : new Error(String(error)));
    }
  }
}

/**
 * Open a session with `peer` (PeerId, multiaddr, or their string forms) for `method`. Fails with
 * IoError when the peer cannot be reached or does not serve the protocol, TimeoutError after
 * `openTimeoutMs`. A server that refuses membership answers the first frame: the session then
 * closes with PermissionDeniedError.
 */
export async function openSession<Request, Response>(
  host: Host,
  peer: PeerTarget,
  method: Method<Request, Response>,
  options: OpenSessionOptions = {},
): Promise<Session<Request, Response>> {
  const target: PeerId | Multiaddr = toDialTarget(peer);
  const label = peerLabel(target);
  const what = `opening a ${method.protocol} session to ${label}`;
  const control = callController(what, options.openTimeoutMs ?? openTimeoutMsDefault, options.signal);
  try {
    const connection =
      (isPeerId(target) ? reusableConnection(host, target) : undefined) ??
      (await host.libp2p.dial(target, { signal: control.signal }));
    const stream = await connection.newStream(method.protocol, {
      signal: control.signal,
      maxOutboundStreams: sessionsPerConnectionMax,
    });
    return new ClientSession(host, stream, method, connection.remotePeer.toString());
  } catch (error) {
    if (control.signal.aborted) {
      throw control.signal.reason instanceof Error
        ? control.signal.reason
        : new ClosedError(`${what}: aborted`);
    }
    throw new IoError(
      `cannot open ${method.protocol} session to ${label}: ${(error as Error).message}`,
      { peer: label, protocol: method.protocol },
      { cause: error },
    );
  } finally {
    control.dispose();
  }
}
