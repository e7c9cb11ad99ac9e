/**
 * zhsm: the operations CLI (status, servers, power, chains, migrate, rebuild, scrub, ...). See
 * `zhsm --help` and the README. The commands are in zhsm-cli.ts, loaded after startup.ts.
 */
import './startup.ts';

await import('./zhsm-cli.ts');
