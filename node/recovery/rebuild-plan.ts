/**
 * The rebuild plan (pure): from the object headers found on the backends to the inodes,
 * names and copies to restore.
 *
 * - Every inode's versions are its META objects on the backends; the newest wins (meta-header.ts
 *   compareVersions: a descendant beats what it replaced, else the newest content). A losing version with other content that the winner did not
 *   replace in the normal course (its mtime is not in the winner's content history) is a
 *   split-brain conflict: it is kept (the rebuild job saves it in lost+found).
 * - The old root (the directory that is its own parent) and the old lost+found map to the new
 *   cell's; every other id is kept.
 * - An inode whose newest version is a tombstone (its META objects after a delete) is not
 *   restored: a stale copy on a server that slept through the delete does not bring it back.
 * - Inodes are restored parents first (breadth first from the root; newest first among names
 *   that collide). Inodes whose parent is missing, and cycles left by stale renames, go to
 *   lost+found.
 * - A chunk's copy whose header hash matches is current (and a target); one that differs is
 *   outdated (the mover repairs it); a chunk with no copy anywhere is reported missing.
 */
import { copyHoldsChunk } from '../client/layout.ts';
import type { Inode, Location, RestoredInode } from '../metadata/records.ts';
import type { ObjectHeader } from '../store/format.ts';
import { compareChanges, compareVersions, inodeOfMeta, sameContent, superseded } from './meta-header.ts';

export interface FoundMeta {
  /** Backend uuid (hex) and the name of its server. */
  readonly backend: string;
  readonly server: string;
  readonly header: ObjectHeader;
  readonly body: Uint8Array;
}

export interface FoundData {
  readonly backend: string;
  readonly contentHash: Uint8Array;
  readonly size: number;
}

export interface PlanInput {
  readonly metas: readonly FoundMeta[];
  /** DATA objects by object id (hex): where a copy is. */
  readonly data: ReadonlyMap<string, readonly FoundData[]>;
  /** The new cell's root and lost+found. */
  readonly rootId: Uint8Array;
  readonly lostFoundId: Uint8Array;
}

export interface PlannedConflict {
  readonly winner: Inode;
  readonly winnerServer: string;
  readonly loser: Inode;
  readonly loserServer: string;
  readonly loserBackend: string;
}

