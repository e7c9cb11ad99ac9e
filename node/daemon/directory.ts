/**
 * What a node knows about the cell's members: peer ids, controller ids and addresses.
 *
 * Controllers fill it from their own copy of the metadata after every applied batch; other nodes
 * from the primary (cell-info), periodically and whenever an unknown peer knocks (`confirm`). It is
 * cached in members.json so a restarted node can find the cell on its own.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import type { Logger } from '../common/log.ts';
import type { Member, MemberNetwork } from '../metadata/records.ts';
import type { Host } from '../net/host.ts';
import { dialAddresses, type Paths, pathsTo, relaysToReserve } from './routing.ts';

export interface ControllerAddress {
  readonly peerId: string;
  readonly addresses: readonly string[];
}

export class MemberDirectory {
  #members = new Map<string, Member>();
  #byController = new Map<number, Member>();
  #version = 0;
  readonly #listeners: Array<(members: readonly Member[]) => void> = [];
  /** This node, for routing (`setSelf`); without it every announced address counts as direct. */
  #self: { peerId: string; network: MemberNetwork | undefined } = { peerId: '', network: undefined };

  constructor(initial: readonly Member[] = []) {
    this.replace(initial);
  }

  /** Who is looking: routing decisions are made from this node's subnets. */
  setSelf(peerId: string, network: MemberNetwork): void {
    this.#self = { peerId, network };
  }

  get selfNetwork(): MemberNetwork | undefined {
    return this.#self.network;
  }

  /** The paths from this node to a member (direct, relayed, other); undefined for strangers. */
  pathsTo(peerId: string): Paths | undefined {
    const member = this.#members.get(peerId);
    return member === undefined ? undefined : pathsTo(this.#self, member, this.all());
  }

  /** The members this node should hold a relay reservation on. */
  relaysToReserve(): Array<{ peerId: string; address: string }> {
    return relaysToReserve(this.#self, this.all());
  }

  /**
   * Give libp2p the addresses to dial a peer at: the routed paths for a member, else `fallback`
   * (e.g. a storage server's registered addresses). Replaces what the peer store held, so an
   * address that is unreachable from here is not tried again.
   */
  async remember(host: Host, peerId: string, fallback: readonly string[] = [], log?: Logger): Promise<void> {
    const paths = this.pathsTo(peerId);
    const addresses = paths === undefined ? [...fallback] : dialAddresses(paths);
    await rememberAddresses(host, peerId, addresses.length > 0 ? addresses : fallback, log, true);
  }

  /** Bumped on every change. */
  get version(): number {
    return this.#version;
  }

  isMember(peerId: string): boolean {
    return this.#members.has(peerId);
  }

  member(peerId: string): Member | undefined {
    return this.#members.get(peerId);
  }

  /** A controller with the addresses to dial it at from this node (routed). */
  controller(id: number): ControllerAddress | undefined {
    const member = this.#byController.get(id);
    if (member === undefined) return undefined;
    const paths = this.pathsTo(member.peerId);
    const addresses = paths === undefined ? member.addresses : dialAddresses(paths);
    return { peerId: member.peerId, addresses: addresses.length > 0 ? addresses : member.addresses };
  }

  all(): Member[] {
    return [...this.#members.values()];
  }

  controllers(): Member[] {
    return [...this.#byController.values()].sort((a, b) => a.controllerId - b.controllerId);
  }

  onChange(listener: (members: readonly Member[]) => void): void {
    this.#listeners.push(listener);
  }

  /** Replace the whole list; returns true if anything changed. */
  replace(members: readonly Member[]): boolean {
    const next = new Map(members.map((m) => [m.peerId, m]));
    if (sameMembers(this.#members, next)) return false;
    this.#members = next;
    this.#byController = new Map(
      [...next.values()].filter((m) => m.controllerId > 0).map((m) => [m.controllerId, m]),
    );
    this.#version += 1;
    const list = this.all();
    for (const listener of this.#listeners) listener(list);
    return true;
  }

  /** Add or update these members, keeping the others. */
  merge(members: readonly Member[]): boolean {
    const next = new Map(this.#members);
    for (const member of members) next.set(member.peerId, member);
    return this.replace([...next.values()]);
  }

  /**
   * Take the members from a copy of the metadata: all of it once that copy knows `self` (it has
   * caught up at least to this node's own admission), otherwise only as additions (a controller
   * that is still catching up must not forget the members it learned when it joined).
   */
  fromMetadata(members: readonly Member[], self: string): boolean {
    return members.some((m) => m.peerId === self) ? this.replace(members) : this.merge(members);
  }

  /** Add or update one member (e.g. right after a join was admitted). */
  upsert(member: Member): void {
    const next = new Map(this.#members);
    next.set(member.peerId, member);
    this.replace([...next.values()]);
  }
}

function sameMembers(a: ReadonlyMap<string, Member>, b: ReadonlyMap<string, Member>): boolean {
  if (a.size !== b.size) return false;
  for (const [peerId, member] of a) {
    const other = b.get(peerId);
    if (other === undefined || other.controllerId !== member.controllerId) return false;
    if ((other.softwareLevel ?? 0) !== (member.softwareLevel ?? 0)) return false;
    if (other.addresses.length !== member.addresses.length) return false;
    if (other.addresses.some((address, i) => address !== member.addresses[i])) return false;
    if (!sameNetwork(other.network, member.network)) return false;
  }
  return true;
}

export function sameNetwork(
  a: MemberNetwork | undefined | null,
  b: MemberNetwork | undefined | null,
): boolean {
  if (a == null || b == null) return (a ?? undefined) === (b ?? undefined);
  return (
    a.hostname === b.hostname &&
    a.subnets.length === b.subnets.length &&
    a.subnets.every((s, i) => s === b.subnets[i]) &&
    a.routes.length === b.routes.length &&
    a.routes.every((r, i) => r.subnet === b.routes[i]!.subnet && r.address === b.routes[i]!.address)
  );
}

/**
 * How long a peer's replaced addresses are trusted before they are written again: every chunk
 * transfer looks its server up, and a peer-store patch (a write lock and a merge) per chunk cost
 * the mover's controller about 5 % of its CPU. Within this time the peer store may hold what
 * identify learned instead (dials still rank routing's order first, setDialOrder).
 */
const rememberedForMs = 10_000;
const remembered = new WeakMap<Host, Map<string, { addresses: string; atMs: number }>>();

/**
 * Put a peer's addresses into the libp2p peer store so a dial by peer id finds them: merged with
 * what it knows, or (`replace`) instead of it.
 */
export async function rememberAddresses(
  host: Host,
  peerId: string,
  addresses: readonly string[],
  log?: Logger,
  replace = false,
): Promise<void> {
  if (peerId === host.peerId.toString() || addresses.length === 0) return;
  const key = addresses.join(' ');
  let byPeer = remembered.get(host);
  if (replace) {
    const last = byPeer?.get(peerId);
    if (last !== undefined && last.addresses === key && Date.now() - last.atMs < rememberedForMs) return;
  }
  try {
    const multiaddrs = addresses.map((address) => multiaddr(address));
    const id = peerIdFromString(peerId);
    if (replace) {
      host.setDialOrder(peerId, addresses);
      await host.libp2p.peerStore.patch(id, { multiaddrs });
      if (byPeer === undefined) {
        byPeer = new Map();
        remembered.set(host, byPeer);
      }
      byPeer.set(peerId, { addresses: key, atMs: Date.now() });
    } else {
      await host.libp2p.peerStore.merge(id, { multiaddrs });
      byPeer?.delete(peerId);
    }
  } catch (error) {
    log?.warn({ peer: peerId, err: error }, 'cannot remember the addresses of a peer');
  }
}
