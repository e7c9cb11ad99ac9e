/** getattr, fgetattr, access, chmod, chown, utimens, truncate, ftruncate, statfs. */

import { statArray, statfsArray } from '../attributes.ts';
import type { NativeHandlers } from '../binding.ts';
import { TimeKind } from '../binding.ts';
import { MountErrno, MountError } from '../errno.ts';
import { isVirtualPath, readOnlyError } from '../virtual.ts';
import { checkChangeable, type OperationContext } from './context.ts';

const permissionBits = 0o7777;
/** chown(2) passes (uid_t)-1 for "leave unchanged". */
const unchangedId = 0xffff_ffff;
const W_OK = 2;

type AttributeOperations = Pick<
  NativeHandlers,
  'getattr' | 'fgetattr' | 'access' | 'chmod' | 'chown' | 'utimens' | 'truncate' | 'ftruncate' | 'statfs'
>;

export function attributeOperations(context: OperationContext): AttributeOperations {
  const { client, files, virtual } = context;

  async function getattr(path: string): Promise<Uint32Array> {
    if (isVirtualPath(path)) return statArray(await virtual.attributes(path));
    return statArray(await client.getattr(path));
  }

  return {
    getattr,

    async fgetattr(path, fd) {
      // fh 0: no handle of ours (e.g. a directory); answer by path.
      if (fd === 0 && path !== null) return getattr(path);
      const file = files.get(fd);
      if (file.handle === undefined) return getattr(file.path);
      return statArray(await file.handle.attributes());
    },

    /** Only asked without default_permissions: the caller is unknown, so this checks existence. */
    async access(path, mode) {
      if (isVirtualPath(path)) {
        await virtual.attributes(path);
        if ((mode & W_OK) !== 0) throw readOnlyError(path);
        return;
      }
      await client.getattr(path);
    },

    async chmod(path, mode) {
      checkChangeable(path);
      await client.chmod(path, mode & permissionBits);
    },

    async chown(path, uid, gid) {
      checkChangeable(path);
      if (uid === unchangedId && gid === unchangedId) {
        await client.getattr(path);
        return;
      }
      let currentUid = uid;
      let currentGid = gid;
      if (uid === unchangedId || gid === unchangedId) {
        const attributes = await client.getattr(path);
        if (uid === unchangedId) currentUid = attributes.uid;
        if (gid === unchangedId) currentGid = attributes.gid;
      }
      await client.chown(path, currentUid, currentGid);
    },

    async utimens(path, atimeMs, mtimeMs, atimeKind, mtimeKind) {
      checkChangeable(path);
      const now = context.now();
      const resolve = (kind: number, ms: number): number | undefined => {
        if (kind === TimeKind.omit) return undefined;
        if (kind === TimeKind.now) return now;
        return ms;
      };
      await client.utimens(path, resolve(atimeKind, atimeMs), resolve(mtimeKind, mtimeMs));
    },

    async truncate(path, size) {
      checkChangeable(path);
      if (size < 0) throw new MountError(MountErrno.EINVAL, 'negative size');
      await client.truncate(path, size);
    },

    async ftruncate(_path, fd, size) {
      const file = files.get(fd);
      if (file.handle === undefined) throw readOnlyError(file.path);
      if (size < 0) throw new MountError(MountErrno.EINVAL, 'negative size');
      await file.handle.truncate(size);
    },

    async statfs() {
      return statfsArray(await client.statfs());
    },
  };
}
