/**
 * The zhsm network layer: persistent identity, the libp2p host (TCP + Noise + yamux + identify +
 * circuit relay v2 for cell members), length-prefixed frames, typed RPC / streaming services
 * over `/zhsm/<name>/1.0.0`, and multiplexed sessions (many calls on one long-lived stream).
 * See each module's header for the details and the limits it enforces.
 */
export {
  type Chunk,
  encodeFrame,
  encodeVarint,
  type FrameSink,
  frameBytesMaxDefault,
  readFrameLists,
  readFrames,
  streamChunks,
  writeFrame,
} from './frames.ts';
export { createHost, type Host, type HostCounters, type HostOptions } from './host.ts';
export { type Identity, loadOrCreateIdentity } from './identity.ts';
export {
  type CallContext,
  type CallOptions,
  call,
  callStream,
  defineMethod,
  type Method,
  type PeerTarget,
  remoteErrorToError,
  type ServeOptions,
  type Service,
  type StreamCall,
  type StreamCallOptions,
  type StreamContext,
  type StreamHandler,
  serve,
  serveStream,
  type UnaryHandler,
} from './rpc.ts';
export {
  type OpenSessionOptions,
  openSession,
  type Session,
  type SessionCallOptions,
  type SessionService,
  serveSession,
} from './session.ts';
