/**
 * `zhsm chains show|check|apply|test` and `zhsm migrate`: the placement chains and the mover.
 */
import { readFile } from 'node:fs/promises';
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { InvalidArgumentError } from '../common/errors.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import type { CacheStatus } from '../hsm/cache.ts';
import { parseValue } from '../hsm/chains.ts';
import type { MoverStatus, PlacementPlan } from '../hsm/mover.ts';
import { formatBytes } from './zhsm-format.ts';

const FORMAT_HELP = `
The chains' text format (one row per line; # starts a comment):
  copies 2                          copies per file (default 2)
  chain main                        the first chain is the primary chain
    use tag:ssd if size < 4M        place a copy on a backend tagged ssd
    jump cold if age > 90d          continue in chain cold
    use any                         any backend (other servers first, most free space)
  chain cold
    skip server:s3                  never on server s3
    use tag:archive strict          strict: a write waits for a sleeping server
    stop                            no more copies
Destinations: any, tag:NAME, server:NAME, backend:UUID-PREFIX. Conditions: size (K M G T),
age and idle (s m h d w), opens (a count); path and name (= glob, != no match).
Backends get tags with 'zhsm-node init|join --tag PATH=TAG[,TAG]' (or "backendTags" in node.json).`;

async function readChainsFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError(`cannot read ${file}: ${(error as Error).message}`);
  }
}

function formatPlan(plan: PlacementPlan, warnings: string[]): string {
  const lines = [
    `files: ${plan.files} looked at, ${plan.filesToChange} to change${plan.filesShort > 0 ? `, ${plan.filesShort} get fewer copies than asked` : ''}`,
    `copy:    ${plan.objectsToCopy} objects, ${formatBytes(plan.bytesToCopy)}`,
    `release: ${plan.objectsToRelease} objects, ${formatBytes(plan.bytesToRelease)}`,
  ];
  if (plan.flows.length > 0) {
    lines.push('', 'FROM                      TO                        OBJECTS  BYTES');
    for (const flow of plan.flows)
      lines.push(
        `${flow.from.padEnd(25)} ${flow.to.padEnd(25)} ${String(flow.objects).padStart(7)}  ${formatBytes(flow.bytes)}`,
      );
  }
  for (const warning of warnings) lines.push(`warning: ${warning}`);
  return lines.join('\n');
}

function formatMover(mover: MoverStatus): string {
  if (!mover.active) return 'mover: not running (no primary answered as mover)';
  const lines = [
    `mover: ${mover.phase}; chains version ${mover.chainsVersion}; ${mover.passes} pass(es) done`,
    `pass: ${mover.scannedFiles}/${mover.totalFiles} files, copied ${mover.copiesDone}/${mover.copiesPlanned} objects (${formatBytes(mover.bytesDone)} of ${formatBytes(mover.bytesPlanned)}), released ${mover.released}, failed ${mover.copiesFailed}`,
  ];
  if (mover.bytesPerSecond > 0)
    lines.push(`rate: ${formatBytes(mover.bytesPerSecond)}/s, ETA ${formatDuration(mover.etaMs)}`);
  if (mover.passFinishedMs >= mover.passStartedMs && mover.passFinishedMs > 0)
    lines.push(`last pass took ${formatDuration(mover.passFinishedMs - mover.passStartedMs)}`);
  if (mover.queuedFiles > 0) lines.push(`queued files: ${mover.queuedFiles}`);
  if (mover.waiting.length > 0) lines.push(`waiting for sleeping servers: ${mover.waiting.join(', ')}`);
  if (mover.lastError !== '') lines.push(`last error: ${mover.lastError}`);
  return lines.join('\n');
}

function formatDuration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

