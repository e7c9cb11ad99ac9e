/**
 * Routing decisions (node/daemon/routing.ts) and CIDR parsing (node/common/cidr.ts), as pure
 * functions: which addresses a node dials, which relays it uses and where it holds reservations.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatServers, formatStatus } from '../../node/cli/zhsm-format.ts';
import { inAnySubnet, isLoopback, parseIp, parseSubnet } from '../../node/common/cidr.ts';
import { parseConfig } from '../../node/daemon/config.ts';
import { dialAddresses, parseRouteArgument, pathsTo, relaysToReserve } from '../../node/daemon/routing.ts';
import type { Member, MemberNetwork } from '../../node/metadata/records.ts';

describe('cidr', () => {
  test('IPv4 and IPv6 subnets contain what they should', () => {
    const a = parseSubnet('10.71.1.2/24');
    assert.equal(a.family, 4);
    assert.equal(a.prefix, 24);
    assert.ok(inAnySubnet([a], '10.71.1.200'));
    assert.ok(!inAnySubnet([a], '10.71.2.1'));
    assert.ok(inAnySubnet([parseSubnet('0.0.0.0/0')], '192.168.5.5'));
    assert.ok(inAnySubnet([parseSubnet('fd00:1::/64')], 'fd00:1::5'));
    assert.ok(inAnySubnet([parseSubnet('fd00:1::/64')], 'fd00:1:0:0:ffff::1'));
    assert.ok(!inAnySubnet([parseSubnet('fd00:1::/64')], 'fd00:2::5'));
    assert.ok(inAnySubnet([a], '::ffff:10.71.1.9'), 'IPv4-mapped IPv6 counts as IPv4');
    assert.ok(!inAnySubnet([a], 'fd00:1::5'));
    assert.equal(parseIp('::1')?.value, 1n);
    assert.equal(parseIp('not-an-ip'), undefined);
    assert.ok(isLoopback('127.0.0.1') && isLoopback('127.9.9.9') && isLoopback('::1'));
    assert.ok(!isLoopback('10.0.0.1'));
  });

  test('bad subnets are clear errors', () => {
    assert.throws(() => parseSubnet('10.0.0.0'), /needs a \/prefix/);
    assert.throws(() => parseSubnet('10.0.0/8'), /not an IP address/);
    assert.throws(() => parseSubnet('10.0.0.0/33'), /prefix must be 0..32/);
    assert.throws(() => parseSubnet('fd00::/129'), /prefix must be 0..128/);
    assert.throws(() => parseSubnet('10.0.0.0/-1'), /prefix/);
  });

  test('route arguments: CIDR=MULTIADDR, validated', () => {
    assert.deepEqual(parseRouteArgument('10.2.0.0/16=/ip4/10.2.0.5/tcp/4001'), {
      subnet: '10.2.0.0/16',
      address: '/ip4/10.2.0.5/tcp/4001',
    });
    assert.throws(() => parseRouteArgument('10.2.0.0/16'), /expected CIDR=MULTIADDR/);
    assert.throws(() => parseRouteArgument('10.2.0.0/40=/ip4/1.2.3.4/tcp/1'), /prefix/);
    assert.throws(() => parseRouteArgument('10.2.0.0/16=tcp://1.2.3.4'), /not a dialable multiaddr/);
    assert.throws(
      () =>
        parseConfig(
          JSON.stringify({
            formatVersion: 1,
            cell: 'c',
            name: 'n',
            controllerId: 0,
            backends: [],
            listen: [],
            routes: [{ subnet: 'x', address: '/ip4/1.2.3.4/tcp/1' }],
          }),
          'node.json',
        ),
      /node.json: routes\[0\]: subnet "x" needs a \/prefix/,
    );
  });
});

const net = (subnets: string[], routes: MemberNetwork['routes'] = [], hostname = 'h'): MemberNetwork => ({
  subnets,
  routes,
  hostname,
});
const member = (peerId: string, addresses: string[], network?: MemberNetwork, controllerId = 0): Member => ({
  peerId,
  controllerId,
  joinedMs: 0,
  joinToken: new Uint8Array(0),
  addresses: addresses.map((a) => `${a}/p2p/${peerId}`),
  ...(network === undefined ? {} : { network }),
});

// Subnet A (10.71.1.0/24): the client. Subnet B (10.71.2.0/24): storage servers. The controller C
// and the relay server R have a leg in both.
const client = member('Client', ['/ip4/10.71.1.2/tcp/1'], net(['10.71.1.2/24'], [], 'a'));
const controller = member(
  'Ctrl',
  ['/ip4/10.71.1.1/tcp/1', '/ip4/10.71.2.1/tcp/1'],
  net(['10.71.1.1/24', '10.71.2.1/24'], [], 'c'),
  1,
);
const relay = member(
  'Relay',
  ['/ip4/10.71.1.3/tcp/1', '/ip4/10.71.2.3/tcp/1'],
  net(['10.71.1.3/24', '10.71.2.3/24'], [], 'r'),
);
const storage = member('Store', ['/ip4/10.71.2.2/tcp/1'], net(['10.71.2.2/24'], [], 's'));
const members = [client, controller, relay, storage];

describe('routing', () => {
  test('a member on a shared subnet is dialed directly, at the address on that subnet', () => {
    const paths = pathsTo({ peerId: 'Client', network: client.network }, controller, members);
    assert.deepEqual(paths.direct, ['/ip4/10.71.1.1/tcp/1/p2p/Ctrl']);
    assert.deepEqual(paths.relayed, []);
  });

  test('no shared subnet: relayed through a storage server or client before the controller', () => {
    const paths = pathsTo({ peerId: 'Client', network: client.network }, storage, members);
    assert.deepEqual(paths.direct, []);
    assert.deepEqual(
      paths.relayed.map((r) => r.relay),
      ['Relay', 'Ctrl'],
    );
    assert.equal(paths.relayed[0]!.address, '/ip4/10.71.1.3/tcp/1/p2p/Relay/p2p-circuit/p2p/Store');
    assert.deepEqual(paths.other, ['/ip4/10.71.2.2/tcp/1/p2p/Store']);
    // Direct first (none here), relays, then the unclassified rest.
    assert.equal(dialAddresses(paths).at(-1), '/ip4/10.71.2.2/tcp/1/p2p/Store');
  });

  test('a route for the viewer subnet wins over relaying', () => {
    const routed = {
      ...storage,
      network: net(['10.71.2.2/24'], [{ subnet: '10.71.1.0/24', address: '/ip4/10.99.0.1/tcp/9000' }], 's'),
    };
    const paths = pathsTo({ peerId: 'Client', network: client.network }, routed, [client, routed]);
    assert.deepEqual(paths.direct, ['/ip4/10.99.0.1/tcp/9000/p2p/Store']);
    assert.deepEqual(paths.relayed, []);
  });

  test('a relay must reach the target itself; a dead end is not offered', () => {
    const lonely = member('Lonely', ['/ip4/10.71.1.9/tcp/1'], net(['10.71.1.9/24'], [], 'l'));
    const paths = pathsTo({ peerId: 'Client', network: client.network }, storage, [client, lonely, storage]);
    assert.deepEqual(paths.relayed, []);
  });

  test('loopback addresses only between processes of one host', () => {
    const local = member('Local', ['/ip4/127.0.0.1/tcp/5'], net(['10.0.0.5/24'], [], 'same'));
    const here = { peerId: 'Me', network: net(['10.0.0.5/24'], [], 'same') };
    assert.deepEqual(pathsTo(here, local, [local]).direct, ['/ip4/127.0.0.1/tcp/5/p2p/Local']);
    const elsewhere = { peerId: 'Me', network: net(['10.0.0.5/24'], [], 'other') };
    assert.deepEqual(pathsTo(elsewhere, local, [local]).direct, []);
    // Another network namespace on the same machine: same host name, its own loopback.
    const namespace = { peerId: 'Me', network: net(['10.0.0.6/24'], [], 'same') };
    assert.deepEqual(pathsTo(namespace, local, [local]).direct, []);
  });

  test('members without network facts are dialed at every announced address', () => {
    const old = member('Old', ['/ip4/10.9.9.9/tcp/1']);
    assert.deepEqual(pathsTo({ peerId: 'Client', network: client.network }, old, [old]).direct, [
      '/ip4/10.9.9.9/tcp/1/p2p/Old',
    ]);
    // decoded records carry null for an absent message field
    const decoded = { ...old, network: null as unknown as MemberNetwork };
    assert.equal(pathsTo({ peerId: 'Client', network: client.network }, decoded, [decoded]).direct.length, 1);
  });

  test('reservations: on reachable members that bridge to subnets this node is not on', () => {
    const fromStorage = relaysToReserve({ peerId: 'Store', network: storage.network }, members);
    assert.deepEqual(
      fromStorage.map((r) => [r.peerId, r.address]),
      [
        ['Ctrl', '/ip4/10.71.2.1/tcp/1/p2p/Ctrl'],
        ['Relay', '/ip4/10.71.2.3/tcp/1/p2p/Relay'],
      ],
    );
    // The controller is on every subnet there is: it needs no relay.
    assert.deepEqual(relaysToReserve({ peerId: 'Ctrl', network: controller.network }, members), []);
  });
});

describe('routing in the CLI output', () => {
  const status = {
    cell: 'c',
    node: { peerId: 'Client', name: 'a', controllerId: 0, storage: false, addresses: [] },
    primary: { id: 1, peerId: 'Ctrl' },
    term: 3,
    commitIndex: 9,
    controllers: [],
    voters: [1],
    learners: [],
    servers: [{ uuid: 'u', name: 'store-1', peerId: 'Store', online: true, power: 'ON', backends: [] }],
    members: 3,
    paths: [
      { peerId: 'Ctrl', controllerId: 1, path: 'direct' as const, address: '/ip4/10.71.1.1/tcp/1' },
      { peerId: 'Store', controllerId: 0, path: 'relayed' as const, via: 'Relay', address: '/x/p2p-circuit' },
      { peerId: 'Relay', controllerId: 0, path: 'none' as const },
    ],
    relayReservations: ['Ctrl'],
  };

  test('zhsm status lists each member with its path and the relay in use', () => {
    const text = formatStatus(status);
    assert.match(text, /Ctrl\s+controller 1\s+direct/);
    assert.match(text, /Store\s+store-1\s+relayed\s+Relay/);
    assert.match(text, /Relay\s+client\s+none/);
    assert.match(text, /relay reservations \(reachable through\): Ctrl/);
  });

  test('zhsm servers --routes shows subnets, routes and candidate paths', () => {
    const paths = pathsTo({ peerId: 'Client', network: client.network }, storage, members);
    const text = formatServers(status, [
      {
        peerId: 'Store',
        controllerId: 0,
        self: false,
        addresses: storage.addresses,
        subnets: storage.network!.subnets,
        hostname: 's',
        routes: [{ subnet: '10.9.0.0/16', address: '/ip4/10.9.0.1/tcp/7' }],
        paths,
        connection: status.paths[1],
      },
    ]);
    assert.match(text, /subnets: 10\.71\.2\.2\/24\s+host: s/);
    assert.match(text, /route: from 10\.9\.0\.0\/16 at \/ip4\/10\.9\.0\.1\/tcp\/7/);
    assert.match(text, /connected: relayed via Relay/);
    assert.match(text, /relayed: \/ip4\/10\.71\.1\.3\/tcp\/1\/p2p\/Relay\/p2p-circuit\/p2p\/Store/);
  });
});
