/**
 * zhsm-node: the peer daemon's command line (init, join, start, mount/unmount, token create/revoke).
 * See `zhsm-node --help` and the README.
 */
import { resolve } from 'node:path';
import { Command, InvalidArgumentError as CommanderArgumentError, Option } from 'commander';
import { ZhsmError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import { parseMetricsAddress, parseTagArgument } from '../daemon/config.ts';
import { JOIN_TOKEN_TTL_MS_DEFAULT, ZhsmNode } from '../daemon/node.ts';
import { parseDuration } from '../daemon/protocols.ts';
import { parseRouteArgument } from '../daemon/routing.ts';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

const collect = (value: string, previous: string[] = []) => [...previous, value];

function duration(value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new CommanderArgumentError((error as Error).message);
  }
}

function logger(level: string | undefined) {
  return createLogger({ component: 'node', level });
}

const program = new Command()
  .name('zhsm-node')
  .description(
    'The zhsm peer daemon: one per machine. A node can be a controller (replicated metadata), a ' +
      'storage server (backend directories) and a client, in any combination.',
  )
  .addHelpText(
    'after',
    `
Examples:
  zhsm-node init --data /var/lib/zhsm --cell mycell --listen /ip4/0.0.0.0/tcp/4001
  zhsm-node start --data /var/lib/zhsm
  zhsm-node start --data /var/lib/zhsm --mount /mnt/zhsm
  zhsm-node start --data /var/lib/zhsm --metrics 0.0.0.0:9464   # Prometheus: http://HOST:9464/metrics
  zhsm-node mount /mnt/zhsm --data /var/lib/zhsm          # on a running node
  zhsm-node unmount /mnt/zhsm --data /var/lib/zhsm
  zhsm-node join /ip4/10.0.0.1/tcp/4001/p2p/<peer id> --token <token> --data /var/lib/zhsm --controller
  zhsm-node join /ip4/10.0.0.1/tcp/4001/p2p/<peer id> --token <token> --data /var/lib/zhsm --backend /srv/b1
  zhsm-node token create --ttl 1h --data /var/lib/zhsm
  zhsm status --data /var/lib/zhsm

Mounts (start --mount, mount) are unmounted when the daemon stops (SIGINT/SIGTERM). After a crash
the kernel keeps a dead mount (ENOTCONN): umount -l MOUNTPOINT (or fusermount -uz), or just mount
again at the same place (a dead mount is replaced).

Exit codes: 0 ok, 1 failed, 2 bad usage.`,
  )
  .showHelpAfterError()
  .exitOverride();

/** The options init and join share: roles, addresses, output. */
function withNodeOptions(command: Command): Command {
  return command
    .option('--backend <path>', 'a backend directory to serve (repeatable)', collect, [])
    .option(
      '--tag <path=tags>',
      'tags of a backend for placement chains, e.g. /srv/b1=ssd,fast (repeatable; "use tag:ssd")',
      collect,
      [],
    )
    .option(
      '--listen <multiaddr>',
      'listen address (repeatable; default /ip4/0.0.0.0/tcp/0, port kept on restart)',
      collect,
      [],
    )
    .option(
      '--announce <multiaddr>',
      'address to announce instead (repeatable; e.g. behind NAT)',
      collect,
      [],
    )
    .option(
      '--route <cidr=multiaddr>',
      'routing: peers in subnet CIDR reach this node at MULTIADDR (repeatable; e.g. 10.2.0.0/16=/ip4/10.2.0.5/tcp/4001)',
      collect,
      [],
    )
    .option('--name <name>', 'a name for status output (default: host name)')
    .option('--json', 'print JSON for scripts')
    .option('--log-level <level>', 'log level', 'warn');
}

/** The options of withNodeOptions, as ZhsmNode.init/join take them. */
function nodeOptions(options: Record<string, unknown>) {
  return {
    backends: options.backend as string[],
    backendTags: (options.tag as string[]).map(parseTagArgument),
    listen: options.listen as string[],
    announce: options.announce as string[],
    routes: (options.route as string[]).map(parseRouteArgument),
    name: options.name as string | undefined,
    logger: logger(options.logLevel as string),
  };
}

