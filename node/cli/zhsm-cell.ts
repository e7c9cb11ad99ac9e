/**
 * `zhsm backends`, `zhsm tokens`, `zhsm token create|revoke|list` and `zhsm controllers
 * [list|transfer|pin|unpin|add|remove]`: the admin ops of node/daemon/ops-admin.ts on the running
 * daemon of `--data`, which forwards to the primary controller.
 */
import { type Command, InvalidArgumentError as CommanderArgumentError } from 'commander';
import { parseDuration } from '../common/duration.ts';
import { ZhsmError } from '../common/errors.ts';
import { adminRequest } from '../daemon/admin-client.ts';
import type { BackendJson, ControllersReport, JoinTokenJson, OpenTokenJson } from '../daemon/ops-admin.ts';
import type { ControllerAnswer } from '../daemon/protocols.ts';
import {
  duration,
  formatBackends,
  formatControllerAnswer,
  formatControllers,
  formatJoinTokens,
  formatOpenTokens,
} from './zhsm-format.ts';

/**
 * A bad argument found out after asking the daemon (an unknown controller id or join token): exit
 * code 2 like the errors commander finds, printed as `zhsm: MESSAGE`.
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The cell does not know what the argument names: a usage error (exit 2). */
async function naming<T>(request: Promise<T>): Promise<T> {
  try {
    return await request;
  } catch (error) {
    if (error instanceof ZhsmError && (error.code === 'NOT_FOUND' || error.code === 'INVALID_ARGUMENT'))
      throw new UsageError(error.message);
    throw error;
  }
}

/** The action did not complete (e.g. a transfer the target did not take): exit 1 after printing. */
export class NotDoneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotDoneError';
  }
}

function print(json: boolean, value: unknown, human: () => string): void {
  console.log(json ? JSON.stringify(value, null, 2) : human());
}

function ttlOption(text: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    throw new CommanderArgumentError((error as Error).message);
  }
}

function controllerIdArgument(text: string): number {
  const id = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(id) || id <= 0)
    throw new CommanderArgumentError(
      `a controller id is a positive integer (see: zhsm controllers), not ${JSON.stringify(text)}`,
    );
  return id;
}

const DATA_HELP = 'the data directory of a running node of the cell';
/** Join tokens live this long unless --ttl says otherwise (node.ts JOIN_TOKEN_TTL_MS_DEFAULT). */
const TOKEN_TTL_MS_DEFAULT = 24 * 3_600_000;

