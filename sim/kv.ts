/**
 * The replicated state machine the simulator's clients use: a string key-value map with put,
 * append and (through read index, outside the log) get. Commands are JSON in the entry data.
 */

export type KvCommand =
  | {
      readonly op: 'put';
      readonly key: string;
      readonly value: string;
      readonly client: number;
      readonly id: number;
    }
  | {
      readonly op: 'append';
      readonly key: string;
      readonly value: string;
      readonly client: number;
      readonly id: number;
    };

/** Longest value the state machine accepts (a limit on everything). */
export const valueBytesMax = 1 << 16;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(command: KvCommand): Uint8Array {
  return encoder.encode(JSON.stringify(command));
}

/** Decoded commands by their bytes' identity: the simulated nodes share entry objects. */
const decoded = new WeakMap<Uint8Array, KvCommand>();

export function decodeCommand(data: Uint8Array): KvCommand {
  const cached = decoded.get(data);
  if (cached !== undefined) return cached;
  const command = JSON.parse(decoder.decode(data)) as KvCommand;
  const op: string = command.op;
  if (op !== 'put' && op !== 'append') throw new Error(`unknown kv command ${op}`);
  if (typeof command.key !== 'string' || typeof command.value !== 'string') throw new Error('bad kv command');
  decoded.set(data, command);
  return command;
}

export class KvStore {
  #map = new Map<string, string>();
  /** Per client, the highest command id applied: retried commands apply at most once. */
  #sessions = new Map<number, number>();

  /** Apply a command; false when it is a duplicate of one already applied. */
  apply(command: KvCommand): boolean {
    const last = this.#sessions.get(command.client) ?? 0;
    if (command.id <= last) return false;
    this.#sessions.set(command.client, command.id);
    this.#apply(command);
    return true;
  }

  #apply(command: KvCommand): void {
    if (command.op === 'put') {
      this.#map.set(command.key, command.value);
      return;
    }
    const next = (this.#map.get(command.key) ?? '') + command.value;
    if (next.length > valueBytesMax) throw new Error(`kv value of ${command.key} over its limit`);
    this.#map.set(command.key, next);
  }

  get(key: string): string {
    return this.#map.get(key) ?? '';
  }

  get size(): number {
    return this.#map.size;
  }

  /** Canonical bytes (keys and clients sorted): equal states give equal bytes. */
  serialize(): Uint8Array {
    const keys = [...this.#map.keys()].sort();
    const clients = [...this.#sessions.keys()].sort((a, b) => a - b);
    return encoder.encode(
      JSON.stringify({
        map: keys.map((key) => [key, this.#map.get(key)!]),
        sessions: clients.map((client) => [client, this.#sessions.get(client)!]),
      }),
    );
  }

  static deserialize(bytes: Uint8Array): KvStore {
    const store = new KvStore();
    if (bytes.length === 0) return store;
    const state = JSON.parse(decoder.decode(bytes)) as {
      map: [string, string][];
      sessions: [number, number][];
    };
    for (const [key, value] of state.map) store.#map.set(key, value);
    for (const [client, id] of state.sessions) store.#sessions.set(client, id);
    return store;
  }
}
