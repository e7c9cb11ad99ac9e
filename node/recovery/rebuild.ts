/**
 * `zhsm rebuild`: recover the metadata from the backends (the concept note: everything but the
 * resolve chains can be rebuilt; it needs every storage server and backend running).
 *
 * 1. prepare: a controller whose metadata is gone starts an empty cell; the rebuild initializes
 *    it under the cell's name and restores the members it knew (its members cache), so the
 *    storage servers are admitted again and register their backends.
 * 2. servers: wake sleeping servers that have a power driver; wait for the expected number of
 *    servers; refuse (unless partial) while a known server is offline.
 * 3. scan: every backend's object headers (storage/list): META objects (inodes) and DATA
 *    objects (chunk copies).
 * 4. plan (rebuild-plan.ts) and restore: RestoreInodes batches, parents first. A restore skips
 *    what the cell already has at the same or a newer change, so a rebuild interrupted at any
 *    point is resumed by running it again.
 * 5. conflicts (split brain): every losing version is saved as
 *    /lost+found/NAME.conflict-SERVER-MTIME and logged (ConflictEvent, `zhsm status`).
 */
import { copyHoldsChunk } from '../client/layout.ts';
import { ZhsmError } from '../common/errors.ts';
import type { JobStatus } from '../daemon/jobs.ts';
import { type Inode, initCellCommand } from '../metadata/records.ts';
import { RESTORE_INODES_MAX } from '../metadata/state-machine.ts';
import type { ListedObject } from '../storage/service.ts';
import { headerCodec } from '../store/format.ts';
import { allInodes, awakeBackends, pathOf, type RecoveryContext, sleep } from './context.ts';
import { type FoundData, type FoundMeta, type PlannedConflict, planRebuild } from './rebuild-plan.ts';

export interface RebuildOptions {
  /** Wait until at least this many storage servers are registered and online. */
  readonly expectServers?: number;
  /** How long to wait for servers (waking, registering); default 120 s. */
  readonly waitMs?: number;
  /** Go on without the servers that stay offline (their copies are not found). */
  readonly partial?: boolean;
  /** Inodes per RestoreInodes command (default 256). */
  readonly batch?: number;
}

