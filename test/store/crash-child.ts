/**
 * Child process for the crash-injection test: ingests versions of a few objects and updates their
 * headers in a loop, printing "ack <hex> <version>" after each ingest returns. The parent
 * SIGKILLs it at a random moment.
 */
import { Backend } from '../../node/store/backend.ts';
import { parseObjectId } from '../../node/store/object-id.ts';
import { patternBytes } from '../helpers.ts';

const [root, idsArgument, startArgument] = process.argv.slice(2);
if (root === undefined || idsArgument === undefined || startArgument === undefined) {
  throw new Error('usage: crash-child ROOT ID,ID,... START_VERSION');
}
const ids = idsArgument.split(',').map(parseObjectId);
const backend = await Backend.open(root, { cell: 'crash' });
/** The body of a version is a pure function of the version (size varies, with holes). */
export function bodyOf(version: number): Buffer {
  const size = (version * 7919) % (3 * 1024 * 1024);
  const body = Buffer.alloc(size);
  if (size > 0) patternBytes(Math.min(size, 100_000), version).copy(body, 0);
  if (size > 2 * 1024 * 1024) patternBytes(50_000, version + 1).copy(body, 2 * 1024 * 1024);
  return body;
}
process.stdout.write('ready\n');
for (let version = Number(startArgument); ; version++) {
  for (const [i, id] of ids.entries()) {
    await backend.ingest({ id, version, mtimeMs: 1_600_000_000_000 + version }, bodyOf(version + i));
    process.stdout.write(`ack ${i} ${version}\n`);
    await backend.updateHeader(id, (h) => ({
      ...h,
      flags: { ...h.flags, hot: !h.flags.hot },
      refcount: h.refcount + 1,
    }));
  }
}
