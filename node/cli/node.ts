/**
 * zhsm-node: the peer daemon's command line (init, join, start, mount/unmount, token create/revoke).
 * See `zhsm-node --help` and the README. The commands are in node-cli.ts, loaded after startup.ts.
 */
import './startup.ts';

await import('./node-cli.ts');
