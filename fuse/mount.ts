/**
 * The FUSE mount: serves an FsClient (node/client/api.ts) as a POSIX tree at a mountpoint.
 *
 *   const mount = await mountFs(client, '/mnt/cell', { logger });
 *   ...
 *   await mount.unmount();
 *
 * Rules this module keeps (see fuse/README.md for the reasons and the numbers):
 * - The serving process never touches its own mount: FUSE callbacks run on this event loop, so a
 *   synchronous access from here would deadlock. Everything after the mount goes through the kernel
 *   from other processes.
 * - `process.umask(0)`: the kernel already applied the caller's umask to every mode it sends.
 * - Ownership: the patched binding passes the caller's uid/gid for create, mkdir, mknod and symlink,
 *   so new objects belong to whoever made them; with `default_permissions` the kernel checks every
 *   access against the uid/gid/mode the client reports.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { FsClient } from '../node/client/api.ts';
import { ChunkBufferPool } from '../node/client/buffer-pool.ts';
import { createLogger, type Logger } from '../node/common/log.ts';
import { type NativeHandlers, nativeMount, type OperationName } from './binding.ts';
import { createErrnoMapper, mountErrnoOf } from './errno.ts';
import { OpenFileTable } from './handles.ts';
import { attributeOperations } from './operations/attributes.ts';
import type { OperationContext } from './operations/context.ts';
import { directoryOperations } from './operations/directories.ts';
import { fileOperations } from './operations/files.ts';
import { nameOperations } from './operations/names.ts';
import { xattrOperations } from './operations/xattr.ts';
import { ReadAheadBudget, type ReadAheadOptions } from './read-ahead.ts';
import { clearStuckMount, listFuseMounts } from './stuck-mount.ts';
import { type VirtualFileName, type VirtualFileProvider, VirtualFolder } from './virtual.ts';

/**
 * How the kernel page cache treats file data:
 * - 'auto' (default): kept across opens while the file's mtime and size are unchanged, dropped on
 *   open otherwise: close-to-open coherence between peers (`auto_cache`).
 * - 'kernel': never dropped on open (`kernel_cache`): fastest, coherent only when this mount is the
 *   only writer of the cell (a single-peer cell, a passthrough of a local directory).
 * - 'none': dropped on every open.
 */
export type DataCacheMode = 'auto' | 'kernel' | 'none';

