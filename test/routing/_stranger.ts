/**
 * A peer that is not a member of the cell, for test/routing/subnets.test.ts (run in a network
 * namespace): tries to reserve a slot on a relay and to reach a member through it. Prints one JSON
 * line: whether each attempt was refused, with the error.
 *
 *   node test/routing/_stranger.ts RELAY_MULTIADDR TARGET_PEER_ID
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import { cellInfoMethod } from '../../node/daemon/protocols.ts';
import { createHost } from '../../node/net/host.ts';
import { call } from '../../node/net/rpc.ts';

const [relay, target] = process.argv.slice(2);
if (relay === undefined || target === undefined) throw new Error('usage: _stranger.ts RELAY TARGET');
const host = await createHost({
  privateKey: await generateKeyPair('Ed25519'),
  listen: ['/ip4/0.0.0.0/tcp/0'],
  isMember: () => false,
  relayServer: false,
});
const attempt = async (action: () => Promise<unknown>) => {
  try {
    await action();
    return { refused: false };
  } catch (error) {
    return { refused: true, error: (error as Error).message.slice(0, 300) };
  }
};
const reservation = await attempt(() => host.listenViaRelay(relay));
const relayed = await attempt(() =>
  call(host, `${relay}/p2p-circuit/p2p/${target}`, cellInfoMethod, {}, { timeoutMs: 10_000 }),
);
// And the relay's own zhsm protocols, directly.
const direct = await attempt(() => call(host, relay, cellInfoMethod, {}, { timeoutMs: 10_000 }));
console.log(JSON.stringify({ reservation, relayed, direct }));
await host.stop();
process.exit(0);
