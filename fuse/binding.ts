/**
 * The one place that touches fuse-native (CommonJS, unmaintained): loads the patched binding built
 * by scripts/build-fuse-native.mjs, and adapts fuse-native's callback protocol to promise-returning
 * handlers with the argument lists the patched C layer really passes.
 *
 * fuse-native's own JS layer is bypassed for every operation (we override its `_op_*` methods):
 * its fgetattr ignores the fd, its utimens/create/mkdir/mknod/symlink argument lists do not match
 * the patched C layer, its getxattr/listxattr overflow small buffers instead of failing with
 * ERANGE, and its unmount shells out to `fusermount`, which root-only machines may lack.
 */
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { promisify } from 'node:util';

const require = createRequire(import.meta.url);
const execFileAsync = promisify(execFile);

/** The patch level scripts/build-fuse-native.mjs builds; the mount refuses anything else. */
export const requiredPatchLevel = 1;

/** The kinds the patched C layer passes for each utimens time. */
export const TimeKind = { set: 0, now: 1, omit: 2 } as const;

/** Result of a handler: 0 or a byte count on success; a negative errno on failure. */
export type Signal = (result: number, ...values: unknown[]) => void;

/**
 * What the mount implements. Paths are null only for fd-based operations on an open file whose
 * name was removed (hard_remove + flag_nullpath_ok). Each handler returns the value fuse-native
 * expects or throws; `fuse/mount.ts` turns a throw into a negative errno.
 */
