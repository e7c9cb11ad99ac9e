/**
 * A client session for exactly-once metadata commands (Raft thesis, section 6.3): every command
 * this client proposes carries the session id and its own sequence number; a retry after a
 * failover resends the same numbers, and the cell answers it with the saved result of the first
 * attempt if that one was applied. `acknowledged` tells the cell which saved results the client
 * no longer needs: every sequence below the oldest one still unanswered.
 */
import { randomBytes } from 'node:crypto';
import type { Command } from '../metadata/records.ts';

export type SessionStamp = Pick<Command, 'session' | 'sequence' | 'acknowledged'>;

export class CommandSession {
  readonly id: Uint8Array = new Uint8Array(randomBytes(16));
  #next = 1;
  /** Unanswered sequences; a Set keeps insertion (= ascending) order, so the first is the lowest. */
  readonly #outstanding = new Set<number>();

  /** Number a new command; call `done` once its answer (or final failure) is in. */
  begin(): { stamp: SessionStamp; done: () => void } {
    const sequence = this.#next++;
    this.#outstanding.add(sequence);
    const lowest = this.#outstanding.values().next().value as number;
    return {
      stamp: { session: this.id, sequence, acknowledged: lowest },
      done: () => {
        this.#outstanding.delete(sequence);
      },
    };
  }

  /** Commands numbered and not yet answered. */
  get outstanding(): number {
    return this.#outstanding.size;
  }
}
