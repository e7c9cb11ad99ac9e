/**
 * Split-brain simulator (deterministic per seed): a cell's files evolve together, then the
 * storage servers split into two sides and the metadata forks (a manual primary on each side);
 * each side changes files on its own servers (content writes, chmods, deletes; servers of a
 * side may sleep through some changes and keep stale copies). Then every controller's metadata
 * is lost and the real rebuild planner (node/recovery/rebuild-plan.ts) recovers the cell from
 * the META and DATA objects the servers hold — written with the real header conversion and
 * placement (meta-header.ts, header-writer.ts metaBackends) and the backend's newer-wins rule.
 *
 * Checked for every file:
 * - newest wins: the restored version is the newest final version of the two sides;
 * - nothing lost: the other side's final version, when its content differs and the winner did
 *   not replace it in the normal course, is kept (a conflict the rebuild saves in lost+found);
 * - every conflict's loser is a version some side really had;
 * - every restored chunk has a current copy.
 */
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { copyHoldsChunk } from '../../node/client/layout.ts';
import type { Inode } from '../../node/metadata/records.ts';
import { CONTENT_HISTORY_MAX } from '../../node/metadata/state-machine.ts';
import { metaBackends } from '../../node/recovery/header-writer.ts';
import {
  compareChanges,
  compareVersions,
  metaObjectOf,
  superseded,
} from '../../node/recovery/meta-header.ts';
import { type FoundData, type FoundMeta, planRebuild } from '../../node/recovery/rebuild-plan.ts';
import type { ObjectHeader } from '../../node/store/format.ts';
import { Prng } from '../prng.ts';

export interface SplitBrainParams {
  readonly servers: number;
  readonly files: number;
  readonly copies: number;
  readonly commonOps: number;
  readonly sideOps: number;
  /** Chance a server of a side sleeps through one change. */
  readonly sleepChance: number;
}

