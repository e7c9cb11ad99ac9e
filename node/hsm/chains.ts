/**
 * File resolve chains: where the copies of a file live (the concept note's placement model).
 *
 * A chain is a list of rows `(chain, action, destination, attribute, operator, value)`. Resolving
 * a file walks the rows from the first (primary) chain: a row whose condition holds acts —
 * `use DEST` places a copy on one backend of DEST, `skip DEST` excludes DEST from later uses,
 * `jump CHAIN` continues at the top of another chain, `stop` ends the walk — until `copies` uses
 * matched. A `use` that finds no backend (all full, skipped, or asleep for a write) falls through
 * to the next matching row, so a full backend takes the next `use` match.
 *
 * The text format admins edit (compiled to rows, shown back the same way):
 * ```
 * copies 2                          # copies per file (the N of the note); default 2
 * chain main                        # the first chain is the primary chain
 *   use tag:ssd if size < 4M        # a backend tagged ssd, for small files
 *   jump cold if age > 90d          # files not modified for 90 days: chain cold
 *   use any                         # any backend
 * chain cold
 *   skip server:s3                  # never on server s3
 *   use tag:archive strict          # strict: a write waits for a sleeping archive server
 *   stop                            # at most one copy for cold files
 * ```
 * Destinations: `any`, `tag:T` (backends tagged T), `server:NAME`, `backend:UUID-PREFIX`.
 * Conditions: `if ATTRIBUTE OP VALUE` with
 * - `size` (bytes; units K M G T, powers of 1024) and `<`, `<=`, `>`, `>=`, `=`, `!=`;
 * - `age` (time since the last modification) and `idle` (time since the last open), durations
 *   with units s m h d w, same operators;
 * - `opens` (opens in the access window the cell counts), same operators;
 * - `path` (the whole path) and `name` (the last component): `=` glob match, `!=` no match
 *   (`*`, `?`, `[...]`, `**` across directories).
 * Rows without a condition always match.
 *
 * Everything here is pure: the state machine validates the structure with it, the cell client
 * places new writes with it, the mover and the CLI resolve with it.
 */
import { matchesGlob } from 'node:path';

export type ChainAction = 'use' | 'skip' | 'jump' | 'stop';
export type ChainAttribute = '' | 'size' | 'age' | 'idle' | 'opens' | 'path' | 'name';
export type ChainOperator = '' | '<' | '<=' | '>' | '>=' | '=' | '!=';

export interface ChainRow {
  chain: string;
  action: ChainAction;
  /** use/skip: a destination; jump: a chain name; stop: empty. */
  destination: string;
  attribute: ChainAttribute;
  operator: ChainOperator;
  value: string;
  /** use only: a write waits for this destination even when its servers sleep. */
  strict: boolean;
}

export interface Chains {
  copies: number;
  rows: ChainRow[];
}

/** What resolving needs to know of a file. */
export interface FileFacts {
  path: string;
  size: number;
  mtimeMs: number;
  /** Last open (0: never). */
  atimeMs: number;
  /** Opens counted in the cell's access window. */
  opens: number;
}

/** What resolving needs to know of a backend. */
export interface BackendFacts {
  /** Backend uuid, lowercase hex. */
  uuid: string;
  /** Server uuid, lowercase hex. */
  server: string;
  serverName: string;
  tags: readonly string[];
  freeBytes: number;
  /** The server is on (not sleeping, not waking, not offline). */
  awake: boolean;
}

export interface Placement {
  backend: string;
  server: string;
  /** Index of the row that placed it. */
  row: number;
  strict: boolean;
}

export interface Resolution {
  targets: Placement[];
  /** One line per row looked at: why it matched or not, what it did. */
  trace: string[];
}

export const COPIES_MAX = 16;
export const CHAIN_ROWS_MAX = 1_000;
const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const VALUE_BYTES_MAX = 1_024;