export interface RebuildPlan {
  /** In restore order (parents first). */
  readonly restores: RestoredInode[];
  readonly conflicts: PlannedConflict[];
  /** Inodes put into lost+found because their parent is missing (or in a cycle). */
  readonly orphans: number;
  /** Chunks of restored files with no copy on any backend. */
  readonly missingChunks: Array<{ inode: string; chunk: string }>;
  /** META headers that could not be read as inodes. */
  readonly invalid: number;
  /** Outdated copies (hash mismatch) found. */
  readonly outdatedCopies: number;
  /** The old root and lost+found: their META objects are replaced by the new cell's. */
  readonly replacedIds: Uint8Array[];
  /** Inodes whose newest version is a tombstone (deleted; not restored). */
  readonly deleted: number;
  /** The other names of restored files with hard links (to link once every inode is restored). */
  readonly links: Array<{ id: Uint8Array; parent: Uint8Array; name: string }>;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

interface Version {
  readonly meta: FoundMeta;
  readonly inode: Inode;
}

const isTombstone = (version: Version) => version.meta.header.flags?.deleted === true;

export function planRebuild(input: PlanInput): RebuildPlan {
  let invalid = 0;
  const versions = new Map<string, Version[]>();
  for (const meta of input.metas) {
    let inode: Inode;
    try {
      inode = inodeOfMeta(meta.header, meta.body);
    } catch {
      invalid += 1;
      continue;
    }
    const key = hex(inode.id);
    const list = versions.get(key);
    if (list === undefined) versions.set(key, [{ meta, inode }]);
    else list.push({ meta, inode });
  }

  // Winners and conflicts.
  const winners = new Map<string, Version>();
  const conflicts: PlannedConflict[] = [];
  for (const [key, list] of versions) {
    // The winner beats every other version (compareVersions need not be transitive: one pass
    // keeps the best so far, from a fixed order).
    list.sort(
      (a, b) => compareChanges(b.meta.header, a.meta.header) || a.meta.backend.localeCompare(b.meta.backend),
    );
    let winner = list[0]!;
    for (const version of list.slice(1))
      if (compareVersions(version.meta.header, winner.meta.header) > 0) winner = version;
    winners.set(key, winner);
    const keptContents: Inode[] = [];
    for (const version of list) {
      if (version === winner) continue;
      if (winner.inode.type !== 'FILE' || version.inode.type !== 'FILE' || isTombstone(version)) continue;
      if (sameContent(winner.inode, version.inode) || superseded(winner.inode, version.inode)) continue;
      // An ancestor of another version found (a stale copy of one side's history) is not kept:
      // that side's later version is (or it won).
      if (
        list.some(
          (other) =>
            other !== version &&
            other.inode.mtimeMs !== version.inode.mtimeMs &&
            superseded(other.inode, version.inode),
        )
      )
        continue;
      if (keptContents.some((kept) => sameContent(kept, version.inode))) continue;
      keptContents.push(version.inode);
      conflicts.push({
        winner: winner.inode,
        winnerServer: winner.meta.server,
        loser: version.inode,
        loserServer: version.meta.server,
        loserBackend: version.meta.backend,
      });
    }
  }

  // Inodes whose newest version is a tombstone stay deleted (their conflicting losers are kept).
  let deleted = 0;
  for (const [key, winner] of winners)
    if (isTombstone(winner)) {
      winners.delete(key);
      deleted += 1;
    }

  // The old root and lost+found (a rebuild that ran before, or the new cell's header writer, may
  // have left more than one root: every directory that is its own parent maps to the new root).
  // The new cell's own root and lost+found are never restored as children: its header writer may
  // have written one of their META objects and not yet the other when the backends were scanned
  // (its lost+found, found without its root, was restored into the root as a fourth inode).
  const translate = new Map<string, Uint8Array>([
    [hex(input.rootId), input.rootId],
    [hex(input.lostFoundId), input.lostFoundId],
  ]);
  const attributesFrom = new Set<string>();
  const roots = [...winners.values()]
    .filter((v) => v.inode.type === 'DIRECTORY' && Buffer.compare(v.inode.id, v.inode.parent) === 0)
    .sort((a, b) => compareChanges(b.meta.header, a.meta.header));
  for (const root of roots) {
    translate.set(hex(root.inode.id), input.rootId);
    for (const v of winners.values())
      if (
        v.inode.type === 'DIRECTORY' &&
        v.inode.name === 'lost+found' &&
        Buffer.compare(v.inode.parent, root.inode.id) === 0
      )
        translate.set(hex(v.inode.id), input.lostFoundId);
  }
  // Attributes come from the newest former root and lost+found, not from the new cell's own.
  const former = (target: Uint8Array) =>
    [...translate.entries()]
      .filter(([key, to]) => to === target && key !== hex(target))
      .map(([key]) => winners.get(key)!)
      .sort((a, b) => compareChanges(b.meta.header, a.meta.header))[0];
  for (const target of [input.rootId, input.lostFoundId]) {
    const from = former(target);
    if (from !== undefined) attributesFrom.add(hex(from.inode.id));
  }
  const tr = (id: Uint8Array) => translate.get(hex(id)) ?? id;

  // Children by (translated) parent, newest first.
  const rootKey = hex(input.rootId);
  const lostFoundKey = hex(input.lostFoundId);
  const children = new Map<string, Version[]>();
  const restoredOf = new Map<string, Inode>();
  for (const [key, version] of winners) {
    const id = tr(version.inode.id);
    const inode: Inode = { ...version.inode, id, parent: tr(version.inode.parent) };
    if (translate.has(key)) inode.parent = input.rootId;
    restoredOf.set(key, inode);
    if (translate.has(key)) continue;
    const parentKey = hex(inode.parent);
    const list = children.get(parentKey);
    if (list === undefined) children.set(parentKey, [version]);
    else list.push(version);
  }
  for (const list of children.values()) list.sort((a, b) => compareChanges(b.meta.header, a.meta.header));

  let outdatedCopies = 0;
  const missingChunks: Array<{ inode: string; chunk: string }> = [];
  const locationsOf = (inode: Inode): RestoredInode['locations'] => {
    const locations: RestoredInode['locations'] = [];
    for (const chunk of inode.chunks) {
      const copies = input.data.get(hex(chunk.id)) ?? [];
      let current = 0;
      for (const copy of copies) {
        const good = copyHoldsChunk(chunk, copy);
        if (good) current += 1;
        else outdatedCopies += 1;
        const location: Location = { outdated: !good, current: good, target: true, mtimeMs: inode.mtimeMs };
        locations.push({ object: chunk.id, backend: Buffer.from(copy.backend, 'hex'), location });
      }
      if (current === 0) missingChunks.push({ inode: hex(inode.id), chunk: hex(chunk.id) });
    }
    return locations;
  };

  const restores: RestoredInode[] = [];
  const placed = new Set<string>();
  const place = (key: string, inode: Inode, changeIndex: number) => {
    placed.add(key);
    restores.push({ inode, locations: locationsOf(inode), changeIndex });
  };
  // Root and lost+found attributes first, then breadth first.
  for (const [key, version] of winners) {
    if (!translate.has(key)) continue;
    if (attributesFrom.has(key))
      restores.push({
        inode: restoredOf.get(key)!,
        locations: [],
        changeIndex: version.meta.header.changeIndex,
      });
    placed.add(key);
  }
  const walk = (start: string) => {
    const queue = [start];
    for (let index = 0; index < queue.length; index++) {
      for (const child of children.get(queue[index]!) ?? []) {
        const key = hex(child.inode.id);
        if (placed.has(key)) continue;
        place(key, restoredOf.get(key)!, child.meta.header.changeIndex);
        if (child.inode.type === 'DIRECTORY') queue.push(key);
      }
    }
  };
  walk(rootKey);
  walk(lostFoundKey);
  let orphans = 0;
  const rest = [...winners.keys()].filter((key) => !placed.has(key)).sort();
  for (const key of rest) {
    if (placed.has(key)) continue;
    const inode = { ...restoredOf.get(key)!, parent: input.lostFoundId };
    orphans += 1;
    place(key, inode, winners.get(key)!.meta.header.changeIndex);
    if (inode.type === 'DIRECTORY') walk(key);
  }
  const replacedIds = [...translate.keys()]
    .filter((key) => key !== rootKey && key !== lostFoundKey)
    .map((key) => new Uint8Array(Buffer.from(key, 'hex')));
  const links: RebuildPlan['links'] = [];
  for (const [key, version] of winners) {
    if (!placed.has(key) || version.inode.type === 'DIRECTORY') continue;
    for (const link of version.meta.header.links ?? [])
      links.push({ id: version.inode.id, parent: tr(link.parent), name: link.name });
  }
  return {
    restores,
    conflicts,
    orphans,
    missingChunks,
    invalid,
    outdatedCopies,
    replacedIds,
    deleted,
    links,
  };
}