const init = program
  .command('init')
  .description(
    'create a new cell with this node as its first controller (id 1); prints its addresses and a join token',
  )
  .requiredOption('--data <dir>', "the node's data directory (created; must be new)")
  .requiredOption('--cell <name>', 'the cell name')
  .option('--controller', 'this node is a controller (always true for the first node)')
  .addOption(new Option('--token-ttl <duration>', 'lifetime of the printed join token').default('24h'));
withNodeOptions(init).action(async (options) => {
  const result = await ZhsmNode.init({
    data: options.data,
    cell: options.cell,
    ...nodeOptions(options),
    tokenTtlMs: duration(options.tokenTtl),
  });
  if (options.json) {
    console.log(
      JSON.stringify({
        cell: result.config.cell,
        peerId: result.peerId,
        controllerId: 1,
        addresses: result.addresses,
        token: result.token,
        tokenExpires: new Date(result.tokenExpiresMs).toISOString(),
      }),
    );
    return;
  }
  console.log(`created cell ${result.config.cell}; this node is controller 1 (${result.peerId})`);
  console.log('addresses:');
  for (const address of result.addresses) console.log(`  ${address}`);
  console.log(`join token (valid until ${new Date(result.tokenExpiresMs).toISOString()}):`);
  console.log(`  ${result.token}`);
  console.log('next:');
  console.log(`  zhsm-node start --data ${options.data}`);
  console.log(
    `  zhsm-node join ${result.addresses[0] ?? '<address>'} --token <token> --data <dir> [--controller] [--backend <path>]`,
  );
});

const join = program
  .command('join')
  .description('join an existing cell through any member (then run "zhsm-node start")')
  .argument('<peer>', "a member's multiaddr, ending in /p2p/<peer id>")
  .requiredOption('--token <token>', 'a join token from "zhsm-node init" or "zhsm-node token create"')
  .requiredOption('--data <dir>', "the node's data directory (created; must be new)")
  .option('--controller', 'become a controller (joins as a learner, a voter once caught up)');
withNodeOptions(join).action(async (peer: string, options) => {
  const result = await ZhsmNode.join({
    peer,
    token: options.token,
    data: options.data,
    controller: options.controller === true,
    ...nodeOptions(options),
  });
  if (options.json) {
    console.log(
      JSON.stringify({
        cell: result.config.cell,
        peerId: result.peerId,
        controllerId: result.member.controllerId,
        listen: result.config.listen,
      }),
    );
    return;
  }
  const role = result.member.controllerId > 0 ? `controller ${result.member.controllerId}` : 'a member';
  console.log(`joined cell ${result.config.cell} as ${role} (${result.peerId})`);
  console.log(`next: zhsm-node start --data ${options.data}`);
});

program
  .command('start')
  .description('run the daemon in the foreground (clean shutdown on SIGINT/SIGTERM)')
  .requiredOption('--data <dir>', "the node's data directory")
  .option('--log-level <level>', 'log level (default: $ZHSM_LOG_LEVEL or info)')
  .option('--mount <dir>', 'also mount the cell there with FUSE (unmounted on SIGINT/SIGTERM)')
  .option('--tick-ms <ms>', 'consensus tick (heartbeat); the election timeout is 10 ticks', '100')
  .option(
    '--snapshot-every <entries>',
    'controllers: compact the log into a snapshot after this many entries',
    '10000',
  )
  .option(
    '--metrics <host:port>',
    'serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port, written to DIR/metrics.url), ' +
      'or "off"; default: "metrics" in node.json, else off',
  )
  .action(async (options) => {
    const tickMs = Number(options.tickMs);
    if (!Number.isSafeInteger(tickMs) || tickMs < 10 || tickMs > 10_000)
      throw new CommanderArgumentError('--tick-ms must be an integer in 10..10000');
    const snapshotEveryEntries = Number(options.snapshotEvery);
    if (!Number.isSafeInteger(snapshotEveryEntries) || snapshotEveryEntries < 10)
      throw new CommanderArgumentError('--snapshot-every must be an integer >= 10');
    // Checked before anything starts (an InvalidArgumentError: printed, exit code 2).
    if (options.metrics !== undefined) parseMetricsAddress(options.metrics);
    const log = logger(options.logLevel);
    const node = await ZhsmNode.start(options.data, {
      logger: log,
      tickMs,
      snapshotEveryEntries,
      ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    });
    let mountpoint: string | undefined;
    if (options.mount !== undefined) {
      try {
        mountpoint = await node.mount(options.mount);
      } catch (error) {
        await node.stop();
        throw error;
      }
    }
    console.log(
      JSON.stringify({
        event: 'started',
        peerId: node.peerId,
        cell: node.config.cell,
        controllerId: node.config.controllerId,
        addresses: node.host.multiaddrs().map(String),
        ...(mountpoint === undefined ? {} : { mountpoint }),
        ...(node.metrics.url === undefined ? {} : { metrics: node.metrics.url }),
      }),
    );
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      const force = setTimeout(() => {
        log.error('clean shutdown took too long; exiting');
        process.exit(EXIT_FAILED);
      }, 15_000);
      force.unref();
      // stop() unmounts every mount of this daemon (start --mount and zhsm-node mount) first.
      node.stop().then(
        () => process.exit(0),
        (error: unknown) => {
          log.error({ err: error }, 'error during shutdown');
          process.exit(EXIT_FAILED);
        },
      );
    };
    process.on('SIGINT', () => shutdown('SIGINT'));
    process.on('SIGTERM', () => shutdown('SIGTERM'));
  });

