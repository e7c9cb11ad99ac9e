/**
 * What the recovery jobs (rebuild, scrub, fsck) need of the node they run on: a controller's
 * local copy of the metadata (for reads), the cell connection (proposals through the primary,
 * the storage servers' data), the member list, and the job registry for progress.
 */
import type { CellClient } from '../client/cell-client.ts';
import type { Logger } from '../common/log.ts';
import type { JobRegistry, JobStatus } from '../daemon/jobs.ts';
import type { RemoteCell } from '../daemon/remote-cell.ts';
import type { BackendRecord, Inode, Member, ServerRecord } from '../metadata/records.ts';
import type { MetadataStateMachine } from '../metadata/state-machine.ts';

export interface RecoveryContext {
  readonly cell: string;
  readonly remote: RemoteCell;
  readonly machine: MetadataStateMachine;
  readonly members: () => Member[];
  readonly jobs: JobRegistry;
  readonly log: Logger;
  /** A file-system client on the cell (conflict copies, lost+found). */
  readonly client: () => CellClient;
}

export type { JobStatus };

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

/** Every inode of the local metadata, in id order (pages of 1,000). */
export async function* allInodes(machine: MetadataStateMachine): AsyncGenerator<Inode> {
  let after = '';
  for (;;) {
    const page = await machine.inodesAfter(after, 1000);
    if (page.length === 0) return;
    yield* page;
    after = hex(page.at(-1)!.id);
  }
}

/** The path of an inode from its parent links (best effort: `?` where a link is broken). */
export async function pathOf(machine: MetadataStateMachine, inode: Inode): Promise<string> {
  const parts: string[] = [];
  let current: Inode | undefined = inode;
  for (let depth = 0; current !== undefined && depth < 4096; depth++) {
    if (Buffer.compare(current.parent, current.id) === 0) return `/${parts.reverse().join('/')}`;
    parts.push(current.name);
    current = await machine.inode(current.parent);
  }
  return `?/${parts.reverse().join('/')}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The storage servers (by hex uuid) and the backends of those online and awake. */
export async function awakeBackends(
  machine: MetadataStateMachine,
): Promise<{ servers: Map<string, ServerRecord>; backends: BackendRecord[] }> {
  const servers = new Map((await machine.servers()).map((server) => [hex(server.uuid), server]));
  const backends = (await machine.backends()).filter((backend) => {
    const server = servers.get(hex(backend.serverUuid));
    return server?.online === true && server.power !== 'SLEEPING';
  });
  return { servers, backends };
}
