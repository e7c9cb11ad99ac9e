/**
 * Length-prefixed frames over a libp2p stream: an unsigned varint (LEB128) byte count, then that
 * many bytes. Every protocol has a named maximum `frameBytesMax`; a length prefix above it is
 * refused before a byte of the frame is buffered.
 *
 * Reading is bounded end to end: `streamChunks()` pauses the libp2p stream (which stops yamux
 * window updates, so the sender's `send()` soon returns false) when more than `highWaterBytes`
 * wait for the consumer, and resumes it when the consumer has caught up. Writing honours the
 * sender's backpressure: when `send()` returns false, `writeFrame()` awaits `onDrain()`.
 */
import type { Stream } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import {
  assert,
  ClosedError,
  DecodeError,
  FrameTooLargeError,
  InvalidArgumentError,
  ZhsmError,
} from '../common/errors.ts';

/** Default maximum frame payload: 16 MiB. */
export const frameBytesMaxDefault = 16 * 1024 * 1024;
/** Bytes a reader buffers before it pauses the stream (beyond what the muxer's window admits). */
export const readHighWaterBytesDefault = 4 * 1024 * 1024;
/**
 * The largest yamux receive window a stream may grow to (see host.ts). After a pause the sender
 * may still deliver one full window, so a paused stream's read buffer limit must exceed it.
 */
export const muxerStreamWindowBytesMax = 16 * 1024 * 1024;
/** A varint longer than this many bytes is malformed (2^56 > Number.MAX_SAFE_INTEGER). */
const varintBytesMax = 8;

/**
 * Bytes a writer lets wait in a stream's send buffer before it waits. libp2p emits 'drain' as
 * soon as the muxer can take any more data (e.g. on every yamux window update), so waiting for
 * `onDrain()` alone would let the send buffer grow without bound; the writer also waits until the
 * buffer is below this mark.
 */
export const writeHighWaterBytesDefault = 1024 * 1024;

/** The part of a libp2p stream a frame writer needs. */
export interface FrameSink {
  send(data: Uint8Array | Uint8ArrayList): boolean;
  onDrain(options?: { signal?: AbortSignal }): Promise<void>;
  addEventListener?(type: string, listener: (event: Event) => void, options?: { once?: boolean }): void;
  removeEventListener?(type: string, listener: (event: Event) => void): void;
  readonly writeBufferLength?: number;
  readonly writableNeedsDrain?: boolean;
  readonly status?: string;
}

export type Chunk = Uint8Array | Uint8ArrayList;

/** Encode a non-negative safe integer as an unsigned LEB128 varint. */
export function encodeVarint(value: number): Uint8Array {
  assert(
    Number.isSafeInteger(value) && value >= 0,
    `varint value must be a non-negative safe integer: ${value}`,
  );
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Uint8Array.from(bytes);
}

/** The bytes of one frame (prefix + payload) as a list, without copying the payload. */
export function encodeFrame(
  payload: Uint8Array | Uint8ArrayList,
  options: { frameBytesMax?: number } = {},
): Uint8ArrayList {
  const frameBytesMax = options.frameBytesMax ?? frameBytesMaxDefault;
  if (payload.byteLength > frameBytesMax) {
    throw new FrameTooLargeError(
      `frame of ${payload.byteLength} bytes exceeds the maximum of ${frameBytesMax}`,
      {
        frameBytes: payload.byteLength,
        frameBytesMax,
      },
    );
  }
  return new Uint8ArrayList(encodeVarint(payload.byteLength), payload);
}

function toClosedError(error: unknown, what: string): Error {
  if (error instanceof ZhsmError) return error;
  return new ClosedError(`${what}: ${(error as Error)?.message ?? String(error)}`, {}, { cause: error });
}

/**
 * Wait for the stream's next 'drain' event. `Stream.onDrain()` of @libp2p/utils 7.4 keeps the
 * promise of its first drain and returns it, already resolved, on every later call: after the
 * first drain it no longer waits at all. So this listens to the events itself.
 */
