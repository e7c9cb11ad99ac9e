/**
 * zhsm: the operations CLI. Every command asks the running daemon of `--data` over its admin
 * socket (DIR/admin.sock); the daemon forwards to the primary controller. Commands: status,
 * servers, backends, tokens, token, controllers (zhsm-cell.ts), power (zhsm-power.ts), chains,
 * migrate, cache (zhsm-chains.ts), rebuild, scrub, fsck, conflicts (zhsm-recovery.ts). Human output by default, `--json` on every command.
 */
import { Command } from 'commander';
import { ZhsmError } from '../common/errors.ts';
import { adminRequest, DaemonUnreachableError, useRemoteAdmin } from '../daemon/admin-client.ts';
import type { RouteReport, StatusReport } from '../daemon/node.ts';
import { NotDoneError, registerCellCommands, UsageError } from './zhsm-cell.ts';
import { registerChainsCommands } from './zhsm-chains.ts';
import { formatServers, formatStatus } from './zhsm-format.ts';
import { registerPowerCommands } from './zhsm-power.ts';
import { registerRecoveryCommands } from './zhsm-recovery.ts';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_UNREACHABLE = 3;

const program = new Command()
  .name('zhsm')
  .description('zhsm operations: the state of a cell, its controllers, storage, tokens and data placement')
  .showHelpAfterError('(add --help for usage)')
  .exitOverride()
  .addHelpText(
    'after',
    `
Every command talks to the running zhsm-node daemon of --data DIR (its admin socket DIR/admin.sock),
which forwards to the primary controller. With --node MULTIADDR it asks that node of the cell over
the network instead (encrypted; the identity key in DIR is the credential: DIR must be the data
directory of a member, e.g. one joined with 'zhsm-node join' for an operator's workstation; the
node's own mount, unmount and pid are local only). Human tables by default; --json prints JSON on stdout
(on failure: {"error": {"code", "message"}}). Errors go to stderr.

Exit codes:
  0  ok
  1  failed: the cell refused or could not do it (e.g. removing the primary, a transfer that did
     not happen, no primary reachable, a timeout)
  2  usage: bad command, option or argument (e.g. --ttl abc, an unknown controller id or token)
  3  the daemon is not reachable: not running, or DIR is not a node's data directory
  4  the job ran but found problems it did not repair (fsck differences, scrub leftovers,
     chunks with no copy after a rebuild)

Examples:
  zhsm status --data /var/lib/zhsm
  zhsm controllers --data /var/lib/zhsm --json
  zhsm token create --ttl 1h --data /var/lib/zhsm`,
  );

program
  .command('status')
  .description(
    'controllers (primary, terms, log positions, replication health), storage servers (power) and backends (capacity, free), open tokens, jobs',
  )
  .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
  .option('--json', 'print JSON')
  .action(async (options) => {
    const reply = await adminRequest<{ status: StatusReport }>(options.data, { op: 'status' });
    if (options.json) console.log(JSON.stringify(reply.status, null, 2));
    else console.log(formatStatus(reply.status));
  });

program
  .command('servers')
  .description(
    'storage servers and their backends; with --routes, how every member is reached from this node',
  )
  .requiredOption('--data <dir>', 'the data directory of a running node of the cell')
  .option('--routes', "members' subnets and route tables, and this node's paths to them (direct or relayed)")
  .option('--json', 'print JSON')
  .addHelpText(
    'after',
    `
Routing: a member is dialed directly at a route whose subnet holds one of this node's addresses, or
at an announced address on one of this node's subnets; otherwise through a relay member that
reaches both sides (storage servers and clients before controllers). Routes are set with
'zhsm-node init|join --route CIDR=MULTIADDR' or in node.json ("routes").`,
  )
  .action(async (options) => {
    const { status } = await adminRequest<{ status: StatusReport }>(options.data, { op: 'status' });
    const routes = options.routes
      ? (await adminRequest<{ routes: RouteReport[] }>(options.data, { op: 'routes' })).routes
      : undefined;
    if (options.json) {
      console.log(
        JSON.stringify({ servers: status.servers, ...(routes === undefined ? {} : { routes }) }, null, 2),
      );
      return;
    }
    console.log(formatServers(status, routes));
  });

registerCellCommands(program);
registerPowerCommands(program);
registerChainsCommands(program);
registerRecoveryCommands(program);

// Every command that talks to a daemon can ask another node of the cell over the network.
const withNodeOption = (command: Command) => {
  for (const sub of command.commands) {
    if (sub.options.some((option) => option.long === '--data'))
      sub.option(
        '--node <multiaddr>',
        'ask this node (a multiaddr ending in /p2p/<peer id>) over the network; --data is then the data directory of a member whose identity is the credential',
      );
    withNodeOption(sub);
  }
};
withNodeOption(program);
program.hook('preAction', (_program, action) => {
  const node = action.opts().node as string | undefined;
  if (node !== undefined && !/^\/.+\/p2p\/[1-9A-HJ-NP-Za-km-z]+$/.test(node))
    throw new UsageError(`--node must be a multiaddr ending in /p2p/<peer id>, not ${JSON.stringify(node)}`);
  useRemoteAdmin(node);
});

/** With --json, failures are also a JSON object on stdout. */
function jsonError(code: string, message: string): void {
  if (process.argv.includes('--json')) console.log(JSON.stringify({ error: { code, message } }));
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const code = (error as { code?: string }).code;
  if (code === 'commander.helpDisplayed' || code === 'commander.help' || code === 'commander.version')
    process.exit(0);
  if (typeof code === 'string' && code.startsWith('commander.')) {
    jsonError('USAGE', (error as Error).message);
    process.exit(EXIT_USAGE);
  }
  if (error instanceof NotDoneError) process.exit(EXIT_FAILED); // its answer is printed
  if (error instanceof UsageError) {
    console.error(`zhsm: ${error.message}`);
    jsonError('USAGE', error.message);
    process.exit(EXIT_USAGE);
  }
  if (error instanceof DaemonUnreachableError) {
    console.error(`zhsm: ${error.message}`);
    jsonError('UNREACHABLE', error.message);
    process.exit(EXIT_UNREACHABLE);
  }
  if (error instanceof ZhsmError) {
    console.error(`zhsm: ${error.message} [${error.code}]`);
    jsonError(error.code, error.message);
    process.exit(EXIT_FAILED);
  }
  console.error(`zhsm: ${(error as Error).stack ?? String(error)}`);
  process.exit(EXIT_FAILED);
}
