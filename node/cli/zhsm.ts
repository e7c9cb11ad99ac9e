/**
 * zhsm: the operations CLI. Today: `zhsm status`. (The recovery-and-operations work adds more.)
 */
import { Command } from 'commander';
import { ZhsmError } from '../common/errors.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import type { StatusReport } from '../daemon/node.ts';
import { formatStatus } from './zhsm-format.ts';

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
