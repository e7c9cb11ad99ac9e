import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  type BackendFacts,
  type Chains,
  ChainsError,
  checkStructure,
  type FileFacts,
  formatChains,
  parseChains,
  resolve,
  unknownDestinations,
  unreachableChains,
} from '../../node/hsm/chains.ts';

const DAY = 86_400_000;
const NOW = 1_800_000_000_000;

const backend = (
  uuid: string,
  server: string,
  tags: string[],
  freeBytes = 1e12,
  awake = true,
): BackendFacts => ({
  uuid: uuid.padEnd(32, '0'),
  server: server.padEnd(32, '0'),
  serverName: `srv-${server}`,
  tags,
  freeBytes,
  awake,
});

const cell: BackendFacts[] = [
  backend('a1', '1', ['ssd']),
  backend('a2', '1', ['hdd'], 5e11),
  backend('b1', '2', ['hdd']),
  backend('c1', '3', ['archive']),
  backend('c2', '3', ['archive'], 2e12),
];

const file = (over: Partial<FileFacts> = {}): FileFacts => ({
  path: '/data/report.pdf',
  size: 1_000,
  mtimeMs: NOW - DAY,
  atimeMs: 0,
  opens: 0,
  ...over,
});

const EXAMPLE = `
# the example of the docs
copies 2
chain main
  use tag:ssd if size < 4M
  jump cold if age > 90d
  use tag:hdd
  use any
chain cold
  skip server:srv-1        # never the fast server
  use tag:archive strict
  stop
`;

const servers = (chains: Chains, f: FileFacts, options = {}) =>
  resolve(chains, f, cell, NOW, options).targets.map((t) => t.backend.slice(0, 2));

test('chains: parse, format back the same way, resolve by size and age', () => {
  const chains = parseChains(EXAMPLE);
  assert.equal(chains.copies, 2);
  assert.equal(chains.rows.length, 7);
  assert.deepEqual(parseChains(formatChains(chains)), chains, 'format is parsed back to the same rows');
  assert.equal(
    formatChains(chains),
    'copies 2\nchain main\n  use tag:ssd if size < 4M\n  jump cold if age > 90d\n  use tag:hdd\n  use any\n' +
      'chain cold\n  skip server:srv-1\n  use tag:archive strict\n  stop\n',
  );
  // Small file: ssd, then hdd on another server than the ssd's (b1 before a2).
  assert.deepEqual(servers(chains, file()), ['a1', 'b1']);
  // Large file: the ssd row does not hold; hdd, then any backend on another server (most free).
  assert.deepEqual(servers(chains, file({ size: 10 * 2 ** 20 })), ['b1', 'c2']);
  // Old small file: ssd first (its row comes first), then the cold chain: archive, then stop.
  const old = resolve(chains, file({ mtimeMs: NOW - 100 * DAY }), cell, NOW);
  assert.deepEqual(
    old.targets.map((t) => t.backend.slice(0, 2)),
    ['a1', 'c2'],
  );
  assert.equal(old.targets[1]!.strict, true);
  assert.match(old.trace.join('\n'), /jump to cold/);
  // Old large file: only the archive copy (stop caps it at one).
  assert.deepEqual(servers(chains, file({ size: 2 ** 30, mtimeMs: NOW - 100 * DAY })), ['c2']);
});

test('chains: a full backend or a sleeping server (for writes) takes the next use match', () => {
  const chains = parseChains('copies 1\nchain main\n  use tag:ssd\n  use tag:hdd\n');
  const full = cell.map((b) => (b.tags.includes('ssd') ? { ...b, freeBytes: 10 } : b));
  assert.deepEqual(
    resolve(chains, file(), full, NOW).targets.map((t) => t.backend.slice(0, 2)),
    ['b1'],
  );
  const asleep = cell.map((b) => (b.server.startsWith('1') ? { ...b, awake: false } : b));
  assert.deepEqual(
    resolve(chains, file(), asleep, NOW).targets.map((t) => t.backend.slice(0, 2)),
    ['a1'],
    'the target ignores power',
  );
  assert.deepEqual(
    resolve(chains, file(), asleep, NOW, { awakeOnly: true }).targets.map((t) => t.backend.slice(0, 2)),
    ['b1'],
    'a write goes to an awake server',
  );
  const strict = parseChains('copies 1\nchain main\n  use tag:ssd strict\n  use tag:hdd\n');
  assert.deepEqual(
    resolve(strict, file(), asleep, NOW, { awakeOnly: true }).targets.map((t) => t.backend.slice(0, 2)),
    ['a1'],
    'a strict row waits for its server',
  );
});

test('chains: path, name, idle and opens conditions; quoted values', () => {
  const chains = parseChains(`copies 1
chain main
  use tag:archive if path = "/media/old films/**"
  use tag:ssd if name = *.db
  use tag:ssd if opens >= 10
  use backend:c100 if idle > 30d
  use tag:hdd
`);
  assert.deepEqual(servers(chains, file({ path: '/media/old films/x/y.mkv' })), ['c2']);
  assert.deepEqual(servers(chains, file({ path: '/var/app.db' })), ['a1']);
  assert.deepEqual(servers(chains, file({ opens: 12 })), ['a1']);
  assert.deepEqual(servers(chains, file({ atimeMs: NOW - 40 * DAY, mtimeMs: NOW - 50 * DAY })), ['c1']);
  assert.deepEqual(servers(chains, file()), ['b1']);
  assert.deepEqual(parseChains(formatChains(chains)), chains);
});

