/** Scenario seeds, part D of 4 (the parts run in parallel under node --test). */
import { scenarioTests } from './scenario-suite.ts';

scenarioTests([
  'churn',
  'lowest-id-minority-reach',
  'persist-follower',
  'reelection',
  'figure8-unreliable',
  'many-elections',
  'step-down',
  'basic-agreement',
  'figure8-classic',
  'vote-amnesia',
]);
