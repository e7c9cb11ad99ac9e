/** readdir, mkdir, rmdir, fsyncdir. */
import type { NativeHandlers } from '../binding.ts';
import { isVirtualPath, virtualFolderPath } from '../virtual.ts';
import { checkChangeable, type OperationContext } from './context.ts';

const permissionBits = 0o7777;
const virtualName = virtualFolderPath.slice(1);

type DirectoryOperations = Pick<NativeHandlers, 'readdir' | 'mkdir' | 'rmdir' | 'fsyncdir'>;

export function directoryOperations(context: OperationContext): DirectoryOperations {
  const { client, virtual } = context;
  return {
    async readdir(path) {
      if (isVirtualPath(path)) return ['.', '..', ...virtual.readdir(path)];
      const names = (await client.readdir(path)).filter((name) => !(path === '/' && name === virtualName));
      if (path === '/' && !context.hideVirtualFolder) names.push(virtualName);
      return ['.', '..', ...names];
    },

    async mkdir(path, mode, uid, gid) {
      checkChangeable(path);
      await client.mkdir(path, mode & permissionBits, { uid, gid });
    },

    async rmdir(path) {
      checkChangeable(path);
      await client.rmdir(path);
    },

    /** Every namespace change is committed when its client call resolves: nothing to wait for. */
    async fsyncdir() {},
  };
}
