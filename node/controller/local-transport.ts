/**
 * An in-process network of controller replicas (tests, `npm start` on one machine): messages are
 * delivered asynchronously; a replica can be disconnected (its messages dropped both ways).
 */
import type { Message, NodeId } from '../../consensus/types.ts';
import type { ReplicaTransport } from './replica.ts';

export class LocalNetwork {
  readonly #receivers = new Map<NodeId, (message: Message) => void>();
  readonly #disconnected = new Set<NodeId>();
  delivered = 0;

  transport(id: NodeId): ReplicaTransport {
    return {
      send: (message) => {
        if (this.#disconnected.has(message.from) || this.#disconnected.has(message.to)) return;
        setImmediate(() => {
          if (this.#disconnected.has(message.from) || this.#disconnected.has(message.to)) return;
          const receive = this.#receivers.get(message.to);
          if (receive === undefined) return;
          this.delivered++;
          receive(message);
        });
      },
      listen: (receive) => {
        this.#receivers.set(id, receive);
      },
    };
  }

  disconnect(id: NodeId): void {
    this.#disconnected.add(id);
  }

  reconnect(id: NodeId): void {
    this.#disconnected.delete(id);
  }

  /** Forget a replica (it crashed); a restarted one registers again. */
  remove(id: NodeId): void {
    this.#receivers.delete(id);
  }
}
