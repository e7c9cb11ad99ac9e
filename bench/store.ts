/**
 * bench store: the backend object store against the same bytes written and read with node:fs
 * using the same durability steps (write, fsync, rename, directory fsync).
 *
 * - large: 64 MiB objects (random bytes), ingest and read (warm page cache and, where this
 *   process may drop caches (root), cold).
 * - small: 4 KiB objects ingested per second.
 * Rounds interleave raw and store runs; figures are medians. Each timed run of small objects
 * starts after a sync(1), so no run pays for the writeback of the one before; their ratios are
 * the medians of each round's store/raw (runs a moment apart), not the ratio of the medians.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Backend } from '../node/store/backend.ts';
import { newObjectId, objectIdToHex } from '../node/store/object-id.ts';
import { median, printTable, round } from './_table.ts';
import type { BenchResult } from './run.ts';

const MiB = 1024 * 1024;
const largeBytes = 64 * MiB;
const pieceBytes = 4 * MiB;
const readBytes = MiB;
const rounds = 5;
const smallCount = 300;
/**
 * Rounds of small objects. One round's ratio ranges over about 0.6-0.9 here (the virtual disk's
 * fsync latency drifts between runs a second apart); the median of 11 moves far less than that of 5.
 */
const smallRounds = 11;

function dropCaches(): boolean {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '1');
    return true;
  } catch {
    return false;
  }
}

/**
 * Flush every dirty page and journal entry (sync(1)) before a timed run of small objects: each run
 * then starts from a quiet disk, not with the writeback the run before it left (a fresh-backend
 * run leaves hundreds of new directories to write back).
 */
function settle(): void {
  execFileSync('sync');
}

async function rawWrite(directory: string, name: string, body: Buffer): Promise<void> {
  const temp = join(directory, 'tmp', `${name}.tmp`);
  const handle = await fsp.open(temp, 'wx', 0o600);
  for (let offset = 0; offset < body.length; offset += pieceBytes) {
    const piece = body.subarray(offset, Math.min(body.length, offset + pieceBytes));
    await handle.write(piece, 0, piece.length, offset);
  }
  await handle.sync();
  await handle.close();
  const target = join(directory, 'objects', name);
  await fsp.rename(temp, target);
  const dir = await fsp.open(join(directory, 'objects'), 'r');
  await dir.sync();
  await dir.close();
}

async function rawRead(path: string): Promise<number> {
  const handle = await fsp.open(path, 'r');
  let position = 0;
  for (;;) {
    const buffer = Buffer.allocUnsafe(readBytes);
    const { bytesRead } = await handle.read(buffer, 0, readBytes, position);
    if (bytesRead === 0) break;
    position += bytesRead;
  }
  await handle.close();
  return position;
}

async function storeRead(backend: Backend, id: Uint8Array): Promise<number> {
  let total = 0;
  for await (const part of backend.read(id)) total += part.length;
  return total;
}

async function timed(task: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await task();
  return (performance.now() - start) / 1000;
}

