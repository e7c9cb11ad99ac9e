/**
 * Routing across subnets: which addresses of a member a node can dial, and when none, which
 * members can relay to it (libp2p circuit relay v2, `<relay address>/p2p-circuit/p2p/<target>`).
 *
 * Every member announces (in the metadata, `Member.network`) the subnets of its interfaces, its
 * host name and optionally a route table: per destination subnet, the address peers in that subnet
 * reach it at (NAT, a second interface, a port forward). From a viewer V, a target T's paths are:
 *
 * 1. direct: T's routes whose subnet contains one of V's interface addresses; then T's announced
 *    addresses that lie in one of V's subnets; loopback addresses only when V and T share one network
 *    stack (same host name and interface subnets: network namespaces differ). Addresses nobody can classify (DNS names) count as direct.
 * 2. relayed, when 1 is empty: through a member R (not V, not T) that V reaches directly and
 *    that reaches T directly by the same rules (seen from R's subnets). Storage servers and
 *    clients before controllers (the note: "proxied through the controller or another server"),
 *    so controllers carry data only when nothing else can; then by peer id. At most
 *    `RELAYS_PER_TARGET` relays.
 * 3. as a last resort T's other announced addresses (IP routing beyond the subnets may reach
 *    them; libp2p dials direct addresses before relayed ones, and an unreachable network fails
 *    fast).
 *
 * A relay can only forward to a target that holds a reservation on it: every node reserves a slot
 * on each member it reaches directly that is on, or has a route from, a subnet the node itself lacks
 * (`relaysToReserve`).
 * Members without network facts (older records) are reached at their announced addresses.
 */
import { networkInterfaces, hostname as osHostname } from 'node:os';
import { multiaddr } from '@multiformats/multiaddr';
import { inAnySubnet, isLoopback, parseSubnet, type Subnet } from '../common/cidr.ts';
import { InvalidArgumentError } from '../common/errors.ts';
import type { Member, MemberNetwork, Route } from '../metadata/records.ts';

export const RELAYS_PER_TARGET = 4;
/** Reservations a node holds at most. */
export const RESERVATIONS_MAX = 8;

export interface Paths {
  direct: string[];
  relayed: Array<{ relay: string; address: string }>;
  /** Announced addresses outside every known subnet (tried after the others). */
  other: string[];
}

/** This machine's network facts: interface subnets (not loopback) and host name. */
export function localNetwork(routes: readonly Route[] = []): MemberNetwork {
  const subnets: string[] = [];
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      if (entry.internal || entry.cidr === null) continue;
      if (entry.family === 'IPv6' && entry.address.toLowerCase().startsWith('fe80')) continue;
      subnets.push(entry.cidr);
    }
  }
  return { routes: [...routes], subnets: [...new Set(subnets)].sort(), hostname: osHostname() };
}

/** Check a route (`--route CIDR=MULTIADDR` or node.json); throws a clear InvalidArgumentError. */
export function checkRoute(route: Route): Route {
  parseSubnet(route.subnet);
  try {
    const address = multiaddr(route.address);
    const ip = address
      .getComponents()
      .find((c) => c.name === 'ip4' || c.name === 'ip6' || c.name.startsWith('dns'));
    if (ip === undefined) throw new Error('no ip4/ip6/dns component');
  } catch (error) {
    throw new InvalidArgumentError(
      `route ${route.subnet}=${route.address}: not a dialable multiaddr (${(error as Error).message})`,
    );
  }
  return { subnet: route.subnet, address: route.address };
}

/** Parse `CIDR=MULTIADDR`. */
export function parseRouteArgument(text: string): Route {
  const equals = text.indexOf('=');
  if (equals < 0)
    throw new InvalidArgumentError(
      `route ${JSON.stringify(text)}: expected CIDR=MULTIADDR, e.g. 10.2.0.0/16=/ip4/10.2.0.5/tcp/4001`,
    );
  return checkRoute({ subnet: text.slice(0, equals), address: text.slice(equals + 1) });
}

interface Viewer {
  readonly peerId: string;
  readonly subnets: readonly Subnet[];
  readonly hostname: string;
}

function viewerOf(peerId: string, network: MemberNetwork | undefined | null): Viewer {
  const subnets: Subnet[] = [];
  for (const text of network?.subnets ?? []) {
    try {
      subnets.push(parseSubnet(text));
    } catch {
      // a bad subnet in someone's record: ignore that one
    }
  }
  return { peerId, subnets, hostname: network?.hostname ?? '' };
}

function withPeer(address: string, peerId: string): string {
  return address.includes('/p2p/') ? address : `${address}/p2p/${peerId}`;
}

/** The IP of a multiaddr's first component, or undefined for dns and other kinds. */
function ipOf(address: string): string | undefined {
  const match = /^\/ip[46]\/([^/]+)/.exec(address);
  return match === null ? undefined : match[1];
}

function isCircuit(address: string): boolean {
  return address.includes('/p2p-circuit');
}

