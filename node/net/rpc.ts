/**
 * Typed request/response and streaming services over libp2p protocols `/zhsm/<name>/1.0.0`.
 *
 * Every call is one libp2p stream carrying length-prefixed `zhsm.net.Envelope` frames
 * (proto/net.proto):
 *   unary:     client -> request              server -> response | error
 *   streaming: client -> request, data*, end  server -> data*, response | error
 * The server's last frame is the trailer. A remote `ZhsmError` travels as its stable code and
 * message and is rethrown on the caller as an error of the same class and code.
 *
 * Every inbound stream is first checked with the host's `isMember(remotePeer)` (and, when that says
 * no, the host's optional async `confirmMember`; see `admitPeer`): a non-member gets a
 * PERMISSION_DENIED trailer, then its stream is reset; the refusal is counted and logged. A
 * service with `openToNonMembers` (the join protocol) skips the check.
 * Malformed, oversize or unexpected frames and failing handlers produce an error trailer (and a
 * reset where the stream can no longer be parsed); nothing on this path can crash the process.
 *
 * Backpressure is end to end: data frames are written with `writeFrame()` (which waits for the
 * stream to drain), read through `readFrames()` (which pauses the stream above a high-water mark),
 * and the server pulls its handler's data generator only as fast as the stream drains.
 */
