/**
 * IP subnets in CIDR notation (`10.1.2.0/24`, `10.1.2.3/24`, `fd00::/64`): parsing with clear
 * errors and membership tests, for the routing tables of node/daemon/routing.ts. IPv4-mapped IPv6
 * addresses (`::ffff:10.1.2.3`) count as IPv4.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { InvalidArgumentError } from './errors.ts';

export interface Subnet {
  readonly family: 4 | 6;
  /** The network address as a big-endian integer (host bits cleared). */
  readonly network: bigint;
  readonly prefix: number;
  /** The text it was parsed from. */
  readonly text: string;
}

/** An IP address as a big-endian integer with its family, or undefined if `text` is not one. */
export function parseIp(text: string): { family: 4 | 6; value: bigint } | undefined {
  if (isIPv4(text)) {
    const value = text.split('.').reduce((sum, part) => (sum << 8n) | BigInt(Number(part)), 0n);
    return { family: 4, value };
  }
  if (!isIPv6(text)) return undefined;
  const lower = text.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (mapped !== null) return parseIp(mapped[1]!);
  const withoutZone = lower.split('%')[0]!;
  let groups: string[];
  const [head, tail] = withoutZone.split('::') as [string, string | undefined];
  const split = (part: string) => (part === '' ? [] : part.split(':'));
  if (tail === undefined) groups = split(head);
  else {
    const left = split(head);
    const right = split(tail);
    // An embedded IPv4 tail (::1.2.3.4) counts as two groups.
    const last = right.at(-1);
    if (last?.includes('.')) {
      const v4 = parseIp(last as string)?.value ?? 0n;
      right.splice(-1, 1, ((v4 >> 16n) & 0xffffn).toString(16), (v4 & 0xffffn).toString(16));
    }
    groups = [...left, ...new Array<string>(8 - left.length - right.length).fill('0'), ...right];
  }
  if (groups.length !== 8) return undefined;
  const value = groups.reduce((sum, group) => (sum << 16n) | BigInt(Number.parseInt(group, 16)), 0n);
  return { family: 6, value };
}

/** Parse `address/prefix`; throws InvalidArgumentError with the reason. */
export function parseSubnet(text: string): Subnet {
  const slash = text.indexOf('/');
  if (slash < 0)
    throw new InvalidArgumentError(`subnet ${JSON.stringify(text)} needs a /prefix (e.g. 10.1.2.0/24)`);
  const ip = parseIp(text.slice(0, slash));
  if (ip === undefined)
    throw new InvalidArgumentError(
      `subnet ${JSON.stringify(text)}: ${JSON.stringify(text.slice(0, slash))} is not an IP address`,
    );
  const bits = ip.family === 4 ? 32 : 128;
  const prefixText = text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > bits)
    throw new InvalidArgumentError(`subnet ${JSON.stringify(text)}: the prefix must be 0..${bits}`);
  return { family: ip.family, network: ip.value & mask(bits, prefix), prefix, text };
}

function mask(bits: number, prefix: number): bigint {
  if (prefix === 0) return 0n;
  return ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
}

export function subnetContains(subnet: Subnet, ip: { family: 4 | 6; value: bigint }): boolean {
  if (subnet.family !== ip.family) return false;
  const bits = subnet.family === 4 ? 32 : 128;
  return (ip.value & mask(bits, subnet.prefix)) === subnet.network;
}

/** True when `ip` (text) lies in any of `subnets`. */
export function inAnySubnet(subnets: readonly Subnet[], ip: string): boolean {
  const parsed = parseIp(ip);
  return parsed !== undefined && subnets.some((subnet) => subnetContains(subnet, parsed));
}

export function isLoopback(ip: string): boolean {
  const parsed = parseIp(ip);
  if (parsed === undefined) return false;
  return parsed.family === 4 ? parsed.value >> 24n === 127n : parsed.value === 1n;
}
