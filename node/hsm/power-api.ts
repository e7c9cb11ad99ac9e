/**
 * What the cell client needs from a cell to wake a sleeping storage server (wake on demand in the
 * read path). The daemon's RemoteCell has it; a CellApi without it (LocalCell) never wakes.
 */
import type { ServerRecord } from '../metadata/records.ts';

export interface PowerWakeApi {
  /**
   * Ask the primary to wake a server. Answers with the server's record once the wake is under
   * way (WAKING recorded; concurrent callers share one wake), or at once when it is up, and how
   * long the server may take to register (the cell's wake timeout).
   */
  wakeServer(serverUuid: Uint8Array, reason?: string): Promise<{ server: ServerRecord; waitMs: number }>;
}

/** The wake API of a cell, if it has one. */
export function powerWakeApiOf(cell: object): PowerWakeApi | undefined {
  const candidate = cell as Partial<PowerWakeApi>;
  return typeof candidate.wakeServer === 'function' ? (candidate as PowerWakeApi) : undefined;
}
