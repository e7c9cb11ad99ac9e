/** Scenario seeds, part C of 4 (the parts run in parallel under node --test). */
import { scenarioTests } from './scenario-suite.ts';

scenarioTests([
  'partial-chained',
  'partial-asymmetric',
  'churn-unreliable',
  'snapshot-catch-up',
  'membership-change',
  'backup-50',
  'rejoin-partitioned-leader',
  'lowest-id-stale',
  'single-node',
]);