function waitForDrain(stream: FrameSink, options: { signal?: AbortSignal }): Promise<void> {
  if (stream.writableNeedsDrain === false) return Promise.resolve();
  if (stream.addEventListener === undefined || stream.removeEventListener === undefined)
    return stream.onDrain(options);
  const add = stream.addEventListener.bind(stream);
  const remove = stream.removeEventListener.bind(stream);
  return new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      remove('drain', onDrain);
      remove('close', onClose);
      options.signal?.removeEventListener('abort', onAbort);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = (event: Event) => {
      cleanup();
      reject((event as Event & { error?: Error }).error ?? new ClosedError('the stream was closed'));
    };
    const onAbort = () => {
      cleanup();
      reject(options.signal?.reason);
    };
    if (options.signal?.aborted === true) {
      reject(options.signal.reason);
      return;
    }
    add('drain', onDrain, { once: true });
    add('close', onClose, { once: true });
    options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Write one frame. Resolves when the stream can take more data (backpressure); throws
 * FrameTooLargeError for an oversize payload, ClosedError when the stream is closed or reset.
 */
export async function writeFrame(
  stream: FrameSink,
  payload: Uint8Array | Uint8ArrayList,
  options: { frameBytesMax?: number; signal?: AbortSignal; writeHighWaterBytes?: number } = {},
): Promise<void> {
  await writeRaw(stream, encodeFrame(payload, options), options);
}

/** Write bytes as they are (no frame), with the same backpressure as writeFrame. */
export async function writeRaw(
  stream: FrameSink,
  bytes: Uint8Array | Uint8ArrayList,
  options: { signal?: AbortSignal; writeHighWaterBytes?: number } = {},
): Promise<void> {
  let canSendMore: boolean;
  try {
    canSendMore = stream.send(bytes);
  } catch (error) {
    throw toClosedError(error, 'cannot write frame');
  }
  const highWaterBytes = options.writeHighWaterBytes ?? writeHighWaterBytesDefault;
  const drainOptions = options.signal === undefined ? {} : { signal: options.signal };
  try {
    if (!canSendMore) await waitForDrain(stream, drainOptions);
    while ((stream.writeBufferLength ?? 0) > highWaterBytes) {
      if (stream.status !== undefined && stream.status !== 'open')
        throw new ClosedError('the stream was closed');
      options.signal?.throwIfAborted();
      if (stream.writableNeedsDrain === true) await waitForDrain(stream, drainOptions);
      else await new Promise<void>((resolve) => setImmediate(resolve)); // the send queue is being processed
    }
  } catch (error) {
    if (options.signal?.aborted === true && options.signal.reason instanceof Error)
      throw options.signal.reason;
    throw toClosedError(error, 'stream closed while waiting to write');
  }
}

/** The part of a libp2p stream the bounded reader needs. */
type ReadableStream = Pick<
  Stream,
  | 'addEventListener'
  | 'removeEventListener'
  | 'pause'
  | 'resume'
  | 'readStatus'
  | 'readableEnded'
  | 'readBufferLength'
  | 'maxReadBufferLength'
  | 'status'
>;

function isLibp2pStream(source: unknown): source is ReadableStream {
  const candidate = source as Partial<ReadableStream> | null;
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.pause === 'function' &&
    typeof candidate.resume === 'function' &&
    typeof candidate.addEventListener === 'function'
  );
}

/**
 * The chunks arriving on a libp2p stream, with bounded buffering: the stream is paused while more
 * than `highWaterBytes` wait for the consumer. Ends when the remote closes its writing side and
 * everything was read; throws ClosedError when the stream is reset or aborted.
 */
