/**
 * The libp2p host of a zhsm node: TCP, Noise, yamux, identify and circuit relay v2 (as a
 * transport, so the node can dial and be reached through relays, and as a server, so every node
 * can relay for the cell).
 *
 * Membership is the cell's decision: the host only calls `isMember(peerId)`. Where it is applied:
 * - Direct connections are NOT gated: a peer that is not yet a member must be able to connect to
 *   present a join token. Every zhsm protocol checks membership per inbound stream (rpc.ts); when
 *   `isMember` says no, the optional async `confirmMember` is asked before refusing.
 * - Relay, through libp2p's connection gater (the relay server consults it):
 *   `denyInboundRelayReservation` refuses a reservation to a non-member;
 *   `denyOutboundRelayedConnection` refuses to relay unless both source and destination are
 *   members; `denyInboundRelayedConnection` refuses a relayed connection to this node unless both
 *   the relay and the remote peer are members.
 * - Because only members ever hold a reservation, the relay server runs with
 *   `applyDefaultLimit: false`: members' relayed connections have no data or duration limit (the
 *   libp2p defaults of 128 KiB / 2 min would kill file transfers). Such connections are not
 *   "limited", so zhsm protocols run on them without `runOnLimitedConnection`. (A large explicit
 *   `defaultDurationLimit` is avoided on purpose: above 2^31-1 ms it becomes a 1 ms timer.)
 */
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { identify } from '@libp2p/identify';
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface';
import { tcp } from '@libp2p/tcp';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { InvalidArgumentError, IoError } from '../common/errors.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import { coalescingTcp } from './coalesce.ts';
import { muxerStreamWindowBytesMax, readHighWaterBytesDefault } from './frames.ts';
import { noiseCrypto } from './noise-crypto.ts';

export const listenDefault = '/ip4/127.0.0.1/tcp/0';
/** Relay reservations a node holds at most (libp2p's default is 15). */
export const relayReservationsMaxDefault = 1024;
/** Relayed connections a node carries at once (one STOP stream each). */
export const relayedConnectionsMaxDefault = 1024;
/** Connections a host keeps at most. */
export const connectionsMaxDefault = 1024;
/** New inbound connections accepted per remote host and second (libp2p's default is 5). */
export const inboundConnectionsPerSecondMax = 100;
/**
 * Streams a peer may open on a new connection before this side has finished setting it up
 * (yamux's default of 10 aborts the whole connection when many calls start at once).
 */
export const earlyStreamsMax = 512;
export const pingTimeoutMsMin = 10_000;

export interface HostOptions {
  readonly privateKey: PrivateKey;
  /** Multiaddrs to listen on; default `/ip4/127.0.0.1/tcp/0`. A `.../p2p/RELAY/p2p-circuit`
   * address makes a reservation on that relay (the relay must be started and a member). */
  readonly listen?: readonly string[];
  /** Addresses to announce instead of the listen addresses (e.g. behind NAT). */
  readonly announce?: readonly string[];
  /** The cell's membership predicate, consulted for relaying and for every inbound zhsm stream. */
  readonly isMember: (peerId: string) => boolean;
  /**
   * Optional second opinion for an inbound zhsm stream from a peer `isMember` does not know (e.g.
   * a member so new that this node has not heard of it yet: ask the primary). Consulted only when
   * `isMember` says no; a rejection or a slow answer counts as "no" (see rpc.ts `admitPeer`).
   * Relaying is gated by `isMember` alone.
   */
  readonly confirmMember?: (peerId: string) => Promise<boolean>;
  readonly logger?: Logger;
  /** Serve as a relay for members (default true). */
  readonly relayServer?: boolean;
  readonly relayReservationsMax?: number;
  readonly connectionsMax?: number;
}

export interface HostCounters {
  /** Inbound zhsm streams refused because the peer is not a member. */
  refusedStreams: number;
  /** Relay reservations or relayed connections refused to non-members. */
  refusedRelays: number;
}

