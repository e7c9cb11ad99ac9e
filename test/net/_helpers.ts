/** Helpers for the network tests: hosts on 127.0.0.1 that are always stopped. */
import { createHash } from 'node:crypto';
import type { TestContext } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { DecodeError } from '../../node/common/errors.ts';
import { createHost, type Host } from '../../node/net/host.ts';
import { defineMethod } from '../../node/net/rpc.ts';
import { type Codec, codec } from '../../proto/index.ts';

export interface Keyed {
  readonly privateKey: PrivateKey;
  readonly peerId: string;
}

export async function newKey(): Promise<Keyed> {
  const privateKey = await generateKeyPair('Ed25519');
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}

/** A cell's membership: a set of peer ids. */
export function cell(...members: Keyed[]) {
  const ids = new Set(members.map((member) => member.peerId));
  return { ids, isMember: (peerId: string) => ids.has(peerId) };
}

export async function startHost(
  t: TestContext,
  key: Keyed,
  isMember: (peerId: string) => boolean,
  options: { listen?: string[]; relayServer?: boolean } = {},
): Promise<Host> {
  const host = await createHost({ privateKey: key.privateKey, isMember, ...options });
  t.after(() => host.stop());
  return host;
}

/** A pair message from proto/net.proto, handy as a test request/response. */
export interface Pair {
  code: string;
  message: string;
}
export const pairCodec: Codec<Pair> = codec<Pair>('zhsm.net.RemoteError');

/** A JSON codec (tests only). */
export function jsonCodec<T>(typeName: string): Codec<T> {
  return {
    typeName,
    encode: (message) => new TextEncoder().encode(JSON.stringify(message)),
    decode(bytes) {
      try {
        return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as T;
      } catch (error) {
        throw new DecodeError(`malformed ${typeName}`, {}, { cause: error });
      }
    },
  };
}

export const echo = defineMethod<Pair, Pair>({
  name: 'test-echo',
  requestCodec: pairCodec,
  responseCodec: pairCodec,
});

/** Download `bytes` (a request {code: size}) / upload then get {message: sha256}. */
export const transfer = defineMethod<Pair, Pair>({
  name: 'test-transfer',
  requestCodec: pairCodec,
  responseCodec: pairCodec,
});

export function sha256Hex(chunks: Iterable<Uint8Array>): string {
  const hash = createHash('sha256');
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest('hex');
}

/** Deterministic pseudo-random chunks: `totalBytes` in pieces of `chunkBytes`. */
export function* patternChunks(totalBytes: number, chunkBytes: number, seed = 1): Generator<Uint8Array> {
  let state = seed >>> 0 || 1;
  for (let offset = 0; offset < totalBytes; offset += chunkBytes) {
    const length = Math.min(chunkBytes, totalBytes - offset);
    const chunk = new Uint8Array(length);
    const words = new Uint32Array(chunk.buffer, 0, Math.floor(length / 4));
    for (let i = 0; i < words.length; i += 1) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      words[i] = state >>> 0;
    }
    for (let i = words.length * 4; i < length; i += 1) chunk[i] = i & 0xff;
    yield chunk;
  }
}

export const mebibyte = 1024 * 1024;
