/**
 * zhsm-store: inspect and maintain one backend directory directly (no daemon needed).
 * For operators and tests; the storage server uses the same Backend class.
 */
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Command, InvalidArgumentError as CommanderArgumentError } from 'commander';
import { ZhsmError } from '../common/errors.ts';
import { Backend } from '../store/backend.ts';
import type { ObjectHeader } from '../store/format.ts';
import { newObjectId, objectIdToHex, parseObjectId } from '../store/object-id.ts';

/** Exit codes: 0 ok, 1 operation failed, 2 bad usage, 3 problems found (scrub). */
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_PROBLEMS = 3;

function parseInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 0)
    throw new CommanderArgumentError('expected a non-negative integer');
  return parsed;
}

function headerForDisplay(header: ObjectHeader): Record<string, unknown> {
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
  return {
    ...header,
    id: hex(header.id),
    contentHash: hex(header.contentHash),
    parent: hex(header.parent),
    chunks: header.chunks.map((chunk) => ({ ...chunk, id: hex(chunk.id), hash: hex(chunk.hash) })),
    xattrs: header.xattrs.map((xattr) => ({
      name: xattr.name,
      value: Buffer.from(xattr.value).toString('base64'),
    })),
    mtime: new Date(header.mtimeMs).toISOString(),
  };
}

async function openBackend(directory: string, cell: string | undefined): Promise<Backend> {
  const identity = await Backend.identify(directory);
  return Backend.open(directory, { cell: cell ?? identity.cell });
}

const program = new Command()
  .name('zhsm-store')
  .description('Inspect and maintain a zhsm backend directory (the object store of a storage server).')
  .showHelpAfterError()
  .exitOverride();

program
  .command('init')
  .description('make an empty directory a backend of a cell')
  .argument('<dir>', 'backend directory (missing or empty)')
  .requiredOption('--cell <name>', 'cell name')
  .option('--json', 'print JSON')
  .action(async (dir: string, options: { cell: string; json?: boolean }) => {
    const backend = await Backend.create(dir, { cell: options.cell });
    const result = { backend: backend.uuidString, cell: backend.cell, root: dir };
    console.log(
      options.json ? JSON.stringify(result) : `backend ${result.backend} of cell ${result.cell} at ${dir}`,
    );
  });

program
  .command('put')
  .description('store a file as a DATA object (prints its id)')
  .argument('<dir>', 'backend directory')
  .argument('<file>', 'file to store')
  .option('--id <hex>', 'object id (32 hex digits); default: a new random id')
  .option('--json', 'print the stored header as JSON')
  .action(async (dir: string, file: string, options: { id?: string; json?: boolean }) => {
    const backend = await openBackend(dir, undefined);
    const stat = statSync(file);
    const id = options.id === undefined ? newObjectId() : parseObjectId(options.id);
    const header = await backend.ingest(
      {
        id,
        mainType: 'DATA',
        layout: 'INLINE',
        bodySize: stat.size,
        mtimeMs: Math.floor(stat.mtimeMs),
        mode: stat.mode,
      },
      createReadStream(file, { highWaterMark: 1024 * 1024 }),
    );
    console.log(options.json ? JSON.stringify(headerForDisplay(header)) : objectIdToHex(header.id));
  });

program
  .command('get')
  .description('write an object body (or a byte range of it) to a file or stdout, verified')
  .argument('<dir>', 'backend directory')
  .argument('<id>', 'object id')
  .option('--out <file>', 'output file (default: stdout)')
  .option('--offset <bytes>', 'start of the range', parseInteger)
  .option('--length <bytes>', 'length of the range', parseInteger)
  .action(async (dir: string, id: string, options: { out?: string; offset?: number; length?: number }) => {
    const objectId = parseObjectId(id);
    const backend = await openBackend(dir, undefined);
    const whole = options.offset === undefined && options.length === undefined;
    const body = backend.read(objectId, {
      offset: options.offset,
      length: options.length,
      verify: whole ? 'full' : 'blocks',
    });
    await pipeline(
      Readable.from(body),
      options.out === undefined ? process.stdout : createWriteStream(options.out),
    );
  });