/** A started libp2p node plus what zhsm's protocols need from the cell. */
export interface Host {
  readonly libp2p: Libp2p;
  readonly peerId: PeerId;
  readonly isMember: (peerId: string) => boolean;
  readonly confirmMember?: ((peerId: string) => Promise<boolean>) | undefined;
  readonly log: Logger;
  readonly counters: HostCounters;
  /** The addresses others can dial, each ending in `/p2p/<peer id>`. */
  multiaddrs(): Multiaddr[];
  /** Make a reservation on a relay and listen through it (`<relay addr>/p2p/<relay id>`). */
  listenViaRelay(relay: Multiaddr | string): Promise<void>;
  /**
   * The order to dial a peer's addresses in (routing's preference: direct, then relays best
   * first). libp2p dials one address after another in its sorter's order; this ranks them.
   */
  setDialOrder(peerId: string, addresses: readonly string[]): void;
  /**
   * Called when an inbound call of a zhsm method (node/net/rpc.ts `serve`/`serveStream`) ends:
   * the method name, 'OK' or the error code sent back, and the seconds it took (metrics).
   */
  onInboundCall?: ((method: string, code: string, seconds: number) => void) | undefined;
  stop(): Promise<void>;
}

function parseMultiaddrs(values: readonly string[], what: string): string[] {
  return values.map((value) => {
    try {
      return multiaddr(value).toString();
    } catch (error) {
      throw new InvalidArgumentError(
        `invalid ${what} multiaddr ${JSON.stringify(value)}`,
        { value },
        { cause: error },
      );
    }
  });
}

