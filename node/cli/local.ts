/**
 * `npm start`: a whole cell on this machine in one process — one controller, two storage servers
 * with a backend each, all under .zhsm-demo/ (or --data) — mounted with FUSE at .zhsm-demo/mnt
 * (or --mount). Ctrl-C unmounts and stops. Until the peer daemon (zhsm-node) lands, this is how
 * to use zhsm on one machine.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command } from 'commander';
import { mountFs } from '../../fuse/mount.ts';
import { CellClient } from '../client/cell-client.ts';
import { LocalCell } from '../client/local-cell.ts';
import { createLogger } from '../common/log.ts';

const repository = resolve(import.meta.dirname, '..', '..');
const program = new Command()
  .name('zhsm-local')
  .description('Run a one-machine zhsm cell (controller + two storage servers) and mount its tree.')
  .option('--data <dir>', 'data directory', resolve(repository, '.zhsm-demo'))
  .option('--mount <dir>', 'mountpoint (default: <data>/mnt)')
  .option('--servers <n>', 'storage servers', (value) => Number.parseInt(value, 10), 2)
  .option('--replicas <n>', 'copies of every chunk', (value) => Number.parseInt(value, 10), 2)
  .showHelpAfterError();
program.parse(process.argv);
const options = program.opts<{ data: string; mount?: string; servers: number; replicas: number }>();
const mountpoint = resolve(options.mount ?? resolve(options.data, 'mnt'));
const logger = createLogger({ component: 'local-cell', level: process.env.ZHSM_LOG_LEVEL ?? 'warn' });

mkdirSync(mountpoint, { recursive: true, mode: 0o755 });
if (!existsSync('/dev/fuse')) {
  console.error('zhsm-local: /dev/fuse is missing; FUSE is needed to mount the cell');
  process.exit(1);
}
const cell = await LocalCell.open({
  directory: resolve(options.data, 'cell'),
  servers: options.servers,
  logger,
});
const client = new CellClient(cell, { replicas: options.replicas });
const startedMs = Date.now();
const mount = await mountFs(client, mountpoint, {
  logger,
  replaceStaleMount: true,
  virtualFiles: async (name) => {
    if (name === 'servers') {
      const backends = await cell.metadata.backends();
      const servers = await cell.metadata.servers();
      return `${JSON.stringify({ servers: servers.map((s) => ({ name: s.name, online: s.online, power: s.power })), backends: backends.map((b) => ({ path: b.path, capacityBytes: b.capacityBytes, freeBytes: b.freeBytes })) }, null, 2)}\n`;
    }
    if (name === 'tokens') {
      const leader = cell.replicas.find((replica) => replica.isLeader);
      const tokens = leader === undefined ? [] : await leader.machine.tokens();
      return `${tokens.map((t) => `${Buffer.from(t.object).toString('hex')} ${t.mode} ${t.holder} expires ${new Date(t.expiresMs).toISOString()}`).join('\n')}\n`;
    }
    const status = cell.replicas.map((replica) => replica.status());
    return `${JSON.stringify({ uptimeSeconds: Math.round((Date.now() - startedMs) / 1000), controllers: status.map((s) => ({ id: s.id, role: s.role, term: s.term, commitIndex: s.commitIndex })) }, null, 2)}\n`;
  },
});

console.log(`zhsm: a local cell is mounted at ${mountpoint}`);
console.log(
  `  data:     ${resolve(options.data)} (controller metadata and ${options.servers} storage backends)`,
);
console.log(
  `  try:      ls ${mountpoint}; cp -r /etc/hostname ${mountpoint}/; cat ${mountpoint}/.zhsm/status`,
);
console.log('  stop:     Ctrl-C (unmounts cleanly); after a crash: umount -l MOUNTPOINT');

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`\nzhsm: ${signal}: unmounting ${mountpoint}`);
  try {
    await mount.unmount();
    await client.closeAll();
    await cell.close();
  } finally {
    process.exit(0);
  }
};
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
