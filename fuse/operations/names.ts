/** unlink, rename, link, symlink, readlink, mknod. */
import type { NativeHandlers } from '../binding.ts';
import { MountErrno, MountError } from '../errno.ts';
import { isVirtualPath } from '../virtual.ts';
import { checkChangeable, type OperationContext } from './context.ts';

type NameOperations = Pick<NativeHandlers, 'unlink' | 'rename' | 'link' | 'symlink' | 'readlink' | 'mknod'>;

/** The longest symlink target (PATH_MAX). */
const symlinkTargetBytesMax = 4096;

export function nameOperations(context: OperationContext): NameOperations {
  const { client, virtual } = context;
  return {
    async unlink(path) {
      checkChangeable(path);
      await client.unlink(path);
    },

    async rename(from, to) {
      checkChangeable(from, to);
      await client.rename(from, to);
    },

    async link(existing, path) {
      checkChangeable(existing, path);
      await client.link(existing, path);
    },

    async symlink(target, path, uid, gid) {
      checkChangeable(path);
      if (Buffer.byteLength(target) >= symlinkTargetBytesMax) {
        throw new MountError(MountErrno.ENAMETOOLONG, 'symlink target too long');
      }
      await client.symlink(target, path, { uid, gid });
    },

    async readlink(path) {
      if (isVirtualPath(path)) {
        await virtual.attributes(path);
        throw new MountError(MountErrno.EINVAL, `${path} is not a symlink`);
      }
      return client.readlink(path);
    },

    async mknod(path, mode, rdev, uid, gid) {
      checkChangeable(path);
      await client.mknod(path, mode, rdev, { uid, gid });
    },
  };
}
