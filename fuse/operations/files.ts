/** open, create, read, write, flush, fsync, release: everything that goes through an fd. */
import type { FileHandle } from '../../node/client/api.ts';
import { PiecePool } from '../../node/store/piece-pool.ts';
import type { NativeHandlers } from '../binding.ts';
import { MountErrno, MountError } from '../errno.ts';
import { isExclusive, isWriteMode, openOptionsOf } from '../flags.ts';
import { ReadAhead } from '../read-ahead.ts';
import { isVirtualPath, readOnlyError } from '../virtual.ts';
import { checkChangeable, type OperationContext } from './context.ts';

const permissionBits = 0o7777;
/** The largest write request libfuse 2 passes (max_write is capped at 128 KiB). */
const writeRequestBytesMax = 128 * 1024;
/** Idle copy buffers kept for write requests. */
const writeCopiesIdleMax = 32;

type FileOperations = Pick<
  NativeHandlers,
  'open' | 'create' | 'read' | 'write' | 'flush' | 'fsync' | 'release'
>;

export function fileOperations(context: OperationContext): FileOperations {
  const { client, files, virtual } = context;
  // Write requests are copied out of the kernel's buffer into pooled buffers (reused once the
  // client's write settles): fresh 128 KiB ArrayBuffers at write speed make V8 run a full
  // collection every ~64 MiB (see node/store/piece-pool.ts).
  const writeCopies = new PiecePool(writeRequestBytesMax, writeCopiesIdleMax);

  /** Registers a client handle; closes it again if the table refuses it. */
  async function register(path: string, handle: FileHandle, flags: number): Promise<number> {
    const options = openOptionsOf(flags);
    const readAhead =
      options.mode === 'read' && context.readAhead !== undefined
        ? new ReadAhead((offset, length) => handle.read(offset, length), context.readAhead)
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
      // The kernel's buffer is detached once we answer: hand the client its own copy.
      const copy =
        length <= writeRequestBytesMax ? writeCopies.take().subarray(0, length) : Buffer.allocUnsafe(length);
      copy.set(buffer.subarray(0, length));
      try {
        return await file.handle.write(offset, copy);
      } finally {
        writeCopies.give(copy);
      }
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
