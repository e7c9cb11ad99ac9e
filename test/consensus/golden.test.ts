/**
 * Golden interaction tests (etcd-io/raft datadriven style). Each `golden/*.txt` file is a script:
 *
 *   # comment
 *   command args
 *   ----
 *   expected output (one line per event; never blank)
 *   <blank line>
 *
 * The runner executes the commands against an in-process cluster with a fixed-order network
 * (test/consensus/cluster.ts; jitter randomInt always returns 0) and compares the trace. Run with
 * ZHSM_GOLDEN_UPDATE=1 to rewrite the expected output on purpose, then review the diff as text.
 *
 * Commands:
 *   add-nodes N [prevote=bool] [checkquorum=bool] [lowest=bool] [pin=ID] [election=T]
 *                                  nodes 1..N, all voters
 *   add-joiner ID                  a new node with an empty initial membership (to add as learner)
 *   campaign ID                    start an election now
 *   tick IDS|all N [quiet]         N rounds: tick each listed node once, then stabilize
 *                                  (quiet: print only role changes)
 *   stabilize                      process readies and deliver messages until nothing moves
 *   partition A B / C D            two nodes can talk iff a group holds both (groups may overlap)
 *   heal
 *   propose ID DATA
 *   conf ID addLearner|promote|remove NODE
 *   transfer ID TO
 *   read-index ID REQUEST
 *   crash ID / restart ID
 *   compact ID                     application snapshot at the applied index + log compaction
 *   pin ID                         setPinnedLeader(ID) on every node (0 = unpin)
 *   status ID...                   one status line per node
 *   verbose on|off                 print idle heartbeats too
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ConfigChange, Membership, NodeId } from '../../consensus/types.ts';
import { Cluster, type NodeOptions } from './cluster.ts';

const goldenDirectory = join(dirname(fileURLToPath(import.meta.url)), 'golden');
const update = process.env.ZHSM_GOLDEN_UPDATE === '1';

interface Block {
  /** Comment/blank lines before the command, kept verbatim. */
  readonly preamble: string[];
  readonly command: string;
  readonly expected: string[];
}

function parse(text: string, file: string): Block[] {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  let preamble: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.trim() === '' || line.startsWith('#')) {
      preamble.push(line);
      i++;
      continue;
    }
    const command = line;
    i++;
    if (lines[i] !== '----') throw new Error(`${file}:${i + 1}: expected ---- after "${command}"`);
    i++;
    const expected: string[] = [];
    while (i < lines.length && lines[i] !== '') expected.push(lines[i++]!);
    blocks.push({ preamble, command, expected });
    preamble = [];
  }
  // Trailing comments/blank lines are dropped on rewrite.
  return blocks;
}

function render(blocks: readonly Block[], outputs: readonly string[][]): string {
  const parts: string[] = [];
  blocks.forEach((block, i) => {
    const preamble = block.preamble.filter((line, index) => !(index === 0 && i > 0 && line === ''));
    parts.push(...preamble, block.command, '----', ...outputs[i]!, '');
  });
  return `${parts.join('\n')}`;
}

function parseBool(value: string): boolean {
  if (value === 'true' || value === 'on') return true;
  if (value === 'false' || value === 'off') return false;
  throw new Error(`not a boolean: ${value}`);
}

function parseIds(argument: string): NodeId[] | 'all' {
  if (argument === 'all') return 'all';
  return argument.split(',').map(Number);
}

