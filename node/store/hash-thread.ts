/**
 * Worker thread of node/store/hasher.ts: sha256 and per-block checksums of body streams, so that a
 * large ingest hashes on another core while the main thread writes. Messages:
 *   in:  { stream, chunk: Uint8Array }  |  { stream, end: true }
 *   out: { stream, consumed: number, memory: ArrayBuffer (the piece's, transferred back) }
 *      | { stream, hash: Uint8Array, crcs: number[] }
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { BlockChecksummer } from './checksum.ts';

interface StreamState {
  hash: Hash;
  blocks: BlockChecksummer;
}

const blockBytes: number = (workerData as { blockBytes: number }).blockBytes;
const streams = new Map<number, StreamState>();
const port = parentPort;
if (port === null) throw new Error('hash-thread must run as a worker');

port.on('message', (message: { stream: number; chunk?: Uint8Array; end?: boolean }) => {
  let state = streams.get(message.stream);
  if (state === undefined) {
    state = { hash: createHash('sha256'), blocks: new BlockChecksummer(blockBytes) };
    streams.set(message.stream, state);
  }
  if (message.chunk !== undefined) {
    const chunk = message.chunk;
    state.hash.update(chunk);
    state.blocks.update(chunk);
    // The piece's memory goes back for the next copy.
    const memory = chunk.buffer as ArrayBuffer;
    port.postMessage({ stream: message.stream, consumed: chunk.length, memory }, [memory]);
  }
  if (message.end === true) {
    streams.delete(message.stream);
    const digest = state.hash.digest();
    port.postMessage({ stream: message.stream, hash: new Uint8Array(digest), crcs: state.blocks.finish() });
  }
});