export interface MountOptions {
  readonly logger?: Logger;
  /**
   * Per-operation timeout in ms; an operation still running then fails with ETIMEDOUT. A read may
   * wait for a sleeping storage server to wake (a RAID can take five minutes), so the default is
   * generous: 10 minutes. 0 disables the timeout.
   */
  readonly handlerTimeoutMs?: number;
  /**
   * How long (s) the kernel caches attributes and names. This is the coherence bound for metadata
   * changed on another peer: visible here within this time (default 1 s). Changes made through
   * this mount are visible at once.
   */
  readonly attributeTimeoutSeconds?: number;
  readonly entryTimeoutSeconds?: number;
  /** How long (s) the kernel remembers that a name does not exist (default 0: files created on another peer appear at once). */
  readonly negativeTimeoutSeconds?: number;
  readonly dataCache?: DataCacheMode;
  /** Let other users than the daemon's use the mount (default: when running as root). */
  readonly allowOther?: boolean;
  /** Kernel permission checks from the reported uid/gid/mode (default true). */
  readonly defaultPermissions?: boolean;
  /** Largest write request in bytes (libfuse 2 caps it at 128 KiB). */
  readonly maxWriteBytes?: number;
  /** Kernel read-ahead for the mount in KiB, set through sysfs when permitted (default 1024). */
  readonly readAheadKb?: number;
  /**
   * The mount's own read-ahead for files opened read-only and read sequentially: whole aligned
   * pieces of `readAheadPieceBytes` (default 4 MiB, the client's chunk size), up to
   * `readAheadPieces` ahead of the reader (default 4; 0 turns it off), at most
   * `readAheadBudgetBytes` for all open files together (default 256 MiB). See read-ahead.ts.
   */
  readonly readAheadPieces?: number;
  readonly readAheadPieceBytes?: number;
  readonly readAheadBudgetBytes?: number;
  readonly openFilesMax?: number;
  /** Contents of /.zhsm/{tokens,servers,status}; default: this mount's own open files and state. */
  readonly virtualFiles?: VirtualFileProvider;
  /** Leave `.zhsm` out of the root listing (default true); it stays reachable by path. */
  readonly hideVirtualFolder?: boolean;
  /** Unmount cleanly on SIGINT/SIGTERM, then exit (default false: the daemon decides). */
  readonly unmountOnSignals?: boolean;
  /**
   * Remove a name at once even while the file is open (`hard_remove`; default true). Without it
   * libfuse renames open, unlinked files to `.fuse_hidden*`, which a replicating filesystem would
   * store and show to other peers. With it, read/write/close of such a file work by fd, but its
   * fstat fails with ENOENT (the kernel asks by inode and libfuse cannot name it).
   */
  readonly hardRemove?: boolean;
  /**
   * The daemon's umask, set at mount (default 0: the kernel already applied the caller's umask to
   * every mode it sends). Process-wide: files the daemon itself creates with default modes (stores,
   * logs) get exactly the mode they ask for, so such code should ask for 0o600/0o700 explicitly.
   */
  readonly umask?: number;
  /**
   * A FUSE mount already at the mountpoint (a crashed daemon's) is cleared first (fusectl abort +
   * lazy unmount) instead of failing the mount. Only for a caller that knows no live daemon serves
   * it (default false).
   */
  readonly replaceStaleMount?: boolean;
  /** The name shown in `mount` and `df` (default 'zhsm'). */
  readonly fsName?: string;
  readonly now?: () => number;
  /**
   * Called when an operation ends: its name, the seconds it took, and 0 or the errno it was
   * answered with (metrics: node/daemon/metrics.ts).
   */
  readonly onOperation?: (operation: OperationName, seconds: number, errno: number) => void;
}

export interface Mount {
  readonly mountpoint: string;
  /** Unmounts (lazily if the mount is busy), then closes the handles the kernel left open (releasing their tokens). */
  unmount(): Promise<void>;
}

export const mountDefaults = {
  handlerTimeoutMs: 600_000,
  attributeTimeoutSeconds: 1,
  entryTimeoutSeconds: 1,
  negativeTimeoutSeconds: 0,
  dataCache: 'auto' as DataCacheMode,
  defaultPermissions: true,
  maxWriteBytes: 131072,
  readAheadKb: 1024,
  readAheadPieces: 4,
  readAheadPieceBytes: 4 * 1024 * 1024,
  readAheadBudgetBytes: 256 * 1024 * 1024,
  openFilesMax: 65536,
  hideVirtualFolder: true,
  hardRemove: true,
  umask: 0,
  fsName: 'zhsm',
} as const;