import { type Connection, isPeerId, type PeerId, type Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { Uint8ArrayList } from 'uint8arraylist';
import { type Codec, codec } from '../../proto/index.ts';
import * as errors from '../common/errors.ts';
import {
  assert,
  ClosedError,
  DecodeError,
  type ErrorCode,
  InvalidArgumentError,
  IoError,
  PermissionDeniedError,
  TimeoutError,
  ZhsmError,
} from '../common/errors.ts';
import { Semaphore } from '../common/semaphore.ts';
import { encodeVarint, frameBytesMaxDefault, readFrameLists, readFrames, writeFrame } from './frames.ts';
import type { Host } from './host.ts';

/** Data chunks larger than this are split into several data frames. */
export const dataFrameBytesMax = 1024 * 1024;
/** Envelope bytes around a data payload: tag + varint request id + tag + varint length. */
const dataEnvelopeOverheadBytesMax = 1 + 10 + 1 + 10;
/** Concurrent streams per connection and protocol, each direction. */
export const streamsPerConnectionMax = 256;
export const callTimeoutMsDefault = 30_000;
/** A server waits this long for the request frame of a new stream. */
export const requestTimeoutMsDefault = 30_000;
/** A streaming call fails when no byte moves for this long (libp2p's stream inactivity timer). */
export const streamIdleTimeoutMsDefault = 120_000;
/** After its trailer, a server waits this long for the client to close before resetting. */
export const lingerMsMax = 2_000;
/** A membership confirmation (`Host.confirmMember`) that takes longer than this counts as "no". */
export const confirmMemberTimeoutMs = 5_000;
/** A peer `confirmMember` refused is refused without asking again for this long. */
export const confirmMemberRefusalCacheMs = 1_000;
/** The largest first frame read from a non-member before it is refused. */
const refusalFrameBytesMax = 64 * 1024;
const protocolVersion = '1.0.0';
const namePattern = /^[a-z0-9][a-z0-9-]*(\/[a-z0-9][a-z0-9-]*)*$/;

/** @internal node/net: the wire form of a typed error. */
export interface RemoteErrorRecord {
  code: string;
  message: string;
}

/** @internal node/net: one frame of a zhsm protocol (proto/net.proto). */
export interface Envelope {
  requestId?: number;
  request?: Uint8Array;
  response?: Uint8Array;
  error?: RemoteErrorRecord;
  data?: Uint8Array;
  end?: Record<string, never>;
}

/** @internal node/net */
export const envelopeCodec = codec<Envelope>('zhsm.net.Envelope');

/** A method: the protocol id and the codecs both sides use. */
export interface Method<Request, Response> {
  readonly name: string;
  /** `/zhsm/<name>/1.0.0` */
  readonly protocol: string;
  readonly requestCodec: Codec<Request>;
  readonly responseCodec: Codec<Response>;
  /** Largest frame this protocol accepts (both directions). */
  readonly frameBytesMax: number;
}

export function defineMethod<Request, Response>(init: {
  name: string;
  requestCodec: Codec<Request>;
  responseCodec: Codec<Response>;
  frameBytesMax?: number;
}): Method<Request, Response> {
  if (!namePattern.test(init.name))
    throw new InvalidArgumentError(`invalid method name ${JSON.stringify(init.name)}`);
  const frameBytesMax = init.frameBytesMax ?? frameBytesMaxDefault;
  if (!Number.isSafeInteger(frameBytesMax) || frameBytesMax < 1024) {
    throw new InvalidArgumentError(`frameBytesMax must be an integer >= 1024: ${frameBytesMax}`);
  }
  return {
    name: init.name,
    protocol: `/zhsm/${init.name}/${protocolVersion}`,
    requestCodec: init.requestCodec,
    responseCodec: init.responseCodec,
    frameBytesMax,
  };
}

export interface CallContext {
  /** The calling peer (a member of the cell). */
  readonly peerId: string;
  readonly requestId: number;
  /** Aborted when the stream closes, is reset, or the host stops. */
  readonly signal: AbortSignal;
}

export interface StreamContext extends CallContext {
  /** The caller's uploaded bytes; iterate once. Throws ClosedError if the caller aborts. */
  readonly data: AsyncIterable<Uint8Array>;
}

export type UnaryHandler<Request, Response> = (request: Request, context: CallContext) => Promise<Response>;

/**
 * A streaming handler either returns the response (e.g. after consuming `context.data`), or is an
 * async generator that yields the data to send and returns the response (the trailer).
 */
export type StreamHandler<Request, Response> = (
  request: Request,
  context: StreamContext,
) => Promise<Response> | AsyncGenerator<Uint8Array, Response, undefined>;

export interface ServeOptions {
  /** How long a new stream may take to deliver its request; default 30 s. */
  readonly requestTimeoutMs?: number;
  readonly streamsPerConnectionMax?: number;
  /**
   * Serve peers that are not members of the cell (default false: they are refused with
   * PERMISSION_DENIED). Only for protocols a newcomer needs, such as joining.
   */
  readonly openToNonMembers?: boolean;
}

export interface Service {
  readonly protocol: string;
  /** Stop accepting new streams for this protocol (running calls continue). */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Errors across the wire

type ErrorClass = new (message: string, context?: errors.ErrorContext) => ZhsmError;

const errorClassByCode: ReadonlyMap<string, ErrorClass> = (() => {
  const map = new Map<string, ErrorClass>();
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function') continue;
    const code = (value as { code?: unknown }).code;
    if (typeof code === 'string' && value.prototype instanceof ZhsmError) map.set(code, value as ErrorClass);
  }
  return map;
})();

/** The typed error a remote error record stands for (same class and code). */
export function remoteErrorToError(record: RemoteErrorRecord, peerId: string): ZhsmError {
  const context = { remotePeer: peerId, remoteCode: record.code };
  const errorClass = errorClassByCode.get(record.code);
  if (errorClass !== undefined) return new errorClass(record.message, context);
  return new IoError(`remote error ${record.code}: ${record.message}`, context);
}

/** @internal node/net: the record a handler's error travels as; `expected` = a ZhsmError. */
export function errorToRemote(error: unknown): { record: RemoteErrorRecord; expected: boolean } {
  if (error instanceof ZhsmError)
    return { record: { code: error.code, message: error.message }, expected: true };
  return {
    record: { code: 'IO_ERROR' satisfies ErrorCode, message: 'internal error in the remote handler' },
    expected: false,
  };
}

/** @internal node/net */
export function bodyName(envelope: Envelope): string {
  for (const key of ['request', 'response', 'error', 'data', 'end'] as const) {
    if (envelope[key] !== undefined) return key;
  }
  return 'an unknown message type';
}

// ---------------------------------------------------------------------------------------------
// Frame helpers

async function writeEnvelope(
  stream: Stream,
  envelope: Envelope,
  frameBytesMax: number,
  signal?: AbortSignal,
) {
  await writeFrame(
    stream,
    envelopeCodec.encode(envelope),
    signal === undefined ? { frameBytesMax } : { frameBytesMax, signal },
  );
}

/** Write `payload` as data frames of at most `dataFrameBytesMax` (no copy of the payload). */
async function writeData(
  stream: Stream,
  requestId: number,
  payload: Uint8Array,
  frameBytesMax: number,
  signal?: AbortSignal,
): Promise<void> {
  const pieceBytesMax = Math.min(dataFrameBytesMax, frameBytesMax - dataEnvelopeOverheadBytesMax);
  const requestIdBytes = encodeVarint(requestId);
  for (let offset = 0; offset < payload.byteLength || offset === 0; offset += pieceBytesMax) {
    const piece = payload.subarray(offset, offset + pieceBytesMax);
    if (piece.byteLength === 0) return;
    const header = new Uint8Array(2 + requestIdBytes.byteLength + 10);
    header[0] = 0x08; // field 1, varint: request_id
    header.set(requestIdBytes, 1);
    let length = 1 + requestIdBytes.byteLength;
    header[length] = 0x2a; // field 5, length-delimited: data
    length += 1;
    const pieceLength = encodeVarint(piece.byteLength);
    header.set(pieceLength, length);
    length += pieceLength.byteLength;
    const frame = new Uint8ArrayList(header.subarray(0, length), piece);
    await writeFrame(stream, frame, signal === undefined ? { frameBytesMax } : { frameBytesMax, signal });
  }
}

/** @internal node/net */
export function decodeEnvelope(frame: Uint8Array | Uint8ArrayList): Envelope {
  const envelope = envelopeCodec.decode(frame instanceof Uint8Array ? frame : frame.subarray());
  // Request ids are echoed (encodeVarint takes safe integers only); callers use ids below 2^31.
  if (envelope.requestId !== undefined && !Number.isSafeInteger(envelope.requestId))
    throw new DecodeError(`request id out of range: ${envelope.requestId}`);
  return envelope;
}

/** Read a varint at `offset` of `list`: [value, next offset], or undefined if malformed/short. */
function varintAt(list: Uint8ArrayList, offset: number, bytesMax: number): [number, number] | undefined {
  let value = 0;
  let multiplier = 1;
  for (let index = 0; index < bytesMax; index += 1) {
    if (offset + index >= list.byteLength) return undefined;
    const byte = list.get(offset + index);
    value += (byte & 0x7f) * multiplier;
    multiplier *= 0x80;
    if ((byte & 0x80) === 0) return [value, offset + index + 1];
  }
  return undefined;
}

/**
 * The payload of a data frame as written by writeData (`request_id`, then `data` filling the
 * rest), without copying it; undefined for any other frame, which then takes the full decoder.
 */
function dataPayload(frame: Uint8ArrayList): Uint8ArrayList | undefined {
  if (frame.byteLength < 4 || frame.get(0) !== 0x08) return undefined;
  const requestId = varintAt(frame, 1, 10);
  if (requestId === undefined || requestId[1] >= frame.byteLength || frame.get(requestId[1]) !== 0x2a)
    return undefined;
  const length = varintAt(frame, requestId[1] + 1, 8);
  if (length === undefined || length[1] + length[0] !== frame.byteLength) return undefined;
  return frame.sublist(length[1]);
}

/** A frame of a streaming call: its data pieces (fast path, no copy), or any other envelope. */
function splitFrame(frame: Uint8ArrayList): { data: Iterable<Uint8Array> } | { envelope: Envelope } {
  const payload = dataPayload(frame);
  if (payload !== undefined) return { data: payload };
  const envelope = decodeEnvelope(frame);
  if (envelope.data !== undefined) return { data: envelope.data.byteLength > 0 ? [envelope.data] : [] };
  return { envelope };
}

/**
 * Close our writing side. If the peer is still sending, reset at once (`resetNow`: its data is
 * not wanted) or after it failed to close within the linger time.
 */
async function finish(stream: Stream, options: { resetNow?: boolean } = {}): Promise<void> {
  try {
    // No timer here: a peer that stops reading is ended by the stream's inactivity timeout.
    await stream.close();
  } catch {
    stream.abort(new ClosedError('could not flush the stream'));
    return;
  }
  if (stream.status !== 'open' || stream.remoteWriteStatus === 'closed') return;
  if (options.resetNow === true) {
    stream.abort(new ClosedError('the peer sent data that is not wanted'));
    return;
  }
  await awaitPeerClose(stream, 'peer did not close the stream');
}

/**
 * @internal node/net — wait up to `lingerMsMax` for the peer to close its side of `stream`, then
 * reset it with `message`.
 */
export function awaitPeerClose(stream: Stream, message: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      stream.removeEventListener('close', onClose);
      stream.abort(new ClosedError(message));
      resolve();
    }, lingerMsMax);
    const onClose = () => {
      clearTimeout(timer);
      resolve();
    };
    stream.addEventListener('close', onClose, { once: true });
  });
}

