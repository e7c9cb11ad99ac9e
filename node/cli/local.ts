/**
 * `npm start`: a real zhsm cell on this machine, on embedded defaults, mounted with FUSE.
 *
 * Under .zhsm-demo/ (or --data): three `zhsm-node` daemons as child processes — one controller
 * and two storage servers with a backend each — and, in this process, a client node of the cell
 * that mounts the tree at .zhsm-demo/mnt (or --mount). The first run creates the cell
 * (`zhsm-node init`, `join`); later runs start the same nodes again. Ctrl-C unmounts and stops
 * everything cleanly. Daemon logs: .zhsm-demo/logs/.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Command } from 'commander';
import { daemonStartArgs } from '../common/daemon-flags.ts';
import { createLogger } from '../common/log.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import { mountNode } from '../daemon/mount.ts';
import { ZhsmNode } from '../daemon/node.ts';

const execFileAsync = promisify(execFile);
const repository = resolve(import.meta.dirname, '..', '..');
const nodeCli = join(repository, 'node', 'cli', 'node.ts');
const LOOPBACK = '/ip4/127.0.0.1/tcp/0';

const program = new Command()
  .name('zhsm-local')
  .description(
    'Run a one-machine zhsm cell (zhsm-node daemons: a controller and two storage servers) and mount its tree.',
  )
  .option('--data <dir>', 'data directory', resolve(repository, '.zhsm-demo'))
  .option('--mount <dir>', 'mountpoint (default: <data>/mnt)')
  .option('--replicas <n>', 'copies of every chunk', (value) => Number.parseInt(value, 10), 2)
  .showHelpAfterError();
program.parse(process.argv);
const options = program.opts<{ data: string; mount?: string; replicas: number }>();
const base = resolve(options.data);
const mountpoint = resolve(options.mount ?? join(base, 'mnt'));
const logger = createLogger({ component: 'local-cell', level: process.env.ZHSM_LOG_LEVEL ?? 'warn' });
const nodesDir = join(base, 'nodes');
const logsDir = join(base, 'logs');
const daemons = [
  { name: 'controller', args: [] as string[] },
  { name: 'storage-1', args: ['--backend', join(base, 'backends', 'storage-1')] },
  { name: 'storage-2', args: ['--backend', join(base, 'backends', 'storage-2')] },
];
const children: ChildProcess[] = [];

if (!existsSync('/dev/fuse')) {
  console.error('zhsm-local: /dev/fuse is missing; FUSE is needed to mount the cell');
  process.exit(1);
}
mkdirSync(nodesDir, { recursive: true, mode: 0o700 });
mkdirSync(logsDir, { recursive: true });

async function nodeCommand(args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await execFileAsync(process.execPath, [nodeCli, ...args, '--json'], {
    timeout: 120_000,
  });
  return JSON.parse(stdout) as Record<string, unknown>;
}

function startDaemon(name: string): Promise<{ addresses: string[] }> {
  const log = openSync(join(logsDir, `${name}.log`), 'a');
  const child = spawn(process.execPath, daemonStartArgs({ cli: nodeCli, data: join(nodesDir, name) }), {
    stdio: ['ignore', 'pipe', log],
    // Its own process group: a Ctrl-C in the terminal reaches this launcher only, which then
    // stops the daemons in order (storage servers first, the controller last).
    detached: true,
    env: { ...process.env, ZHSM_LOG_LEVEL: process.env.ZHSM_LOG_LEVEL ?? 'info' },
  });
  children.push(child);
  return new Promise((resolvePromise, reject) => {
    let buffered = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      buffered += text;
      const line = buffered.split('\n').find((l) => l.includes('"event":"started"'));
      if (line !== undefined) resolvePromise(JSON.parse(line) as { addresses: string[] });
    });
    child.once('exit', (code) =>
      reject(new Error(`zhsm-node ${name} exited with ${code}; see ${join(logsDir, `${name}.log`)}`)),
    );
  });
}

process.on('exit', () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
});

const stopDaemons = async () => {
  for (const child of [...children].reverse()) await stopChild(child);
};
const stopChild = (child: ChildProcess) =>
  new Promise<void>((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    child.kill('SIGTERM');
  });

let client: ZhsmNode | undefined;
try {
  // The controller: create the cell on the first run.
  const controllerData = join(nodesDir, 'controller');
  if (!existsSync(join(controllerData, 'node.json'))) {
    await nodeCommand([
      'init',
      '--data',
      controllerData,
      '--cell',
      'demo',
      '--listen',
      LOOPBACK,
      '--name',
      'controller',
    ]);
  }
  const controller = await startDaemon('controller');
  const peer = controller.addresses[0]!;
  let token: string | undefined;
  const joinToken = async () => {
    token ??= (await adminRequest<{ token: string }>(controllerData, { op: 'token-create', ttlMs: 600_000 }))
      .token;
    return token;
  };
  for (const daemon of daemons.slice(1)) {
    const data = join(nodesDir, daemon.name);
    if (!existsSync(join(data, 'node.json'))) {
      await nodeCommand([
        'join',
        peer,
        '--token',
        await joinToken(),
        '--data',
        data,
        '--listen',
        LOOPBACK,
        '--name',
        daemon.name,
        ...daemon.args,
      ]);
    }
    await startDaemon(daemon.name);
  }
  // This process: a client node of the cell, serving the mount.
  const clientData = join(nodesDir, 'client');
  if (!existsSync(join(clientData, 'node.json'))) {
    await ZhsmNode.join({
      peer,
      token: await joinToken(),
      data: clientData,
      listen: [LOOPBACK],
      name: 'client',
    });
  }
  client = await ZhsmNode.start(clientData, { logger: logger.child({ node: 'client' }) });
  const node = client;
  const mounted = await mountNode(node, mountpoint, { replicas: options.replicas, logger });

  console.log(`zhsm: a local cell is mounted at ${mountpoint}`);
  console.log(
    `  nodes:    ${nodesDir} (controller, storage-1, storage-2: zhsm-node daemons; client: this process)`,
  );
  console.log(`  logs:     ${logsDir}`);
  console.log(
    `  try:      ls ${mountpoint}; cp /etc/hostname ${mountpoint}/; cat ${mountpoint}/.zhsm/status`,
  );
  console.log(`  status:   bin/zhsm status --data ${controllerData}`);
  console.log(`  join:     bin/zhsm-node token create --data ${controllerData}   (then on another machine:`);
  console.log(
    `            bin/zhsm-node join <this machine's address> --token <token> --data DIR [--backend PATH])`,
  );
  console.log('  stop:     Ctrl-C (unmounts cleanly); after a crash: umount -l MOUNTPOINT');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\nzhsm: ${signal}: unmounting ${mountpoint}`);
    try {
      await mounted.unmount();
      await node.stop();
      await stopDaemons();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
} catch (error) {
  console.error(`zhsm-local: ${(error as Error).message}`);
  await client?.stop().catch(() => {});
  await stopDaemons();
  process.exit(1);
}
