/**
 * zhsm: the operations CLI (status, servers, power, chains, migrate, rebuild, scrub, ...). See
 * `zhsm --help` and the README. The commands are in zhsm-cli.ts, loaded after startup.ts
 * (from the bundle in dist/ when it is current, see bundle.ts).
 */
import './startup.ts';
import { bundled } from './bundle.ts';

// The bundle when it is current (node/cli/bundle.ts), else the sources.
await import(bundled('zhsm.mjs') ?? './zhsm-cli.ts');