export interface RebuildReport {
  backends: number;
  objects: number;
  metaObjects: number;
  inodes: number;
  restored: number;
  orphans: number;
  /** Inodes found deleted (their newest version is a tombstone). */
  deleted: number;
  /** Hard links restored (names of files besides the first). */
  links: number;
  conflicts: Array<{ path: string; kept: string; winnerServer: string; loserServer: string }>;
  missingChunks: number;
  outdatedCopies: number;
  invalidHeaders: number;
  damagedObjects: number;
  offlineServers: string[];
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const RESTORE_BATCH = Math.min(256, RESTORE_INODES_MAX);

export async function rebuild(ctx: RecoveryContext, job: JobStatus, options: RebuildOptions = {}) {
  const { jobs, machine, remote } = ctx;
  const report: RebuildReport = {
    backends: 0,
    objects: 0,
    metaObjects: 0,
    inodes: 0,
    restored: 0,
    orphans: 0,
    deleted: 0,
    links: 0,
    conflicts: [],
    missingChunks: 0,
    outdatedCopies: 0,
    invalidHeaders: 0,
    damagedObjects: 0,
    offlineServers: [],
  };
  job.result = report as unknown as Record<string, unknown>;

  // 1. prepare
  jobs.update(job, { phase: 'prepare' });
  let cell = await machine.cell();
  if (cell === undefined) {
    ctx.log.warn({ cell: ctx.cell }, 'rebuild: the metadata is empty; initializing the cell again');
    const init = await remote.propose({ initCell: initCellCommand(ctx.cell) });
    if (init.code !== 'OK' && init.code !== 'ALREADY_EXISTS')
      throw new ZhsmError('IO_ERROR', `cannot initialize the cell: ${init.message}`);
    const members = await remote.propose({ restoreMembers: { members: ctx.members() } });
    if (members.code !== 'OK')
      throw new ZhsmError('IO_ERROR', `cannot restore the members: ${members.message}`);
    for (let tries = 0; tries < 100 && cell === undefined; tries++) {
      await sleep(100);
      cell = await machine.cell();
    }
    if (cell === undefined)
      throw new ZhsmError('TIMEOUT', 'the cell was initialized but this controller has not applied it');
  }
  if (cell.cell !== ctx.cell)
    throw new ZhsmError('INVALID_ARGUMENT', `the metadata is of cell ${cell.cell}, this node of ${ctx.cell}`);

  // 2. servers
  jobs.update(job, { phase: 'servers' });
  const deadline = Date.now() + (options.waitMs ?? 120_000);
  const woken = new Set<string>();
  const configs = new Set((await machine.powerConfigs()).map((config) => hex(config.serverUuid)));
  for (;;) {
    const servers = await machine.servers();
    const online = servers.filter((server) => server.online && server.power !== 'SLEEPING');
    const offline = servers.filter((server) => !online.includes(server));
    for (const server of offline) {
      const key = hex(server.uuid);
      if (woken.has(key) || !configs.has(key)) continue;
      woken.add(key);
      await remote
        .power(server.uuid, 'wake', { reason: 'rebuild' })
        .catch((error: unknown) => ctx.log.warn({ err: error, server: server.name }, 'rebuild: cannot wake'));
    }
    jobs.update(job, {
      done: online.length,
      total: Math.max(options.expectServers ?? 0, servers.length),
      unit: 'servers',
    });
    const enough = online.length >= (options.expectServers ?? 0);
    if (enough && offline.length === 0) break;
    if (Date.now() >= deadline) {
      report.offlineServers = offline.map((server) => server.name || hex(server.uuid));
      if (!enough)
        throw new ZhsmError(
          'TIMEOUT',
          `${online.length} storage servers online, ${options.expectServers} expected: start them (or lower --expect-servers)`,
        );
      if (!options.partial)
        throw new ZhsmError(
          'UNAVAILABLE',
          `storage servers offline: ${report.offlineServers.join(', ')}; start them, or pass --partial to rebuild without their copies`,
        );
      break;
    }
    await sleep(500);
  }

  // 3. scan
  const { servers, backends } = await awakeBackends(machine);
  report.backends = backends.length;
  jobs.update(job, { phase: 'scan', done: 0, total: backends.length, unit: 'backends' });
  const metas: FoundMeta[] = [];
  const data = new Map<string, FoundData[]>();
  for (const backend of backends) {
    const backendKey = hex(backend.uuid);
    const serverName = servers.get(hex(backend.serverUuid))?.name || hex(backend.serverUuid).slice(0, 8);
    let after: Uint8Array | undefined;
    do {
      const page = await remote.listObjects(backend.uuid, after === undefined ? {} : { after });
      for (const object of page.objects) {
        report.objects += 1;
        const kind = recordFound({ metas, data }, backendKey, serverName, object);
        if (kind === 'damaged') report.damagedObjects += 1;
        else if (kind === 'meta') report.metaObjects += 1;
      }
      jobs.count(job, 'objects', page.objects.length);
      after = page.next;
    } while (after !== undefined);
    jobs.update(job, { done: job.done + 1 });
  }

  // 4. plan and restore
  jobs.update(job, { phase: 'plan' });
  const plan = planRebuild({ metas, data, rootId: cell.rootId, lostFoundId: cell.lostFoundId });
  report.inodes = plan.restores.length;
  report.orphans = plan.orphans;
  report.deleted = plan.deleted;
  report.missingChunks = plan.missingChunks.length;
  report.outdatedCopies = plan.outdatedCopies;
  report.invalidHeaders = plan.invalid;
  if (plan.missingChunks.length > 0)
    ctx.log.warn(
      { chunks: plan.missingChunks.slice(0, 20) },
      `rebuild: ${plan.missingChunks.length} chunks have no copy`,
    );
  jobs.update(job, { phase: 'restore', done: 0, total: plan.restores.length, unit: 'inodes' });
  // Chunks of versions the restore replaced: deleted once the losers are saved (below).
  const released: Uint8Array[] = [];
  const batchSize = Math.max(1, Math.min(options.batch ?? RESTORE_BATCH, RESTORE_INODES_MAX));
  for (let start = 0; start < plan.restores.length; start += batchSize) {
    const batch = plan.restores.slice(start, start + batchSize);
    const result = await remote.propose({ restoreInodes: { inodes: batch } });
    if (result.code !== 'OK')
      throw new ZhsmError(
        'IO_ERROR',
        `restore of inodes ${start}..${start + batch.length} failed: ${result.message}`,
      );
    released.push(...result.releasedObjects);
    report.restored += batch.length;
    jobs.update(job, { done: report.restored });
  }

  // The other names of files with hard links, now that every directory is back.
  for (const link of plan.links) {
    const result = await remote.propose({
      link: { id: link.id, parent: link.parent, name: link.name, restore: true },
    });
    if (result.code === 'OK') report.links += 1;
    else if (result.code !== 'ALREADY_EXISTS')
      ctx.log.warn(
        { inode: hex(link.id), name: link.name, code: result.code },
        'rebuild: cannot restore a hard link',
      );
  }

  // The old root's and lost+found's META objects: the new cell's replace them.
  if (plan.replacedIds.length > 0) await remote.deleteObjects(plan.replacedIds);

  // 5. conflicts
  if (plan.conflicts.length > 0) {
    jobs.update(job, { phase: 'conflicts', done: 0, total: plan.conflicts.length, unit: 'conflicts' });
    for (const conflict of plan.conflicts) {
      report.conflicts.push(await keepLoser(ctx, conflict, data));
      jobs.update(job, { done: job.done + 1 });
    }
  }
  if (released.length > 0) await remote.deleteObjects(released);
  jobs.count(job, 'inodes', report.inodes);
  jobs.count(job, 'conflicts', report.conflicts.length);
  ctx.log.info({ ...report, conflicts: report.conflicts.length }, 'rebuild done');
  return report;
}

/**
 * File one listed object into the scan's findings (META objects whole, DATA objects as where a
 * copy is), copied out of the listing page: a page is up to 4 MiB, and a hash or body that is a
 * view of it would keep all of it in memory until the rebuild ends.
 */
export function recordFound(
  findings: { metas: FoundMeta[]; data: Map<string, FoundData[]> },
  backend: string,
  server: string,
  object: ListedObject,
): 'meta' | 'data' | 'damaged' {
  const header = object.header;
  if (header == null) return 'damaged';
  if (header.mainType === 'META') {
    findings.metas.push({
      backend,
      server,
      header: headerCodec.decode(headerCodec.encode(header)),
      body: new Uint8Array(object.body),
    });
    return 'meta';
  }
  const key = hex(object.id);
  const copy = { backend, contentHash: new Uint8Array(header.contentHash), size: header.bodySize };
  const list = findings.data.get(key);
  if (list === undefined) findings.data.set(key, [copy]);
  else list.push(copy);
  return 'data';
}

/**
 * Save the losing version of a split-brain file as /lost+found/NAME.conflict-SERVER-MTIME (a new
 * file with its own chunks: nothing is shared with the winner) and log the conflict.
 */
async function keepLoser(
  ctx: RecoveryContext,
  conflict: PlannedConflict,
  data: ReadonlyMap<string, readonly FoundData[]>,
): Promise<{ path: string; kept: string; winnerServer: string; loserServer: string }> {
  const { loser } = conflict;
  const server = conflict.loserServer.replace(/[^A-Za-z0-9._-]/g, '_');
  const name = `${loser.name}.conflict-${server}-${loser.mtimeMs}`.slice(0, 255);
  const kept = `/lost+found/${name}`;
  const winner = (await ctx.machine.inode(conflict.winner.id)) ?? conflict.winner;
  const path = await pathOf(ctx.machine, winner);
  const client = ctx.client();
  const exists = await client.getattr(kept).then(
    () => true,
    () => false,
  );
  if (!exists) {
    const handle = await client.create(
      kept,
      loser.mode,
      { uid: loser.uid, gid: loser.gid },
      { mode: 'write', exclusive: true },
    );
    try {
      if (loser.inlineData.length > 0) await handle.write(0, loser.inlineData);
      for (const chunk of loser.chunks)
        await handle.write(chunk.offset, await readLoserChunk(ctx, chunk, data));
      if (loser.size > 0) await handle.truncate(loser.size);
      await handle.fsync();
    } finally {
      await handle.close();
    }
    await client.utimens(kept, loser.atimeMs, loser.mtimeMs);
    await ctx.remote.propose({
      logConflict: {
        event: {
          sequence: 0,
          timeMs: 0,
          inode: loser.id,
          path,
          winnerMtimeMs: conflict.winner.mtimeMs,
          winnerServer: conflict.winnerServer,
          loserMtimeMs: loser.mtimeMs,
          loserServer: conflict.loserServer,
          kept,
        },
      },
    });
    ctx.log.warn(
      { path, kept, winnerServer: conflict.winnerServer, loserServer: conflict.loserServer },
      'split brain: two versions of one file; the newest wins, the other is kept',
    );
  }
  return { path, kept, winnerServer: conflict.winnerServer, loserServer: conflict.loserServer };
}

async function readLoserChunk(
  ctx: RecoveryContext,
  chunk: Inode['chunks'][number],
  data: ReadonlyMap<string, readonly FoundData[]>,
): Promise<Uint8Array> {
  const copies = (data.get(hex(chunk.id)) ?? []).filter((copy) => copyHoldsChunk(chunk, copy));
  let lastError: unknown = new ZhsmError(
    'NOT_FOUND',
    `no copy of chunk ${hex(chunk.id)} of the losing version`,
  );
  for (const copy of copies) {
    try {
      return await ctx.remote.readChunk(
        Buffer.from(copy.backend, 'hex'),
        chunk.id,
        0,
        chunk.size,
        chunk.hash,
      );
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

/** Whether the local metadata has any file or directory besides the root and lost+found. */
export async function hasNamespace(ctx: RecoveryContext): Promise<boolean> {
  let count = 0;
  for await (const _ of allInodes(ctx.machine)) if (++count > 2) return true;
  return false;
}