async function execute(cluster: Cluster, command: string): Promise<string[]> {
  const [verb, ...args] = command.trim().split(/\s+/);
  const out: string[] = [];
  switch (verb) {
    case 'add-nodes': {
      const count = Number(args[0]);
      const config: Record<string, unknown> = {};
      for (const option of args.slice(1)) {
        const [key, value] = option.split('=') as [string, string];
        if (key === 'prevote') config.preVote = parseBool(value);
        else if (key === 'checkquorum') config.checkQuorum = parseBool(value);
        else if (key === 'lowest') config.lowestIdLeader = parseBool(value);
        else if (key === 'pin') config.pinnedLeader = Number(value);
        else if (key === 'election') config.electionTicks = Number(value);
        else throw new Error(`unknown option ${key}`);
      }
      const membership: Membership = { voters: Array.from({ length: count }, (_, i) => i + 1), learners: [] };
      const options: NodeOptions = { config };
      for (let id = 1; id <= count; id++) await cluster.addNode(id, membership, options);
      break;
    }
    case 'add-joiner': {
      const first = cluster.nodes.values().next().value;
      const options: NodeOptions = first === undefined ? {} : first.options;
      await cluster.addNode(Number(args[0]), { voters: [], learners: [] }, options);
      break;
    }
    case 'campaign':
      cluster.node(Number(args[0])).raft.campaign();
      await cluster.stabilize();
      break;
    case 'tick': {
      const ids = parseIds(args[0]!);
      const rounds = Number(args[1]);
      const quiet = args[2] === 'quiet';
      const before = cluster.trace.length;
      await cluster.tick(ids, rounds);
      if (quiet) {
        const lines = cluster.trace.splice(before);
        cluster.trace.push(...lines.filter((line) => /^\d+: (role|crashed|restarted)/.test(line)));
      }
      break;
    }
    case 'stabilize':
      await cluster.stabilize();
      break;
    case 'partition': {
      const groups = args
        .join(' ')
        .split('/')
        .map((group) => group.trim().split(/\s+/).filter(Boolean).map(Number));
      cluster.partition(groups);
      break;
    }
    case 'heal':
      cluster.heal();
      break;
    case 'propose': {
      const result = cluster.propose(Number(args[0]), args[1] ?? '');
      out.push(
        result.ok
          ? `ok index=${result.index} term=${result.term}`
          : `refused ${result.reason} leader=${result.leader}`,
      );
      break;
    }
    case 'conf': {
      const change = { kind: args[1], node: Number(args[2]) } as ConfigChange;
      const result = cluster.node(Number(args[0])).raft.proposeConfigChange(change);
      out.push(
        result.ok
          ? `ok index=${result.index} term=${result.term}`
          : `refused ${result.reason} leader=${result.leader}`,
      );
      break;
    }
    case 'transfer':
      out.push(
        cluster.node(Number(args[0])).raft.transferLeadership(Number(args[1])) ? 'started' : 'refused',
      );
      break;
    case 'read-index':
      out.push(cluster.node(Number(args[0])).raft.readIndex(Number(args[1])) ? 'accepted' : 'refused');
      break;
    case 'crash':
      await cluster.crash(Number(args[0]));
      break;
    case 'restart':
      await cluster.restart(Number(args[0]));
      break;
    case 'compact': {
      const snapshot = await cluster.compact(Number(args[0]));
      out.push(`snapshot ${snapshot.meta.index}/${snapshot.meta.term}`);
      break;
    }
    case 'pin':
      for (const node of cluster.nodes.values()) node.raft.setPinnedLeader(Number(args[0]));
      break;
    case 'status':
      for (const id of args) out.push(cluster.statusLine(Number(id)));
      break;
    case 'verbose':
      cluster.verbose = parseBool(args[0]!);
      break;
    default:
      throw new Error(`unknown command ${verb}`);
  }
  const lines = [...cluster.takeTrace(), ...out];
  return lines.length === 0 ? ['ok'] : lines;
}

const files = readdirSync(goldenDirectory)
  .filter((name) => name.endsWith('.txt'))
  .sort();

for (const file of files) {
  test(`golden ${file}`, async () => {
    const path = join(goldenDirectory, file);
    const blocks = parse(readFileSync(path, 'utf8'), file);
    const cluster = new Cluster();
    const outputs: string[][] = [];
    for (const block of blocks) outputs.push(await execute(cluster, block.command));
    if (update) {
      writeFileSync(path, render(blocks, outputs));
      return;
    }
    blocks.forEach((block, i) => {
      assert.deepEqual(
        outputs[i],
        block.expected,
        `${file}: output of "${block.command}" differs (ZHSM_GOLDEN_UPDATE=1 rewrites it on purpose)`,
      );
    });
  });
}
