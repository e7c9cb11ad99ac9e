/**
 * One socket write per burst instead of one per buffer.
 *
 * @libp2p/tcp hands every buffer of a send to `socket.write` on its own, and Noise sends each
 * message as two buffers (its 2-byte length, then the ciphertext). On an idle socket each write is
 * a syscall and, with Nagle off, its own TCP segment: a small RPC cost about eight writes per side
 * (measured with strace: 2, 28, 2, 112 bytes ...), each waking the peer's event loop.
 *
 * `coalescingTcp` wraps the TCP transport so that every raw connection it upgrades (dialled or
 * accepted) corks its socket at the first send of a tick and uncorks it on the next tick: the
 * buffers sent meanwhile leave in one `writev`. Back-pressure is unchanged (`socket.write` still
 * reports a full buffer, and 'drain' still follows), and nothing waits longer than the current
 * tick.
 */
import { Socket } from 'node:net';
import type { MultiaddrConnection, Transport, Upgrader } from '@libp2p/interface';
import type { tcp } from '@libp2p/tcp';

type TcpFactory = ReturnType<typeof tcp>;
type Components = Parameters<TcpFactory>[0];

interface SocketConnection {
  readonly socket?: unknown;
  sendData?: (data: never) => unknown;
}

/** Make a raw TCP connection send what one tick sends in one write (a no-op for anything else). */
export function coalesceWrites(connection: MultiaddrConnection): void {
  const target = connection as unknown as SocketConnection;
  const socket = target.socket;
  const sendData = target.sendData;
  if (!(socket instanceof Socket) || typeof sendData !== 'function') return;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  target.sendData = (data: never) => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return sendData.call(connection, data);
  };
}

function coalescingUpgrader(upgrader: Upgrader): Upgrader {
  return new Proxy(upgrader, {
    get(target, property, receiver) {
      if (property === 'upgradeInbound' || property === 'upgradeOutbound') {
        const upgrade = target[property] as (connection: MultiaddrConnection, options: never) => unknown;
        return (connection: MultiaddrConnection, options: never) => {
          coalesceWrites(connection);
          return upgrade.call(target, connection, options);
        };
      }
      const value = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** The TCP transport `factory` makes, with its connections' writes coalesced (coalesceWrites). */
export function coalescingTcp(factory: TcpFactory): TcpFactory {
  return (components: Components) => {
    const transport: Transport = factory(components);
    const dial = transport.dial.bind(transport);
    const createListener = transport.createListener.bind(transport);
    transport.dial = (address, options) =>
      dial(address, { ...options, upgrader: coalescingUpgrader(options.upgrader) });
    transport.createListener = (options) =>
      createListener({ ...options, upgrader: coalescingUpgrader(options.upgrader) });
    return transport;
  };
}
