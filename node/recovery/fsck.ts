/**
 * `zhsm fsck`: check the metadata against the backends' object headers and list the
 * differences (a dry run unless asked to repair). Bodies are not re-hashed (that is scrub).
 *
 * Differences:
 * - meta-missing / meta-stale: an inode whose META object is on no backend, or only older ones
 *   (the header writer has not caught up, or the copies were lost) — repair rewrites them;
 * - meta-newer: a META object newer than the metadata (a split brain, or changes the metadata
 *   lost) — `zhsm rebuild` merges it (the newest wins, the loser is kept in lost+found);
 * - meta-orphan: a META object of an inode the metadata does not have;
 * - copy-missing / copy-mismatch: a copy the metadata records as current is absent, or its
 *   header's hash or size differ from the chunk's — repair reports it and the mover re-copies it;
 * - no-copy: a chunk with no current copy at all;
 * - data-orphan: a DATA object no file references (scrub collects them after a grace period);
 * - damaged: an object whose header cannot be read.
 */
import { copyHoldsChunk } from '../client/layout.ts';
import type { JobStatus } from '../daemon/jobs.ts';
import type { Inode } from '../metadata/records.ts';
import type { ObjectHeader } from '../store/format.ts';
import { allInodes, awakeBackends, pathOf, type RecoveryContext } from './context.ts';
import { metaBackends } from './header-writer.ts';
import { compareChanges, metaObjectOf } from './meta-header.ts';

export interface FsckOptions {
  readonly repair?: boolean;
}

export interface FsckDifference {
  kind: string;
  object: string;
  backend?: string;
  path?: string;
  detail: string;
}