export async function createHost(options: HostOptions): Promise<Host> {
  const log = options.logger ?? silentLogger();
  const isMember = options.isMember;
  const counters: HostCounters = { refusedStreams: 0, refusedRelays: 0 };
  const listen = parseMultiaddrs(options.listen ?? [listenDefault], 'listen');
  // Per peer: address -> rank in routing's order (see setDialOrder). Unranked addresses go last.
  const dialOrders = new Map<string, Map<string, number>>();
  const dialRank = (address: string): number => {
    const at = address.lastIndexOf('/p2p/');
    const peer = at < 0 ? undefined : address.slice(at + 5);
    const ranks = peer === undefined ? undefined : dialOrders.get(peer);
    return ranks?.get(address) ?? Number.MAX_SAFE_INTEGER;
  };
  const announce = options.announce === undefined ? undefined : parseMultiaddrs(options.announce, 'announce');
  const refuseRelay = (reason: string, peers: Record<string, string>) => {
    counters.refusedRelays += 1;
    log.warn({ ...peers }, `relay refused: ${reason}`);
    return true;
  };
  const services: Record<string, (components: never) => unknown> = { identify: identify() };
  if (options.relayServer !== false) {
    services.relay = circuitRelayServer({
      reservations: {
        applyDefaultLimit: false,
        maxReservations: options.relayReservationsMax ?? relayReservationsMaxDefault,
      },
      maxOutboundStopStreams: relayedConnectionsMaxDefault,
    }) as never;
  }
  let libp2p: Libp2p;
  try {
    libp2p = await createLibp2p({
      privateKey: options.privateKey,
      addresses: announce === undefined ? { listen } : { listen, announce },
      transports: [
        // One socket write per tick's sends (node/net/coalesce.ts).
        coalescingTcp(tcp()),
        circuitRelayTransport({ maxInboundStopStreams: relayedConnectionsMaxDefault }),
      ],
      // Noise with the session key kept as a KeyObject (node/net/noise-crypto.ts).
      connectionEncrypters: [noise({ crypto: noiseCrypto })],
      streamMuxers: [
        yamux({
          maxEarlyStreams: earlyStreamsMax,
          streamOptions: {
            maxStreamWindowSize: muxerStreamWindowBytesMax,
            maxReadBufferLength: muxerStreamWindowBytesMax + readHighWaterBytesDefault,
          },
        }),
      ],
      // Ping every 10 s (libp2p's default) and drop a connection whose ping fails, but allow a
      // loaded peer 10 s to answer (the default 5 s can cut a busy bulk transfer).
      connectionMonitor: { pingTimeout: { minTimeout: pingTimeoutMsMin } },
      connectionManager: {
        // Direct addresses before relayed ones, then the order routing put them in (setDialOrder,
        // node/daemon/routing.ts). libp2p's default sorts loopback addresses after everything,
        // relayed paths included, so a peer on this machine would be reached through a relay.
        addressSorter: (a, b) => {
          const x = a.multiaddr.toString();
          const y = b.multiaddr.toString();
          return relayedLast(x, y) || (Math.sign(dialRank(x) - dialRank(y)) as -1 | 0 | 1);
        },
        maxConnections: options.connectionsMax ?? connectionsMaxDefault,
        inboundConnectionThreshold: inboundConnectionsPerSecondMax,
      },
      connectionGater: {
        denyInboundRelayReservation: (source) =>
          isMember(source.toString())
            ? false
            : refuseRelay('reservation by a non-member', { source: source.toString() }),
        denyOutboundRelayedConnection: (source, destination) =>
          isMember(source.toString()) && isMember(destination.toString())
            ? false
            : refuseRelay('relaying for a non-member', {
                source: source.toString(),
                destination: destination.toString(),
              }),
        denyInboundRelayedConnection: (relay, remotePeer) =>
          isMember(relay.toString()) && isMember(remotePeer.toString())
            ? false
            : refuseRelay('relayed connection from or through a non-member', {
                relay: relay.toString(),
                remotePeer: remotePeer.toString(),
              }),
      },
      services: services as never,
      start: true,
    });
  } catch (error) {
    throw new IoError(`cannot start libp2p host: ${(error as Error).message}`, { listen }, { cause: error });
  }
  log.info({ peerId: libp2p.peerId.toString(), addrs: libp2p.getMultiaddrs().map(String) }, 'host started');
  return {
    libp2p,
    peerId: libp2p.peerId,
    isMember,
    confirmMember: options.confirmMember,
    log,
    counters,
    multiaddrs: () => libp2p.getMultiaddrs(),
    setDialOrder(peerId, addresses) {
      const suffix = `/p2p/${peerId}`;
      const ranks = new Map<string, number>();
      addresses.forEach((address, rank) => {
        ranks.set(address.endsWith(suffix) ? address : `${address}${suffix}`, rank);
      });
      if (ranks.size === 0) dialOrders.delete(peerId);
      else dialOrders.set(peerId, ranks);
    },
    async listenViaRelay(relay) {
      const relayAddress = typeof relay === 'string' ? multiaddr(relay) : relay;
      const circuit = relayAddress.encapsulate('/p2p-circuit');
      const components = (libp2p as unknown as { components?: { transportManager?: TransportManagerLike } })
        .components;
      const transportManager = components?.transportManager;
      if (transportManager === undefined)
        throw new IoError('this libp2p version has no transport manager to listen with');
      try {
        await transportManager.listen([circuit]);
      } catch (error) {
        throw new IoError(
          `cannot listen via relay ${circuit.toString()}: ${(error as Error).message}`,
          {
            relay: circuit.toString(),
          },
          { cause: error },
        );
      }
    },
    async stop() {
      await libp2p.stop();
      log.info('host stopped');
    },
  };
}

interface TransportManagerLike {
  listen(addresses: Multiaddr[]): Promise<void>;
}

/** Compare function: relayed (`/p2p-circuit`) addresses after direct ones; stable otherwise. */
export function relayedLast(a: string, b: string): -1 | 0 | 1 {
  const relayedA = a.includes('/p2p-circuit');
  const relayedB = b.includes('/p2p-circuit');
  return relayedA === relayedB ? 0 : relayedA ? 1 : -1;
}
