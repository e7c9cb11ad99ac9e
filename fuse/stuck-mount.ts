/**
 * Clearing a FUSE mount whose daemon died (every access then fails with ENOTCONN, or hangs if the
 * daemon is alive but stuck). Never touches the mountpoint itself: it finds the mount in
 * /proc/self/mountinfo, aborts its FUSE connection through fusectl (so hung requests fail at
 * once), then detaches it lazily.
 *
 * The one command for a crashed daemon: `umount -l MOUNTPOINT` (root) or `fusermount -uz
 * MOUNTPOINT` (the user who mounted). `node fuse/clear-mount.ts MOUNTPOINT` does all of this.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { unmountMountpoint } from './binding.ts';

const execFileAsync = promisify(execFile);
const fusectlRoot = '/sys/fs/fuse/connections';

export interface FuseMountEntry {
  readonly mountpoint: string;
  /** The FUSE connection id: the minor number of the mount's device. */
  readonly connection: number;
  readonly fsType: string;
}

/** FUSE mounts of this mount namespace (from /proc/self/mountinfo; mountpoints unescaped). */
export function listFuseMounts(): FuseMountEntry[] {
  const decodeOctal = (text: string) =>
    text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
  const entries: FuseMountEntry[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const fields = left.split(' ');
    const fsType = right.split(' ')[0] ?? '';
    if (!fsType.startsWith('fuse') || fsType === 'fusectl') continue;
    const device = fields[2]?.split(':');
    entries.push({ mountpoint: decodeOctal(fields[4] ?? ''), connection: Number(device?.[1]), fsType });
  }
  return entries;
}

/**
 * Aborts the FUSE connection behind a mount (root only); returns whether it did. Mounts fusectl
 * for the purpose if needed, and unmounts it again afterwards.
 */
export async function abortConnection(connection: number): Promise<boolean> {
  let mountedFusectl = false;
  try {
    if (!existsSync(`${fusectlRoot}/${connection}`)) {
      await execFileAsync('mount', ['-t', 'fusectl', 'none', fusectlRoot]);
      mountedFusectl = true;
    }
    writeFileSync(`${fusectlRoot}/${connection}/abort`, '1');
    return true;
  } catch {
    return false;
  } finally {
    if (mountedFusectl) await execFileAsync('umount', [fusectlRoot]).catch(() => {});
  }
}

/** Clears a stuck or orphaned FUSE mount. Resolves once it is gone; a no-op if it is not mounted. */
export async function clearStuckMount(
  mountpoint: string,
): Promise<{ aborted: boolean; wasMounted: boolean }> {
  const entry = listFuseMounts().find((mount) => mount.mountpoint === mountpoint);
  if (entry === undefined) return { aborted: false, wasMounted: false };
  const aborted = await abortConnection(entry.connection);
  await unmountMountpoint(mountpoint);
  return { aborted, wasMounted: true };
}
