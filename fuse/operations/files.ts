/** open, create, read, write, flush, fsync, release: everything that goes through an fd. */
import type { FileHandle } from '../../node/client/api.ts';
import type { NativeHandlers } from '../binding.ts';
import { MountErrno, MountError } from '../errno.ts';
import { isExclusive, isWriteMode, openOptionsOf } from '../flags.ts';
import { ReadAhead } from '../read-ahead.ts';
import { isVirtualPath, readOnlyError } from '../virtual.ts';
import { checkChangeable, type OperationContext } from './context.ts';

const permissionBits = 0o7777;

type FileOperations = Pick<
  NativeHandlers,
  'open' | 'create' | 'read' | 'write' | 'flush' | 'fsync' | 'release'
>;

export function fileOperations(context: OperationContext): FileOperations {
  const { client, files, virtual } = context;

  /** Registers a client handle; closes it again if the table refuses it. */
  async function register(path: string, handle: FileHandle, flags: number): Promise<number> {
    const options = openOptionsOf(flags);
    const readAhead =
      options.mode === 'read' && context.readAhead !== undefined
        ? new ReadAhead((offset, length, into) => handle.read(offset, length, into), context.readAhead)
        : undefined;
    try {
      return files.add({
        path,
        mode: options.mode,
        openedAtMs: context.now(),
        handle,
        ...(readAhead === undefined ? {} : { readAhead }),
      });
    } catch (error) {
      await handle.close().catch(() => {});
      throw error;
    }
  }

  return {
    async open(path, flags) {
      const options = openOptionsOf(flags);
      if (isVirtualPath(path)) {
        if (isWriteMode(options.mode) || options.truncate === true) throw readOnlyError(path);
        const content = await virtual.open(path);
        return files.add({ path, mode: options.mode, openedAtMs: context.now(), content });
      }
      files.reserve();
      return register(path, await client.open(path, options), flags);
    },

    async create(path, mode, flags, uid, gid) {
      checkChangeable(path);
      files.reserve();
      const options = openOptionsOf(flags);
      const handle = await client.create(
        path,
        mode & permissionBits,
        { uid, gid },
        { ...options, exclusive: isExclusive(flags) },
      );
      return register(path, handle, flags);
    },

    async read(_path, fd, buffer, length, offset) {
      const file = files.get(fd);
      if (file.content !== undefined) {
        const slice = file.content.subarray(Math.min(offset, file.content.length), offset + length);
        buffer.set(slice);
        return slice.length;
      }
      const data = await (file.readAhead?.read(offset, length) ?? file.handle!.read(offset, length));
      if (data.length > length) throw new MountError(MountErrno.EIO, 'client returned more than asked');
      buffer.set(data);
      return data.length;
    },

    async write(_path, fd, buffer, length, offset) {
      const file = files.get(fd);
      if (file.handle === undefined) throw readOnlyError(file.path);
      // The kernel's buffer stays valid until we answer, and we answer once the write settles:
      // the client copies what it keeps before that (FileHandle.write), so no copy here.
      return await file.handle.write(offset, buffer.subarray(0, length));
    },

    async flush(_path, fd) {
      const file = files.get(fd);
      if (file.handle !== undefined && isWriteMode(file.mode)) await file.handle.flush();
    },

    async fsync(_path, _datasync, fd) {
      const file = files.get(fd);
      if (file.handle !== undefined) await file.handle.fsync();
    },

    async release(_path, fd) {
      const file = files.remove(fd);
      file?.readAhead?.close();
      if (file?.handle !== undefined) await file.handle.close();
    },
  };
}
