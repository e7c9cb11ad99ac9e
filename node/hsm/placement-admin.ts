/**
 * The node's side of `zhsm chains` and `zhsm migrate` (admin socket ops `chains-*` and `mover`):
 * parse and check chains here (clear errors with line numbers, destinations checked against the
 * cell's backends), ask the primary for a dry run or the mover's progress, propose new chains.
 */
import { InvalidArgumentError, NotFoundError, ZhsmError } from '../common/errors.ts';
import type { RemoteCell } from '../daemon/remote-cell.ts';
import type { StoredChains } from '../metadata/records.ts';
import {
  type Chains,
  ChainsError,
  defaultChains,
  type FileFacts,
  formatChains,
  parseChains,
  resolve,
  unknownDestinations,
  unreachableChains,
} from './chains.ts';
import { backendFacts } from './mover.ts';

const TEXT_BYTES_MAX = 1024 * 1024;

function chainsOf(text: unknown): Chains {
  if (typeof text !== 'string')
    throw new InvalidArgumentError('text must be the chains in their text format');
  if (text.length > TEXT_BYTES_MAX) throw new InvalidArgumentError('the chains text is larger than 1 MiB');
  try {
    return parseChains(text);
  } catch (error) {
    if (error instanceof ChainsError)
      throw new InvalidArgumentError(`invalid chains:\n${error.problems.join('\n')}`);
    throw error;
  }
}

async function checkedAgainstCell(remote: RemoteCell, chains: Chains) {
  const [backends, servers] = await Promise.all([remote.metadata.backends(), remote.metadata.servers()]);
  const facts = backendFacts(backends, servers);
  const unknown = unknownDestinations(chains, facts);
  if (unknown.length > 0) throw new InvalidArgumentError(`invalid chains:\n${unknown.join('\n')}`);
  return { facts, warnings: unreachableChains(chains).map((name) => `chain ${name} is never reached`) };
}

async function stored(remote: RemoteCell): Promise<StoredChains | undefined> {
  return (await remote.metadata.chains?.()) ?? undefined;
}

export async function placementAdmin(
  remote: RemoteCell,
  request: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  switch (request.op) {
    case 'chains-show': {
      const chains = await stored(remote);
      if (chains === undefined) return { set: false, text: '', version: 0 };
      return {
        set: true,
        text: formatChains(chains),
        version: chains.version,
        updatedMs: chains.updatedMs,
        chains,
      };
    }
    case 'chains-check': {
      const chains = chainsOf(request.text);
      const { warnings } = await checkedAgainstCell(remote, chains);
      return { text: formatChains(chains), warnings };
    }
    case 'chains-plan': {
      const chains = chainsOf(request.text);
      const { warnings } = await checkedAgainstCell(remote, chains);
      const response = await remote.request({ read: { plan: { ...chains, version: 0, updatedMs: 0 } } });
      if (response.plan == null) throw new ZhsmError('DECODE_ERROR', 'the primary answered without a plan');
      return { plan: response.plan, warnings, text: formatChains(chains) };
    }
    case 'chains-apply': {
      const chains = chainsOf(request.text);
      const { warnings } = await checkedAgainstCell(remote, chains);
      const expected = request.expectedVersion;
      if (expected !== undefined && !(Number.isSafeInteger(expected) && (expected as number) >= 0))
        throw new InvalidArgumentError('expectedVersion must be a version number');
      const result = await remote.propose({
        setChains: {
          chains: { ...chains, version: 0, updatedMs: 0 },
          ...(expected === undefined ? {} : { checkVersion: true, expectedVersion: expected as number }),
        },
      });
      if (result.code === 'STALE')
        throw new ZhsmError(
          'STALE',
          `the chains changed meanwhile (${result.message}); look again and retry`,
        );
      if (result.code !== 'OK')
        throw new InvalidArgumentError(`the cell refused the chains: ${result.message}`);
      const now = await stored(remote);
      return { version: now?.version ?? 0, warnings };
    }
    case 'chains-test': {
      const path = request.path;
      if (typeof path !== 'string' || !path.startsWith('/'))
        throw new InvalidArgumentError('path must be an absolute path in the cell');
      const size = request.size;
      if (size !== undefined && !(Number.isSafeInteger(size) && (size as number) >= 0))
        throw new InvalidArgumentError('size must be a byte count');
      const ageMs = request.ageMs;
      if (ageMs !== undefined && !(Number.isSafeInteger(ageMs) && (ageMs as number) >= 0))
        throw new InvalidArgumentError('age must be a duration');
      const chains =
        request.text !== undefined ? chainsOf(request.text) : ((await stored(remote)) ?? defaultChains(2));
      const [backends, servers] = await Promise.all([remote.metadata.backends(), remote.metadata.servers()]);
      const facts = backendFacts(backends, servers);
      const now = Date.now();
      const file: FileFacts = {
        path,
        size: (size as number | undefined) ?? 0,
        mtimeMs: now - ((ageMs as number | undefined) ?? 0),
        atimeMs: 0,
        opens: 0,
      };
      const result = resolve(chains, file, facts, now);
      const byUuid = new Map(facts.map((fact) => [fact.uuid, fact]));
      return {
        file,
        copies: chains.copies,
        targets: result.targets.map((target) => {
          const fact = byUuid.get(target.backend);
          return {
            backend: target.backend,
            server: fact?.serverName ?? '',
            path: backends.find((b) => Buffer.from(b.uuid).toString('hex') === target.backend)?.path ?? '',
            awake: fact?.awake ?? false,
            row: target.row + 1,
            strict: target.strict,
          };
        }),
        trace: result.trace,
      };
    }
    case 'cache': {
      const response = await remote.request({ read: { cache: {} } });
      if (response.cache == null) throw new NotFoundError('the primary reports no cache');
      return { cache: response.cache };
    }
    case 'mover': {
      const response = await remote.request({ read: { mover: {} } });
      if (response.mover == null) throw new NotFoundError('the primary reports no mover');
      return { mover: response.mover };
    }
    default:
      throw new InvalidArgumentError(`unknown admin request ${JSON.stringify(request.op)}`);
  }
}