export interface FsckReport {
  backends: number;
  objects: number;
  inodes: number;
  differences: FsckDifference[];
  counts: Record<string, number>;
  repaired: number;
  /** Inodes whose META objects were still being written (not counted as differences). */
  pendingHeaders: number;
  /** Deleted inodes whose tombstones are on the backends (not differences). */
  tombstones: number;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
/** Differences listed at most (the counts are complete). */
const DIFFERENCES_MAX = 10_000;

export async function fsck(ctx: RecoveryContext, job: JobStatus, options: FsckOptions = {}) {
  const { jobs, machine, remote } = ctx;
  const report: FsckReport = {
    backends: 0,
    objects: 0,
    inodes: 0,
    differences: [],
    counts: {},
    tombstones: 0,
    repaired: 0,
    pendingHeaders: 0,
  };
  job.result = report as unknown as Record<string, unknown>;
  const add = (difference: FsckDifference) => {
    report.counts[difference.kind] = (report.counts[difference.kind] ?? 0) + 1;
    if (report.differences.length < DIFFERENCES_MAX) report.differences.push(difference);
  };

  jobs.update(job, { phase: 'metadata', done: 0, total: 0, unit: 'inodes' });
  const inodes = new Map<string, Inode>();
  const chunkOwner = new Map<string, Inode>();
  for await (const inode of allInodes(machine)) {
    inodes.set(hex(inode.id), inode);
    for (const chunk of inode.chunks) chunkOwner.set(hex(chunk.id), inode);
  }
  report.inodes = inodes.size;
  const pending = new Set((await machine.headerMarks(1_000_000)).map((mark) => hex(mark.id)));
  const recorded = new Map<string, Map<string, boolean>>(); // object -> backend -> current
  await machine.scanLocations((object, backend, location) => {
    const key = hex(object);
    let map = recorded.get(key);
    if (map === undefined) {
      map = new Map();
      recorded.set(key, map);
    }
    map.set(hex(backend), location.current && !location.outdated);
    return true;
  });

  const { backends } = await awakeBackends(machine);
  report.backends = backends.length;
  jobs.update(job, { phase: 'scan', done: 0, total: backends.length, unit: 'backends' });
  const newestMeta = new Map<string, ObjectHeader>();
  const present = new Map<string, Map<string, ObjectHeader>>(); // object -> backend -> header
  for (const backend of backends) {
    const backendKey = hex(backend.uuid);
    let after: Uint8Array | undefined;
    do {
      const page = await remote.listObjects(backend.uuid, after === undefined ? {} : { after });
      after = page.next;
      for (const object of page.objects) {
        report.objects += 1;
        const key = hex(object.id);
        const header = object.header;
        if (header == null) {
          add({
            kind: 'damaged',
            object: key,
            backend: backendKey,
            detail: `${object.errorCode}: ${object.error}`,
          });
          continue;
        }
        if (header.mainType === 'META') {
          const newest = newestMeta.get(key);
          if (newest === undefined || compareChanges(header, newest) > 0) newestMeta.set(key, header);
          continue;
        }
        let map = present.get(key);
        if (map === undefined) {
          map = new Map();
          present.set(key, map);
        }
        map.set(backendKey, header);
      }
      jobs.count(job, 'objects', page.objects.length);
    } while (after !== undefined);
    jobs.update(job, { done: job.done + 1 });
  }

  jobs.update(job, { phase: 'compare', done: 0, total: inodes.size, unit: 'inodes' });
  const eligible = backends
    .filter((backend) => !backend.tags.includes('cache'))
    .map((backend) => backend.uuid);
  for (const [key, inode] of inodes) {
    jobs.update(job, { done: job.done + 1 });
    const meta = newestMeta.get(key);
    if (pending.has(key)) report.pendingHeaders += 1;
    else if (meta === undefined || meta.ctimeMs < inode.ctimeMs) {
      const kind = meta === undefined ? 'meta-missing' : 'meta-stale';
      add({
        kind,
        object: key,
        path: await pathOf(machine, inode),
        detail:
          meta === undefined
            ? 'no META object on any backend'
            : `newest META copy is of ctime ${meta.ctimeMs}, the metadata's ${inode.ctimeMs}`,
      });
      if (options.repair && eligible.length > 0) {
        const object = metaObjectOf(inode, 0);
        for (const backend of metaBackends(inode.id, eligible, Math.min(2, eligible.length))) {
          await remote.putMeta(backend, [object]).catch(() => {});
        }
        report.repaired += 1;
      }
    } else if (meta.ctimeMs > inode.ctimeMs)
      add({
        kind: 'meta-newer',
        object: key,
        path: await pathOf(machine, inode),
        detail: `a META copy of ctime ${meta.ctimeMs} is newer than the metadata's ${inode.ctimeMs}: run zhsm rebuild to merge it`,
      });
    for (const chunk of inode.chunks) {
      const chunkKey = hex(chunk.id);
      const copies = recorded.get(chunkKey) ?? new Map<string, boolean>();
      const found = present.get(chunkKey) ?? new Map<string, ObjectHeader>();
      let current = 0;
      for (const [backendKey, isCurrent] of copies) {
        if (!isCurrent) continue;
        const backendKnown = backends.some((backend) => hex(backend.uuid) === backendKey);
        if (!backendKnown) {
          current += 1; // on a server not scanned (offline or asleep): cannot tell
          continue;
        }
        const header = found.get(backendKey);
        const kind =
          header === undefined
            ? 'copy-missing'
            : !copyHoldsChunk(chunk, { size: header.bodySize, contentHash: header.contentHash })
              ? 'copy-mismatch'
              : undefined;
        if (kind === undefined) {
          current += 1;
          continue;
        }
        add({
          kind,
          object: chunkKey,
          backend: backendKey,
          path: await pathOf(machine, inode),
          detail:
            kind === 'copy-missing'
              ? 'recorded current, not on the backend'
              : 'the copy differs from the chunk (hash or size)',
        });
        if (options.repair) {
          const result = await remote.propose({
            reportBadCopy: {
              inode: inode.id,
              object: chunk.id,
              backend: Buffer.from(backendKey, 'hex'),
              reason: `fsck: ${kind}`,
            },
          });
          if (result.code === 'OK') report.repaired += 1;
        }
      }
      if (current === 0)
        add({
          kind: 'no-copy',
          object: chunkKey,
          path: await pathOf(machine, inode),
          detail: 'no current copy of this chunk',
        });
    }
  }
  for (const [key, header] of newestMeta) {
    if (inodes.has(key)) continue;
    if (header.flags?.deleted === true) report.tombstones += 1;
    else
      add({
        kind: 'meta-orphan',
        object: key,
        detail: `META object of an inode the metadata does not have (${header.name})`,
      });
  }
  for (const [key, where] of present) {
    if (chunkOwner.has(key)) continue;
    for (const backendKey of where.keys())
      add({
        kind: 'data-orphan',
        object: key,
        backend: backendKey,
        detail: 'no file references this DATA object',
      });
  }
  const total = Object.values(report.counts).reduce((sum, count) => sum + count, 0);
  jobs.count(job, 'differences', total);
  ctx.log.info({ counts: report.counts, repaired: report.repaired }, 'fsck done');
  return report;
}