/** The mount's read-ahead settings (undefined: off). */
function readAheadOf(options: MountOptions): ReadAheadOptions | undefined {
  const pieces = options.readAheadPieces ?? mountDefaults.readAheadPieces;
  const pieceBytes = options.readAheadPieceBytes ?? mountDefaults.readAheadPieceBytes;
  const budgetBytes = options.readAheadBudgetBytes ?? mountDefaults.readAheadBudgetBytes;
  for (const [name, value] of [
    ['readAheadPieces', pieces],
    ['readAheadPieceBytes', pieceBytes],
    ['readAheadBudgetBytes', budgetBytes],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be an integer >= 0`);
  }
  if (pieces === 0 || pieceBytes === 0 || budgetBytes < pieceBytes) return undefined;
  return {
    pieces,
    pieceBytes,
    budget: new ReadAheadBudget(budgetBytes),
    buffers: new ChunkBufferPool(pieceBytes, Math.floor(budgetBytes / pieceBytes)),
  };
}

function checkSeconds(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be >= 0, got ${value}`);
  return value;
}

/** The libfuse option string. fuse-native's own option builder is bypassed (it knows too few). */
export function mountOptionString(options: MountOptions): string {
  const fsName = options.fsName ?? mountDefaults.fsName;
  if (!/^[\w.-]+$/.test(fsName)) throw new RangeError(`fsName must be [A-Za-z0-9_.-]+, got ${fsName}`);
  const maxWrite = options.maxWriteBytes ?? mountDefaults.maxWriteBytes;
  if (!Number.isInteger(maxWrite) || maxWrite < 4096 || maxWrite > 131072) {
    throw new RangeError(`maxWriteBytes must be 4096..131072, got ${maxWrite}`);
  }
  const list = [
    `fsname=${fsName}`,
    `subtype=${fsName}`,
    'big_writes',
    `max_write=${maxWrite}`,
    'use_ino',
    ...((options.hardRemove ?? mountDefaults.hardRemove) ? ['hard_remove'] : []),
    'atomic_o_trunc',
    `attr_timeout=${checkSeconds('attributeTimeoutSeconds', options.attributeTimeoutSeconds ?? mountDefaults.attributeTimeoutSeconds)}`,
    `entry_timeout=${checkSeconds('entryTimeoutSeconds', options.entryTimeoutSeconds ?? mountDefaults.entryTimeoutSeconds)}`,
    `negative_timeout=${checkSeconds('negativeTimeoutSeconds', options.negativeTimeoutSeconds ?? mountDefaults.negativeTimeoutSeconds)}`,
  ];
  const cache = options.dataCache ?? mountDefaults.dataCache;
  // ac_attr_timeout=0: every open compares mtime and size with what the page cache holds.
  if (cache === 'auto') list.push('auto_cache', 'ac_attr_timeout=0');
  else if (cache === 'kernel') list.push('kernel_cache');
  if (options.defaultPermissions ?? mountDefaults.defaultPermissions) list.push('default_permissions');
  if (options.allowOther ?? process.getuid?.() === 0) list.push('allow_other');
  return `-o${list.join(',')}`;
}

/**
 * Raises the mount's read-ahead through sysfs. Finds the mount's device in /proc/self/mountinfo
 * (never by stat on the mountpoint, which would call into this very process). Best effort.
 */
function setReadAhead(mountpoint: string, readAheadKb: number, logger: Logger): void {
  try {
    const line = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .find((entry) => entry.split(' ')[4] === mountpoint && / - fuse/.test(entry));
    const device = line?.split(' ')[2];
    if (device === undefined) return;
    writeFileSync(`/sys/class/bdi/${device}/read_ahead_kb`, String(readAheadKb));
  } catch (error) {
    logger.debug({ err: error, mountpoint }, 'cannot set read-ahead');
  }
}

function defaultVirtualFiles(
  mountpoint: string,
  files: OpenFileTable,
  startedAtMs: number,
): VirtualFileProvider {
  return async (name: VirtualFileName) => {
    if (name === 'tokens') {
      const lines = files
        .entries()
        .map((file) => `${file.fd}\t${file.mode}\t${new Date(file.openedAtMs).toISOString()}\t${file.path}`);
      return `# fd\tmode\topened\tpath (this mount's open files; no cell attached)\n${lines.join('\n')}${lines.length ? '\n' : ''}`;
    }
    if (name === 'servers') return '# no cell attached: no servers known\n';
    return `mountpoint\t${mountpoint}\nstarted\t${new Date(startedAtMs).toISOString()}\nopen_files\t${files.size}\npid\t${process.pid}\n`;
  };
}

/** The handlers, each timed and reported to `observe` when it ends (none: as they are). */
function observed(handlers: NativeHandlers, observe: MountOptions['onOperation']): NativeHandlers {
  if (observe === undefined) return handlers;
  const report = (operation: OperationName, startedMs: number, errno: number) => {
    try {
      observe(operation, (performance.now() - startedMs) / 1000, errno);
    } catch {
      // metrics never fail an operation
    }
  };
  const wrapped: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(handlers) as Array<
    [OperationName, (...args: unknown[]) => Promise<unknown>]
  >) {
    wrapped[name] = (...args: unknown[]) => {
      const startedMs = performance.now();
      let running: Promise<unknown>;
      try {
        running = handler.apply(handlers, args);
      } catch (error) {
        report(name, startedMs, mountErrnoOf(error));
        throw error;
      }
      return running.then(
        (value) => {
          report(name, startedMs, 0);
          return value;
        },
        (error: unknown) => {
          report(name, startedMs, mountErrnoOf(error));
          throw error;
        },
      );
    };
  }
  return wrapped as unknown as NativeHandlers;
}

