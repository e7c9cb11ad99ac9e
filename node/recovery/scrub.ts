/**
 * `zhsm scrub`: re-hash every object on every backend (on its server, throttled), repair what is
 * damaged or missing from a good copy, and report what could not be repaired.
 *
 * - A damaged or missing copy of a chunk is reported (ReportBadCopy): it is marked outdated and
 *   the mover copies a good copy over it; the scrub waits for the repairs and counts them. The
 *   only copy of a chunk damaged is reported as unrepairable (readers get EIO from it, never the
 *   damaged bytes: every read is checked against the chunk's content hash).
 * - A damaged META object (an inode's header copy) is rewritten from the metadata.
 * - A META object of an inode the metadata does not have (no directory references it) is
 *   restored into /lost+found once it has been seen unreferenced for the grace period — unless
 *   its newest copy is a tombstone (the inode was deleted): then the stale copies are deleted,
 *   and the tombstones too once older than TOMBSTONE_KEEP_MS.
 * - DATA objects no file references are deleted once seen unreferenced for the grace period
 *   (uploads in flight are not yet referenced; the grace period covers them). First sightings
 *   are kept in the node's data directory (`scrub-orphans.json`) from one scrub to the next.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { copyHoldsChunk } from '../client/layout.ts';
import type { JobStatus } from '../daemon/jobs.ts';
import type { Inode, Location, RestoredInode } from '../metadata/records.ts';
import type { ObjectHeader } from '../store/format.ts';
import { allInodes, awakeBackends, pathOf, type RecoveryContext, sleep } from './context.ts';
import { compareVersions, inodeOfMeta, metaObjectOf } from './meta-header.ts';

export interface ScrubOptions {
  /** Re-hash throughput per backend at most (0: unthrottled); default 64 MiB/s. */
  readonly bytesPerSecond?: number;
  /** Report only: no repairs, no deletes, nothing restored. */
  readonly dryRun?: boolean;
  /** Unreferenced objects are deleted (DATA) or restored (META) after this long; default 24 h. */
  readonly graceMs?: number;
  /** How long to wait for the mover's repairs; default 120 s. */
  readonly repairWaitMs?: number;
}

export interface ScrubProblem {
  backend: string;
  object: string;
  path?: string;
  code: string;
  message: string;
}