program
  .command('head')
  .description("print an object's header")
  .argument('<dir>', 'backend directory')
  .argument('<id>', 'object id')
  .action(async (dir: string, id: string) => {
    const objectId = parseObjectId(id);
    const backend = await openBackend(dir, undefined);
    console.log(JSON.stringify(headerForDisplay(await backend.head(objectId)), null, 2));
  });

program
  .command('ls')
  .description('list the objects of a backend (and anything that does not belong there)')
  .argument('<dir>', 'backend directory')
  .option('--json', 'one JSON object per line')
  .action(async (dir: string, options: { json?: boolean }) => {
    const backend = await openBackend(dir, undefined);
    for await (const entry of backend.scan()) {
      if (options.json) {
        console.log(
          JSON.stringify(
            entry.kind === 'object'
              ? { kind: entry.kind, header: headerForDisplay(entry.header) }
              : { kind: entry.kind, path: entry.path, code: entry.error.code, message: entry.error.message },
          ),
        );
      } else if (entry.kind === 'object') {
        const h = entry.header;
        console.log(
          `${objectIdToHex(h.id)}  ${h.mainType.padEnd(4)}  ${String(h.bodySize).padStart(12)}  ${new Date(h.mtimeMs).toISOString()}  refs=${h.refcount}`,
        );
      } else {
        console.log(`${entry.kind.toUpperCase()}  ${entry.path}: ${entry.error.message}`);
      }
    }
  });

program
  .command('rm')
  .description('drop one reference to an object (deleted when none is left), or delete it with --force')
  .argument('<dir>', 'backend directory')
  .argument('<id>', 'object id')
  .option('--force', 'delete whatever the refcount')
  .action(async (dir: string, id: string, options: { force?: boolean }) => {
    const objectId = parseObjectId(id);
    const backend = await openBackend(dir, undefined);
    if (options.force) await backend.remove(objectId);
    else console.log(`references left: ${await backend.release(objectId)}`);
  });

program
  .command('scrub')
  .description('re-hash every object; exit 3 if anything is damaged or stray')
  .argument('<dir>', 'backend directory')
  .option('--rate <bytes-per-second>', 'throttle', parseInteger)
  .option('--json', 'print the report as JSON')
  .action(async (dir: string, options: { rate?: number; json?: boolean }) => {
    const backend = await openBackend(dir, undefined);
    const showProgress = !options.json && process.stderr.isTTY;
    const report = await backend.scrub({
      bytesPerSecond: options.rate,
      onProgress: showProgress
        ? (p) =>
            process.stderr.write(
              `\rscrub: ${p.objectsChecked} objects, ${(p.bytesChecked / 1048576).toFixed(1)} MiB, ${p.problems} problems`,
            )
        : undefined,
    });
    if (showProgress) process.stderr.write('\n');
    if (options.json) console.log(JSON.stringify(report));
    else {
      console.log(`${report.objectsChecked} objects, ${report.bytesChecked} bytes checked`);
      for (const problem of [...report.corrupt, ...report.stray])
        console.log(`${problem.code}  ${problem.path}: ${problem.message}`);
    }
    if (report.corrupt.length + report.stray.length > 0) process.exitCode = EXIT_PROBLEMS;
  });

program
  .command('space')
  .description('capacity and free space of a backend')
  .argument('<dir>', 'backend directory')
  .option('--json', 'print JSON')
  .action(async (dir: string, options: { json?: boolean }) => {
    const backend = await openBackend(dir, undefined);
    const space = await backend.space();
    const result = { backend: backend.uuidString, cell: backend.cell, ...space };
    console.log(
      options.json
        ? JSON.stringify(result)
        : `backend ${result.backend} (cell ${result.cell}): ${(space.totalBytes / 2 ** 30).toFixed(2)} GiB total, ${(space.availableBytes / 2 ** 30).toFixed(2)} GiB available`,
    );
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const code = (error as { code?: string }).code;
  if (typeof code === 'string' && code.startsWith('commander.')) {
    process.exitCode = code === 'commander.helpDisplayed' || code === 'commander.version' ? 0 : EXIT_USAGE;
  } else if (error instanceof ZhsmError) {
    console.error(`zhsm-store: ${error.message} [${error.code}]`);
    process.exitCode = error.code === 'INVALID_ARGUMENT' ? EXIT_USAGE : EXIT_FAILED;
  } else {
    console.error(`zhsm-store: ${(error as Error).message}`);
    process.exitCode = EXIT_FAILED;
  }
}