const ACTIONS: ReadonlySet<string> = new Set(['use', 'skip', 'jump', 'stop']);
const NUMERIC: ReadonlySet<string> = new Set(['size', 'age', 'idle', 'opens']);
const GLOB: ReadonlySet<string> = new Set(['path', 'name']);
const NUMERIC_OPERATORS: ReadonlySet<string> = new Set(['<', '<=', '>', '>=', '=', '!=']);
const GLOB_OPERATORS: ReadonlySet<string> = new Set(['=', '!=']);

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const TIME_UNITS: Record<string, number> = {
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

/** The default when no chains are set: `copies` copies on any backends. */
export function defaultChains(copies: number): Chains {
  return {
    copies,
    rows: [
      {
        chain: 'main',
        action: 'use',
        destination: 'any',
        attribute: '',
        operator: '',
        value: '',
        strict: false,
      },
    ],
  };
}

/** A condition value as a number (bytes, milliseconds or a count); undefined when malformed. */
export function parseValue(attribute: ChainAttribute, value: string): number | undefined {
  if (attribute === 'opens') return /^\d{1,15}$/.test(value) ? Number(value) : undefined;
  if (attribute === 'size') {
    const match = /^(\d{1,15}(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?$/i.exec(value);
    if (match === null) return undefined;
    return Math.round(Number(match[1]) * SIZE_UNITS[match[2]!.toLowerCase()]!);
  }
  if (attribute === 'age' || attribute === 'idle') {
    const match = /^(\d{1,12}(?:\.\d+)?)\s*([smhdw])$/i.exec(value);
    if (match === null) return undefined;
    return Math.round(Number(match[1]) * TIME_UNITS[match[2]!.toLowerCase()]!);
  }
  return undefined;
}

// ---- text format ---------------------------------------------------------------------------------

export class ChainsError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join('\n'));
    this.problems = problems;
  }
}

/** Split a line into words; "double quoted" words may hold spaces (and \" \\). */
function words(line: string, lineNo: number, problems: string[]): string[] {
  const found: string[] = [];
  let i = 0;
  while (i < line.length) {
    if (line[i] === ' ' || line[i] === '\t') {
      i++;
      continue;
    }
    if (line[i] === '#') break;
    if (line[i] === '"') {
      let word = '';
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++;
        word += line[i];
        i++;
      }
      if (i >= line.length) problems.push(`line ${lineNo}: unterminated quote`);
      i++;
      found.push(word);
      continue;
    }
    let word = '';
    while (i < line.length && line[i] !== ' ' && line[i] !== '\t') word += line[i++];
    found.push(word);
  }
  return found;
}

/**
 * Parse the text format into chains (structure checked: see `validate`). Throws ChainsError with
 * every problem found, each naming its line.
 */
export function parseChains(text: string): Chains {
  const problems: string[] = [];
  const rows: ChainRow[] = [];
  let copies: number | undefined;
  let chain: string | undefined;
  const lines = text.split(/\r?\n/);
  const rowLines: number[] = [];
  lines.forEach((line, index) => {
    const lineNo = index + 1;
    const w = words(line, lineNo, problems);
    if (w.length === 0) return;
    const [head, ...rest] = w as [string, ...string[]];
    if (head === 'copies') {
      const n = rest.length === 1 && /^\d{1,3}$/.test(rest[0]!) ? Number(rest[0]) : Number.NaN;
      if (!(n >= 1 && n <= COPIES_MAX))
        problems.push(`line ${lineNo}: copies takes a number from 1 to ${COPIES_MAX}`);
      else if (copies !== undefined) problems.push(`line ${lineNo}: copies is given twice`);
      else copies = n;
      return;
    }
    if (head === 'chain') {
      if (rest.length !== 1 || !NAME_PATTERN.test(rest[0]!))
        problems.push(`line ${lineNo}: chain takes one name (letters, digits, _ . -)`);
      else chain = rest[0];
      return;
    }
    if (!ACTIONS.has(head)) {
      problems.push(
        `line ${lineNo}: unknown word ${JSON.stringify(head)} (expected copies, chain, use, skip, jump or stop)`,
      );
      return;
    }
    if (chain === undefined) {
      problems.push(`line ${lineNo}: a row before the first 'chain NAME' line`);
      return;
    }
    const action = head as ChainAction;
    const ifAt = rest.indexOf('if');
    const before = ifAt < 0 ? rest : rest.slice(0, ifAt);
    const condition = ifAt < 0 ? [] : rest.slice(ifAt + 1);
    let destination = '';
    let strict = false;
    if (action === 'stop') {
      if (before.length > 0) problems.push(`line ${lineNo}: stop takes no destination`);
    } else {
      if (before.length === 0) {
        problems.push(
          `line ${lineNo}: ${action} needs a ${action === 'jump' ? 'chain name' : 'destination'}`,
        );
        return;
      }
      destination = before[0]!;
      const flags = before.slice(1);
      if (flags.length === 1 && flags[0] === 'strict' && action === 'use') strict = true;
      else if (flags.length > 0)
        problems.push(`line ${lineNo}: unexpected ${JSON.stringify(flags.join(' '))} after the destination`);
    }
    let attribute: ChainAttribute = '';
    let operator: ChainOperator = '';
    let value = '';
    if (ifAt >= 0) {
      if (condition.length !== 3) {
        problems.push(`line ${lineNo}: a condition is 'if ATTRIBUTE OPERATOR VALUE'`);
        return;
      }
      [attribute, operator, value] = condition as [ChainAttribute, ChainOperator, string];
    }
    rows.push({ chain, action, destination, attribute, operator, value, strict });
    rowLines.push(lineNo);
  });
  const result: Chains = { copies: copies ?? 2, rows };
  if (problems.length > 0) throw new ChainsError(problems);
  for (const problem of checkStructure(result)) {
    // Structure problems name rows; point them at their lines.
    problems.push(problem.replace(/^row (\d+)/, (_, n) => `line ${rowLines[Number(n) - 1] ?? '?'}`));
  }
  if (problems.length > 0) throw new ChainsError(problems);
  return result;
}

