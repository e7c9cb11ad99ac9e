/**
 * Admin ops of the daemon's socket for `zhsm rebuild|scrub|fsck|conflicts` (node/cli/zhsm-recovery.ts).
 * The jobs run in the daemon (on a controller: they read its copy of the metadata); the CLI
 * starts one and polls its progress (`recovery-job`).
 *
 *   recovery-rebuild {expectServers, waitMs, partial}   start a rebuild
 *   recovery-scrub {bytesPerSecond, dryRun, graceMs, repairWaitMs}   start a scrub
 *   recovery-fsck {repair}                               start an fsck
 *   recovery-job {kind}                                  the job's progress and, when done, report
 *   recovery-conflicts {limit}                           the split-brain conflicts logged
 */
import { CellClient } from '../client/cell-client.ts';
import { InvalidArgumentError } from '../common/errors.ts';
import type { ZhsmNode } from '../daemon/node.ts';
import { CONFLICT_EVENTS_MAX, type MetadataStateMachine } from '../metadata/state-machine.ts';
import type { RecoveryContext } from './context.ts';
import { fsck } from './fsck.ts';
import { rebuild } from './rebuild.ts';
import { scrub } from './scrub.ts';

export const RECOVERY_OPS = new Set([
  'recovery-rebuild',
  'recovery-scrub',
  'recovery-fsck',
  'recovery-job',
  'recovery-conflicts',
]);

const KINDS = new Set(['rebuild', 'scrub', 'fsck']);
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

function optionalCount(request: Record<string, unknown>, name: string): number | undefined {
  const value = request[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    throw new InvalidArgumentError(`${name} must be a non-negative integer`);
  return value;
}

function contextOf(node: ZhsmNode): RecoveryContext & { dataDir: string } {
  const controller = node.controller;
  if (controller === undefined)
    throw new InvalidArgumentError(
      'recovery jobs run on a controller (they read its copy of the metadata): use the data directory of a controller node',
    );
  let client: CellClient | undefined;
  return {
    cell: node.config.cell,
    remote: node.remote,
    machine: controller.replica.machine,
    members: () => node.directory.all(),
    jobs: node.jobs,
    log: node.log.child({ module: 'recovery' }),
    client: () => {
      client ??= new CellClient(node.remote);
      return client;
    },
    dataDir: node.data,
  };
}

export interface ConflictsSummary {
  /** Conflicts logged (the last CONFLICT_EVENTS_MAX are kept). */
  count: number;
  recent: Array<{ timeMs: number; path: string; kept: string; winnerServer: string; loserServer: string }>;
}

/** For `zhsm status`: how many split-brain conflicts, and the last few. */
export async function conflictsSummary(machine: MetadataStateMachine): Promise<ConflictsSummary> {
  const events = await machine.conflicts(CONFLICT_EVENTS_MAX);
  return {
    count: events.length,
    recent: events.slice(-3).map(({ timeMs, path, kept, winnerServer, loserServer }) => ({
      timeMs,
      path,
      kept,
      winnerServer,
      loserServer,
    })),
  };
}

export async function recoveryAdmin(
  node: ZhsmNode,
  request: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const op = request.op;
  if (op === 'recovery-job') {
    const kind = request.kind;
    if (typeof kind !== 'string' || !KINDS.has(kind))
      throw new InvalidArgumentError('kind must be rebuild, scrub or fsck');
    return { job: node.jobs.get(kind) ?? null };
  }
  if (op === 'recovery-conflicts') {
    const ctx = contextOf(node);
    const limit = optionalCount(request, 'limit') ?? 100;
    const events = await ctx.machine.conflicts(limit);
    return { conflicts: events.map((event) => ({ ...event, inode: hex(event.inode) })) };
  }
  const ctx = contextOf(node);
  const run = async <T>(
    kind: string,
    unit: string,
    body: (job: ReturnType<typeof node.jobs.start>) => Promise<T>,
  ) => {
    const job = node.jobs.start(kind, unit);
    void body(job).then(
      (result) => {
        job.result = result as unknown as Record<string, unknown>;
        node.jobs.finish(job);
      },
      (error: unknown) => {
        ctx.log.error({ err: error }, `${kind} failed`);
        node.jobs.finish(job, error);
      },
    );
    return { job };
  };
  if (op === 'recovery-rebuild') {
    const expectServers = optionalCount(request, 'expectServers');
    const waitMs = optionalCount(request, 'waitMs');
    const batch = optionalCount(request, 'batch');
    const options = {
      ...(batch === undefined ? {} : { batch }),
      ...(expectServers === undefined ? {} : { expectServers }),
      ...(waitMs === undefined ? {} : { waitMs }),
      partial: request.partial === true,
    };
    return run('rebuild', 'inodes', async (job) => {
      try {
        return await rebuild(ctx, job, options);
      } finally {
        await ctx
          .client()
          .closeAll()
          .catch(() => {});
      }
    });
  }
  if (op === 'recovery-scrub') {
    const bytesPerSecond = optionalCount(request, 'bytesPerSecond');
    const graceMs = optionalCount(request, 'graceMs');
    const repairWaitMs = optionalCount(request, 'repairWaitMs');
    const options = {
      ...(bytesPerSecond === undefined ? {} : { bytesPerSecond }),
      ...(graceMs === undefined ? {} : { graceMs }),
      ...(repairWaitMs === undefined ? {} : { repairWaitMs }),
      dryRun: request.dryRun === true,
    };
    return run('scrub', 'backends', (job) => scrub(ctx, job, options));
  }
  if (op === 'recovery-fsck') {
    return run('fsck', 'backends', (job) => fsck(ctx, job, { repair: request.repair === true }));
  }
  throw new InvalidArgumentError(`unknown recovery op ${JSON.stringify(op)}`);
}