program
  .command('mount')
  .description('mount the cell with FUSE at MOUNTPOINT, served by the running daemon of --data')
  .argument(
    '<mountpoint>',
    'a directory (created if missing); a dead mount left there by a crash is replaced',
  )
  .requiredOption('--data <dir>', 'the data directory of the running node')
  .option('--json', 'print JSON for scripts')
  .action(async (mountpoint: string, options) => {
    const reply = await adminRequest<{ mountpoint: string }>(options.data, {
      op: 'mount',
      mountpoint: resolve(mountpoint),
    });
    if (options.json) console.log(JSON.stringify({ mountpoint: reply.mountpoint }));
    else console.log(`mounted at ${reply.mountpoint} (until "zhsm-node unmount" or the daemon stops)`);
  });

program
  .command('unmount')
  .description('unmount a mount of the running daemon of --data (lazily if busy)')
  .argument('<mountpoint>', 'the mountpoint')
  .requiredOption('--data <dir>', 'the data directory of the running node')
  .action(async (mountpoint: string, options) => {
    const reply = await adminRequest<{ mountpoint: string }>(options.data, {
      op: 'unmount',
      mountpoint: resolve(mountpoint),
    });
    console.log(`unmounted ${reply.mountpoint}`);
  });

const token = program.command('token').description('join tokens of a running cell');
token
  .command('create')
  .description('issue a join token (through the running daemon of --data)')
  .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
  .addOption(new Option('--ttl <duration>', 'lifetime, e.g. 30m, 24h, 7d').default('24h'))
  .option('--json', 'print JSON for scripts')
  .action(async (options) => {
    const reply = await adminRequest<{ token: string; expiresMs: number }>(options.data, {
      op: 'token-create',
      ttlMs: duration(options.ttl ?? String(JOIN_TOKEN_TTL_MS_DEFAULT)),
    });
    if (options.json)
      console.log(JSON.stringify({ token: reply.token, expires: new Date(reply.expiresMs).toISOString() }));
    else console.log(reply.token);
  });
token
  .command('revoke')
  .description('revoke a join token')
  .argument('<token>', 'the token')
  .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
  .action(async (value: string, options) => {
    await adminRequest(options.data, { op: 'token-revoke', token: value });
    console.log('revoked');
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const code = (error as { code?: string }).code;
  if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help')
    process.exit(0);
  if (typeof code === 'string' && code.startsWith('commander.')) process.exit(EXIT_USAGE);
  if (error instanceof ZhsmError) {
    console.error(`zhsm-node: ${error.message} [${error.code}]`);
    process.exit(error.code === 'INVALID_ARGUMENT' ? EXIT_USAGE : EXIT_FAILED);
  }
  console.error(`zhsm-node: ${(error as Error).stack ?? String(error)}`);
  process.exit(EXIT_FAILED);
}
