/**
 * Golden interaction scripts (in the style of etcd-io/raft's datadriven tests): small text
 * files of commands, each followed by `----` and the trace it produced. The cell is fully
 * deterministic (fixed 1 ms network delay, fixed 100 µs fsync, no drift, seed 1), so the
 * expected trace can be reviewed as text and regenerated on purpose.
 *
 *   cell nodes=3 [lowestId=false] [preVote=false] [checkQuorum=false]
 *   tick N                 advance N ticks (N × 100 ms)
 *   run MS                 advance MS milliseconds
 *   campaign ID            the node starts an election now
 *   propose ID TEXT        propose a command on a node
 *   transfer FROM TO       leadership transfer
 *   isolate ID | reconnect ID | cut A B | cut-one-way FROM TO | partition 1,2 3,4,5 | heal
 *   crash ID | restart ID
 *   status                 role, term, leader, commit and last index of every node
 *
 * Heartbeats (AppendEntries without entries) and their responses are left out of the output.
 */
import type { NodeId } from '../consensus/types.ts';
import { encodeCommand } from './kv.ts';
import { DEFAULT_PARAMS, Simulation } from './simulation.ts';

export interface ScriptStep {
  readonly command: string;
  readonly expected: string;
}

/** Commands in one script (a limit on everything). */
export const scriptStepsMax = 1_000;

/** Parse `command\n----\noutput\n\n` blocks; `#` lines are comments. */
export function parseScript(text: string): ScriptStep[] {
  const steps: ScriptStep[] = [];
  const lines = text.split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!.trim();
    i++;
    if (line === '' || line.startsWith('#')) continue;
    if (lines[i]?.trim() !== '----') throw new Error(`script line ${i}: "${line}" must be followed by ----`);
    i++;
    const output: string[] = [];
    while (i < lines.length && lines[i]!.trim() !== '') output.push(lines[i++]!);
    steps.push({ command: line, expected: output.join('\n') });
    if (steps.length > scriptStepsMax) throw new Error(`script over ${scriptStepsMax} steps`);
  }
  return steps;
}

export function formatScript(steps: readonly { command: string; expected: string }[]): string {
  return `${steps.map((step) => `${step.command}\n----\n${step.expected}`).join('\n\n')}\n`;
}

const HEARTBEAT = /AppendEntries \d+>\d+ t\d+ prev=\S+ n=0 |AppendEntriesResponse /;

/** Run a script; returns the actual output of every step (compare with `expected`). */
export async function runScript(
  steps: readonly ScriptStep[],
): Promise<{ command: string; expected: string }[]> {
  let sim: Simulation | undefined;
  const out: { command: string; expected: string }[] = [];
  for (const step of steps) {
    const [verb, ...args] = step.command.split(/\s+/);
    if (verb === 'cell') {
      sim = createCell(args);
      out.push({ command: step.command, expected: 'ok' });
      continue;
    }
    if (sim === undefined) throw new Error(`"${step.command}" before "cell"`);
    const before = sim.trace.lines.length;
    const extra = await execute(sim, verb!, args);
    const lines = sim.trace.lines.slice(before).filter((line) => !HEARTBEAT.test(line));
    const output = [...lines, ...extra].map((line) => line.trimStart());
    out.push({ command: step.command, expected: output.length === 0 ? 'ok' : output.join('\n') });
  }
  return out;
}

function createCell(args: readonly string[]): Simulation {
  const options = new Map(args.map((arg) => arg.split('=') as [string, string]));
  const flag = (name: string, fallback: boolean): boolean =>
    options.has(name) ? options.get(name) === 'true' : fallback;
  const nodes = Number(options.get('nodes') ?? 3);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 9)
    throw new Error(`cell: bad nodes=${options.get('nodes')}`);
  return new Simulation({
    seed: 1,
    trace: true,
    params: {
      ...DEFAULT_PARAMS,
      nodes,
      preVote: flag('preVote', true),
      checkQuorum: flag('checkQuorum', true),
      lowestIdLeader: flag('lowestId', true),
      driftPpmMax: 0,
      network: {
        delayUsMin: 1_000,
        delayUsMax: 1_000,
        reorderChance: 0,
        reorderUsMax: 0,
        dropChance: 0,
        duplicateChance: 0,
      },
      disk: { writeUsMin: 100, writeUsMax: 100, crashLoseChance: 0, crashTearChance: 0 },
      clients: 0,
    },
  });
}

async function execute(sim: Simulation, verb: string, args: readonly string[]): Promise<string[]> {
  const id = (i: number): NodeId => {
    const value = Number(args[i]);
    if (!sim.nodes.has(value)) throw new Error(`${verb}: no node ${args[i]}`);
    return value;
  };
  switch (verb) {
    case 'tick':
      await sim.runFor(Number(args[0]) * sim.params.tickUs);
      return [];
    case 'run':
      await sim.runFor(Number(args[0]) * 1_000);
      return [];
    case 'campaign': {
      const raft = sim.raft(id(0));
      if (raft === undefined) return [`n${args[0]} is down`];
      sim.log(`n${args[0]} campaign`);
      raft.campaign();
      sim.pump(id(0));
      return [];
    }
    case 'propose': {
      const result = sim.propose(
        id(0),
        encodeCommand({
          op: 'put',
          key: 'script',
          value: args.slice(1).join(' '),
          client: 0,
          id: sim.nowUs + 1,
        }),
      );
      return [
        `propose n${args[0]}: ${result === undefined ? 'down' : result.ok ? `index ${result.index} term ${result.term}` : result.reason}`,
      ];
    }
    case 'transfer':
      sim.transferLeadership(id(0), id(1));
      return [];
    case 'isolate':
      sim.network.isolate(id(0));
      return [];
    case 'reconnect':
      sim.network.reconnect(id(0));
      return [];
    case 'cut':
      sim.network.cut(id(0), id(1));
      return [];
    case 'cut-one-way':
      sim.network.cutOneWay(id(0), id(1));
      return [];
    case 'partition':
      sim.network.partition(args.map((group) => group.split(',').map(Number)));
      return [];
    case 'heal':
      sim.network.heal();
      return [];
    case 'crash':
      sim.crash(id(0));
      return [];
    case 'restart':
      sim.restart(id(0));
      await sim.runFor(0);
      return [];
    case 'status':
      return [...sim.nodes.values()].map((node) => {
        if (!node.up || node.raft === undefined) return `n${node.id} down`;
        const status = node.raft.status();
        return `n${node.id} ${status.role} term=${status.term} leader=${status.leader} commit=${status.commitIndex} last=${status.lastIndex}`;
      });
    default:
      throw new Error(`unknown script command "${verb}"`);
  }
}