function quoteIfNeeded(word: string): string {
  return /^[^\s"#\\]+$/.test(word) ? word : `"${word.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** One row as text (without indentation). */
export function formatRow(row: ChainRow): string {
  const parts: string[] = [row.action];
  if (row.action !== 'stop') parts.push(quoteIfNeeded(row.destination));
  if (row.strict) parts.push('strict');
  if (row.attribute !== '') parts.push('if', row.attribute, row.operator, quoteIfNeeded(row.value));
  return parts.join(' ');
}

/** The text format of chains (parseChains(formatChains(c)) gives c back). */
export function formatChains(chains: Chains): string {
  const lines = [`copies ${chains.copies}`];
  let current: string | undefined;
  for (const row of chains.rows) {
    if (row.chain !== current) {
      current = row.chain;
      lines.push(`chain ${row.chain}`);
    }
    lines.push(`  ${formatRow(row)}`);
  }
  return `${lines.join('\n')}\n`;
}

// ---- validation ----------------------------------------------------------------------------------

/** Chain names in order of first appearance (the first is the primary chain). */
export function chainNames(chains: Chains): string[] {
  return [...new Set(chains.rows.map((row) => row.chain))];
}

function checkDestinationShape(destination: string): string | undefined {
  if (destination === 'any') return undefined;
  const colon = destination.indexOf(':');
  const kind = colon < 0 ? '' : destination.slice(0, colon);
  const name = colon < 0 ? '' : destination.slice(colon + 1);
  if (kind === 'tag' || kind === 'server') return NAME_PATTERN.test(name) ? undefined : `bad ${kind} name`;
  if (kind === 'backend')
    return /^[0-9a-f]{4,32}$/.test(name) ? undefined : 'a backend is named by a uuid prefix';
  return 'a destination is any, tag:NAME, server:NAME or backend:UUID-PREFIX';
}

/**
 * The structural problems of chains (no knowledge of the cell's backends needed): row shapes,
 * unknown chains, jump cycles, rows that can never be reached, chains that can never place a copy,
 * conditions that can never hold. Deterministic (the state machine refuses chains with problems).
 */
export function checkStructure(chains: Chains): string[] {
  const problems: string[] = [];
  if (!Number.isInteger(chains.copies) || chains.copies < 1 || chains.copies > COPIES_MAX)
    problems.push(`copies must be from 1 to ${COPIES_MAX}`);
  if (chains.rows.length === 0) problems.push('no chain has a row');
  if (chains.rows.length > CHAIN_ROWS_MAX) problems.push(`at most ${CHAIN_ROWS_MAX} rows`);
  if (problems.length > 0) return problems;
  const names = chainNames(chains);
  // Rows of one chain must be contiguous: a chain is one list.
  const seen = new Set<string>();
  let previous: string | undefined;
  chains.rows.forEach((row, index) => {
    const at = `row ${index + 1}`;
    if (row.chain !== previous) {
      if (seen.has(row.chain)) problems.push(`${at}: chain ${row.chain} continues after another chain`);
      seen.add(row.chain);
      previous = row.chain;
    }
    if (!NAME_PATTERN.test(row.chain)) problems.push(`${at}: bad chain name ${JSON.stringify(row.chain)}`);
    if (!ACTIONS.has(row.action)) {
      problems.push(`${at}: unknown action ${JSON.stringify(row.action)}`);
      return;
    }
    if (row.strict && row.action !== 'use') problems.push(`${at}: only use rows can be strict`);
    if (row.action === 'stop' && row.destination !== '') problems.push(`${at}: stop takes no destination`);
    if (row.action === 'jump' && !names.includes(row.destination))
      problems.push(`${at}: jump to unknown chain ${JSON.stringify(row.destination)}`);
    if (row.action === 'jump' && row.destination === row.chain)
      problems.push(`${at}: chain ${row.chain} jumps to itself`);
    if (row.action === 'use' || row.action === 'skip') {
      const bad = checkDestinationShape(row.destination);
      if (bad !== undefined) problems.push(`${at}: ${bad}: ${JSON.stringify(row.destination)}`);
      if (row.destination === `tag:${CACHE_TAG}`)
        problems.push(`${at}: the cache is filled by the controllers, not a placement destination`);
    }
    if (row.value.length > VALUE_BYTES_MAX) problems.push(`${at}: condition value too long`);
    if (row.attribute === '') {
      if (row.operator !== '' || row.value !== '') problems.push(`${at}: an operator without an attribute`);
    } else if (NUMERIC.has(row.attribute)) {
      if (!NUMERIC_OPERATORS.has(row.operator))
        problems.push(
          `${at}: ${row.attribute} takes <, <=, >, >=, = or != (not ${JSON.stringify(row.operator)})`,
        );
      const n = parseValue(row.attribute, row.value);
      if (n === undefined)
        problems.push(
          `${at}: bad ${row.attribute} value ${JSON.stringify(row.value)} (${row.attribute === 'size' ? 'e.g. 4M, 512K, 1G' : row.attribute === 'opens' ? 'a count' : 'e.g. 30d, 12h, 90m'})`,
        );
      else if (row.operator === '<' && n === 0) problems.push(`${at}: ${row.attribute} < 0 can never hold`);
    } else if (GLOB.has(row.attribute)) {
      if (!GLOB_OPERATORS.has(row.operator))
        problems.push(
          `${at}: ${row.attribute} takes = (glob match) or != (not ${JSON.stringify(row.operator)})`,
        );
      if (row.value === '') problems.push(`${at}: empty ${row.attribute} pattern`);
      if (row.attribute === 'name' && row.value.includes('/'))
        problems.push(`${at}: a name pattern cannot hold '/' (use path)`);
    } else problems.push(`${at}: unknown attribute ${JSON.stringify(row.attribute)}`);
  });
  if (problems.length > 0) return problems;
  // Rows after an unconditional jump or stop are never reached.
  chains.rows.forEach((row, index) => {
    const next = chains.rows[index + 1];
    if ((row.action === 'jump' || row.action === 'stop') && row.attribute === '' && next?.chain === row.chain)
      problems.push(`row ${index + 2}: can never be reached (after an unconditional ${row.action})`);
  });
  // Jump cycles (conditional or not: a walk could loop).
  const jumps = new Map<string, string[]>(names.map((name) => [name, []]));
  for (const row of chains.rows) if (row.action === 'jump') jumps.get(row.chain)!.push(row.destination);
  const state = new Map<string, 'open' | 'done'>();
  const cycle = (name: string, path: string[]): string[] | undefined => {
    if (state.get(name) === 'open') return [...path.slice(path.indexOf(name)), name];
    if (state.get(name) === 'done') return undefined;
    state.set(name, 'open');
    for (const target of jumps.get(name) ?? []) {
      const found = cycle(target, [...path, name]);
      if (found !== undefined) return found;
    }
    state.set(name, 'done');
    return undefined;
  };
  for (const name of names) {
    const found = cycle(name, []);
    if (found !== undefined) {
      problems.push(`jump cycle: ${found.join(' -> ')}`);
      break;
    }
  }
  if (problems.length > 0) return problems;
  // Every chain must be able to place a copy: a use row in it or in a chain it can jump to
  // before an unconditional stop or jump ends it.
  const canUse = new Map<string, boolean>();
  const placesCopy = (name: string): boolean => {
    const known = canUse.get(name);
    if (known !== undefined) return known;
    let result = false;
    for (const row of chains.rows) {
      if (row.chain !== name) continue;
      if (row.action === 'use' || (row.action === 'jump' && placesCopy(row.destination))) {
        result = true;
        break;
      }
      if (row.action === 'stop' && row.attribute === '') break;
    }
    canUse.set(name, result);
    return result;
  };
  for (const name of names)
    if (!placesCopy(name)) problems.push(`chain ${name} can never place a copy (no use row it can reach)`);
  return problems;
}

/** Chains that no walk from the primary chain reaches (not an error: a warning). */
export function unreachableChains(chains: Chains): string[] {
  const names = chainNames(chains);
  const reached = new Set<string>();
  const visit = (name: string) => {
    if (reached.has(name)) return;
    reached.add(name);
    for (const row of chains.rows) if (row.chain === name && row.action === 'jump') visit(row.destination);
  };
  if (names.length > 0) visit(names[0]!);
  return names.filter((name) => !reached.has(name));
}

/**
 * Backends tagged `cache` hold the controllers' cache (node/hsm/cache.ts): never a placement
 * destination, whatever the chains name.
 */
export const CACHE_TAG = 'cache';

/** Backends a destination names (cache backends never). */
export function destinationBackends(destination: string, all: readonly BackendFacts[]): BackendFacts[] {
  const backends = all.filter((backend) => !backend.tags.includes(CACHE_TAG));
  if (destination === 'any') return backends;
  const colon = destination.indexOf(':');
  const kind = destination.slice(0, colon);
  const name = destination.slice(colon + 1);
  if (kind === 'tag') return backends.filter((backend) => backend.tags.includes(name));
  if (kind === 'server')
    return backends.filter((backend) => backend.serverName === name || backend.server === name);
  if (kind === 'backend') return backends.filter((backend) => backend.uuid.startsWith(name));
  return [];
}

/** Destinations that name no backend of the cell (checked before chains are applied). */
export function unknownDestinations(chains: Chains, backends: readonly BackendFacts[]): string[] {
  const problems: string[] = [];
  chains.rows.forEach((row, index) => {
    if (row.action !== 'use' && row.action !== 'skip') return;
    const found = destinationBackends(row.destination, backends);
    if (found.length === 0)
      problems.push(`row ${index + 1}: ${row.destination} names no backend of the cell`);
    else if (row.destination.startsWith('backend:') && new Set(found.map((b) => b.uuid)).size > 1)
      problems.push(`row ${index + 1}: ${row.destination} names ${found.length} backends (give more digits)`);
  });
  return problems;
}

// ---- resolving -----------------------------------------------------------------------------------

/** Whether a row's condition holds for a file. */
export function conditionHolds(row: ChainRow, file: FileFacts, nowMs: number): boolean {
  if (row.attribute === '') return true;
  if (row.attribute === 'path' || row.attribute === 'name') {
    const subject = row.attribute === 'path' ? file.path : (file.path.split('/').at(-1) ?? '');
    const matches = globMatch(subject, row.value);
    return row.operator === '=' ? matches : !matches;
  }
  const limit = parseValue(row.attribute, row.value);
  if (limit === undefined) return false;
  const subject =
    row.attribute === 'size'
      ? file.size
      : row.attribute === 'age'
        ? nowMs - file.mtimeMs
        : row.attribute === 'idle'
          ? nowMs - (file.atimeMs > 0 ? file.atimeMs : file.mtimeMs)
          : file.opens;
  switch (row.operator) {
    case '<':
      return subject < limit;
    case '<=':
      return subject <= limit;
    case '>':
      return subject > limit;
    case '>=':
      return subject >= limit;
    case '=':
      return subject === limit;
    case '!=':
      return subject !== limit;
    default:
      return false;
  }
}

function globMatch(subject: string, pattern: string): boolean {
  try {
    return matchesGlob(subject, pattern);
  } catch {
    return false;
  }
}

export interface ResolveOptions {
  /**
   * For a write: only backends of awake servers (strict rows excepted), so that a write never
   * waits for a sleeping server unless the chain says so.
   */
  readonly awakeOnly?: boolean;
  /** Backends to leave out (e.g. ones that just failed a write). */
  readonly exclude?: ReadonlySet<string>;
}

/** Walk the chains for one file: the backends its copies belong on, and why. */
export function resolve(
  chains: Chains,
  file: FileFacts,
  backends: readonly BackendFacts[],
  nowMs: number,
  options: ResolveOptions = {},
): Resolution {
  const targets: Placement[] = [];
  const trace: string[] = [];
  const skipped = new Set<string>();
  const firstRow = new Map<string, number>();
  chains.rows.forEach((row, index) => {
    if (!firstRow.has(row.chain)) firstRow.set(row.chain, index);
  });
  let index = 0;
  // Jumps cannot cycle (checkStructure); the bound guards stored chains from older versions.
  for (let steps = 0; index < chains.rows.length && steps < 10 * CHAIN_ROWS_MAX; steps++) {
    const row = chains.rows[index]!;
    const label = `${row.chain} #${index - firstRow.get(row.chain)! + 1} '${formatRow(row)}'`;
    if (!conditionHolds(row, file, nowMs)) {
      trace.push(`${label}: condition does not hold`);
      index = nextInChain(chains, index);
      continue;
    }
    if (row.action === 'stop') {
      trace.push(`${label}: stop`);
      break;
    }
    if (row.action === 'jump') {
      trace.push(`${label}: jump to ${row.destination}`);
      index = firstRow.get(row.destination) ?? chains.rows.length;
      continue;
    }
    const candidates = destinationBackends(row.destination, backends);
    if (row.action === 'skip') {
      for (const backend of candidates) skipped.add(backend.uuid);
      trace.push(`${label}: skip ${candidates.length} backend(s)`);
      index = nextInChain(chains, index);
      continue;
    }
    const chosenServers = new Set(targets.map((target) => target.server));
    const usable = candidates.filter(
      (backend) =>
        !skipped.has(backend.uuid) &&
        !options.exclude?.has(backend.uuid) &&
        !targets.some((target) => target.backend === backend.uuid) &&
        backend.freeBytes > file.size &&
        (backend.awake || row.strict || options.awakeOnly !== true),
    );
    if (usable.length === 0) {
      trace.push(
        `${label}: no usable backend (full, skipped, taken${options.awakeOnly ? ' or asleep' : ''})`,
      );
      index = nextInChain(chains, index);
      continue;
    }
    // Another server than the copies so far first, then the most free space.
    usable.sort(
      (a, b) =>
        Number(chosenServers.has(a.server)) - Number(chosenServers.has(b.server)) ||
        b.freeBytes - a.freeBytes ||
        (a.uuid < b.uuid ? -1 : 1),
    );
    const pick = usable[0]!;
    targets.push({ backend: pick.uuid, server: pick.server, row: index, strict: row.strict });
    trace.push(
      `${label}: use backend ${pick.uuid.slice(0, 8)} on ${pick.serverName || pick.server.slice(0, 8)}`,
    );
    if (targets.length >= chains.copies) break;
    index = nextInChain(chains, index);
  }
  if (targets.length < chains.copies)
    trace.push(`${targets.length} of ${chains.copies} copies placed (the chains ran out of matching rows)`);
  return { targets, trace };
}

/** The row after `index` in the same chain (the end of the chain ends the walk). */
function nextInChain(chains: Chains, index: number): number {
  const next = chains.rows[index + 1];
  return next !== undefined && next.chain === chains.rows[index]!.chain ? index + 1 : chains.rows.length;
}