export async function run(): Promise<BenchResult> {
  const root = mkdtempSync(join(process.env.ZHSM_BENCH_DIR ?? tmpdir(), 'zhsm-bench-store-'));
  try {
    const rawDirectory = join(root, 'raw');
    await fsp.mkdir(join(rawDirectory, 'tmp'), { recursive: true });
    await fsp.mkdir(join(rawDirectory, 'objects'), { recursive: true });
    const backend = await Backend.create(join(root, 'backend'), { cell: 'bench' });
    const body = randomBytes(largeBytes);
    const canDrop = dropCaches();
    const samples: Record<string, number[]> = {
      rawIngest: [],
      storeIngest: [],
      rawReadWarm: [],
      storeReadWarm: [],
      rawReadCold: [],
      storeReadCold: [],
      objectFileReadCold: [],
    };
    for (let round = 0; round < rounds; round++) {
      const name = `large-${round}`;
      const id = newObjectId();
      samples.rawIngest!.push(await timed(() => rawWrite(rawDirectory, name, body)));
      samples.storeIngest!.push(await timed(() => backend.ingest({ id, bodySize: body.length }, body)));
      const rawPath = join(rawDirectory, 'objects', name);
      await rawRead(rawPath);
      await storeRead(backend, id);
      samples.rawReadWarm!.push(await timed(() => rawRead(rawPath)));
      samples.storeReadWarm!.push(await timed(() => storeRead(backend, id)));
      if (canDrop) {
        dropCaches();
        samples.rawReadCold!.push(await timed(() => rawRead(rawPath)));
        dropCaches();
        samples.storeReadCold!.push(await timed(() => storeRead(backend, id)));
        // Control: the object's own file read raw (where a file lands on the virtual disk and the
        // host's cache move cold reads more than the store's verification does).
        dropCaches();
        samples.objectFileReadCold!.push(await timed(() => rawRead(backend.objectPath(id))));
      }
      await fsp.unlink(rawPath);
      await backend.remove(id);
    }
    // Small objects: on a fresh backend nearly every object creates its directory (ab/cd/); on a
    // populated one (about 65k objects or more) the directories exist. Both are measured: the
    // populated round reuses the directory prefixes of the fresh round's ids.
    const small = randomBytes(4096);
    const smallRaw: number[] = [];
    const smallFresh: number[] = [];
    const smallPopulated: number[] = [];
    const perSecond = async (task: () => Promise<unknown>) => smallCount / (await timed(task));
    for (let round = 0; round < smallRounds; round++) {
      const freshIds = Array.from({ length: smallCount }, () => newObjectId());
      const populatedIds = freshIds.map((id) => {
        const sibling = newObjectId();
        sibling.set(id.subarray(0, 2), 0);
        return sibling;
      });
      // Fresh first (it creates the directories the populated run uses), then raw and populated
      // side by side: the ratio of each round pairs runs a moment apart (the virtual disk's speed
      // drifts by half between rounds here), and the median of those ratios counts.
      settle();
      smallFresh.push(
        await perSecond(async () => {
          for (const id of freshIds) await backend.ingest({ id }, small);
        }),
      );
      settle();
      smallRaw.push(
        await perSecond(async () => {
          for (const id of freshIds) await rawWrite(rawDirectory, objectIdToHex(id), small);
        }),
      );
      settle();
      smallPopulated.push(
        await perSecond(async () => {
          for (const id of populatedIds) await backend.ingest({ id }, small);
        }),
      );
    }
    const pairedRatios = (store: number[]) => store.map((value, index) => value / smallRaw[index]!);
    const pairedRatio = (store: number[]) => median(pairedRatios(store));
    const mibPerSecond = (key: string) => {
      const values = samples[key]!;
      return values.length === 0 ? Number.NaN : largeBytes / MiB / median(values);
    };
    const figures: Record<string, number> = {
      raw_ingest_64MiB_MiBps: round(mibPerSecond('rawIngest'), 1),
      store_ingest_64MiB_MiBps: round(mibPerSecond('storeIngest'), 1),
      raw_read_warm_64MiB_MiBps: round(mibPerSecond('rawReadWarm'), 1),
      store_read_warm_64MiB_MiBps: round(mibPerSecond('storeReadWarm'), 1),
      raw_small_4KiB_per_s: round(median(smallRaw), 1),
      store_small_4KiB_fresh_per_s: round(median(smallFresh), 1),
      store_small_4KiB_populated_per_s: round(median(smallPopulated), 1),
      // The spread of the rounds' own ratios (the ratio below is their median).
      small_4KiB_populated_round_ratio_min: round(Math.min(...pairedRatios(smallPopulated))),
      small_4KiB_populated_round_ratio_max: round(Math.max(...pairedRatios(smallPopulated))),
    };
    if (canDrop) {
      figures.raw_read_cold_64MiB_MiBps = round(mibPerSecond('rawReadCold'), 1);
      figures.store_read_cold_64MiB_MiBps = round(mibPerSecond('storeReadCold'), 1);
      figures.object_file_raw_read_cold_64MiB_MiBps = round(mibPerSecond('objectFileReadCold'), 1);
    }
    const ratios: Record<string, number> = {
      ingest_64MiB: round(figures.store_ingest_64MiB_MiBps! / figures.raw_ingest_64MiB_MiBps!),
      read_warm_64MiB: round(figures.store_read_warm_64MiB_MiBps! / figures.raw_read_warm_64MiB_MiBps!),
      small_4KiB_ingest_fresh: round(pairedRatio(smallFresh)),
      small_4KiB_ingest_populated: round(pairedRatio(smallPopulated)),
    };
    if (canDrop) {
      ratios.read_cold_64MiB = round(
        figures.store_read_cold_64MiB_MiBps! / figures.raw_read_cold_64MiB_MiBps!,
      );
      ratios.read_cold_64MiB_vs_object_file = round(
        figures.store_read_cold_64MiB_MiBps! / figures.object_file_raw_read_cold_64MiB_MiBps!,
      );
    }
    printTable('store vs raw node:fs (same durability steps), medians', [
      {
        case: 'ingest 64 MiB',
        unit: 'MiB/s',
        raw: figures.raw_ingest_64MiB_MiBps!,
        store: figures.store_ingest_64MiB_MiBps!,
        ratio: ratios.ingest_64MiB!,
        target: '>= 0.85',
      },
      {
        case: 'read 64 MiB (warm cache)',
        unit: 'MiB/s',
        raw: figures.raw_read_warm_64MiB_MiBps!,
        store: figures.store_read_warm_64MiB_MiBps!,
        ratio: ratios.read_warm_64MiB!,
        target: '>= 0.85',
      },
      ...(canDrop
        ? [
            {
              case: 'read 64 MiB (cold cache)',
              unit: 'MiB/s',
              raw: figures.raw_read_cold_64MiB_MiBps!,
              store: figures.store_read_cold_64MiB_MiBps!,
              ratio: ratios.read_cold_64MiB!,
              target: '>= 0.85',
            },
            {
              case: 'read 64 MiB (cold), vs raw read of the object file',
              unit: 'MiB/s',
              raw: figures.object_file_raw_read_cold_64MiB_MiBps!,
              store: figures.store_read_cold_64MiB_MiBps!,
              ratio: ratios.read_cold_64MiB_vs_object_file!,
              target: '(control)',
            },
          ]
        : []),
      {
        case: 'ingest 4 KiB objects, fresh backend',
        unit: 'objects/s',
        raw: figures.raw_small_4KiB_per_s!,
        store: figures.store_small_4KiB_fresh_per_s!,
        ratio: ratios.small_4KiB_ingest_fresh!,
        target: '(directories created)',
      },
      {
        case: 'ingest 4 KiB objects, populated backend',
        unit: 'objects/s',
        raw: figures.raw_small_4KiB_per_s!,
        store: figures.store_small_4KiB_populated_per_s!,
        ratio: ratios.small_4KiB_ingest_populated!,
        target: '>= 0.70',
      },
    ]);
    if (!canDrop) console.log('(cold reads skipped: cannot write /proc/sys/vm/drop_caches)');
    return { figures, ratios };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
