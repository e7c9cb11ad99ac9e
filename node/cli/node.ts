/**
 * zhsm-node: the peer daemon's command line (init, join, start, mount/unmount, token create/revoke).
 * See `zhsm-node --help` and the README. The commands are in node-cli.ts, loaded after startup.ts
 * (from the bundle in dist/ when it is current, see bundle.ts).
 */
import './startup.ts';
import { bundled } from './bundle.ts';

// The bundle when it is current (node/cli/bundle.ts), else the sources.
await import(bundled('zhsm-node.mjs') ?? './node-cli.ts');
