/** Scenario seeds, part A of 4 (the parts run in parallel under node --test). */
import { scenarioTests } from './scenario-suite.ts';

scenarioTests([
  'concurrent-proposals',
  'persist-primary',
  'transfer-slow-target',
  'lowest-id-equal-logs',
  'lowest-id-k-dead',
  'figure8',
  'follower-down',
]);
