/**
 * Errors at the FUSE boundary. Client failures are ZhsmErrors and map through `errnoOf()` (the one
 * table in node/common/errors.ts). Conditions the mount itself detects (a bad fd, a full fd table,
 * writes into /.zhsm, a name too long, a buffer too small) are MountErrors carrying their errno:
 * they are kernel-interface conditions with no ErrorCode in the client contract.
 */

import { Errno, errnoOf, ZhsmError } from '../node/common/errors.ts';
import type { Logger } from '../node/common/log.ts';
import type { ErrorToErrno } from './binding.ts';

/** Linux errno values the mount needs beyond node/common/errors.ts's Errno. */
export const MountErrno = {
  ...Errno,
  E2BIG: 7,
  EXDEV: 18,
  EMFILE: 24,
  ERANGE: 34,
  ENOSYS: 38,
  ENOTSUP: 95,
} as const;

export class MountError extends Error {
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(message);
    this.name = 'MountError';
    this.errno = errno;
  }
}

/**
 * The client reports a missing extended attribute as NOT_FOUND with `context.attribute` set (the
 * contract has no code of its own for it); POSIX wants ENODATA there, and ENOENT only for a missing
 * file.
 */
export function isMissingAttribute(error: unknown): boolean {
  return error instanceof ZhsmError && error.code === 'NOT_FOUND' && error.context.attribute !== undefined;
}

/** Expected errors (the application's own mistakes) are logged at debug; the rest at warn. */
const expectedErrnos: ReadonlySet<number> = new Set([
  MountErrno.ENOENT,
  MountErrno.EEXIST,
  MountErrno.ENOTEMPTY,
  MountErrno.ENOTDIR,
  MountErrno.EISDIR,
  MountErrno.EACCES,
  MountErrno.EROFS,
  MountErrno.ENODATA,
  MountErrno.ERANGE,
  MountErrno.ENOTSUP,
  MountErrno.ENAMETOOLONG,
  MountErrno.EINVAL,
]);

/** The errno a handler failure is answered with. */
export function mountErrnoOf(error: unknown): number {
  if (error instanceof MountError) return error.errno;
  if (isMissingAttribute(error)) return MountErrno.ENODATA;
  return errnoOf(error);
}

export function createErrnoMapper(logger: Logger): ErrorToErrno {
  return (operation, error, path) => {
    const errno = mountErrnoOf(error);
    if (!(error instanceof ZhsmError) && !(error instanceof MountError)) {
      logger.error({ operation, path, err: error }, 'unexpected error in FUSE handler');
    } else if (expectedErrnos.has(errno)) {
      logger.debug({ operation, path, errno, code: (error as ZhsmError).code }, 'operation failed');
    } else {
      logger.warn({ operation, path, errno, err: error }, 'operation failed');
    }
    return errno;
  };
}
