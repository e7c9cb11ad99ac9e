/**
 * A small real cell for the recovery tests: controller c1 and storage servers as zhsm-node
 * processes, a client node in the test process (its CellClient is fast to drive), and `zhsm`
 * runs that report their exit code. Everything is stopped when the test ends.
 */
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { CellClient } from '../../node/client/cell-client.ts';
import { ZhsmNode } from '../../node/daemon/node.ts';
import {
  initCell,
  joinNode,
  type NodeProcess,
  newNode,
  startNode,
  stopNode,
  waitFor,
  zhsmOutcome,
} from '../daemon/_cell.ts';
import { tempDirectory } from '../helpers.ts';

/** Run `zhsm ARGS`; the exit code instead of a rejection (the output is stdout, then stderr). */
export async function zhsmRun(args: string[], timeout = 180_000): Promise<{ stdout: string; code: number }> {
  const outcome = await zhsmOutcome(args, timeout);
  return { stdout: `${outcome.stdout}${outcome.stderr}`, code: outcome.code };
}

const caller = { uid: 0, gid: 0 };

/** Write a whole file (created or truncated). */
export async function putFile(fs: CellClient, path: string, bytes: Buffer, mode = 0o644): Promise<void> {
  const handle = await fs.create(path, mode, caller, { mode: 'write' });
  await handle.truncate(0);
  await handle.write(0, bytes);
  await handle.close();
}

/** Read a whole file. */
export async function getFile(fs: CellClient, path: string): Promise<Buffer> {
  const inode = await fs.resolve(path);
  const handle = await fs.open(path, { mode: 'read' });
  try {
    return Buffer.from(await handle.read(0, inode.size));
  } finally {
    await handle.close();
  }
}

/** The JSON object a `zhsm ... --json` printed (after any progress lines). */
export function jsonOf<T>(stdout: string): T {
  return JSON.parse(stdout.slice(stdout.indexOf('{'), stdout.lastIndexOf('}') + 1)) as T;
}

export interface RecoveryCell {
  readonly base: string;
  readonly c1: NodeProcess;
  readonly servers: NodeProcess[];
  client: ZhsmNode | undefined;
  fs: CellClient;
  /** Start the in-process client again (after a stop) with `replicas` copies per write. */
  restartClient(replicas?: number): Promise<CellClient>;
  stopClient(): Promise<void>;
}

export async function recoveryCell(
  t: TestContext,
  options: { servers: number; replicas?: number; cell?: string },
): Promise<RecoveryCell> {
  const base = tempDirectory(t, 'zhsm-recovery-');
  const processes: NodeProcess[] = [];
  const { first: c1, token } = await initCell(base, options.cell ?? 'recovery');
  processes.push(c1);
  const cell: RecoveryCell = {
    base,
    c1,
    servers: [],
    client: undefined,
    fs: undefined as unknown as CellClient,
    async restartClient(replicas = options.replicas ?? 1) {
      cell.client = await ZhsmNode.start(join(base, 'a'));
      cell.fs = new CellClient(cell.client.remote, { replicas });
      return cell.fs;
    },
    async stopClient() {
      await cell.fs?.closeAll().catch(() => {});
      await cell.client?.stop();
      cell.client = undefined;
    },
  };
  t.after(async () => {
    await cell.client?.stop().catch(() => {});
    for (const node of processes.reverse()) await stopNode(node, 'SIGKILL').catch(() => {});
  });
  await startNode(t, c1);
  const peer = c1.addresses[0]!;
  for (let index = 1; index <= options.servers; index++) {
    const server = newNode(base, `s${index}`);
    await joinNode(server, peer, token, [
      '--backend',
      join(base, `s${index}-backend`),
      '--name',
      server.name,
    ]);
    processes.push(server);
    cell.servers.push(server);
    await startNode(t, server);
  }
  await ZhsmNode.join({ peer, token, data: join(base, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] });
  const fs = await cell.restartClient();
  await waitFor('storage servers online', async () =>
    (await fs.cell.metadata.servers()).filter((s) => s.online).length === options.servers ? true : undefined,
  );
  return cell;
}

/** Wait until the header writer has written every inode's META objects (fsck says so). */
export async function headersWritten(c1: NodeProcess): Promise<void> {
  await waitFor(
    'META objects of every inode on the backends',
    async () => {
      const result = await zhsmRun(['fsck', '--data', c1.data, '--json']);
      const report = jsonOf<{ report: { pendingHeaders: number } }>(result.stdout);
      return report.report.pendingHeaders === 0 ? true : undefined;
    },
    120_000,
  );
}

/** The path of an object's file in a backend directory. */
export function objectFile(backendDir: string, id: Uint8Array): string {
  const hex = Buffer.from(id).toString('hex');
  return join(backendDir, hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
}
