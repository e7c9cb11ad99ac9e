/** What every operation module shares, and the checks they have in common. */
import type { FsClient } from '../../node/client/api.ts';
import { MountErrno, MountError } from '../errno.ts';
import type { OpenFileTable } from '../handles.ts';
import type { ReadAheadOptions } from '../read-ahead.ts';
import { isVirtualPath, readOnlyError, type VirtualFolder } from '../virtual.ts';

export interface OperationContext {
  readonly client: FsClient;
  readonly files: OpenFileTable;
  readonly virtual: VirtualFolder;
  readonly now: () => number;
  /** Leave `.zhsm` out of the root's listing (it stays reachable by path). */
  readonly hideVirtualFolder: boolean;
  /** Read-ahead of read-only opens (none when undefined). */
  readonly readAhead?: ReadAheadOptions;
}

/** NAME_MAX: the longest file name component, in bytes. */
export const nameBytesMax = 255;

/** Paths the kernel names for a change: never inside /.zhsm, and no component too long. */
export function checkChangeable(...paths: string[]): void {
  for (const path of paths) {
    if (isVirtualPath(path)) throw readOnlyError(path);
    const name = path.slice(path.lastIndexOf('/') + 1);
    if (Buffer.byteLength(name) > nameBytesMax) {
      throw new MountError(MountErrno.ENAMETOOLONG, `name longer than ${nameBytesMax} bytes`);
    }
  }
}

/** An fd-based operation may arrive without a path (the file was unlinked while open). */
export function pathOrFd(path: string | null, fd: number): string {
  return path ?? `<unlinked fd ${fd}>`;
}