/** Outbound streams per host, peer and protocol stay within what a server accepts. */
const outboundLimits = new WeakMap<Host, Map<string, Semaphore>>();

async function acquireOutbound(host: Host, peerKey: string, protocol: string, signal: AbortSignal) {
  let limits = outboundLimits.get(host);
  if (limits === undefined) {
    limits = new Map();
    outboundLimits.set(host, limits);
  }
  const key = `${peerKey} ${protocol}`;
  let semaphore = limits.get(key);
  if (semaphore === undefined) {
    semaphore = new Semaphore(streamsPerConnectionMax);
    limits.set(key, semaphore);
  }
  await semaphore.acquire(signal);
  const held = semaphore;
  const table = limits;
  return () => {
    held.release();
    if (held.idle) table.delete(key);
  };
}

// ---------------------------------------------------------------------------------------------
// Server

interface InboundState {
  /** Everything the caller sends was read (so closing needs no reset). */
  inboundFinished: boolean;
}

interface InboundSpec<Request, Response> {
  readonly method: Method<Request, Response>;
  readonly run: (
    stream: Stream,
    request: Request,
    requestId: number,
    frames: AsyncGenerator<Uint8ArrayList, void, undefined>,
    context: CallContext,
    state: InboundState,
  ) => Promise<void>;
  readonly options: ServeOptions;
}