export function registerChainsCommands(program: Command): void {
  const chains = program
    .command('chains')
    .description('file resolve chains: where the copies of each file live')
    .addHelpText('after', FORMAT_HELP);

  chains
    .command('show')
    .description('the chains in force (text format), with their version')
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--json', 'print JSON')
    .action(async (options) => {
      const reply = await adminRequest<{ set: boolean; text: string; version: number; chains?: unknown }>(
        options.data,
        {
          op: 'chains-show',
        },
      );
      if (options.json) console.log(JSON.stringify(reply, null, 2));
      else if (!reply.set)
        console.log("# no chains set: every file gets the clients' replica count on any backends");
      else process.stdout.write(`# version ${reply.version}\n${reply.text}`);
    });

  chains
    .command('check')
    .description('check a chains file against the cell (syntax, jump cycles, unknown destinations)')
    .argument('<file>', 'chains in the text format')
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--json', 'print JSON')
    .action(async (file, options) => {
      const reply = await adminRequest<{ text: string; warnings: string[] }>(options.data, {
        op: 'chains-check',
        text: await readChainsFile(file),
      });
      if (options.json) console.log(JSON.stringify(reply, null, 2));
      else {
        process.stdout.write(reply.text);
        for (const warning of reply.warnings) console.log(`warning: ${warning}`);
        console.log('# ok');
      }
    });

  chains
    .command('apply')
    .description('put new chains in force; the mover then moves existing data (see zhsm migrate)')
    .argument('<file>', 'chains in the text format')
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--dry-run', 'only report how many objects and bytes would move where')
    .option('--expect-version <n>', 'refuse unless the chains in force are at this version')
    .option('--json', 'print JSON')
    .action(async (file, options) => {
      const text = await readChainsFile(file);
      if (options.dryRun) {
        const reply = await adminRequest<{ plan: PlacementPlan; warnings: string[] }>(options.data, {
          op: 'chains-plan',
          text,
        });
        if (options.json) console.log(JSON.stringify(reply, null, 2));
        else console.log(formatPlan(reply.plan, reply.warnings));
        return;
      }
      const expectVersion = options.expectVersion === undefined ? undefined : Number(options.expectVersion);
      if (expectVersion !== undefined && !(Number.isSafeInteger(expectVersion) && expectVersion >= 0))
        throw new InvalidArgumentError('--expect-version takes a version number');
      const reply = await adminRequest<{ version: number; warnings: string[] }>(options.data, {
        op: 'chains-apply',
        text,
        ...(expectVersion === undefined ? {} : { expectedVersion: expectVersion }),
      });
      if (options.json) console.log(JSON.stringify(reply, null, 2));
      else {
        for (const warning of reply.warnings) console.log(`warning: ${warning}`);
        console.log(
          `chains version ${reply.version} in force; the mover places existing data (zhsm migrate)`,
        );
      }
    });

  chains
    .command('test')
    .description('which backends a file would get, and why (row by row)')
    .argument('<path>', 'a path in the cell, e.g. /media/film.mkv')
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--size <bytes>', 'the file size (units K M G T)', '0')
    .option('--age <duration>', 'time since its last change (s m h d w)', '0s')
    .option('--chains <file>', 'test these chains instead of the ones in force')
    .option('--json', 'print JSON')
    .action(async (path, options) => {
      const size = parseValue('size', String(options.size));
      if (size === undefined)
        throw new InvalidArgumentError(`bad --size ${JSON.stringify(options.size)} (e.g. 4M)`);
      const ageMs = parseValue('age', String(options.age));
      if (ageMs === undefined)
        throw new InvalidArgumentError(`bad --age ${JSON.stringify(options.age)} (e.g. 30d)`);
      const reply = await adminRequest<{
        copies: number;
        targets: Array<{
          backend: string;
          server: string;
          path: string;
          awake: boolean;
          row: number;
          strict: boolean;
        }>;
        trace: string[];
      }>(options.data, {
        op: 'chains-test',
        path,
        size,
        ageMs,
        ...(options.chains === undefined ? {} : { text: await readChainsFile(options.chains) }),
      });
      if (options.json) {
        console.log(JSON.stringify(reply, null, 2));
        return;
      }
      console.log(`${path}: ${reply.targets.length} of ${reply.copies} copies`);
      for (const target of reply.targets)
        console.log(
          `  ${target.server || '?'}:${target.path} (backend ${target.backend.slice(0, 8)}${target.awake ? '' : ', asleep'}${target.strict ? ', strict' : ''})`,
        );
      console.log('why:');
      for (const line of reply.trace) console.log(`  ${line}`);
    });

  program
    .command('cache')
    .description("the controllers' cache of hot files: size, hits, admissions, evictions, pre-wakes")
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
A backend tagged cache (zhsm-node init|join --backend DIR --tag DIR=cache, on a controller) holds
copies of files opened twice within an hour (or once, with the xattr user.zhsm.hot), LRU by bytes
up to 90 % of its capacity. Cached files are read while their servers sleep; reading a cached file
whose servers sleep wakes the server holding the rest of its folder (pre-wake).`,
    )
    .action(async (options) => {
      const { cache } = await adminRequest<{ cache: CacheStatus }>(options.data, { op: 'cache' });
      if (options.json) {
        console.log(JSON.stringify(cache, null, 2));
        return;
      }
      if (!cache.active) console.log('cache: not running');
      else if (cache.backend === '') console.log('cache: no backend tagged cache on an awake server');
      else
        console.log(
          [
            `cache: backend ${cache.backend.slice(0, 8)}, ${formatBytes(cache.bytes)} of ${formatBytes(cache.maxBytes)} in ${cache.files} file(s)`,
            `opens: ${cache.hits} hits, ${cache.misses} misses; ${cache.admissions} admitted, ${cache.evictions} evicted; ${cache.prewakes} pre-wake(s)`,
            ...(cache.lastError === '' ? [] : [`last error: ${cache.lastError}`]),
          ].join('\n'),
        );
    });

  program
    .command('migrate')
    .description("the mover's progress: copies made and to make, rate and ETA")
    .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
    .option('--watch', 'follow with a progress bar until the mover is idle')
    .option('--json', 'print JSON (with --watch: one object per line)')
    .action(async (options) => {
      const read = async () =>
        (await adminRequest<{ mover: MoverStatus }>(options.data, { op: 'mover' })).mover;
      let mover = await read();
      if (!options.watch) {
        console.log(options.json ? JSON.stringify(mover, null, 2) : formatMover(mover));
        return;
      }
      const bar = options.json
        ? undefined
        : new SingleBar({
            format: '{phase} [{bar}] {percentage}% | {done}/{planned} | {rate}/s | ETA {eta_formatted}',
            hideCursor: true,
            noTTYOutput: true,
            notTTYSchedule: 2_000,
          });
      bar?.start(Math.max(1, mover.bytesPlanned), 0, {
        phase: mover.phase,
        done: '0',
        planned: '0',
        rate: '0',
      });
      for (;;) {
        if (options.json) console.log(JSON.stringify(mover));
        else {
          bar!.setTotal(Math.max(1, mover.bytesPlanned));
          bar!.update(Math.min(mover.bytesDone, Math.max(1, mover.bytesPlanned)), {
            phase: mover.phase.padEnd(8),
            done: formatBytes(mover.bytesDone),
            planned: formatBytes(mover.bytesPlanned),
            rate: formatBytes(mover.bytesPerSecond),
          });
        }
        if (!mover.active || (mover.phase === 'idle' && mover.queuedFiles === 0)) break;
        await new Promise((resolve) => setTimeout(resolve, 500));
        mover = await read();
      }
      bar?.stop();
      if (!options.json) console.log(formatMover(mover));
    });
}
