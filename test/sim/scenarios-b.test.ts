/** Scenario seeds, part B of 4 (the parts run in parallel under node --test). */
import { scenarioTests } from './scenario-suite.ts';

scenarioTests([
  'prevote-disruption',
  'lowest-id-returns',
  'unreliable-agreement',
  'clock-drift',
  'persist-all',
  'transfer-timeout',
  'transfer-refuses-proposals',
  'initial-election',
  'no-majority',
]);