/** Membership confirmations per host: in flight (shared by concurrent streams) and recent refusals. */
interface Confirmations {
  readonly inFlight: Map<string, Promise<boolean>>;
  readonly refusedUntil: Map<string, number>;
}
const confirmationsByHost = new WeakMap<Host, Confirmations>();

async function confirm(host: Host, confirmMember: (peerId: string) => Promise<boolean>, peerId: string) {
  let state = confirmationsByHost.get(host);
  if (state === undefined) {
    state = { inFlight: new Map(), refusedUntil: new Map() };
    confirmationsByHost.set(host, state);
  }
  const now = Date.now();
  const refusedUntil = state.refusedUntil.get(peerId);
  if (refusedUntil !== undefined) {
    if (refusedUntil > now) return false;
    state.refusedUntil.delete(peerId);
  }
  const running = state.inFlight.get(peerId);
  if (running !== undefined) return running;
  const table = state;
  const answer = (async () => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), confirmMemberTimeoutMs);
      });
      return (await Promise.race([confirmMember(peerId), timeout])) === true;
    } catch (error) {
      host.log.warn({ peer: peerId, err: error }, 'membership confirmation failed');
      return false;
    } finally {
      clearTimeout(timer);
    }
  })();
  table.inFlight.set(peerId, answer);
  try {
    const admitted = await answer;
    if (!admitted) {
      // Keep the table small: forget refusals that have expired.
      if (table.refusedUntil.size > 1024) {
        for (const [peer, until] of table.refusedUntil) if (until <= now) table.refusedUntil.delete(peer);
      }
      table.refusedUntil.set(peerId, Date.now() + confirmMemberRefusalCacheMs);
    }
    return admitted;
  } finally {
    table.inFlight.delete(peerId);
  }
}

/**
 * @internal node/net: may `peerId` use a protocol? Members may; others only when the service is
 * open to non-members, or when the host's `confirmMember` says yes (a member this node has not
 * heard of yet). Confirmations are shared while one is in flight for the same peer, and a refusal
 * is remembered for `confirmMemberRefusalCacheMs` (a non-member cannot make every one of its
 * streams cost a round trip to the primary).
 */
export async function admitPeer(host: Host, peerId: string, openToNonMembers = false): Promise<boolean> {
  if (openToNonMembers || host.isMember(peerId)) return true;
  const confirmMember = host.confirmMember;
  if (confirmMember === undefined) return false;
  return confirm(host, confirmMember, peerId);
}

/** @internal node/net: answer a non-member's stream with PERMISSION_DENIED, then reset it. */
export async function refuse(host: Host, stream: Stream, peerId: string, protocol: string): Promise<void> {
  host.counters.refusedStreams += 1;
  host.log.warn({ peer: peerId, protocol }, 'refused stream from a non-member');
  // Wait for the caller's first frame (so its protocol negotiation has finished), then answer.
  const frames = readFrames(stream, { frameBytesMax: refusalFrameBytesMax });
  const timer = setTimeout(() => stream.abort(new TimeoutError('no request')), lingerMsMax);
  try {
    await frames.next();
    await writeEnvelope(
      stream,
      {
        requestId: 0,
        error: { code: 'PERMISSION_DENIED', message: 'this peer is not a member of the cell' },
      },
      frameBytesMaxDefault,
      AbortSignal.timeout(lingerMsMax),
    );
    await finish(stream, { resetNow: true });
  } catch {
    stream.abort(new PermissionDeniedError('not a member of the cell'));
  } finally {
    clearTimeout(timer);
    await frames.return(undefined).catch(() => {});
  }
}