/** Register the cell-level commands on the zhsm program. */
export function registerCellCommands(program: Command): void {
  program
    .command('backends')
    .description('every backend: its server, uuid, path, tags, capacity, free space, used share')
    .requiredOption('--data <dir>', DATA_HELP)
    .option('--json', 'print JSON')
    .action(async (options) => {
      const { backends } = await adminRequest<{ backends: BackendJson[] }>(options.data, { op: 'backends' });
      print(options.json === true, { backends }, () => formatBackends(backends));
    });

  program
    .command('tokens')
    .description('open files of the cell: object, path, mode, holder (a peer id), opened, expiry')
    .requiredOption('--data <dir>', DATA_HELP)
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Each open of a file holds a token, renewed by its client and released on close; a crashed
client's tokens expire. Paths are shown for the first 256 tokens ('-': the file is gone).`,
    )
    .action(async (options) => {
      const reply = await adminRequest<{ nowMs: number; tokens: OpenTokenJson[] }>(options.data, {
        op: 'tokens',
      });
      print(options.json === true, { nowMs: reply.nowMs, tokens: reply.tokens }, () =>
        formatOpenTokens(reply),
      );
    });

  const token = program
    .command('token')
    .description('join tokens: create, revoke, list (a new node joins with: zhsm-node join PEER --token T)');

  token
    .command('create')
    .description('issue a join token (the secret is shown once; the cell keeps only its hash)')
    .requiredOption('--data <dir>', DATA_HELP)
    .option('--ttl <duration>', 'how long it may be used, e.g. 30m, 24h, 7d (default 24h)', ttlOption)
    .option('--json', 'print JSON')
    .action(async (options) => {
      const reply = await adminRequest<{ token: string; expiresMs: number }>(options.data, {
        op: 'token-create',
        ttlMs: options.ttl ?? TOKEN_TTL_MS_DEFAULT,
      });
      const id = reply.token.split('.')[1] ?? '';
      print(
        options.json === true,
        {
          token: reply.token,
          id,
          expiresMs: reply.expiresMs,
          expires: new Date(reply.expiresMs).toISOString(),
        },
        () =>
          `${reply.token}\nid ${id}, valid until ${new Date(reply.expiresMs).toISOString()} (${duration(options.ttl ?? TOKEN_TTL_MS_DEFAULT)})`,
      );
    });

  token
    .command('revoke')
    .description('revoke a join token: nobody joins with it any more (members that joined stay)')
    .argument('<id>', 'the token id (32 hex digits, from zhsm token list) or the whole token')
    .requiredOption('--data <dir>', DATA_HELP)
    .option('--json', 'print JSON')
    .action(async (value: string, options) => {
      if (!/^(?:zhsm1\.)?[0-9a-f]{32}(?:\.[0-9a-f]{64})?$/.test(value.trim()))
        throw new UsageError(
          `not a join token id: ${JSON.stringify(value)} (32 hex digits from zhsm token list, or the whole token zhsm1.<id>.<secret>)`,
        );
      const reply = await naming(
        adminRequest<{ id: string }>(options.data, { op: 'join-token-revoke', token: value.trim() }),
      );
      print(options.json === true, { id: reply.id, revoked: true }, () => `join token ${reply.id} revoked`);
    });

  token
    .command('list')
    .description('join tokens that can still be used (ids and expiry, never secrets)')
    .requiredOption('--data <dir>', DATA_HELP)
    .option('--all', 'also revoked and expired ones')
    .option('--json', 'print JSON')
    .action(async (options) => {
      const reply = await adminRequest<{ nowMs: number; tokens: JoinTokenJson[] }>(options.data, {
        op: 'join-tokens',
        all: options.all === true,
      });
      print(options.json === true, { nowMs: reply.nowMs, tokens: reply.tokens }, () =>
        formatJoinTokens(reply),
      );
    });

  const controllers = program
    .command('controllers')
    .description('controllers: list (default), transfer leadership, pin/unpin the primary, add, remove')
    .addHelpText(
      'after',
      `
The primary is elected: the lowest-id voter whose log is up to date leads, and a primary hands
leadership to a lower-id voter that has been caught up for two election timeouts. A transfer
without a pin is therefore temporary when a lower-id voter is alive. A pin (manual mode) makes one
voter the only one that may lead: the primary hands over to it, and while it is down nobody else
takes over. A controller that is added becomes a learner, and a voter once caught up; the node's
running daemon starts the controller role within seconds and writes its node.json itself. A
removed controller's daemon stops the role. Removing the primary, the
pinned controller or the last voter is refused, and so is a removal that would leave fewer live
voters than a quorum.

Examples:
  zhsm controllers --data /var/lib/zhsm
  zhsm controllers transfer 2 --data /var/lib/zhsm
  zhsm controllers pin 2 --data /var/lib/zhsm; zhsm controllers unpin --data /var/lib/zhsm
  zhsm controllers add 12D3KooW... --data /var/lib/zhsm   # a member's peer id (zhsm status)
  zhsm controllers remove 3 --data /var/lib/zhsm`,
    );

  controllers
    .command('list', { isDefault: true })
    .description('every controller: role, membership (voter/learner), term, indexes, lag behind the primary')
    .requiredOption('--data <dir>', DATA_HELP)
    .option('--json', 'print JSON')
    // `zhsm controllers frob` lands here (the default command): say what the commands are.
    .allowExcessArguments(true)
    .action(async (options, command: Command) => {
      if (command.args.length > 0)
        throw new UsageError(
          `unknown command 'controllers ${command.args[0]}' (list, transfer, pin, unpin, add, remove)`,
        );
      const { report } = await adminRequest<{ report: ControllersReport }>(options.data, {
        op: 'controllers',
      });
      print(options.json === true, report, () => formatControllers(report));
    });

  const actions: Array<{ name: string; argument?: string; description: string }> = [
    {
      name: 'transfer',
      argument: '<id>',
      description: 'hand leadership to a voter now (the core catches it up first)',
    },
    {
      name: 'pin',
      argument: '<id>',
      description: 'manual mode: only this voter may lead (the primary hands over to it)',
    },
    { name: 'unpin', description: 'back to elections: the lowest live up-to-date voter leads' },
    {
      name: 'add',
      argument: '<peer-id>',
      description: 'make a member a controller (a learner, then a voter)',
    },
    { name: 'remove', argument: '<id>', description: 'remove a controller from the consensus membership' },
  ];
  for (const action of actions) {
    const command = controllers.command(action.name).description(action.description);
    if (action.argument === '<id>')
      command.argument('<id>', 'a controller id (zhsm controllers)', controllerIdArgument);
    else if (action.argument !== undefined)
      command.argument(action.argument, "the member's peer id (or a unique prefix)");
    command
      .requiredOption('--data <dir>', DATA_HELP)
      .option('--json', 'print JSON')
      .action(async (...args: unknown[]) => {
        const value = action.argument === undefined ? undefined : args[0];
        const options = args[action.argument === undefined ? 0 : 1] as { data: string; json?: boolean };
        const request: Record<string, unknown> = { op: `controllers-${action.name}` };
        if (action.argument === '<id>') request.id = value;
        if (action.argument === '<peer-id>') request.peer = value;
        const { answer } = await naming(
          adminRequest<{ answer: ControllerAnswer }>(options.data, request, 60_000),
        );
        print(options.json === true, answer, () => formatControllerAnswer(answer));
        if (!answer.done) throw new NotDoneError(answer.message);
      });
  }
}
