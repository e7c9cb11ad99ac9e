/**
 * zhsm: the operations CLI. Today: `zhsm status`, `zhsm servers [--routes]`. (The recovery-and-operations work adds more.)
 */
import { Command } from 'commander';
import { ZhsmError } from '../common/errors.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import type { RouteReport, StatusReport } from '../daemon/node.ts';
import { registerChainsCommands } from './zhsm-chains.ts';
import { formatServers, formatStatus } from './zhsm-format.ts';
import { registerPowerCommands } from './zhsm-power.ts';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

const program = new Command()
  .name('zhsm')
  .description('zhsm operations: the state of a cell')
  .showHelpAfterError()
  .exitOverride();

program
  .command('status')
  .description(
    'controllers (ids, primary, term, commit index), storage servers and backends (capacity, free)',
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

registerPowerCommands(program);
registerChainsCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const code = (error as { code?: string }).code;
  if (code === 'commander.helpDisplayed' || code === 'commander.help') process.exit(0);
  if (typeof code === 'string' && code.startsWith('commander.')) process.exit(EXIT_USAGE);
  if (error instanceof ZhsmError) {
    console.error(`zhsm: ${error.message} [${error.code}]`);
    process.exit(EXIT_FAILED);
  }
  console.error(`zhsm: ${(error as Error).stack ?? String(error)}`);
  process.exit(EXIT_FAILED);
}
