/**
 * `npm start` until the peer daemon lands (issue #4): a local backend under .zhsm-demo/ with this
 * repository's README stored in it, read back verified, listed and scrubbed. The cell with a
 * mounted tree replaces this with the daemon and the FUSE mount.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Backend } from '../store/backend.ts';
import { newObjectId, objectIdToHex } from '../store/object-id.ts';

const repository = join(import.meta.dirname, '..', '..');
const root = join(repository, '.zhsm-demo', 'backend');
const backend = existsSync(join(root, 'zhsm-backend.id'))
  ? await Backend.open(root, { cell: 'demo' })
  : await Backend.create(root, { cell: 'demo' });
const readme = readFileSync(join(repository, 'README.md'));
const id = newObjectId();
await backend.ingest(
  { id, mainType: 'DATA', layout: 'INLINE', bodySize: readme.length, name: 'README.md' },
  readme,
);
const back = await backend.readAll(id, 'full');
const report = await backend.scrub();
const space = await backend.space();
console.log(`backend ${backend.uuidString} (cell demo) at ${root}`);
console.log(`stored README.md as object ${objectIdToHex(id)}; read back verified: ${back.equals(readme)}`);
console.log(
  `scrub: ${report.objectsChecked} objects, ${report.bytesChecked} bytes, ${report.corrupt.length + report.stray.length} problems`,
);
console.log(
  `space: ${(space.availableBytes / 2 ** 30).toFixed(1)} GiB available of ${(space.totalBytes / 2 ** 30).toFixed(1)} GiB`,
);
console.log('\nexplore it with: bin/zhsm-store ls .zhsm-demo/backend   (bin/zhsm-store --help for more)');