async function handleInbound<Request, Response>(
  host: Host,
  spec: InboundSpec<Request, Response>,
  stream: Stream,
  connection: Connection,
): Promise<void> {
  const peerId = connection.remotePeer.toString();
  const { method } = spec;
  if (!(await admitPeer(host, peerId, spec.options.openToNonMembers === true))) {
    await refuse(host, stream, peerId, method.protocol);
    return;
  }
  const controller = new AbortController();
  const onClose = () => controller.abort(new ClosedError('the stream was closed'));
  stream.addEventListener('close', onClose, { once: true });
  const frames = readFrameLists(stream, { frameBytesMax: method.frameBytesMax });
  let requestId = 0;
  const state: InboundState = { inboundFinished: false };
  const startedMs = performance.now();
  let code = 'OK';
  try {
    const requestTimeoutMs = spec.options.requestTimeoutMs ?? requestTimeoutMsDefault;
    const timer = setTimeout(() => {
      stream.abort(new TimeoutError(`no request within ${requestTimeoutMs} ms`));
    }, requestTimeoutMs);
    let first: IteratorResult<Uint8ArrayList, void>;
    try {
      first = await frames.next();
    } finally {
      clearTimeout(timer);
    }
    if (first.done === true) throw new DecodeError('the stream ended before the request');
    const envelope = decodeEnvelope(first.value);
    requestId = envelope.requestId ?? 0;
    if (envelope.request === undefined)
      throw new DecodeError(`expected a request, got ${bodyName(envelope)}`);
    const request = method.requestCodec.decode(envelope.request);
    await spec.run(
      stream,
      request,
      requestId,
      frames,
      { peerId, requestId, signal: controller.signal },
      state,
    );
    await finish(stream, { resetNow: !state.inboundFinished });
  } catch (error) {
    const { record, expected } = errorToRemote(error);
    code = record.code;
    if (expected)
      host.log.debug({ peer: peerId, protocol: method.protocol, code: record.code }, record.message);
    else host.log.error({ peer: peerId, protocol: method.protocol, err: error }, 'handler failed');
    if (stream.status === 'open' && stream.writeStatus === 'writable') {
      try {
        await writeEnvelope(
          stream,
          { requestId, error: record },
          method.frameBytesMax,
          AbortSignal.timeout(lingerMsMax),
        );
      } catch {
        // The peer is gone or not reading; the reset below ends it.
      }
    }
    // A framing error leaves the inbound side unparseable, and an unread upload must stop: reset.
    const framingError =
      error instanceof ZhsmError && (error.code === 'FRAME_TOO_LARGE' || error.code === 'DECODE_ERROR');
    await finish(stream, { resetNow: framingError || !state.inboundFinished });
  } finally {
    try {
      host.onInboundCall?.(method.name, code, (performance.now() - startedMs) / 1000);
    } catch {
      // metrics never fail a call
    }
    stream.removeEventListener('close', onClose);
    await frames.return(undefined).catch(() => {});
  }
}

function register<Request, Response>(host: Host, spec: InboundSpec<Request, Response>): Promise<Service> {
  const perConnection = spec.options.streamsPerConnectionMax ?? streamsPerConnectionMax;
  const protocol = spec.method.protocol;
  return host.libp2p
    .handle(
      protocol,
      (stream, connection) => {
        handleInbound(host, spec, stream, connection).catch((error: unknown) => {
          host.log.error({ protocol, err: error }, 'inbound stream failed');
          stream.abort(error instanceof Error ? error : new Error(String(error)));
        });
      },
      { maxInboundStreams: perConnection, maxOutboundStreams: perConnection },
    )
    .then(() => ({
      protocol,
      stop: () => host.libp2p.unhandle(protocol),
    }));
}

/** Serve a unary method: one request, one response. */
export function serve<Request, Response>(
  host: Host,
  service: Method<Request, Response> & { handler: UnaryHandler<Request, Response> } & ServeOptions,
): Promise<Service> {
  const method = service;
  return register(host, {
    method,
    options: service,
    async run(stream, request, requestId, _frames, context, state) {
      state.inboundFinished = true; // a unary caller sends nothing after its request
      const response = await service.handler(request, context);
      await writeEnvelope(
        stream,
        { requestId, response: method.responseCodec.encode(response) },
        method.frameBytesMax,
      );
    },
  });
}