export interface NativeHandlers {
  getattr(path: string): Promise<Uint32Array>;
  fgetattr(path: string | null, fd: number): Promise<Uint32Array>;
  access(path: string, mode: number): Promise<void>;
  statfs(path: string): Promise<Uint32Array>;
  readdir(path: string): Promise<string[]>;
  open(path: string, flags: number): Promise<number>;
  create(path: string, mode: number, flags: number, uid: number, gid: number): Promise<number>;
  read(path: string | null, fd: number, buffer: Buffer, length: number, offset: number): Promise<number>;
  write(path: string | null, fd: number, buffer: Buffer, length: number, offset: number): Promise<number>;
  flush(path: string | null, fd: number): Promise<void>;
  fsync(path: string | null, datasync: boolean, fd: number): Promise<void>;
  fsyncdir(path: string | null, datasync: boolean, fd: number): Promise<void>;
  release(path: string | null, fd: number): Promise<void>;
  truncate(path: string, size: number): Promise<void>;
  ftruncate(path: string | null, fd: number, size: number): Promise<void>;
  utimens(
    path: string,
    atimeMs: number,
    mtimeMs: number,
    atimeKind: number,
    mtimeKind: number,
  ): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  chown(path: string, uid: number, gid: number): Promise<void>;
  mkdir(path: string, mode: number, uid: number, gid: number): Promise<void>;
  rmdir(path: string): Promise<void>;
  mknod(path: string, mode: number, rdev: number, uid: number, gid: number): Promise<void>;
  unlink(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  link(existing: string, path: string): Promise<void>;
  symlink(target: string, path: string, uid: number, gid: number): Promise<void>;
  readlink(path: string): Promise<string>;
  setxattr(path: string, name: string, value: Buffer, flags: number): Promise<void>;
  getxattr(path: string, name: string): Promise<Uint8Array>;
  listxattr(path: string): Promise<string[]>;
  removexattr(path: string, name: string): Promise<void>;
}

export type OperationName = keyof NativeHandlers;

/** How a handler failure becomes a negative errno (the mount supplies errnoOf plus logging). */
export type ErrorToErrno = (operation: OperationName, error: unknown, path: string | null) => number;

interface NativeBinding {
  readonly zhsm_patch_level?: number;
  fuse_native_unmount(mountpoint: string, thread: Buffer): void;
}

interface FuseNativeInstance {
  readonly mnt: string;
  _thread: Buffer | null;
  mount(callback: (error: Error | null) => void): void;
  unmount(callback: (error: Error | null) => void): void;
}

type FuseNativeConstructor = new (
  mountpoint: string,
  operations: Record<string, unknown>,
  options: Record<string, unknown>,
) => FuseNativeInstance;

export interface NativeMountOptions {
  /** The complete `-o...` option string handed to libfuse. */
  readonly optionString: string;
  /** Per-handler timeout in ms (fuse-native answers ETIMEDOUT after it); 0 disables it. */
  readonly handlerTimeoutMs: number;
}

export interface NativeMount {
  readonly mountpoint: string;
  /** Unmount (lazily if busy) and detach the FUSE thread from the event loop. */
  unmount(): Promise<void>;
}

const ERANGE = 34;
const maxXattrListBytes = 65536;

let cachedBinding: { Fuse: FuseNativeConstructor; binding: NativeBinding } | undefined;

/** Loads fuse-native; throws with a remedy if libfuse or the patched build is missing. */
export function loadFuseNative(options: { requirePatched: boolean } = { requirePatched: true }) {
  if (cachedBinding === undefined) {
    let Fuse: FuseNativeConstructor;
    let binding: NativeBinding;
    try {
      Fuse = require('fuse-native') as FuseNativeConstructor;
      const directory = dirname(require.resolve('fuse-native/package.json'));
      binding = (require('node-gyp-build') as (directory: string) => NativeBinding)(directory);
    } catch (error) {
      throw new Error(
        `fuse-native cannot be loaded (${(error as Error).message}); on Debian: apt-get install libfuse2, then npm ci`,
        { cause: error },
      );
    }
    cachedBinding = { Fuse, binding };
  }
  if (options.requirePatched && cachedBinding.binding.zhsm_patch_level !== requiredPatchLevel) {
    throw new Error(
      `fuse-native is not zhsm's patched build (patch level ${cachedBinding.binding.zhsm_patch_level ?? 'none'}, ` +
        `need ${requiredPatchLevel}): run node scripts/build-fuse-native.mjs`,
    );
  }
  return cachedBinding;
}

function double(low: number, high: number): number {
  return low + high * 4294967296;
}

/**
 * Mounts with the given handlers (an operation left out is not registered with libfuse). Resolves
 * when the kernel has sent INIT (the mount is live).
 */
export async function nativeMount(
  mountpoint: string,
  handlers: Partial<NativeHandlers>,
  errnoFor: ErrorToErrno,
  options: NativeMountOptions,
): Promise<NativeMount> {
  const { Fuse, binding } = loadFuseNative();

  function run<T>(
    operation: OperationName,
    path: string | null,
    signal: Signal,
    call: () => Promise<T>,
    reply: (value: T) => void,
    replyError: (errno: number) => void = (errno) => signal(-errno),
  ): void {
    let promise: Promise<T>;
    try {
      promise = call();
    } catch (error) {
      replyError(errnoFor(operation, error, path));
      return;
    }
    promise.then(reply, (error: unknown) => replyError(errnoFor(operation, error, path)));
  }

  class ZhsmFuse extends Fuse {
    _fuseOptions(): string {
      return options.optionString;
    }

    _op_getattr(signal: Signal, path: string) {
      run(
        'getattr',
        path,
        signal,
        () => handlers.getattr!(path),
        (stat) => signal(0, stat),
      );
    }
    _op_fgetattr(signal: Signal, path: string | null, fd: number) {
      run(
        'fgetattr',
        path,
        signal,
        () => handlers.fgetattr!(path, fd),
        (stat) => signal(0, stat),
      );
    }
    _op_access(signal: Signal, path: string, mode: number) {
      run(
        'access',
        path,
        signal,
        () => handlers.access!(path, mode),
        () => signal(0),
      );
    }
    _op_statfs(signal: Signal, path: string) {
      run(
        'statfs',
        path,
        signal,
        () => handlers.statfs!(path),
        (ints) => signal(0, ints),
      );
    }
    _op_readdir(signal: Signal, path: string) {
      run(
        'readdir',
        path,
        signal,
        () => handlers.readdir!(path),
        (names) => signal(0, names, []),
      );
    }
    _op_open(signal: Signal, path: string, flags: number) {
      run(
        'open',
        path,
        signal,
        () => handlers.open!(path, flags),
        (fd) => signal(0, fd),
      );
    }
    _op_create(signal: Signal, path: string, mode: number, flags: number, uid: number, gid: number) {
      run(
        'create',
        path,
        signal,
        () => handlers.create!(path, mode, flags, uid, gid),
        (fd) => signal(0, fd),
      );
    }
    _op_read(
      signal: Signal,
      path: string | null,
      fd: number,
      buffer: Buffer,
      length: number,
      low: number,
      high: number,
    ) {
      run(
        'read',
        path,
        signal,
        () => handlers.read!(path, fd, buffer, length, double(low, high)),
        (bytes) => signal(bytes, 0, buffer.buffer),
        (errno) => signal(-errno, 0, buffer.buffer),
      );
    }
    _op_write(
      signal: Signal,
      path: string | null,
      fd: number,
      buffer: Buffer,
      length: number,
      low: number,
      high: number,
    ) {
      run(
        'write',
        path,
        signal,
        () => handlers.write!(path, fd, buffer, length, double(low, high)),
        (bytes) => signal(bytes, 0, buffer.buffer),
        (errno) => signal(-errno, 0, buffer.buffer),
      );
    }
    _op_flush(signal: Signal, path: string | null, fd: number) {
      run(
        'flush',
        path,
        signal,
        () => handlers.flush!(path, fd),
        () => signal(0),
      );
    }
    _op_fsync(signal: Signal, path: string | null, datasync: number, fd: number) {
      run(
        'fsync',
        path,
        signal,
        () => handlers.fsync!(path, datasync !== 0, fd),
        () => signal(0),
      );
    }
    _op_fsyncdir(signal: Signal, path: string | null, datasync: number, fd: number) {
      run(
        'fsyncdir',
        path,
        signal,
        () => handlers.fsyncdir!(path, datasync !== 0, fd),
        () => signal(0),
      );
    }
    _op_release(signal: Signal, path: string | null, fd: number) {
      run(
        'release',
        path,
        signal,
        () => handlers.release!(path, fd),
        () => signal(0),
      );
    }
    _op_truncate(signal: Signal, path: string, low: number, high: number) {
      run(
        'truncate',
        path,
        signal,
        () => handlers.truncate!(path, double(low, high)),
        () => signal(0),
      );
    }
    _op_ftruncate(signal: Signal, path: string | null, fd: number, low: number, high: number) {
      run(
        'ftruncate',
        path,
        signal,
        () => handlers.ftruncate!(path, fd, double(low, high)),
        () => signal(0),
      );
    }
    _op_utimens(
      signal: Signal,
      path: string,
      atimeMs: number,
      mtimeMs: number,
      atimeKind: number,
      mtimeKind: number,
    ) {
      run(
        'utimens',
        path,
        signal,
        () => handlers.utimens!(path, atimeMs, mtimeMs, atimeKind, mtimeKind),
        () => signal(0),
      );
    }
    _op_chmod(signal: Signal, path: string, mode: number) {
      run(
        'chmod',
        path,
        signal,
        () => handlers.chmod!(path, mode),
        () => signal(0),
      );
    }
    _op_chown(signal: Signal, path: string, uid: number, gid: number) {
      run(
        'chown',
        path,
        signal,
        () => handlers.chown!(path, uid, gid),
        () => signal(0),
      );
    }
    _op_mkdir(signal: Signal, path: string, mode: number, uid: number, gid: number) {
      run(
        'mkdir',
        path,
        signal,
        () => handlers.mkdir!(path, mode, uid, gid),
        () => signal(0),
      );
    }
    _op_rmdir(signal: Signal, path: string) {
      run(
        'rmdir',
        path,
        signal,
        () => handlers.rmdir!(path),
        () => signal(0),
      );
    }
    _op_mknod(signal: Signal, path: string, mode: number, rdev: number, uid: number, gid: number) {
      run(
        'mknod',
        path,
        signal,
        () => handlers.mknod!(path, mode, rdev, uid, gid),
        () => signal(0),
      );
    }
    _op_unlink(signal: Signal, path: string) {
      run(
        'unlink',
        path,
        signal,
        () => handlers.unlink!(path),
        () => signal(0),
      );
    }
    _op_rename(signal: Signal, from: string, to: string) {
      run(
        'rename',
        from,
        signal,
        () => handlers.rename!(from, to),
        () => signal(0),
      );
    }
    _op_link(signal: Signal, existing: string, path: string) {
      run(
        'link',
        path,
        signal,
        () => handlers.link!(existing, path),
        () => signal(0),
      );
    }
    _op_symlink(signal: Signal, target: string, path: string, uid: number, gid: number) {
      run(
        'symlink',
        path,
        signal,
        () => handlers.symlink!(target, path, uid, gid),
        () => signal(0),
      );
    }
    _op_readlink(signal: Signal, path: string) {
      run(
        'readlink',
        path,
        signal,
        () => handlers.readlink!(path),
        (target) => signal(0, target),
      );
    }
    _op_setxattr(
      signal: Signal,
      path: string,
      name: string,
      value: Buffer,
      _position: number,
      flags: number,
    ) {
      run(
        'setxattr',
        path,
        signal,
        () => handlers.setxattr!(path, name, Buffer.from(value), flags),
        () => signal(0, value.buffer),
        (errno) => signal(-errno, value.buffer),
      );
    }
    _op_getxattr(signal: Signal, path: string, name: string, buffer: Buffer, _position: number) {
      run(
        'getxattr',
        path,
        signal,
        () => handlers.getxattr!(path, name),
        (value) => {
          if (buffer.length === 0) return signal(value.length, buffer.buffer);
          if (value.length > buffer.length) return signal(-ERANGE, buffer.buffer);
          buffer.set(value);
          signal(value.length, buffer.buffer);
        },
        (errno) => signal(-errno, buffer.buffer),
      );
    }
    _op_listxattr(signal: Signal, path: string, buffer: Buffer) {
      run(
        'listxattr',
        path,
        signal,
        () => handlers.listxattr!(path),
        (names) => {
          const list = Buffer.from(names.map((name) => `${name}\0`).join(''));
          if (list.length > maxXattrListBytes) return signal(-ERANGE, buffer.buffer);
          if (buffer.length === 0) return signal(list.length, buffer.buffer);
          if (list.length > buffer.length) return signal(-ERANGE, buffer.buffer);
          buffer.set(list);
          signal(list.length, buffer.buffer);
        },
        (errno) => signal(-errno, buffer.buffer),
      );
    }
    _op_removexattr(signal: Signal, path: string, name: string) {
      run(
        'removexattr',
        path,
        signal,
        () => handlers.removexattr!(path, name),
        () => signal(0),
      );
    }

    _close(callback: (error: Error | null) => void): void {
      unmountMountpoint(this.mnt).then(
        () => {
          try {
            if (this._thread !== null) binding.fuse_native_unmount(this.mnt, this._thread);
            callback(null);
          } catch (error) {
            callback(error as Error);
          }
        },
        (error: Error) => callback(error),
      );
    }
  }

  // fuse-native registers a C operation for each key here; libfuse answers the others itself
  // (ENOSYS, after which the kernel stops asking, e.g. for flush).
  const registered: Record<string, unknown> = {};
  for (const name of Object.keys(handlers) as OperationName[]) {
    if (handlers[name] !== undefined) registered[name] = true;
  }
  const fuse = new ZhsmFuse(mountpoint, registered, {
    timeout: options.handlerTimeoutMs > 0 ? options.handlerTimeoutMs : false,
  });
  await new Promise<void>((resolve, reject) =>
    fuse.mount((error) =>
      error ? reject(new Error(`mounting ${mountpoint} failed: ${error.message}`)) : resolve(),
    ),
  );
  let unmounting: Promise<void> | undefined;
  return {
    mountpoint: fuse.mnt,
    unmount() {
      unmounting ??= new Promise<void>((resolve, reject) =>
        fuse.unmount((error) => (error ? reject(error) : resolve())),
      );
      return unmounting;
    },
  };
}

/**
 * Unmounts a FUSE mountpoint without touching it: `umount` as root (lazy if busy), else
 * `fusermount -u` (lazy if busy). Never stats the mountpoint (that could hang on a dead daemon).
 */
export async function unmountMountpoint(mountpoint: string): Promise<void> {
  const root = process.getuid?.() === 0;
  const attempts: Array<[string, string[]]> = root
    ? [
        ['umount', [mountpoint]],
        ['umount', ['-l', mountpoint]],
      ]
    : [
        ['fusermount', ['-u', mountpoint]],
        ['fusermount', ['-uz', mountpoint]],
      ];
  let lastError: unknown;
  for (const [command, args] of attempts) {
    try {
      await execFileAsync(command, args, { timeout: 30_000 });
      return;
    } catch (error) {
      lastError = error;
      const stderr = String((error as { stderr?: unknown }).stderr ?? '');
      if (/not mounted|not found in \/etc\/mtab|no mount point specified/i.test(stderr)) return;
    }
  }
  throw new Error(`unmounting ${mountpoint} failed: ${(lastError as Error).message}`, { cause: lastError });
}
