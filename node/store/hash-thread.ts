/**
 * Worker thread of node/store/hasher.ts: sha256 and per-block crc32 of body streams, so that a
 * large ingest hashes on another core while the main thread writes. Messages:
 *   in:  { stream, chunk: Uint8Array }  |  { stream, end: true }
 *   out: { stream, consumed: number }   |  { stream, hash: Uint8Array, crcs: number[] }
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { crc32 } from 'node:zlib';

interface StreamState {
  hash: Hash;
  crcs: number[];
  blockCrc: number;
  blockFill: number;
}

const blockBytes: number = (workerData as { blockBytes: number }).blockBytes;
const streams = new Map<number, StreamState>();
const port = parentPort;
if (port === null) throw new Error('hash-thread must run as a worker');

port.on('message', (message: { stream: number; chunk?: Uint8Array; end?: boolean }) => {
  let state = streams.get(message.stream);
  if (state === undefined) {
    state = { hash: createHash('sha256'), crcs: [], blockCrc: 0, blockFill: 0 };
    streams.set(message.stream, state);
  }
  if (message.chunk !== undefined) {
    const chunk = message.chunk;
    state.hash.update(chunk);
    let position = 0;
    while (position < chunk.length) {
      const take = Math.min(blockBytes - state.blockFill, chunk.length - position);
      state.blockCrc = crc32(chunk.subarray(position, position + take), state.blockCrc);
      state.blockFill += take;
      position += take;
      if (state.blockFill === blockBytes) {
        state.crcs.push(state.blockCrc);
        state.blockCrc = 0;
        state.blockFill = 0;
      }
    }
    port.postMessage({ stream: message.stream, consumed: chunk.length });
  }
  if (message.end === true) {
    if (state.blockFill > 0) state.crcs.push(state.blockCrc);
    streams.delete(message.stream);
    const digest = state.hash.digest();
    port.postMessage({ stream: message.stream, hash: new Uint8Array(digest), crcs: state.crcs });
  }
});
