/**
 * `node fuse/clear-mount.ts MOUNTPOINT...`: clears FUSE mounts left by a crashed daemon (see
 * stuck-mount.ts). Without arguments, lists the FUSE mounts.
 */
import { resolve } from 'node:path';
import { clearStuckMount, listFuseMounts } from './stuck-mount.ts';

const targets = process.argv.slice(2);
if (targets.length === 0) {
  for (const mount of listFuseMounts())
    console.log(`${mount.mountpoint}\t${mount.fsType}\tconnection ${mount.connection}`);
} else {
  let failed = false;
  for (const target of targets) {
    const mountpoint = resolve(target);
    try {
      const result = await clearStuckMount(mountpoint);
      console.log(
        result.wasMounted
          ? `cleared ${mountpoint}${result.aborted ? ' (connection aborted)' : ''}`
          : `${mountpoint}: not a FUSE mount`,
      );
    } catch (error) {
      failed = true;
      console.error(`${mountpoint}: ${(error as Error).message}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}
