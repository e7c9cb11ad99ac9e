/**
 * `zhsm rebuild | scrub | fsck | conflicts`: the recovery jobs (node/recovery/). A job runs in the
 * daemon of --data (a controller); the CLI starts it (or attaches to the one running), shows its
 * progress and prints its report. Interrupting the CLI leaves the job running; run the command
 * again to attach to it.
 */
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { ZhsmError } from '../common/errors.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import type { JobStatus } from '../daemon/jobs.ts';
import type { FsckReport } from '../recovery/fsck.ts';
import type { RebuildReport } from '../recovery/rebuild.ts';
import type { ScrubReport } from '../recovery/scrub.ts';
import { UsageError } from './zhsm-cell.ts';
import { formatBytes } from './zhsm-format.ts';

/** Exit code of a job that found problems it did not repair (fsck differences, scrub leftovers). */
export const EXIT_PROBLEMS = 4;

function count(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text))
    throw new UsageError(`${name} must be a non-negative integer, not ${JSON.stringify(text)}`);
  return Number(text);
}

function seconds(text: string | undefined, name: string): number | undefined {
  const value = count(text, name);
  return value === undefined ? undefined : value * 1000;
}

/** A rate like 64M, 500k, 1G (bytes per second); 0 = unthrottled. */
function rate(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const match = /^(\d+)([kKmMgG]?)$/.exec(text);
  if (match === null)
    throw new UsageError(`--rate must be a number of bytes per second like 64M, not ${JSON.stringify(text)}`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[
    match[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'
  ];
  return Number(match[1]) * unit;
}

/** Start a job (or attach to the running one) and follow it to its end. */
async function runJob(
  data: string,
  kind: 'rebuild' | 'scrub' | 'fsck',
  start: Record<string, unknown>,
  options: { json?: boolean; detach?: boolean },
): Promise<JobStatus> {
  const current = (await adminRequest<{ job: JobStatus | null }>(data, { op: 'recovery-job', kind })).job;
  let job: JobStatus;
  if (current?.state === 'running') {
    if (!options.json) console.error(`zhsm: attaching to the ${kind} already running (${current.id})`);
    job = current;
  } else job = (await adminRequest<{ job: JobStatus }>(data, { op: `recovery-${kind}`, ...start })).job;
  if (options.detach) return job;
  const bar =
    options.json === true
      ? undefined
      : new SingleBar({
          format: '{phase} [{bar}] {percentage}% | {value}/{total} {unit} | ETA {eta_formatted}',
          hideCursor: true,
          noTTYOutput: true,
          notTTYSchedule: 2_000,
          etaBuffer: 20,
        });
  let phase = '';
  try {
    for (;;) {
      if (bar !== undefined) {
        if (job.phase !== phase) {
          phase = job.phase;
          bar.stop();
          bar.start(Math.max(1, job.total), job.done, { phase, unit: job.unit });
        } else {
          bar.setTotal(Math.max(1, job.total));
          bar.update(job.done, { phase, unit: job.unit });
        }
      }
      if (job.state !== 'running') break;
      await new Promise((resolve) => setTimeout(resolve, 500));
      const polled = (await adminRequest<{ job: JobStatus | null }>(data, { op: 'recovery-job', kind })).job;
      if (polled === null) throw new ZhsmError('IO_ERROR', `the ${kind} job is gone (the daemon restarted?)`);
      job = polled;
    }
  } finally {
    bar?.stop();
  }
  if (job.state === 'failed') {
    if (options.json) console.log(JSON.stringify({ job }, null, 2));
    throw new ZhsmError('IO_ERROR', `${kind} failed: ${job.error ?? 'unknown error'}`);
  }
  return job;
}

function table(rows: Array<[string, string | number]>): string {
  const width = Math.max(...rows.map(([name]) => name.length));
  return rows.map(([name, value]) => `  ${name.padEnd(width)}  ${value}`).join('\n');
}

export function registerRecoveryCommands(program: Command): void {
  program
    .command('rebuild')
    .description(
      'rebuild the metadata from the object headers on every backend (needs every storage server running)',
    )
    .requiredOption('--data <dir>', 'the data directory of a running controller of the cell')
    .option('--expect-servers <n>', 'wait until at least this many storage servers are registered and online')
    .option('--wait <seconds>', 'how long to wait for servers to wake and register (default 120)')
    .option('--partial', 'go on without the storage servers that stay offline (their copies are not found)')
    .option('--batch <n>', 'inodes per restore step (default 256; 1-512)')
    .option('--detach', 'start the job and return (follow it with the same command, or zhsm status)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
After losing every controller's metadata: start the controllers on their data directories (the
metadata directories gone), start every storage server, then run 'zhsm rebuild' on a controller.
It initializes the empty cell under its name, re-admits the members this controller knew, scans
every backend's object headers and restores the namespace, attributes, inline contents, chunk
lists, copies and their three bits. Where copies of one file disagree the newest change wins; a
losing version with other content (a split brain) is kept as
/lost+found/NAME.conflict-SERVER-MTIME and listed by 'zhsm conflicts' and 'zhsm status'.
On a live cell it merges what the backends have that is newer than the metadata.
Interrupted? Run it again: what is restored already is skipped. The resolve chains are not on
the backends: apply them again with 'zhsm chains apply'.
Exit: 0 done; 1 failed; 4 done, but chunks with no copy anywhere were found.`,
    )
    .action(async (options) => {
      const start = {
        expectServers: count(options.expectServers, '--expect-servers'),
        waitMs: seconds(options.wait, '--wait'),
        partial: options.partial === true,
        batch: count(options.batch, '--batch'),
      };
      const job = await runJob(options.data, 'rebuild', start, options);
      if (options.detach)
        return void console.log(options.json ? JSON.stringify({ job }, null, 2) : `started ${job.id}`);
      const report = job.result as unknown as RebuildReport;
      if (options.json) console.log(JSON.stringify({ job, report }, null, 2));
      else {
        console.log(
          `rebuild done in ${((job.finishedMs! - job.startedMs) / 1000).toFixed(1)} s\n${table([
            ['backends scanned', report.backends],
            ['objects', report.objects],
            ['META objects', report.metaObjects],
            ['inodes restored', report.restored],
            ['into lost+found (no parent)', report.orphans],
            ['split-brain conflicts', report.conflicts.length],
            ['chunks with no copy', report.missingChunks],
            ['outdated copies (to repair)', report.outdatedCopies],
            ['damaged objects', report.damagedObjects],
            ['unreadable META headers', report.invalidHeaders],
          ])}`,
        );
        for (const conflict of report.conflicts)
          console.log(
            `  conflict: ${conflict.path}: ${conflict.winnerServer}'s version wins; ${conflict.loserServer}'s kept as ${conflict.kept}`,
          );
        if (report.offlineServers.length > 0)
          console.log(`  offline servers (not scanned): ${report.offlineServers.join(', ')}`);
      }
      if (report.missingChunks > 0) process.exitCode = EXIT_PROBLEMS;
    });

  program
    .command('scrub')
    .description('re-hash every object on every backend; repair damaged or missing copies from good ones')
    .requiredOption('--data <dir>', 'the data directory of a running controller of the cell')
    .option(
      '--rate <bytes/s>',
      're-hash at most this fast per backend, e.g. 64M (0: unthrottled; default 64M)',
    )
    .option('--dry-run', 'report only: repair, delete and restore nothing')
    .option(
      '--grace <seconds>',
      'unreferenced objects are collected (DATA) or put into lost+found (META) once seen this long (default 86400)',
    )
    .option('--repair-wait <seconds>', 'how long to wait for the repairs (default 120)')
    .option('--detach', 'start the job and return')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Exit: 0 everything whole or repaired; 1 failed; 4 problems left unrepaired (listed; e.g. the only
copy of a chunk is damaged — readers get EIO for it, never the damaged bytes).`,
    )
    .action(async (options) => {
      const start = {
        bytesPerSecond: rate(options.rate),
        graceMs: seconds(options.grace, '--grace'),
        repairWaitMs: seconds(options.repairWait, '--repair-wait'),
        dryRun: options.dryRun === true,
      };
      const job = await runJob(options.data, 'scrub', start, options);
      if (options.detach)
        return void console.log(options.json ? JSON.stringify({ job }, null, 2) : `started ${job.id}`);
      const report = job.result as unknown as ScrubReport;
      if (options.json) console.log(JSON.stringify({ job, report }, null, 2));
      else {
        console.log(
          `scrub done in ${((job.finishedMs! - job.startedMs) / 1000).toFixed(1)} s\n${table([
            ['backends', report.backends],
            ['objects checked', report.objectsChecked],
            ['bytes re-hashed', formatBytes(report.bytesChecked)],
            ['damaged copies', report.damaged.length],
            ['missing copies', report.missing.length],
            ['repaired', report.repaired],
            ['not repaired', report.unrepaired.length],
            ['unreferenced DATA objects', `${report.orphanData} (${report.orphanDataDeleted} collected)`],
            [
              'unreferenced META objects',
              `${report.orphanMeta} (${report.restoredToLostFound.length} put into lost+found)`,
            ],
          ])}`,
        );
        for (const problem of report.unrepaired)
          console.log(
            `  NOT REPAIRED: ${problem.path ?? problem.object} on backend ${problem.backend.slice(0, 8)}: ${problem.code}: ${problem.message}`,
          );
      }
      if (report.unrepaired.length > 0) process.exitCode = EXIT_PROBLEMS;
    });

  program
    .command('fsck')
    .description(
      'check the metadata against the backends and list the differences (a dry run unless --repair)',
    )
    .requiredOption('--data <dir>', 'the data directory of a running controller of the cell')
    .option(
      '--repair',
      'rewrite missing or stale META objects; have the mover re-copy missing or differing copies',
    )
    .option('--detach', 'start the job and return')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Differences: meta-missing, meta-stale, meta-newer (merge with zhsm rebuild), meta-orphan,
copy-missing, copy-mismatch, no-copy, data-orphan (collected by zhsm scrub), damaged.
Exit: 0 no differences; 1 failed; 4 differences found.`,
    )
    .action(async (options) => {
      const job = await runJob(options.data, 'fsck', { repair: options.repair === true }, options);
      if (options.detach)
        return void console.log(options.json ? JSON.stringify({ job }, null, 2) : `started ${job.id}`);
      const report = job.result as unknown as FsckReport;
      const total = Object.values(report.counts).reduce((sum, n) => sum + n, 0);
      if (options.json) console.log(JSON.stringify({ job, report }, null, 2));
      else {
        console.log(
          `fsck: ${report.inodes} inodes, ${report.objects} objects on ${report.backends} backends: ${total} difference(s)` +
            (report.pendingHeaders > 0 ? ` (${report.pendingHeaders} META objects being written)` : ''),
        );
        for (const [kind, n] of Object.entries(report.counts).sort())
          console.log(`  ${kind.padEnd(14)} ${n}`);
        for (const difference of report.differences.slice(0, 50))
          console.log(
            `  ${difference.kind}: ${difference.path ?? difference.object}${difference.backend === undefined ? '' : ` on ${difference.backend.slice(0, 8)}`}: ${difference.detail}`,
          );
        if (report.differences.length > 50)
          console.log(`  ... ${report.differences.length - 50} more (--json lists them)`);
        if (report.repaired > 0) console.log(`repaired: ${report.repaired}`);
      }
      if (total > 0 && !options.repair) process.exitCode = EXIT_PROBLEMS;
    });

  program
    .command('conflicts')
    .description('split-brain conflicts found: which version won, where the other is kept')
    .requiredOption('--data <dir>', 'the data directory of a running controller of the cell')
    .option('--limit <n>', 'the last N (default 100)')
    .option('--json', 'print JSON')
    .action(async (options) => {
      const limit = count(options.limit, '--limit');
      const reply = await adminRequest<{ conflicts: Array<Record<string, string | number>> }>(options.data, {
        op: 'recovery-conflicts',
        ...(limit === undefined ? {} : { limit }),
      });
      if (options.json) return void console.log(JSON.stringify(reply, null, 2));
      if (reply.conflicts.length === 0) return void console.log('no split-brain conflicts');
      for (const event of reply.conflicts)
        console.log(
          `${new Date(Number(event.timeMs)).toISOString()}  ${event.path}: ${event.winnerServer}'s version (mtime ${new Date(Number(event.winnerMtimeMs)).toISOString()}) wins; ${event.loserServer}'s (mtime ${new Date(Number(event.loserMtimeMs)).toISOString()}) kept as ${event.kept}`,
        );
    });
}