/** The caller's data frames up to its `end` frame. */
async function* inboundData(
  frames: AsyncGenerator<Uint8ArrayList, void, undefined>,
  state: InboundState,
): AsyncGenerator<Uint8Array, void, undefined> {
  for (;;) {
    const next = await frames.next();
    if (next.done === true) throw new ClosedError('the caller closed the stream before the end of its data');
    const frame = splitFrame(next.value);
    if ('data' in frame) {
      yield* frame.data;
      continue;
    }
    const envelope = frame.envelope;
    if (envelope.end !== undefined) {
      state.inboundFinished = true;
      return;
    }
    throw new DecodeError(`expected data or end, got ${bodyName(envelope)}`);
  }
}

/** True when `data` ends (the caller's end frame) within `timeoutMs` without more data. */
async function endsWithin(
  data: AsyncGenerator<Uint8Array, void, undefined>,
  timeoutMs: number,
): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  try {
    const next = await Promise.race([data.next(), timeout]);
    return next !== 'timeout' && next.done === true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function isAsyncGenerator<T, R>(value: unknown): value is AsyncGenerator<T, R, undefined> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as AsyncGenerator<T, R>).next === 'function' &&
    typeof (value as AsyncGenerator<T, R>)[Symbol.asyncIterator] === 'function'
  );
}

