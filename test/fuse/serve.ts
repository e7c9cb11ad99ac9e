/**
 * Child process for the mount tests: serves a MemoryFsClient at argv[2] with the mount options in
 * argv[3] (JSON), prints "ready" when the mount is live, unmounts on SIGTERM/SIGINT. The tests
 * never access a mount from the process that serves it.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type MountOptions, mountFs } from '../../fuse/mount.ts';
import type { VirtualFileName } from '../../fuse/virtual.ts';
import { CellClient } from '../../node/client/cell-client.ts';
import { LocalCell } from '../../node/client/local-cell.ts';
import { createLogger } from '../../node/common/log.ts';
import { MemoryFsClient } from './memory-client.ts';

const mountpoint = process.argv[2];
if (mountpoint === undefined) throw new Error('usage: serve.ts MOUNTPOINT [OPTIONS_JSON]');
const {
  providerText,
  slowGetattrMs,
  client: clientKind,
  ...options
} = JSON.parse(process.argv[3] ?? '{}') as MountOptions & {
  providerText?: string;
  /** getattr of /slow takes this long (to test the handler timeout). */
  slowGetattrMs?: number;
  /** 'memory' (default): the in-memory double; 'cell': the real cell client over a local cell. */
  client?: 'memory' | 'cell';
};

const logger = createLogger({ component: 'fuse-test', level: process.env.ZHSM_LOG_LEVEL ?? 'warn' });
let client: MemoryFsClient | CellClient;
let cleanup = async () => {};
if (clientKind === 'cell') {
  const directory = mkdtempSync(join(tmpdir(), 'zhsm-fuse-cell-'));
  const cell = await LocalCell.open({ directory, tickMs: 20 });
  client = new CellClient(cell, { chunkBytes: 256 * 1024 });
  cleanup = async () => {
    await cell.close();
    rmSync(directory, { recursive: true, force: true });
  };
  // 'exit' handlers cannot wait for the async cleanup: remove the cell's files synchronously.
  process.on('exit', () => rmSync(directory, { recursive: true, force: true }));
} else {
  client = new MemoryFsClient();
}
process.on('exit', () => void cleanup());
if (slowGetattrMs !== undefined) {
  const getattr = client.getattr.bind(client);
  client.getattr = async (path: string) => {
    if (path === '/slow') await new Promise((resolve) => setTimeout(resolve, slowGetattrMs));
    return getattr(path);
  };
}
const mount = await mountFs(client, mountpoint, {
  ...options,
  logger,
  unmountOnSignals: true,
  ...(providerText === undefined
    ? {}
    : { virtualFiles: async (name: VirtualFileName) => `${providerText} ${name}\n` }),
});
process.stdout.write(`ready ${mount.mountpoint}\n`);
// If the test process dies, its end of stdin closes: unmount and exit rather than leave a mount.
process.stdin.resume();
process.stdin.on('close', () => process.kill(process.pid, 'SIGTERM'));