test('chains: clear errors with line numbers; unknown destinations; unreachable chains', () => {
  const problems = (text: string) => {
    try {
      parseChains(text);
      return [];
    } catch (error) {
      assert.ok(error instanceof ChainsError);
      return error.problems;
    }
  };
  assert.deepEqual(problems('use any'), ["line 1: a row before the first 'chain NAME' line"]);
  assert.deepEqual(problems('chain a\n  jump b\n'), ['line 2: jump to unknown chain "b"']);
  assert.match(
    problems('chain a\n  jump b if size > 1\n  use any\nchain b\n  jump a if size > 2\n  use any\n')[0]!,
    /jump cycle: a -> b -> a/,
  );
  assert.deepEqual(problems('chain a\n  stop\n  use any\n'), [
    'line 3: can never be reached (after an unconditional stop)',
  ]);
  assert.deepEqual(problems('chain a\n  skip tag:x\n'), [
    'chain a can never place a copy (no use row it can reach)',
  ]);
  assert.match(problems('chain a\n  use any if size < 0\n')[0]!, /can never hold/);
  assert.match(problems('chain a\n  use any if size < 4X\n')[0]!, /line 2: bad size value "4X"/);
  assert.match(problems('chain a\n  use any if path > /x\n')[0]!, /path takes = \(glob match\) or !=/);
  assert.match(problems('chain a\n  use any if colour = red\n')[0]!, /unknown attribute "colour"/);
  assert.match(problems('chain a\n  use disk:3\n')[0]!, /a destination is any, tag:NAME/);
  assert.match(problems('chain a\n  skip any strict\n')[0]!, /unexpected "strict"/);
  assert.match(problems('copies 0\nchain a\n  use any\n')[0]!, /copies takes a number from 1 to 16/);
  assert.match(problems('chain a\n  use any if size\n')[0]!, /a condition is 'if ATTRIBUTE OPERATOR VALUE'/);
  assert.match(
    problems('chain a\n  use any\nchain b\n  use any\nchain a\n  use any\n')[0]!,
    /continues after another chain/,
  );
  assert.match(problems('bogus\n')[0]!, /unknown word "bogus"/);
  const chains = parseChains(
    'chain a\n  use tag:nvme\n  use backend:ffff\n  use server:srv-2\nchain b\n  use any\n',
  );
  assert.deepEqual(unknownDestinations(chains, cell), [
    'row 1: tag:nvme names no backend of the cell',
    'row 2: backend:ffff names no backend of the cell',
  ]);
  assert.deepEqual(unreachableChains(chains), ['b']);
  const twins = [backend('abcd1', '1', []), backend('abcd2', '2', [])];
  assert.deepEqual(unknownDestinations(parseChains('chain a\n  use backend:abcd\n'), twins), [
    'row 1: backend:abcd names 2 backends (give more digits)',
  ]);
});

test('chains (property): valid chains round-trip through the text; resolve never exceeds copies, never repeats a backend, never uses a skipped one', () => {
  const name = fc.constantFrom('main', 'b', 'c');
  const destination = fc.constantFrom(
    'any',
    'tag:ssd',
    'tag:hdd',
    'tag:archive',
    'server:srv-2',
    'backend:c100',
  );
  const condition = fc.oneof(
    fc.constant({ attribute: '' as const, operator: '' as const, value: '' }),
    fc.record({
      attribute: fc.constant('size' as const),
      operator: fc.constantFrom('<' as const, '>=' as const, '!=' as const),
      value: fc.constantFrom('1K', '4M', '1G'),
    }),
    fc.record({
      attribute: fc.constant('path' as const),
      operator: fc.constantFrom('=' as const, '!=' as const),
      value: fc.constantFrom('/data/**', '**/*.pdf', '/x y/*'),
    }),
  );
  const row = fc.record({
    chain: name,
    action: fc.constantFrom('use' as const, 'skip' as const, 'jump' as const, 'stop' as const),
    destination,
    jumpTo: name,
    strict: fc.boolean(),
    condition,
  });
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.array(row, { minLength: 1, maxLength: 12 }),
      fc.nat(2 ** 31),
      (copies, raw, size) => {
        const rows = raw
          .map((r) => ({
            chain: r.chain,
            action: r.action,
            destination: r.action === 'stop' ? '' : r.action === 'jump' ? r.jumpTo : r.destination,
            strict: r.action === 'use' && r.strict,
            ...r.condition,
          }))
          .sort(
            (a, b) =>
              (a.chain === 'main' ? 0 : 1) - (b.chain === 'main' ? 0 : 1) ||
              (a.chain < b.chain ? -1 : a.chain > b.chain ? 1 : 0),
          );
        const chains: Chains = { copies, rows };
        if (checkStructure(chains).length > 0) return; // only valid chains from here
        assert.deepEqual(parseChains(formatChains(chains)), chains);
        const result = resolve(chains, file({ size }), cell, NOW);
        assert.ok(result.targets.length <= copies);
        assert.equal(new Set(result.targets.map((t) => t.backend)).size, result.targets.length);
        for (const target of result.targets) {
          const from = chains.rows[target.row]!;
          assert.equal(from.action, 'use');
        }
      },
    ),
    { numRuns: 500 },
  );
});