export interface ScrubReport {
  backends: number;
  objectsChecked: number;
  bytesChecked: number;
  damaged: ScrubProblem[];
  missing: ScrubProblem[];
  repaired: number;
  unrepaired: ScrubProblem[];
  metaRewritten: number;
  orphanData: number;
  orphanDataDeleted: number;
  orphanMeta: number;
  restoredToLostFound: string[];
  /** Stale META copies of deleted inodes removed, and tombstones older than TOMBSTONE_KEEP_MS. */
  staleMetaDeleted: number;
  tombstonesCollected: number;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const VERIFY_GROUP = 64;
const ORPHANS_FILE = 'scrub-orphans.json';
/**
 * Tombstones (META objects of deleted inodes) are kept this long: a server asleep for longer may
 * still hold a stale copy that a rebuild would bring back (run scrub with every server awake).
 */
export const TOMBSTONE_KEEP_MS = 30 * 24 * 3_600_000;

export async function scrub(
  ctx: RecoveryContext & { dataDir: string },
  job: JobStatus,
  options: ScrubOptions = {},
) {
  const { jobs, machine, remote } = ctx;
  const bytesPerSecond = options.bytesPerSecond ?? 64 * 1024 * 1024;
  const graceMs = options.graceMs ?? 24 * 3_600_000;
  const report: ScrubReport = {
    backends: 0,
    objectsChecked: 0,
    bytesChecked: 0,
    damaged: [],
    missing: [],
    repaired: 0,
    unrepaired: [],
    metaRewritten: 0,
    orphanData: 0,
    orphanDataDeleted: 0,
    orphanMeta: 0,
    restoredToLostFound: [],
    staleMetaDeleted: 0,
    tombstonesCollected: 0,
  };
  job.result = report as unknown as Record<string, unknown>;

  // What the metadata references.
  jobs.update(job, { phase: 'metadata', done: 0, total: 0, unit: 'inodes' });
  const chunkOwner = new Map<string, Inode>();
  const inodes = new Map<string, Inode>();
  for await (const inode of allInodes(machine)) {
    inodes.set(hex(inode.id), inode);
    for (const chunk of inode.chunks) chunkOwner.set(hex(chunk.id), inode);
  }
  const expected = new Map<string, Set<string>>(); // backend -> objects recorded current there
  await machine.scanLocations((object, backend, location: Location) => {
    if (!location.current || location.outdated) return true;
    const key = hex(backend);
    let set = expected.get(key);
    if (set === undefined) {
      set = new Set();
      expected.set(key, set);
    }
    set.add(hex(object));
    return true;
  });

  const { backends } = await awakeBackends(machine);
  report.backends = backends.length;
  const sightings = await loadSightings(ctx.dataDir);
  const seenNow = new Map<string, number>();
  const now = Date.now();
  const orphanMetas: Array<{ backend: Uint8Array; inode: Inode; header: ObjectHeader }> = [];
  const dataWhere = new Map<string, Array<{ backend: Uint8Array; hash: Uint8Array; size: number }>>();
  const reported: Array<{ backend: Uint8Array; object: Uint8Array; problem: ScrubProblem }> = [];

  const problem = async (backend: Uint8Array, object: Uint8Array, code: string, message: string) => {
    const owner = chunkOwner.get(hex(object)) ?? inodes.get(hex(object));
    const found: ScrubProblem = { backend: hex(backend), object: hex(object), code, message };
    if (owner !== undefined) found.path = await pathOf(machine, owner);
    return found;
  };

  /** A damaged or missing copy of a referenced chunk: have the mover repair it. */
  const reportBadCopy = async (backend: Uint8Array, object: Uint8Array, found: ScrubProblem) => {
    const owner = chunkOwner.get(hex(object));
    if (owner === undefined || options.dryRun) return;
    const result = await remote.propose({
      reportBadCopy: { inode: owner.id, object, backend, reason: `scrub: ${found.code}` },
    });
    if (result.code === 'OK') reported.push({ backend, object, problem: found });
    else if (result.code === 'NOT_FOUND')
      return; // the file was rewritten or removed meanwhile
    else report.unrepaired.push({ ...found, message: `${found.message} (${result.message})` });
  };

  jobs.update(job, { phase: 'verify', done: 0, total: backends.length, unit: 'backends' });
  for (const backend of backends) {
    const backendKey = hex(backend.uuid);
    const present = new Set<string>();
    let after: Uint8Array | undefined;
    do {
      const page = await remote.listObjects(backend.uuid, after === undefined ? {} : { after });
      after = page.next;
      const toVerify: Uint8Array[] = [];
      for (const object of page.objects) {
        const key = hex(object.id);
        present.add(key);
        report.objectsChecked += 1;
        if (object.header == null) {
          const found = await problem(backend.uuid, object.id, object.errorCode, object.error);
          report.damaged.push(found);
          await repairObject(object.id, found);
          continue;
        }
        if (object.header.mainType === 'META') {
          // (A root, its own parent, is never put into lost+found: a former cell's root.)
          if (!inodes.has(key) && Buffer.compare(object.header.parent, object.id) !== 0) {
            if (object.header.flags?.deleted !== true) report.orphanMeta += 1;
            try {
              orphanMetas.push({
                backend: backend.uuid,
                inode: inodeOfMeta(object.header, object.body),
                header: object.header,
              });
            } catch {
              // not a valid META header: nothing to restore
            }
          }
        } else {
          const list = dataWhere.get(key) ?? [];
          list.push({ backend: backend.uuid, hash: object.header.contentHash, size: object.header.bodySize });
          dataWhere.set(key, list);
          if (!chunkOwner.has(key)) {
            report.orphanData += 1;
            const sighting = `${backendKey}:${key}`;
            const first = sightings.get(sighting) ?? now;
            if (now - first >= graceMs && !options.dryRun) {
              await remote.deleteChunk(backend.uuid, object.id).then(
                () => {
                  report.orphanDataDeleted += 1;
                },
                (error: unknown) =>
                  ctx.log.warn({ err: error, object: key }, 'scrub: cannot delete an orphan'),
              );
            } else seenNow.set(sighting, first);
          }
        }
        toVerify.push(object.id);
      }
      for (let start = 0; start < toVerify.length; start += VERIFY_GROUP) {
        const ids = toVerify.slice(start, start + VERIFY_GROUP);
        const results = await remote.verifyObjects(backend.uuid, ids, bytesPerSecond);
        for (const result of results) {
          report.bytesChecked += result.bytes;
          if (result.errorCode === '' || result.errorCode === 'NOT_FOUND') continue;
          const found = await problem(backend.uuid, result.id, result.errorCode, result.error);
          report.damaged.push(found);
          await repairObject(result.id, found);
        }
      }
      jobs.count(job, 'objects', page.objects.length);
    } while (after !== undefined);
    // Copies the metadata records here that are not here.
    for (const key of expected.get(backendKey) ?? []) {
      if (present.has(key)) continue;
      const object = Buffer.from(key, 'hex');
      const found = await problem(backend.uuid, object, 'NOT_FOUND', 'the copy recorded here is missing');
      report.missing.push(found);
      await reportBadCopy(backend.uuid, object, found);
    }
    jobs.update(job, { done: job.done + 1 });

    async function repairObject(id: Uint8Array, found: ScrubProblem) {
      const key = hex(id);
      const inode = inodes.get(key);
      if (inode !== undefined) {
        // A META copy: rewrite it from the metadata.
        if (options.dryRun) return;
        try {
          await remote.putMeta(backend.uuid, [metaObjectOf(inode, 0)]);
          report.metaRewritten += 1;
          report.repaired += 1;
        } catch (error) {
          report.unrepaired.push({
            ...found,
            message: `${found.message} (rewrite failed: ${(error as Error).message})`,
          });
        }
        return;
      }
      if (chunkOwner.has(key)) await reportBadCopy(backend.uuid, id, found);
    }
  }

  // META objects of inodes the metadata does not have. Deleted ones (the newest copy is a
  // tombstone): stale copies go at once, tombstones after TOMBSTONE_KEEP_MS. The others (no
  // directory references them): into lost+found after the grace period.
  if (orphanMetas.length > 0 && !options.dryRun) {
    jobs.update(job, { phase: 'lost+found' });
    const cell = await machine.cell();
    const byInode = new Map<string, Array<(typeof orphanMetas)[number]>>();
    for (const orphan of orphanMetas) {
      const key = hex(orphan.inode.id);
      byInode.set(key, [...(byInode.get(key) ?? []), orphan]);
    }
    const newest = new Map<string, (typeof orphanMetas)[number]>();
    for (const [key, copies] of byInode) {
      let best = copies[0]!;
      for (const copy of copies.slice(1)) if (compareVersions(copy.header, best.header) > 0) best = copy;
      if (best.header.flags?.deleted !== true) {
        newest.set(key, best);
        continue;
      }
      for (const copy of copies) {
        const tombstone = copy.header.flags?.deleted === true;
        if (tombstone && now - copy.header.ctimeMs < TOMBSTONE_KEEP_MS) continue;
        await remote.deleteChunk(copy.backend, copy.inode.id).then(
          () => {
            if (tombstone) report.tombstonesCollected += 1;
            else report.staleMetaDeleted += 1;
          },
          (error: unknown) => ctx.log.warn({ err: error, inode: key }, 'scrub: cannot delete a META copy'),
        );
      }
    }
    const restores: RestoredInode[] = [];
    for (const [key, orphan] of newest) {
      const sighting = `meta:${key}`;
      const first = sightings.get(sighting) ?? now;
      if (now - first < graceMs || cell === undefined) {
        seenNow.set(sighting, first);
        continue;
      }
      const inode: Inode = {
        ...orphan.inode,
        parent: cell.lostFoundId,
        name: `${orphan.inode.name || 'orphan'}.${key.slice(0, 8)}`,
      };
      // Directories come back empty (their entries are inodes of their own, restored separately).
      const locations: RestoredInode['locations'] = [];
      for (const chunk of inode.chunks) {
        for (const copy of dataWhere.get(hex(chunk.id)) ?? []) {
          const good = copyHoldsChunk(chunk, { size: copy.size, contentHash: copy.hash });
          locations.push({
            object: chunk.id,
            backend: copy.backend,
            location: { outdated: !good, current: good, target: true, mtimeMs: inode.mtimeMs },
          });
        }
      }
      restores.push({ inode, locations, changeIndex: orphan.header.changeIndex });
      report.restoredToLostFound.push(`/lost+found/${inode.name}`);
    }
    for (let start = 0; start < restores.length; start += 256) {
      const result = await remote.propose({ restoreInodes: { inodes: restores.slice(start, start + 256) } });
      if (result.code !== 'OK')
        ctx.log.warn({ message: result.message }, 'scrub: cannot restore orphans into lost+found');
    }
  }
  await saveSightings(ctx.dataDir, seenNow);

  // Wait for the mover's repairs.
  if (reported.length > 0) {
    jobs.update(job, { phase: 'repair', done: 0, total: reported.length, unit: 'copies' });
    const deadline = Date.now() + (options.repairWaitMs ?? 120_000);
    let pending = reported;
    while (pending.length > 0 && Date.now() < deadline) {
      const still: typeof pending = [];
      for (const item of pending) {
        const locations = await machine.locations(item.object);
        const here = locations.find((entry) => Buffer.compare(entry.backend, item.backend) === 0);
        if (here?.location.current && !here.location.outdated) continue;
        still.push(item);
      }
      report.repaired += pending.length - still.length;
      pending = still;
      jobs.update(job, { done: reported.length - pending.length });
      if (pending.length > 0) await sleep(500);
    }
    for (const item of pending)
      report.unrepaired.push({ ...item.problem, message: `${item.problem.message} (not repaired in time)` });
  }
  jobs.count(job, 'damaged', report.damaged.length + report.missing.length);
  jobs.count(job, 'repaired', report.repaired);
  jobs.count(job, 'unrepaired', report.unrepaired.length);
  ctx.log.info(
    {
      ...report,
      damaged: report.damaged.length,
      missing: report.missing.length,
      unrepaired: report.unrepaired.length,
    },
    'scrub done',
  );
  return report;
}

async function loadSightings(dataDir: string): Promise<Map<string, number>> {
  try {
    const parsed = JSON.parse(await readFile(join(dataDir, ORPHANS_FILE), 'utf8')) as Record<string, unknown>;
    return new Map(
      Object.entries(parsed).filter((entry): entry is [string, number] => Number.isSafeInteger(entry[1])),
    );
  } catch {
    return new Map(); // none yet, or unreadable: every orphan starts its grace period now
  }
}

async function saveSightings(dataDir: string, sightings: ReadonlyMap<string, number>): Promise<void> {
  const path = join(dataDir, ORPHANS_FILE);
  await writeFile(`${path}.tmp`, JSON.stringify(Object.fromEntries(sightings)));
  await rename(`${path}.tmp`, path);
}
