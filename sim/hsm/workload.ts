/**
 * The archive cell and its workload: folders of files placed by the chains, readers that walk a
 * folder in order (most of them in a small hot set), writers that add files to folders, and the
 * chains that group a folder on one pair of servers.
 */
import type { Prng } from '../prng.ts';
import type { HsmSim } from './model.ts';

export interface ArchiveWorkload {
  readonly files: number;
  readonly filesPerFolder: number;
  /** Share of the folders (and so of the files) that are hot. */
  readonly hotShare: number;
  /** Share of the read sessions that go to hot folders. */
  readonly hotReadShare: number;
  /** Reads per hour (sessions arrive at this rate divided by their mean length). */
  readonly readsPerHour: number;
  /** A session reads from the folder's start a share of it, uniform in [this, 1]. */
  readonly sessionShareMin: number;
  /** Mean time between two reads of one session. */
  readonly thinkMeanMs: number;
  /** Files written per hour (in sessions of `writeSessionFiles`). */
  readonly writesPerHour: number;
  readonly writeSessionFiles: number;
  /** Share of the writer sessions that add to a hot folder (else a random folder). */
  readonly hotWriteShare: number;
  /** Share of written files that replace an existing file of the folder (new version). */
  readonly overwriteShare: number;
  /** File sizes: log-uniform in [sizeMin, sizeMax]. */
  readonly sizeMin: number;
  readonly sizeMax: number;
}

export interface ArchiveCell {
  readonly hot: number[];
  readonly cold: number[];
}

/** Folders `/archive/pK/dNNNNN`, partition K = folder mod `partitions`. */
export function folderPath(folder: number, partitions: number): string {
  return `/archive/p${folder % partitions}/d${String(folder).padStart(5, '0')}`;
}

export function fileSize(rng: Prng, workload: ArchiveWorkload): number {
  const lo = Math.log(workload.sizeMin);
  const hi = Math.log(workload.sizeMax);
  return Math.round(Math.exp(lo + rng.float() * (hi - lo)));
}

/** Create the folders and files (placed by the chains, all copies current). */
export function populate(sim: HsmSim, workload: ArchiveWorkload, partitions: number, rng: Prng): ArchiveCell {
  const folders = Math.max(1, Math.ceil(workload.files / workload.filesPerFolder));
  const hotCount = Math.max(1, Math.round(folders * workload.hotShare));
  const hotSet = new Set(rng.shuffle([...Array(folders).keys()]).slice(0, hotCount));
  let made = 0;
  for (let f = 0; f < folders; f++) {
    const folder = sim.folder(folderPath(f, partitions));
    const count = Math.min(workload.filesPerFolder, workload.files - made);
    for (let i = 0; i < count; i++) {
      const ageMs = rng.float() * 365 * 86_400_000;
      sim.seedFile(folder, `f${String(i).padStart(4, '0')}`, fileSize(rng, workload), sim.nowMs - ageMs);
      made++;
    }
  }
  const all = [...Array(folders).keys()];
  return { hot: all.filter((f) => hotSet.has(f)), cold: all.filter((f) => !hotSet.has(f)) };
}

/** Schedule the readers and writers from `fromMs` to `untilMs`. */
export function drive(
  sim: HsmSim,
  cell: ArchiveCell,
  workload: ArchiveWorkload,
  rng: Prng,
  fromMs: number,
  untilMs: number,
): void {
  const meanSessionReads = workload.filesPerFolder * ((1 + workload.sessionShareMin) / 2);
  const sessionGapMs = workload.readsPerHour > 0 ? 3_600_000 / (workload.readsPerHour / meanSessionReads) : 0;
  const readers = rng.fork('readers');
  const sessions = rng.fork('sessions');
  if (sessionGapMs > 0) {
    const nextSession = () => {
      if (sim.nowMs >= untilMs) return;
      const hot = cell.cold.length === 0 || readers.chance(workload.hotReadShare);
      const folder = readers.pick(hot ? cell.hot : cell.cold);
      const length = sim.folders[folder]!.files.length;
      const share = workload.sessionShareMin + readers.float() * (1 - workload.sessionShareMin);
      sim.startSession(folder, 0, Math.max(1, Math.round(length * share)), workload.thinkMeanMs, sessions);
      sim.after(readers.exponential(sessionGapMs), 'reader', nextSession);
    };
    sim.at(fromMs + readers.exponential(sessionGapMs), 'reader', nextSession);
  }
  const writers = rng.fork('writers');
  const writeGapMs =
    workload.writesPerHour > 0 ? 3_600_000 / (workload.writesPerHour / workload.writeSessionFiles) : 0;
  if (writeGapMs > 0) {
    let serial = 0;
    const nextWriter = () => {
      if (sim.nowMs >= untilMs) return;
      const hot = cell.cold.length === 0 || writers.chance(workload.hotWriteShare);
      const folder = writers.pick(hot ? cell.hot : cell.cold);
      let left = workload.writeSessionFiles;
      const writeOne = () => {
        if (left-- <= 0) return;
        const files = sim.folders[folder]!.files;
        const overwrite = files.length > 0 && writers.chance(workload.overwriteShare);
        const name = overwrite
          ? sim.files[writers.pick(files)]!.path.split('/').at(-1)!
          : `w${String(serial++).padStart(6, '0')}`;
        sim.write(folder, name, fileSize(writers, workload), () =>
          sim.after(writers.exponential(workload.thinkMeanMs), 'writer', writeOne),
        );
      };
      writeOne();
      sim.after(writers.exponential(writeGapMs), 'writer', nextWriter);
    };
    sim.at(fromMs + writers.exponential(writeGapMs), 'writer', nextWriter);
  }
}

/**
 * Chains that keep each folder partition on one pair of servers (p0 on s1+s2, p1 on s2+s3, ...),
 * so that walking a folder wakes one server; `use any` catches full backends and writes whose
 * pair sleeps (they land on an awake server and the mover moves them later).
 */
export function groupedChains(servers: number, copies = 2): string {
  const lines = [`copies ${copies}`, 'chain main'];
  for (let p = 0; p < servers; p++) lines.push(`  jump p${p} if path = "/archive/p${p}/**"`);
  lines.push('  use any');
  for (let p = 0; p < servers; p++) {
    lines.push(`chain p${p}`);
    for (let c = 0; c < copies; c++) lines.push(`  use server:s${((p + c) % servers) + 1}`);
    lines.push('  use any');
  }
  return `${lines.join('\n')}\n`;
}

/** Copies on any backends (by free space). */
export function spreadChains(copies = 2): string {
  return `copies ${copies}\nchain main\n  use any\n`;
}