export async function* streamChunks(
  stream: ReadableStream,
  options: { highWaterBytes?: number } = {},
): AsyncGenerator<Chunk, void, undefined> {
  const highWaterBytes = options.highWaterBytes ?? readHighWaterBytesDefault;
  const lowWaterBytes = Math.floor(highWaterBytes / 2);
  // A paused stream still receives up to one muxer window: allow for it instead of a reset.
  stream.maxReadBufferLength = Math.max(
    stream.maxReadBufferLength,
    muxerStreamWindowBytesMax + highWaterBytes,
  );
  const queue: Chunk[] = [];
  let head = 0;
  let queuedBytes = 0;
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  const onMessage = (event: Event) => {
    const data = (event as Event & { data: Chunk }).data;
    queue.push(data);
    queuedBytes += data.byteLength;
    if (queuedBytes > highWaterBytes && stream.readStatus === 'readable' && !resuming) stream.pause();
    notify();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  const onClose = (event: Event) => {
    const error = (event as Event & { error?: Error }).error;
    if (error !== undefined) failure = error;
    else if (stream.readBufferLength === 0) ended = true;
    notify();
  };
  // Stream.resume() dispatches the held-back data first and only then tells yamux to send window
  // updates again: a pause() from inside that dispatch would be overridden and leave the stream
  // "paused" with window updates flowing (unbounded buffering). So pause only after resume().
  let resuming = false;
  const resume = () => {
    resuming = true;
    try {
      stream.resume();
    } catch {
      // A reset stream may refuse the window update; its held-back data was dispatched first.
    } finally {
      resuming = false;
    }
    if (queuedBytes > highWaterBytes && stream.readStatus === 'readable') stream.pause();
  };
  stream.addEventListener('message', onMessage);
  stream.addEventListener('end', onEnd);
  stream.addEventListener('close', onClose);
  try {
    if (stream.readableEnded) ended = true;
    if (stream.status === 'aborted' || stream.status === 'reset')
      failure = new ClosedError('stream was reset');
    if (stream.status === 'closed' && stream.readBufferLength === 0) ended = true;
    for (;;) {
      if (head < queue.length) {
        const chunk = queue[head]!;
        queue[head] = undefined as unknown as Chunk;
        head += 1;
        if (head > 1024 && head * 2 > queue.length) {
          queue.splice(0, head);
          head = 0;
        }
        queuedBytes -= chunk.byteLength;
        if (queuedBytes <= lowWaterBytes && stream.readStatus === 'paused') resume();
        yield chunk;
        continue;
      }
      if (failure !== undefined) {
        // A reset after data that a pause held back: deliver that data (it may hold a trailer).
        if (stream.readBufferLength > 0 && stream.readStatus === 'paused') {
          resume();
          continue;
        }
        throw toClosedError(failure, 'stream reset');
      }
      if (ended) return;
      if (stream.readStatus === 'paused') resume();
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    stream.removeEventListener('message', onMessage);
    stream.removeEventListener('end', onEnd);
    stream.removeEventListener('close', onClose);
  }
}

/**
 * Decode frames from a stream (or any source of chunks). Chunks may be Uint8Array or
 * Uint8ArrayList and may split frames anywhere. Throws FrameTooLargeError as soon as a length
 * prefix above `frameBytesMax` is read (nothing of that frame is buffered), DecodeError for a
 * malformed varint or a source that ends inside a frame.
 */
export async function* readFrames(
  source: ReadableStream | AsyncIterable<Chunk>,
  options: { frameBytesMax?: number; highWaterBytes?: number } = {},
): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const frame of readFrameLists(source, options)) yield frame.subarray();
}

/**
 * As readFrames, but each frame is a Uint8ArrayList over the received chunks: no copy is made
 * of a frame that arrived in several chunks (bulk data paths use this).
 */
export async function* readFrameLists(
  source: ReadableStream | AsyncIterable<Chunk>,
  options: { frameBytesMax?: number; highWaterBytes?: number } = {},
): AsyncGenerator<Uint8ArrayList, void, undefined> {
  const frameBytesMax = options.frameBytesMax ?? frameBytesMaxDefault;
  if (!Number.isSafeInteger(frameBytesMax) || frameBytesMax < 0) {
    throw new InvalidArgumentError(`frameBytesMax must be a non-negative integer: ${frameBytesMax}`);
  }
  const chunks: AsyncIterable<Chunk> = isLibp2pStream(source)
    ? streamChunks(
        source,
        options.highWaterBytes === undefined ? {} : { highWaterBytes: options.highWaterBytes },
      )
    : (source as AsyncIterable<Chunk>);
  const buffer = new Uint8ArrayList();
  /** Length of the frame being assembled, once its prefix was read. */
  let frameBytes: number | undefined;
  for await (const chunk of chunks) {
    if (chunk.byteLength === 0) continue;
    buffer.append(chunk);
    for (;;) {
      if (frameBytes === undefined) {
        // Parse the varint prefix, refusing an oversize length before buffering the frame.
        let value = 0;
        let multiplier = 1;
        let prefixBytes = 0;
        let complete = false;
        while (prefixBytes < buffer.byteLength) {
          const byte = buffer.get(prefixBytes);
          prefixBytes += 1;
          value += (byte & 0x7f) * multiplier;
          multiplier *= 0x80;
          if (value > frameBytesMax) {
            throw new FrameTooLargeError(`frame length exceeds the maximum of ${frameBytesMax} bytes`, {
              frameBytesMax,
            });
          }
          if ((byte & 0x80) === 0) {
            complete = true;
            break;
          }
          if (prefixBytes >= varintBytesMax)
            throw new DecodeError('malformed frame length (varint too long)');
        }
        if (!complete) break;
        buffer.consume(prefixBytes);
        frameBytes = value;
      }
      if (buffer.byteLength < frameBytes) break;
      const frame = buffer.sublist(0, frameBytes);
      buffer.consume(frameBytes);
      frameBytes = undefined;
      yield frame;
    }
  }
  if (frameBytes !== undefined || buffer.byteLength > 0) {
    throw new DecodeError(
      `truncated frame: the stream ended inside a frame (${buffer.byteLength} of ${frameBytes ?? 'an unknown number of'} bytes)`,
      { bytesBuffered: buffer.byteLength },
    );
  }
}