/** Serve a streaming method: bulk data in either or both directions (see StreamHandler). */
export function serveStream<Request, Response>(
  host: Host,
  service: Method<Request, Response> & { handler: StreamHandler<Request, Response> } & ServeOptions,
): Promise<Service> {
  const method = service;
  return register(host, {
    method,
    options: service,
    async run(stream, request, requestId, frames, context, state) {
      const data = inboundData(frames, state);
      const result = service.handler(request, { ...context, data });
      let response: Response;
      if (isAsyncGenerator<Uint8Array, Response>(result)) {
        try {
          for (;;) {
            const next = await result.next();
            if (next.done === true) {
              response = next.value;
              break;
            }
            assert(next.value instanceof Uint8Array, 'a streaming handler must yield Uint8Array chunks');
            await writeData(stream, requestId, next.value, method.frameBytesMax, context.signal);
          }
        } finally {
          await result.return(undefined as Response).catch(() => {});
        }
      } else {
        response = await result;
      }
      if (!state.inboundFinished) {
        // The handler did not read the caller's data: if all that is left is the end frame
        // (a download), the stream can close cleanly; unread upload data means a reset.
        state.inboundFinished = await endsWithin(data, lingerMsMax);
      }
      await writeEnvelope(
        stream,
        { requestId, response: method.responseCodec.encode(response) },
        method.frameBytesMax,
      );
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Client

export type PeerTarget = PeerId | Multiaddr | string;

/** @internal node/net */
export function toDialTarget(peer: PeerTarget): PeerId | Multiaddr {
  if (typeof peer !== 'string') return peer;
  try {
    return peer.startsWith('/') ? multiaddr(peer) : peerIdFromString(peer);
  } catch (error) {
    throw new InvalidArgumentError(`invalid peer ${JSON.stringify(peer)}`, { peer }, { cause: error });
  }
}

/** @internal node/net */
export function peerLabel(target: PeerId | Multiaddr): string {
  return target.toString();
}

let nextRequestId = 1;
function newRequestId(): number {
  const id = nextRequestId;
  nextRequestId = nextRequestId >= 0x7fffffff ? 1 : nextRequestId + 1;
  return id;
}

export interface CallOptions {
  /** The whole call must complete within this time; default 30 s. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** An AbortController fed by a caller's signal and a timer that aborts with TimeoutError. */
/** @internal node/net */
export function callController(what: string, timeoutMs: number, signal?: AbortSignal) {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new TimeoutError(`${what} timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );
  const onAbort = () => controller.abort(signal?.reason ?? new ClosedError(`${what} was aborted`));
  if (signal?.aborted === true) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    dispose() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    },
    /** The cleared timer no longer applies (streaming calls after opening). */
    clearTimer() {
      clearTimeout(timer);
    },
  };
}

function asCallError(error: unknown, signal: AbortSignal, what: string): Error {
  if (signal.aborted)
    return signal.reason instanceof Error ? signal.reason : new ClosedError(`${what} was aborted`);
  if (error instanceof ZhsmError) return error;
  return new ClosedError(
    `${what} failed: ${(error as Error)?.message ?? String(error)}`,
    {},
    { cause: error },
  );
}

/** @internal node/net: an open connection to `peer` that is not limited (relay limits). */
export function reusableConnection(host: Host, peer: PeerId): Connection | undefined {
  for (const connection of host.libp2p.getConnections(peer)) {
    if (connection.status === 'open' && connection.limits === undefined) return connection;
  }
  return undefined;
}

/** Open a stream; `release()` frees its outbound slot (also done when the stream closes). */
async function openStream(
  host: Host,
  target: PeerId | Multiaddr,
  protocol: string,
  signal: AbortSignal,
): Promise<{ stream: Stream; release: () => void }> {
  const peerKey = isPeerId(target)
    ? target.toString()
    : (target.getComponents().findLast((component) => component.name === 'p2p')?.value ?? target.toString());
  const release = await acquireOutbound(host, peerKey, protocol, signal);
  try {
    const options = { signal, maxOutboundStreams: streamsPerConnectionMax };
    // Reuse an open, unlimited connection directly: the dial path (peer store, dial queue) costs
    // more than the stream itself for small calls.
    const connection = isPeerId(target) ? reusableConnection(host, target) : undefined;
    const stream =
      connection !== undefined
        ? await connection.newStream(protocol, options)
        : await host.libp2p.dialProtocol(target, protocol, options);
    let released = false;
    const releaseOnce = () => {
      if (released) return;
      released = true;
      release();
    };
    stream.addEventListener('close', releaseOnce, { once: true });
    return { stream, release: releaseOnce };
  } catch (error) {
    release();
    if (signal.aborted) throw signal.reason;
    throw new IoError(
      `cannot open ${protocol} to ${peerLabel(target)}: ${(error as Error).message}`,
      {
        peer: peerLabel(target),
        protocol,
      },
      { cause: error },
    );
  }
}

/** Call a unary method on a peer (PeerId, multiaddr, or their string forms). */
export async function call<Request, Response>(
  host: Host,
  peer: PeerTarget,
  method: Method<Request, Response>,
  request: Request,
  options: CallOptions = {},
): Promise<Response> {
  const target = toDialTarget(peer);
  const what = `${method.protocol} call to ${peerLabel(target)}`;
  const timeoutMs = options.timeoutMs ?? callTimeoutMsDefault;
  const control = callController(what, timeoutMs, options.signal);
  const requestId = newRequestId();
  let releaseSlot: (() => void) | undefined;
  let stream: Stream | undefined;
  const onAbort = () => stream?.abort(control.signal.reason as Error);
  control.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const requestBytes = method.requestCodec.encode(request);
    let release: () => void;
    ({ stream, release } = await openStream(host, target, method.protocol, control.signal));
    releaseSlot = release;
    await writeEnvelope(stream, { requestId, request: requestBytes }, method.frameBytesMax, control.signal);
    await stream.close({ signal: control.signal });
    const frames = readFrames(stream, { frameBytesMax: method.frameBytesMax });
    try {
      const first = await frames.next();
      if (first.done === true)
        throw new ClosedError(`${what}: the peer closed the stream without a response`);
      const envelope = decodeEnvelope(first.value);
      if (envelope.error !== undefined) throw remoteErrorToError(envelope.error, peerLabel(target));
      if (envelope.response === undefined)
        throw new DecodeError(`${what}: expected a response, got ${bodyName(envelope)}`);
      return method.responseCodec.decode(envelope.response);
    } finally {
      await frames.return(undefined).catch(() => {});
    }
  } catch (error) {
    stream?.abort(error instanceof Error ? error : new Error(String(error)));
    throw asCallError(error, control.signal, what);
  } finally {
    releaseSlot?.();
    control.signal.removeEventListener('abort', onAbort);
    control.dispose();
  }
}

export interface StreamCallOptions {
  /** Bytes to send to the server (the handler's `context.data`). */
  readonly upload?: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  /** Opening the stream and sending the request must complete within this time; default 30 s. */
  readonly openTimeoutMs?: number;
  /** The call fails when no byte moves for this long; default 120 s. */
  readonly idleTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** A running streaming call. */
export interface StreamCall<Response> {
  /** The server's data; ends at the trailer, or throws the remote typed error. Iterate once. */
  readonly data: AsyncIterable<Uint8Array>;
  /** The trailer response, after all data (data not yet read is discarded). */
  response(): Promise<Response>;
  /** Abandon the call: the stream is reset. */
  abort(reason?: Error): void;
}

/** Start a streaming call: upload `options.upload`, receive `data`, then `response()`. */
export async function callStream<Request, Response>(
  host: Host,
  peer: PeerTarget,
  method: Method<Request, Response>,
  request: Request,
  options: StreamCallOptions = {},
): Promise<StreamCall<Response>> {
  const target = toDialTarget(peer);
  const label = peerLabel(target);
  const what = `${method.protocol} stream to ${label}`;
  const control = callController(
    `opening ${what}`,
    options.openTimeoutMs ?? callTimeoutMsDefault,
    options.signal,
  );
  const requestId = newRequestId();
  let stream: Stream | undefined;
  const onAbort = () => stream?.abort(control.signal.reason as Error);
  control.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const requestBytes = method.requestCodec.encode(request);
    ({ stream } = await openStream(host, target, method.protocol, control.signal));
    stream.inactivityTimeout = options.idleTimeoutMs ?? streamIdleTimeoutMsDefault;
    await writeEnvelope(stream, { requestId, request: requestBytes }, method.frameBytesMax, control.signal);
  } catch (error) {
    stream?.abort(error instanceof Error ? error : new Error(String(error)));
    control.signal.removeEventListener('abort', onAbort);
    control.dispose();
    throw asCallError(error, control.signal, what);
  }
  control.clearTimer();
  const opened = stream;
  const signal = control.signal;

  let uploadError: Error | undefined;
  let uploadDone = false;
  const upload = (async () => {
    try {
      if (options.upload !== undefined) {
        for await (const chunk of options.upload) {
          if (!(chunk instanceof Uint8Array))
            throw new InvalidArgumentError('upload chunks must be Uint8Array');
          await writeData(opened, requestId, chunk, method.frameBytesMax, signal);
        }
      }
      await writeEnvelope(opened, { requestId, end: {} }, method.frameBytesMax, signal);
      await opened.close({ signal });
      uploadDone = true;
    } catch (error) {
      if (opened.status === 'open' && opened.writeStatus === 'writable') {
        // Our source failed: stop the call. (A write failing on a stream the server ended is not
        // an upload error: the trailer tells what happened.)
        uploadError = error instanceof Error ? error : new Error(String(error));
        opened.abort(uploadError);
      } else if (!(error instanceof ClosedError) && !(error instanceof ZhsmError)) {
        uploadError = error instanceof Error ? error : new Error(String(error));
      }
    }
  })();

  let trailer: { response: Response } | { error: Error } | undefined;
  const frames = readFrameLists(opened, { frameBytesMax: method.frameBytesMax });
  const settle = () => {
    control.signal.removeEventListener('abort', onAbort);
    control.dispose();
  };
  async function* receive(): AsyncGenerator<Uint8Array, void, undefined> {
    try {
      for (;;) {
        let next: IteratorResult<Uint8ArrayList, void>;
        try {
          next = await frames.next();
        } catch (error) {
          await upload;
          throw uploadError ?? error;
        }
        if (next.done === true) {
          await upload;
          throw uploadError ?? new ClosedError(`${what}: the peer closed the stream without a response`);
        }
        const frame = splitFrame(next.value);
        if ('data' in frame) {
          yield* frame.data;
          continue;
        }
        const envelope = frame.envelope;
        if (envelope.error !== undefined) {
          trailer = { error: remoteErrorToError(envelope.error, label) };
          break;
        }
        if (envelope.response !== undefined) {
          trailer = { response: method.responseCodec.decode(envelope.response) };
          break;
        }
        throw new DecodeError(`${what}: expected data or a trailer, got ${bodyName(envelope)}`);
      }
      if (!uploadDone) opened.abort(new ClosedError('the server finished before the upload'));
      await upload;
      if ('error' in trailer) throw trailer.error;
    } catch (error) {
      const failure = asCallError(error, signal, what);
      if (trailer === undefined) trailer = { error: failure };
      opened.abort(failure);
      throw failure;
    } finally {
      await frames.return(undefined).catch(() => {});
      settle();
    }
  }

  const receiver = receive();
  let started = false;
  return {
    data: {
      [Symbol.asyncIterator]() {
        if (started) throw new InvalidArgumentError('the data of a stream call can be read only once');
        started = true;
        return receiver;
      },
    },
    async response() {
      started = true;
      for (;;) {
        const next = await receiver.next();
        if (next.done === true) break;
      }
      if (trailer === undefined) throw new ClosedError(`${what}: no trailer`);
      if ('error' in trailer) throw trailer.error;
      return trailer.response;
    },
    abort(reason) {
      opened.abort(reason ?? new ClosedError(`${what} was aborted`));
    },
  };
}