/** T's addresses V dials directly, and T's other announced addresses. */
function directFrom(viewer: Viewer, target: Member): { direct: string[]; other: string[] } {
  const network = target.network ?? undefined; // decoded records carry null when absent
  if (network === undefined || viewer.subnets.length === 0) {
    // No facts on one side: every announced address is a candidate, as before routing existed.
    return { direct: target.addresses.filter((a) => !isCircuit(a)), other: [] };
  }
  const direct: string[] = [];
  const other: string[] = [];
  for (const route of network.routes) {
    try {
      const subnet = parseSubnet(route.subnet);
      const mine = viewer.subnets.some(
        (own) => own.family === subnet.family && inAnySubnet([subnet], ipText(own)),
      );
      if (mine) direct.push(withPeer(route.address, target.peerId));
    } catch {
      // validated when stored; ignore a bad one defensively
    }
  }
  for (const address of target.addresses) {
    if (isCircuit(address)) continue;
    const ip = ipOf(address);
    if (ip === undefined) direct.push(address);
    else if (isLoopback(ip)) {
      if (sameMachine(viewer, network)) direct.push(address);
    } else if (inAnySubnet(viewer.subnets, ip)) direct.push(address);
    else other.push(address);
  }
  return { direct: [...new Set(direct)], other };
}

/**
 * Loopback reaches the same network stack only: the same host name AND the same interface
 * subnets (network namespaces on one machine share the host name but not the loopback).
 */
function sameMachine(viewer: Viewer, network: MemberNetwork): boolean {
  if (viewer.hostname === '' || viewer.hostname !== network.hostname) return false;
  const mine = viewer.subnets.map((s) => s.text).sort();
  const theirs = [...network.subnets].sort();
  return mine.length === theirs.length && mine.every((text, i) => text === theirs[i]);
}

/** The interface address a subnet was parsed from (`10.1.2.3/24` -> `10.1.2.3`). */
function ipText(subnet: Subnet): string {
  return subnet.text.slice(0, subnet.text.indexOf('/'));
}

/** Every path from `self` to `target`, best first. */
export function pathsTo(
  self: { peerId: string; network: MemberNetwork | undefined },
  target: Member,
  members: readonly Member[],
): Paths {
  const viewer = viewerOf(self.peerId, self.network);
  const { direct, other } = directFrom(viewer, target);
  if (direct.length > 0) return { direct, relayed: [], other: [] };
  const candidates = members
    .filter((r) => r.peerId !== self.peerId && r.peerId !== target.peerId)
    .sort(
      (a, b) => Number(a.controllerId > 0) - Number(b.controllerId > 0) || a.peerId.localeCompare(b.peerId),
    );
  const relayed: Array<{ relay: string; address: string }> = [];
  for (const relay of candidates) {
    if (relayed.length >= RELAYS_PER_TARGET) break;
    const toRelay = directFrom(viewer, relay).direct;
    if (toRelay.length === 0) continue;
    const fromRelay = directFrom(viewerOf(relay.peerId, relay.network), target).direct;
    if (fromRelay.length === 0) continue;
    for (const address of toRelay.slice(0, 2))
      relayed.push({
        relay: relay.peerId,
        address: `${withPeer(address, relay.peerId)}/p2p-circuit/p2p/${target.peerId}`,
      });
  }
  return { direct: [], relayed, other };
}

/** The addresses to give libp2p for `target`, in preference order. */
export function dialAddresses(paths: Paths): string[] {
  return [...paths.direct, ...paths.relayed.map((r) => r.address), ...paths.other];
}

/**
 * The members this node should hold a relay reservation on: reached directly, and on a subnet (or
 * with a route from a subnet) this node lacks, so peers there may need the relay to reach it. Controllers first (they
 * are the most stable), then by peer id; at most RESERVATIONS_MAX.
 */
export function relaysToReserve(
  self: { peerId: string; network: MemberNetwork | undefined },
  members: readonly Member[],
): Array<{ peerId: string; address: string }> {
  const own = new Set(self.network?.subnets.map(networkOf) ?? []);
  const viewer = viewerOf(self.peerId, self.network);
  if (viewer.subnets.length === 0) return [];
  const out: Array<{ peerId: string; address: string }> = [];
  const sorted = [...members].sort(
    (a, b) => Number(b.controllerId > 0) - Number(a.controllerId > 0) || a.peerId.localeCompare(b.peerId),
  );
  for (const member of sorted) {
    if (out.length >= RESERVATIONS_MAX) break;
    if (member.peerId === self.peerId || member.network == null) continue;
    // Useful as a relay: it sits in, or is reachable from (a route), a subnet this node is not on.
    const reaches = [...member.network.subnets, ...member.network.routes.map((r) => r.subnet)];
    if (!reaches.some((subnet) => !own.has(networkOf(subnet)))) continue;
    const direct = directFrom(viewer, member).direct;
    if (direct.length > 0) out.push({ peerId: member.peerId, address: withPeer(direct[0]!, member.peerId) });
  }
  return out;
}

/** `10.1.2.3/24` -> `4:<network>/24`: compares subnets regardless of the interface address. */
function networkOf(text: string): string {
  try {
    const subnet = parseSubnet(text);
    return `${subnet.family}:${subnet.network}/${subnet.prefix}`;
  } catch {
    return text;
  }
}
