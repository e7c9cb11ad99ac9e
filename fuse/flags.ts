/** open(2) flags as the kernel hands them to FUSE, and their meaning for the client's OpenOptions. */
import type { OpenMode, OpenOptions } from '../node/client/api.ts';

/** Linux open flag bits (asm-generic). */
export const OpenFlag = {
  accessModeMask: 0o3,
  readOnly: 0o0,
  writeOnly: 0o1,
  readWrite: 0o2,
  create: 0o100,
  exclusive: 0o200,
  truncate: 0o1000,
  append: 0o2000,
} as const;

/**
 * The token mode an open takes. O_APPEND with any write access takes an append token (the design:
 * append is read/write, cheaper for growing files); the client writes append handles at the end.
 */
export function openModeOf(flags: number): OpenMode {
  const access = flags & OpenFlag.accessModeMask;
  if (access === OpenFlag.readOnly) return 'read';
  if ((flags & OpenFlag.append) !== 0) return 'append';
  return access === OpenFlag.writeOnly ? 'write' : 'readWrite';
}

export function openOptionsOf(flags: number): OpenOptions {
  const mode = openModeOf(flags);
  // O_TRUNC on a read-only open is unspecified by POSIX; Linux truncates. Follow Linux.
  return (flags & OpenFlag.truncate) !== 0 ? { mode, truncate: true } : { mode };
}

export function isWriteMode(mode: OpenMode): boolean {
  return mode !== 'read';
}

export function isExclusive(flags: number): boolean {
  return (flags & OpenFlag.exclusive) !== 0;
}
