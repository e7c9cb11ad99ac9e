/**
 * Checker validation: the simulator must catch deliberately broken variants of the core
 * (RaftConfig.faults) within a bounded number of seeds, and must not flag the correct core on
 * the same seeds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type RunResult, runScenario } from '../../sim/runner.ts';
import { findScenario } from '../../sim/scenarios.ts';
import type { CoreFaults } from '../../sim/simulation.ts';

interface Case {
  readonly fault: keyof CoreFaults;
  /** Scenarios tried in turn for each seed. */
  readonly scenarios: readonly string[];
  /** A violation must show up by this seed. */
  readonly seedsMax: number;
  readonly codes: readonly string[];
  readonly disabledChecks?: readonly 'unpersisted-send'[];
}

const CASES: readonly Case[] = [
  {
    // Votes granted without the up-to-date check: a stale candidate wins (targeted scenario)...
    fault: 'skipUpToDateCheck',
    scenarios: ['stale-candidate'],
    seedsMax: 5,
    codes: ['leader-completeness'],
  },
  {
    // ...and in randomized fault schedules a stale node wins and lacks committed entries.
    fault: 'skipUpToDateCheck',
    scenarios: ['churn', 'figure8-unreliable', 'churn-unreliable'],
    seedsMax: 10,
    codes: [
      'leader-completeness',
      'state-machine-safety',
      'commit-changed',
      'log-matching',
      'acknowledged-write-lost',
    ],
  },
  {
    // Figure 8: entries of an older term committed by counting replicas get overwritten.
    fault: 'commitOldTermByCount',
    scenarios: ['figure8-classic'],
    seedsMax: 5,
    codes: ['leader-completeness', 'state-machine-safety', 'commit-changed', 'acknowledged-write-lost'],
  },
  {
    // The vote is not persisted: a vote is granted before it is durable...
    fault: 'forgetVote',
    scenarios: ['vote-amnesia', 'persist-all'],
    seedsMax: 3,
    codes: ['unpersisted-send'],
  },
  {
    // ...and, with that direct check off, a restarted voter votes twice in one term.
    fault: 'forgetVote',
    scenarios: ['vote-amnesia'],
    seedsMax: 10,
    codes: ['double-vote', 'election-safety'],
    disabledChecks: ['unpersisted-send'],
  },
];

async function firstViolation(
  faults: CoreFaults | undefined,
  testCase: Case,
): Promise<RunResult | undefined> {
  for (let seed = 1; seed <= testCase.seedsMax; seed++) {
    for (const name of testCase.scenarios) {
      const result = await runScenario(findScenario(name)!, {
        seed,
        ...(faults === undefined ? {} : { coreFaults: faults }),
        ...(testCase.disabledChecks === undefined ? {} : { disabledChecks: testCase.disabledChecks }),
      });
      if (result.violation !== undefined) return result;
    }
  }
  return undefined;
}

describe('the checkers catch broken cores', () => {
  for (const testCase of CASES) {
    const without =
      testCase.disabledChecks === undefined ? '' : ` (without ${testCase.disabledChecks.join(', ')})`;
    test(`${testCase.fault}${without}: a violation within ${testCase.seedsMax} seeds of ${testCase.scenarios.join(', ')}`, async () => {
      const found = await firstViolation({ [testCase.fault]: true }, testCase);
      assert.ok(found !== undefined, `no violation found for ${testCase.fault}`);
      assert.ok(
        testCase.codes.includes(found.violation!.code),
        `unexpected violation ${found.violation!.code}: ${found.violation!.message}`,
      );
    });

    test(`${testCase.fault} off${without}: the same seeds are clean`, async () => {
      const found = await firstViolation(undefined, testCase);
      assert.equal(found, undefined, found?.violation?.message);
    });
  }
});
