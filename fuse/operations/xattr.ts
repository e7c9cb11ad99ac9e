/** getxattr, setxattr, listxattr, removexattr. */
import type { NativeHandlers } from '../binding.ts';
import { MountErrno, MountError } from '../errno.ts';
import { isVirtualPath, readOnlyError } from '../virtual.ts';
import { checkChangeable, type OperationContext } from './context.ts';

const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const nameBytesMax = 255;
const valueBytesMax = 65536;

/**
 * POSIX ACLs travel as these xattrs. A FUSE 2 mount cannot have the kernel enforce them, so storing
 * them would claim protection that does not exist: report "not supported" (tools fall back to the
 * mode bits, as on a filesystem mounted without ACL support).
 */
function isAcl(name: string): boolean {
  return name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
}

function checkName(name: string): void {
  if (Buffer.byteLength(name) > nameBytesMax) throw new MountError(MountErrno.ERANGE, 'xattr name too long');
  if (name.length === 0) throw new MountError(MountErrno.ERANGE, 'empty xattr name');
}

type XattrOperations = Pick<NativeHandlers, 'getxattr' | 'setxattr' | 'listxattr' | 'removexattr'>;

export function xattrOperations(context: OperationContext): XattrOperations {
  const { client, virtual } = context;
  return {
    async getxattr(path, name) {
      checkName(name);
      if (isVirtualPath(path) || isAcl(name)) {
        if (isVirtualPath(path)) await virtual.attributes(path);
        else await client.getattr(path);
        throw new MountError(MountErrno.ENODATA, `no attribute ${name}`);
      }
      return client.getxattr(path, name);
    },

    async setxattr(path, name, value, flags) {
      checkChangeable(path);
      checkName(name);
      if (isAcl(name)) throw new MountError(MountErrno.ENOTSUP, 'POSIX ACLs are not supported');
      if (value.length > valueBytesMax) throw new MountError(MountErrno.E2BIG, 'xattr value too large');
      if ((flags & XATTR_CREATE) !== 0 && (flags & XATTR_REPLACE) !== 0) {
        throw new MountError(MountErrno.EINVAL, 'XATTR_CREATE and XATTR_REPLACE');
      }
      await client.setxattr(path, name, value, {
        create: (flags & XATTR_CREATE) !== 0,
        replace: (flags & XATTR_REPLACE) !== 0,
      });
    },

    async listxattr(path) {
      if (isVirtualPath(path)) {
        await virtual.attributes(path);
        return [];
      }
      return client.listxattr(path);
    },

    async removexattr(path, name) {
      if (isVirtualPath(path)) throw readOnlyError(path);
      checkName(name);
      if (isAcl(name)) {
        await client.getattr(path);
        throw new MountError(MountErrno.ENODATA, `no attribute ${name}`);
      }
      await client.removexattr(path, name);
    },
  };
}
