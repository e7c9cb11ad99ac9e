/**
 * Typed errors with stable codes, shared by every part of zhsm.
 *
 * Each condition has one class with a stable `code` (tests assert the code, never the message).
 * `errnoOf()` is the one table that maps a code to a POSIX errno at the FUSE boundary.
 * Programmer errors (broken invariants) are `AssertionError`s and crash; operating errors are
 * `ZhsmError`s and are handled.
 */

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'NOT_A_BACKEND'
  | 'WRONG_CELL'
  | 'BACKEND_FULL'
  | 'CORRUPT_OBJECT'
  | 'UNSUPPORTED_FORMAT'
  | 'HASH_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'STRAY_FILE'
  | 'DECODE_ERROR'
  | 'FRAME_TOO_LARGE'
  | 'IO_ERROR'
  | 'NOT_LEADER'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'PERMISSION_DENIED'
  | 'NOT_EMPTY'
  | 'NOT_A_DIRECTORY'
  | 'IS_A_DIRECTORY'
  | 'NO_DATA'
  | 'NAME_TOO_LONG'
  | 'NOT_PERMITTED'
  | 'READ_ONLY'
  | 'STALE'
  | 'UNAVAILABLE';

export interface ErrorContext {
  readonly [key: string]: unknown;
}

export class ZhsmError extends Error {
  readonly code: ErrorCode;
  readonly context: ErrorContext;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ZhsmError';
    this.code = code;
    this.context = context;
  }
}

function defineError(code: ErrorCode, name: string) {
  return class extends ZhsmError {
    static readonly code: ErrorCode = code;
    constructor(message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
      super(code, message, context, options);
      this.name = name;
    }
  };
}

export const InvalidArgumentError = defineError('INVALID_ARGUMENT', 'InvalidArgumentError');
export const NotFoundError = defineError('NOT_FOUND', 'NotFoundError');
export const AlreadyExistsError = defineError('ALREADY_EXISTS', 'AlreadyExistsError');
export const NotABackendError = defineError('NOT_A_BACKEND', 'NotABackendError');
export const WrongCellError = defineError('WRONG_CELL', 'WrongCellError');
export const BackendFullError = defineError('BACKEND_FULL', 'BackendFullError');
export const CorruptObjectError = defineError('CORRUPT_OBJECT', 'CorruptObjectError');
export const UnsupportedFormatError = defineError('UNSUPPORTED_FORMAT', 'UnsupportedFormatError');
export const HashMismatchError = defineError('HASH_MISMATCH', 'HashMismatchError');
export const SizeMismatchError = defineError('SIZE_MISMATCH', 'SizeMismatchError');
export const StrayFileError = defineError('STRAY_FILE', 'StrayFileError');
export const DecodeError = defineError('DECODE_ERROR', 'DecodeError');
export const FrameTooLargeError = defineError('FRAME_TOO_LARGE', 'FrameTooLargeError');
export const IoError = defineError('IO_ERROR', 'IoError');
export const NotLeaderError = defineError('NOT_LEADER', 'NotLeaderError');
export const TimeoutError = defineError('TIMEOUT', 'TimeoutError');
export const ClosedError = defineError('CLOSED', 'ClosedError');
export const PermissionDeniedError = defineError('PERMISSION_DENIED', 'PermissionDeniedError');
export const UnavailableError = defineError('UNAVAILABLE', 'UnavailableError');
export const NotPermittedError = defineError('NOT_PERMITTED', 'NotPermittedError');

/** Positive POSIX errno values (Linux). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EEXIST: 17,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ENAMETOOLONG: 36,
  ENOTEMPTY: 39,
  ENODATA: 61,
  EPROTO: 71,
  EBADMSG: 74,
  ETIMEDOUT: 110,
  EHOSTDOWN: 112,
} as const;

/** The one mapping from error codes to errno, used at the FUSE boundary. */
const errnoByCode: Readonly<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: Errno.EINVAL,
  NOT_FOUND: Errno.ENOENT,
  ALREADY_EXISTS: Errno.EEXIST,
  NOT_A_BACKEND: Errno.EIO,
  WRONG_CELL: Errno.EIO,
  BACKEND_FULL: Errno.ENOSPC,
  CORRUPT_OBJECT: Errno.EIO,
  UNSUPPORTED_FORMAT: Errno.EIO,
  HASH_MISMATCH: Errno.EIO,
  SIZE_MISMATCH: Errno.EIO,
  STRAY_FILE: Errno.EIO,
  DECODE_ERROR: Errno.EPROTO,
  FRAME_TOO_LARGE: Errno.EPROTO,
  IO_ERROR: Errno.EIO,
  NOT_LEADER: Errno.EAGAIN,
  TIMEOUT: Errno.ETIMEDOUT,
  CLOSED: Errno.EIO,
  PERMISSION_DENIED: Errno.EACCES,
  NOT_EMPTY: Errno.ENOTEMPTY,
  NOT_A_DIRECTORY: Errno.ENOTDIR,
  IS_A_DIRECTORY: Errno.EISDIR,
  NO_DATA: Errno.ENODATA,
  NAME_TOO_LONG: Errno.ENAMETOOLONG,
  NOT_PERMITTED: Errno.EPERM,
  READ_ONLY: Errno.EROFS,
  STALE: Errno.EAGAIN,
  UNAVAILABLE: Errno.EHOSTDOWN,
};

export function errnoOf(error: unknown): number {
  if (error instanceof ZhsmError) return errnoByCode[error.code];
  const nodeCode = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof nodeCode === 'string' && nodeCode in Errno) return Errno[nodeCode as keyof typeof Errno];
  return Errno.EIO;
}

/** True for a Node.js system error with the given code (e.g. 'ENOENT'). */
export function isSystemError(error: unknown, code: string): error is NodeJS.ErrnoException {
  return typeof error === 'object' && error !== null && (error as NodeJS.ErrnoException).code === code;
}

/** An invariant that must hold; failing it is a programmer error and crashes. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export class AssertionError extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = 'AssertionError';
  }
}
