/**
 * Separate networks on one machine for the routing tests: network namespaces joined by veth pairs
 * to one bridge per subnet (the bridges live in a "hub" namespace, so the host's own network is
 * never touched). Nodes run as `nsenter --net=/run/netns/NS node ...`: only the network namespace
 * changes, so a FUSE mount made by a node is visible to the test (unlike `ip netns exec`, which
 * also makes a private mount namespace). Everything is removed by `destroy()`.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Why namespaces cannot be used here, or undefined. */
export async function netnsSkipReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  for (const tool of ['ip', 'nsenter']) {
    try {
      await run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return `${tool} is missing (iproute2, util-linux)`;
    }
  }
  const probe = `zhsmprobe${process.pid % 100000}`;
  try {
    await run('ip', ['netns', 'add', probe]);
    await run('ip', ['netns', 'del', probe]);
  } catch (error) {
    return `cannot create network namespaces here: ${(error as Error).message.split('\n')[0]}`;
  }
  return undefined;
}

export interface HostSpec {
  /** Short name (a-z0-9, at most 4 characters). */
  readonly name: string;
  /** Its legs: subnet index -> last octet (10.<base>.<subnet>.<octet>/24). */
  readonly legs: Readonly<Record<number, number>>;
}

export class Netns {
  readonly prefix: string;
  readonly #names: string[] = [];
  readonly base: number;

  constructor(base = 71) {
    this.prefix = `zr${process.pid % 100000}`;
    this.base = base;
  }

  ns(host: string): string {
    return `${this.prefix}-${host}`;
  }

  ip(subnet: number, octet: number): string {
    return `10.${this.base}.${subnet}.${octet}`;
  }

  subnet(index: number): string {
    return `10.${this.base}.${index}.0/24`;
  }

  /** Create the hub with one bridge per subnet, and every host with a veth leg per subnet. */
  async create(hosts: readonly HostSpec[]): Promise<void> {
    const hub = this.ns('hub');
    await this.#add(hub);
    const subnets = new Set(hosts.flatMap((h) => Object.keys(h.legs).map(Number)));
    for (const subnet of subnets) {
      await exec(hub, ['ip', 'link', 'add', `br${subnet}`, 'type', 'bridge']);
      await exec(hub, ['ip', 'link', 'set', `br${subnet}`, 'up']);
    }
    for (const host of hosts) {
      const ns = this.ns(host.name);
      await this.#add(ns);
      await exec(ns, ['ip', 'link', 'set', 'lo', 'up']);
      for (const [subnetText, octet] of Object.entries(host.legs)) {
        const subnet = Number(subnetText);
        const inside = `eth${subnet}`;
        const outside = `${host.name}-${subnet}`;
        await run('ip', [
          'link',
          'add',
          inside,
          'netns',
          ns,
          'type',
          'veth',
          'peer',
          'name',
          outside,
          'netns',
          hub,
        ]);
        await exec(hub, ['ip', 'link', 'set', outside, 'master', `br${subnet}`]);
        await exec(hub, ['ip', 'link', 'set', outside, 'up']);
        await exec(ns, ['ip', 'addr', 'add', `${this.ip(subnet, octet)}/24`, 'dev', inside]);
        await exec(ns, ['ip', 'link', 'set', inside, 'up']);
      }
      // A host with two legs must not route between them: only zhsm relays may bridge subnets.
      await exec(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
    }
  }

  /** The command prefix that runs a program in a host's network namespace. */
  enter(host: string): string[] {
    return ['nsenter', `--net=/run/netns/${this.ns(host)}`, '--'];
  }

  async destroy(): Promise<void> {
    for (const name of this.#names.reverse()) await run('ip', ['netns', 'del', name]).catch(() => {});
    this.#names.length = 0;
  }

  async #add(name: string): Promise<void> {
    await run('ip', ['netns', 'del', name]).catch(() => {}); // left over from a crashed run
    await run('ip', ['netns', 'add', name]);
    this.#names.push(name);
  }
}

async function exec(ns: string, command: string[]): Promise<void> {
  await run('ip', ['netns', 'exec', ns, ...command]);
}
