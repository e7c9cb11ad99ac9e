/**
 * The simulated network between controllers: per-message delay from a distribution, drops,
 * duplicates, reordering (a fraction of messages takes a long tail delay), and a connectivity
 * matrix for symmetric and asymmetric partitions and partial connectivity. It only plans
 * deliveries; the simulation schedules them on its event queue.
 */
import type { NodeId } from '../consensus/types.ts';
import type { Prng } from './prng.ts';

export interface NetworkFaults {
  /** Base one-way delay, uniform in [delayUsMin, delayUsMax]. */
  readonly delayUsMin: number;
  readonly delayUsMax: number;
  /** Probability that a message is delayed by an extra tail (reordering). */
  readonly reorderChance: number;
  /** Upper bound of the extra tail delay, uniform in [0, reorderUsMax]. */
  readonly reorderUsMax: number;
  readonly dropChance: number;
  readonly duplicateChance: number;
}

export const RELIABLE_NETWORK: NetworkFaults = {
  delayUsMin: 500,
  delayUsMax: 5_000,
  reorderChance: 0,
  reorderUsMax: 0,
  dropChance: 0,
  duplicateChance: 0,
};

/** Copies of one message that may be delivered (0 = dropped). */
export const deliveriesPerMessageMax = 2;

export class SimNetwork {
  #faults: NetworkFaults;
  readonly #rng: Prng;
  /** Directed links that are cut (linkKey). */
  readonly #cut = new Set<number>();
  readonly #nodes: NodeId[];

  constructor(options: { nodes: readonly NodeId[]; faults: NetworkFaults; rng: Prng }) {
    this.#faults = validateFaults(options.faults);
    this.#rng = options.rng;
    this.#nodes = options.nodes.slice();
  }

  get faults(): NetworkFaults {
    return this.#faults;
  }

  setFaults(faults: NetworkFaults): void {
    this.#faults = validateFaults(faults);
  }

  addNode(node: NodeId): void {
    if (!this.#nodes.includes(node)) this.#nodes.push(node);
  }

  /** Can a message from `from` reach `to` right now. */
  connected(from: NodeId, to: NodeId): boolean {
    return !this.#cut.has(linkKey(from, to));
  }

  /** Cut one direction only (asymmetric partition). */
  cutOneWay(from: NodeId, to: NodeId): void {
    if (from === to) throw new RangeError('cannot cut a node from itself');
    this.#cut.add(linkKey(from, to));
  }

  cut(a: NodeId, b: NodeId): void {
    this.cutOneWay(a, b);
    this.cutOneWay(b, a);
  }

  connect(a: NodeId, b: NodeId): void {
    this.#cut.delete(linkKey(a, b));
    this.#cut.delete(linkKey(b, a));
  }

  /** Cut a node from every other node. */
  isolate(node: NodeId): void {
    for (const other of this.#nodes) if (other !== node) this.cut(node, other);
  }

  /** Restore every link of a node. */
  reconnect(node: NodeId): void {
    for (const other of this.#nodes) if (other !== node) this.connect(node, other);
  }

  /** Symmetric partition: nodes can only talk within their group; unlisted nodes are isolated. */
  partition(groups: readonly (readonly NodeId[])[]): void {
    const groupOf = new Map<NodeId, number>();
    groups.forEach((group, i) => {
      for (const node of group) {
        if (groupOf.has(node)) throw new RangeError(`node ${node} in two partition groups`);
        groupOf.set(node, i);
      }
    });
    this.heal();
    for (const a of this.#nodes) {
      for (const b of this.#nodes) {
        if (a === b) continue;
        const ga = groupOf.get(a);
        if (ga === undefined || ga !== groupOf.get(b)) this.cutOneWay(a, b);
      }
    }
  }

  heal(): void {
    this.#cut.clear();
  }

  /** A description of the cut links, for traces. */
  describeCuts(): string {
    return (
      [...this.#cut]
        .sort((a, b) => a - b)
        .map((key) => `${Math.floor(key / NODE_ID_LIMIT)}>${key % NODE_ID_LIMIT}`)
        .join(',') || 'none'
    );
  }

  /**
   * Plan the deliveries of one message: returns the delays (µs) of the copies that will arrive;
   * empty when the message is dropped or the link is cut.
   */
  plan(from: NodeId, to: NodeId): number[] {
    if (!this.connected(from, to)) return [];
    const faults = this.#faults;
    if (this.#rng.chance(faults.dropChance)) return [];
    const copies = this.#rng.chance(faults.duplicateChance) ? 2 : 1;
    const delays: number[] = [];
    for (let i = 0; i < copies; i++) {
      let delay = this.#rng.range(faults.delayUsMin, faults.delayUsMax);
      if (faults.reorderUsMax > 0 && this.#rng.chance(faults.reorderChance)) {
        delay += this.#rng.range(0, faults.reorderUsMax);
      }
      delays.push(delay);
    }
    return delays;
  }
}

/** Node ids must stay below this (a limit on everything; the core allows 255 members). */
const NODE_ID_LIMIT = 0x1_0000;

function linkKey(from: NodeId, to: NodeId): number {
  if (from >= NODE_ID_LIMIT || to >= NODE_ID_LIMIT) throw new RangeError(`node id over ${NODE_ID_LIMIT}`);
  return from * NODE_ID_LIMIT + to;
}

function validateFaults(faults: NetworkFaults): NetworkFaults {
  if (faults.delayUsMin < 0) throw new RangeError('delayUsMin < 0');
  if (faults.delayUsMax < faults.delayUsMin) throw new RangeError('delayUsMax < delayUsMin');
  for (const [name, p] of [
    ['dropChance', faults.dropChance],
    ['duplicateChance', faults.duplicateChance],
    ['reorderChance', faults.reorderChance],
  ] as const) {
    if (!(p >= 0 && p <= 1)) throw new RangeError(`${name} must be in [0, 1], got ${p}`);
  }
  return faults;
}