/** Mounts `client` at `mountpoint` (an existing empty directory). */
export async function mountFs(
  client: FsClient,
  mountpoint: string,
  options: MountOptions = {},
): Promise<Mount> {
  const logger = options.logger ?? createLogger({ component: 'fuse' });
  const now = options.now ?? Date.now;
  const optionString = mountOptionString(options);
  const handlerTimeoutMs = options.handlerTimeoutMs ?? mountDefaults.handlerTimeoutMs;
  if (!Number.isInteger(handlerTimeoutMs) || handlerTimeoutMs < 0) {
    throw new RangeError(`handlerTimeoutMs must be an integer >= 0, got ${handlerTimeoutMs}`);
  }
  const resolvedMountpoint = resolve(mountpoint);
  if (listFuseMounts().some((entry) => entry.mountpoint === resolvedMountpoint)) {
    if (options.replaceStaleMount !== true) {
      throw new Error(
        `${resolvedMountpoint} is already a FUSE mount; if its daemon is gone: umount -l ${resolvedMountpoint} ` +
          '(or node fuse/clear-mount.ts, or mount with replaceStaleMount)',
      );
    }
    await clearStuckMount(resolvedMountpoint);
    logger.warn({ mountpoint: resolvedMountpoint }, 'cleared a stale FUSE mount');
  }
  process.umask(options.umask ?? mountDefaults.umask);

  const files = new OpenFileTable({ openFilesMax: options.openFilesMax ?? mountDefaults.openFilesMax });
  const provider = options.virtualFiles ?? defaultVirtualFiles(resolvedMountpoint, files, now());
  const readAhead = readAheadOf(options);
  const context: OperationContext = {
    client,
    files,
    virtual: new VirtualFolder({ provider, now }),
    now,
    hideVirtualFolder: options.hideVirtualFolder ?? mountDefaults.hideVirtualFolder,
    ...(readAhead === undefined ? {} : { readAhead }),
  };
  const handlers: NativeHandlers = observed(
    {
      ...attributeOperations(context),
      ...directoryOperations(context),
      ...fileOperations(context),
      ...nameOperations(context),
      ...xattrOperations(context),
    },
    options.onOperation,
  );
  const native = await nativeMount(resolvedMountpoint, handlers, createErrnoMapper(logger), {
    optionString,
    handlerTimeoutMs,
  });
  setReadAhead(native.mountpoint, options.readAheadKb ?? mountDefaults.readAheadKb, logger);
  logger.info({ mountpoint: native.mountpoint, options: optionString }, 'mounted');

  let unmounting: Promise<void> | undefined;
  const signalHandler = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'unmounting on signal');
    unmount().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'unmount on signal failed');
        process.exit(1);
      },
    );
  };
  function unmount(): Promise<void> {
    unmounting ??= (async () => {
      process.off('SIGINT', signalHandler);
      process.off('SIGTERM', signalHandler);
      await native.unmount();
      // After the kernel let go no new requests arrive: release what the kernel never released.
      for (const file of files.entries()) {
        files.remove(file.fd);
        file.readAhead?.close();
        await file.handle
          ?.close()
          .catch((error: unknown) => logger.warn({ err: error, path: file.path }, 'close'));
      }
      logger.info({ mountpoint: native.mountpoint }, 'unmounted');
    })();
    return unmounting;
  }
  if (options.unmountOnSignals === true) {
    process.on('SIGINT', signalHandler);
    process.on('SIGTERM', signalHandler);
  }
  return { mountpoint: native.mountpoint, unmount };
}