export interface SplitBrainResult {
  readonly seed: number;
  readonly params: SplitBrainParams;
  readonly violations: string[];
  readonly files: number;
  readonly conflicts: number;
  /** Conflicts for a loser older than the winner's content history (kept, conservatively). */
  readonly conservative: number;
  readonly changedOnBothSides: number;
  /** Files whose every version was deleted from the servers (by the other side): no rebuild can bring them back. */
  readonly unrecoverable: number;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

interface Server {
  readonly name: string;
  readonly backend: Uint8Array;
  readonly meta: Map<string, { header: ObjectHeader; body: Uint8Array }>;
  readonly data: Map<string, FoundData>;
}

interface Side {
  readonly name: string;
  readonly servers: Server[];
  readonly files: Map<string, Inode>;
  /** Files this side deleted (their inodes at the delete; their META objects are tombstones). */
  readonly gone: Map<string, Inode>;
  index: number;
  clock: number;
}

export function splitBrainParams(prng: Prng): SplitBrainParams {
  return {
    servers: prng.range(2, 6),
    files: prng.range(1, 12),
    copies: prng.range(1, 3),
    commonOps: prng.range(0, 30),
    sideOps: prng.range(1, 40),
    sleepChance: prng.pick([0, 0.1, 0.3]),
  };
}

/**
 * One run. `plan` replaces the rebuild planner (tests give a broken one to see the checks
 * fail).
 */
export function runSplitBrain(seed: number, options: { plan?: typeof planRebuild } = {}): SplitBrainResult {
  const prng = new Prng(seed);
  const params = splitBrainParams(prng);
  const id = () => new Uint8Array(Array.from({ length: 16 }, () => prng.int(256)));
  const servers: Server[] = Array.from({ length: params.servers }, (_, index) => ({
    name: `s${index}`,
    backend: id(),
    meta: new Map(),
    data: new Map(),
  }));
  const rootId = id();
  const contentOf = new Map<string, string>(); // chunk hash (hex) -> content label

  const newFile = (name: string, time: number): Inode => ({
    id: id(),
    type: 'FILE',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: 0,
    atimeMs: time,
    mtimeMs: time,
    ctimeMs: time,
    nlink: 1,
    rdev: 0,
    symlinkTarget: new Uint8Array(0),
    xattrs: [],
    inlineData: new Uint8Array(0),
    chunks: [],
    version: 0,
    latestAcceptedMtimeMs: time,
    skipCount: 0,
    parent: rootId,
    name,
    entries: 0,
    contentHistory: [],
  });

  /** What the header writer and a client write do on a side's awake servers. */
  const persist = (side: Side, inode: Inode, oldChunks: Inode['chunks'], deleted = false) => {
    const awake = side.servers.filter(() => !prng.chance(params.sleepChance));
    if (awake.length === 0) awake.push(prng.pick(side.servers));
    const backends = awake.map((server) => server.backend);
    const byBackend = new Map(awake.map((server) => [hex(server.backend), server]));
    const count = Math.min(params.copies, backends.length);
    for (const chunk of deleted ? [] : inode.chunks) {
      if (oldChunks.some((old) => Buffer.compare(old.id, chunk.id) === 0)) continue;
      for (const backend of metaBackends(chunk.id, backends, count))
        byBackend
          .get(hex(backend))!
          .data.set(hex(chunk.id), { backend: hex(backend), contentHash: chunk.hash, size: chunk.size });
    }
    // Released chunks are deleted on the servers that are awake (the others keep stale copies).
    for (const old of oldChunks)
      if (deleted || !inode.chunks.some((chunk) => Buffer.compare(old.id, chunk.id) === 0))
        for (const server of awake) server.data.delete(hex(old.id));
    const object = metaObjectOf(inode, side.index, deleted);
    for (const backend of metaBackends(inode.id, backends, count)) {
      const server = byBackend.get(hex(backend))!;
      const stored = server.meta.get(hex(inode.id));
      if (stored === undefined || compareChanges(object.header, stored.header) > 0)
        server.meta.set(hex(inode.id), object);
    }
  };

  const remove = (side: Side, before: Inode, time: number) => {
    side.files.delete(before.name);
    // The chunks are released (deleted on the side's awake servers); the META objects become
    // tombstones (the header writer).
    const tombstone: Inode = { ...before, ctimeMs: time };
    side.gone.set(before.name, tombstone);
    persist(side, tombstone, before.chunks, true);
  };

  const change = (side: Side) => {
    side.index += 1;
    side.clock += prng.range(1, 50);
    const time = side.clock;
    const names = [...side.files.keys()];
    const roll = prng.float();
    if (names.length === 0 || roll < 0.1) {
      const name = `f${prng.int(params.files)}`;
      if (side.files.has(name)) return;
      const inode = newFile(name, time);
      side.files.set(name, inode);
      side.gone.delete(name);
      persist(side, inode, []);
      return;
    }
    const before = side.files.get(prng.pick(names))!;
    if (roll < 0.15) return remove(side, before, time);
    const inode: Inode = { ...before, ctimeMs: time };
    if (roll < 0.3) inode.mode = prng.pick([0o600, 0o640, 0o644, 0o755]);
    else {
      const label = `${side.name}:${before.name}:${time}`;
      const hash = createHash('sha256').update(label).digest();
      contentOf.set(hex(hash), label);
      inode.contentHistory = [before.mtimeMs, ...before.contentHistory].slice(0, CONTENT_HISTORY_MAX);
      inode.chunks = [{ id: id(), offset: 0, size: 1000, hash }];
      inode.size = 1000;
      inode.version = before.version + 1;
      inode.mtimeMs = time;
    }
    side.files.set(inode.name, inode);
    persist(side, inode, before.chunks);
  };

  // Common history, then the split.
  const common: Side = { name: 'common', servers, files: new Map(), gone: new Map(), index: 0, clock: 1_000 };
  for (let op = 0; op < params.commonOps; op++) change(common);
  const shuffled = prng.shuffle(servers);
  const cut = prng.range(1, servers.length - 1);
  const sides: Side[] = [shuffled.slice(0, cut), shuffled.slice(cut)].map((part, index) => ({
    name: index === 0 ? 'A' : 'B',
    servers: part,
    files: new Map([...common.files].map(([name, inode]) => [name, { ...inode }])),
    gone: new Map([...common.gone].map(([name, inode]) => [name, { ...inode }])),
    index: common.index,
    clock: common.clock,
  }));
  for (let op = 0; op < params.sideOps * 2; op++) change(prng.pick(sides));

  // Every controller's metadata is lost: rebuild from the servers.
  const metas: FoundMeta[] = [];
  const data = new Map<string, FoundData[]>();
  for (const server of servers) {
    for (const { header, body } of server.meta.values())
      metas.push({ backend: hex(server.backend), server: server.name, header, body });
    for (const [key, copy] of server.data) data.set(key, [...(data.get(key) ?? []), copy]);
  }
  const plan = (options.plan ?? planRebuild)({ metas, data, rootId, lostFoundId: id() });

  const violations: string[] = [];
  const restored = new Map(plan.restores.map((restore) => [hex(restore.inode.id), restore]));
  const label = (inode: Inode | undefined) =>
    inode === undefined || inode.chunks.length === 0
      ? '(empty)'
      : (contentOf.get(hex(inode.chunks[0]!.hash)) ?? '?');
  let changedOnBothSides = 0;
  let conservative = 0;
  let unrecoverable = 0;
  const tombstones = new Set(sides.flatMap((side) => [...side.gone.values()]));
  const header = (inode: Inode) => metaObjectOf(inode, 0, tombstones.has(inode)).header;
  /** A version's META object (or tombstone) is on some server (else no rebuild can know it). */
  const present = (inode: Inode) =>
    servers.some((server) => {
      const stored = server.meta.get(hex(inode.id));
      return (
        stored !== undefined &&
        stored.header.ctimeMs === inode.ctimeMs &&
        stored.header.mtimeMs === inode.mtimeMs &&
        (stored.header.flags.deleted === true) === tombstones.has(inode)
      );
    });
  const whole = (inode: Inode) =>
    inode.chunks.every((chunk) =>
      servers.some((server) => {
        const copy = server.data.get(hex(chunk.id));
        return copy !== undefined && copyHoldsChunk(chunk, copy);
      }),
    );
  const allNames = new Set(sides.flatMap((side) => [...side.files.keys(), ...side.gone.keys()]));
  for (const name of allNames) {
    // Each side's final version: the live file, or its tombstone.
    const finals = sides
      .map((side) => side.files.get(name) ?? side.gone.get(name))
      .filter((inode): inode is Inode => inode !== undefined);
    if (new Set(finals.map((inode) => hex(inode.id))).size > 1) continue; // two inodes of one name
    const candidates = finals.filter(present);
    if (candidates.length === 0) {
      if (finals.some((inode) => !tombstones.has(inode))) unrecoverable += 1;
      continue;
    }
    let expected = candidates[0]!;
    for (const candidate of candidates.slice(1))
      if (compareVersions(header(candidate), header(expected)) > 0) expected = candidate;
    const got = restored.get(hex(expected.id));
    const other = finals.find((inode) => inode !== expected);
    if (other !== undefined && label(other) !== label(expected)) changedOnBothSides += 1;
    if (tombstones.has(expected)) {
      if (got !== undefined) violations.push(`${name}: restored, but its newest version is a delete`);
    } else if (got === undefined) {
      violations.push(`${name}: not restored (expected ${label(expected)})`);
      continue;
    } else if (got.inode.mtimeMs !== expected.mtimeMs || got.inode.ctimeMs !== expected.ctimeMs)
      violations.push(
        `${name}: restored the version of mtime ${got.inode.mtimeMs} ctime ${got.inode.ctimeMs}, expected mtime ${expected.mtimeMs} ctime ${expected.ctimeMs}`,
      );
    // Nothing lost: the other side's live version, if it differs and was not replaced by the
    // winner in the normal course, is kept.
    if (
      other !== undefined &&
      !tombstones.has(other) &&
      present(other) &&
      whole(other) &&
      label(other) !== label(expected) &&
      !superseded(expected, other)
    ) {
      const kept = plan.conflicts.some(
        (conflict) => conflict.loser.name === name && label(conflict.loser) === label(other),
      );
      if (!kept)
        violations.push(
          `${name}: the other side's version ${label(other)} is lost (winner ${label(expected)})`,
        );
    }
    if (got !== undefined && whole(expected))
      for (const chunk of got.inode.chunks)
        if (
          !got.locations.some((copy) => Buffer.compare(copy.object, chunk.id) === 0 && copy.location.current)
        )
          violations.push(`${name}: chunk ${hex(chunk.id)} of the restored version has no current copy`);
  }
  const finalLabels = new Set(
    sides.flatMap((side) => [...side.files.values(), ...side.gone.values()].map(label)),
  );
  for (const conflict of plan.conflicts) {
    if (finalLabels.has(label(conflict.loser))) continue;
    // A stale version older than the winner's history: kept, conservatively.
    if (label(conflict.loser) !== '?') conservative += 1;
    else violations.push(`${conflict.loser.name}: a conflict with a version no side had`);
  }
  return {
    seed,
    params,
    violations,
    files: allNames.size,
    conflicts: plan.conflicts.length,
    conservative,
    changedOnBothSides,
    unrecoverable,
  };
}

const HELP = `zhsm split-brain simulator: a cell splits in two, each side changes files on its own
servers with its own primary, every controller's metadata is lost, and the rebuild recovers the
cell from the servers' objects. Checks: the newest version wins, nothing on the servers is lost
(the other side's version is kept), a delete stays a delete.

Usage: npm run sim -- split-brain [--seeds N] [--first-seed N] [--seed N] [--json]
Exit code 1 on any violation, 2 on bad usage.`;

/** `npm run sim -- split-brain ...` */
export function splitBrainMain(
  argv: string[],
  out: (text: string) => void,
  err: (text: string) => void,
): number {
  let values: { seeds?: string; 'first-seed'?: string; seed?: string; json?: boolean; help?: boolean };
  try {
    values = parseArgs({
      args: argv,
      options: {
        seeds: { type: 'string' },
        'first-seed': { type: 'string' },
        seed: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' },
      },
    }).values;
  } catch (error) {
    err(`${(error as Error).message}\n\n${HELP}\n`);
    return 2;
  }
  if (values.help) {
    out(`${HELP}\n`);
    return 0;
  }
  const number = (text: string | undefined, fallback: number) => {
    if (text === undefined) return fallback;
    if (!/^\d+$/.test(text)) throw new RangeError(`not a number: ${text}`);
    return Number(text);
  };
  let seeds: number[];
  try {
    seeds =
      values.seed !== undefined
        ? [number(values.seed, 1)]
        : Array.from({ length: number(values.seeds, 200) }, (_, i) => number(values['first-seed'], 1) + i);
  } catch (error) {
    err(`${(error as Error).message}\n\n${HELP}\n`);
    return 2;
  }
  const started = performance.now();
  const results = seeds.map((seed) => runSplitBrain(seed));
  const sum = (pick: (result: SplitBrainResult) => number) =>
    results.reduce((total, r) => total + pick(r), 0);
  const failed = results.filter((result) => result.violations.length > 0);
  const summary = {
    seeds: results.length,
    violations: failed.map((result) => ({
      seed: result.seed,
      params: result.params,
      violations: result.violations,
    })),
    files: sum((r) => r.files),
    changedOnBothSides: sum((r) => r.changedOnBothSides),
    conflictsKept: sum((r) => r.conflicts),
    conservativeKeeps: sum((r) => r.conservative),
    unrecoverable: sum((r) => r.unrecoverable),
    wallSeconds: Math.round(performance.now() - started) / 1000,
  };
  if (values.json) out(`${JSON.stringify(summary, null, 2)}\n`);
  else {
    out(
      `split-brain: ${summary.seeds} seeds, ${summary.files} files, ${summary.changedOnBothSides} changed apart on both sides\n` +
        `  conflicts kept in lost+found: ${summary.conflictsKept} (${summary.conservativeKeeps} older than the winner's history, kept to be safe)\n` +
        `  files no rebuild could recover (every copy deleted by the other side): ${summary.unrecoverable}\n` +
        `  violations: ${failed.length} seeds  (${summary.wallSeconds} s)\n`,
    );
    for (const result of failed.slice(0, 10))
      out(
        `  seed ${result.seed} ${JSON.stringify(result.params)}\n    ${result.violations.slice(0, 5).join('\n    ')}\n`,
      );
  }
  return failed.length > 0 ? 1 : 0;
}
