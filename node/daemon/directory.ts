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
import type { Member } from '../metadata/records.ts';
import type { Host } from '../net/host.ts';

export interface ControllerAddress {
  readonly peerId: string;
  readonly addresses: readonly string[];
}

export class MemberDirectory {
  #members = new Map<string, Member>();
  #byController = new Map<number, Member>();
  #version = 0;
  readonly #listeners: Array<(members: readonly Member[]) => void> = [];

  constructor(initial: readonly Member[] = []) {
    this.replace(initial);
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

  controller(id: number): ControllerAddress | undefined {
    return this.#byController.get(id);
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
    if (other.addresses.length !== member.addresses.length) return false;
    if (other.addresses.some((address, i) => address !== member.addresses[i])) return false;
  }
  return true;
}

/** Put a peer's known addresses into the libp2p peer store so a dial by peer id finds it. */
export async function rememberAddresses(
  host: Host,
  peerId: string,
  addresses: readonly string[],
  log?: Logger,
): Promise<void> {
  if (peerId === host.peerId.toString() || addresses.length === 0) return;
  try {
    const multiaddrs = addresses.map((address) => multiaddr(address));
    await host.libp2p.peerStore.merge(peerIdFromString(peerId), { multiaddrs });
  } catch (error) {
    log?.warn({ peer: peerId, err: error }, 'cannot remember the addresses of a peer');
  }
}
