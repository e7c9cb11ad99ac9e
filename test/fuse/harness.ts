/**
 * Real mounts for the tests: the filesystem is served by a child process (test/fuse/serve.ts), and
 * every mount is taken down after its tests, with `umount -l` as the fallback, even on failure.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { MountOptions } from '../../fuse/mount.ts';

export const execFileAsync = promisify(execFile);
const node = process.execPath;
const serveScript = new URL('./serve.ts', import.meta.url).pathname;

/** Why mounting is impossible here, or undefined when it is possible. */
export async function fuseSkipReason(): Promise<string | undefined> {
  try {
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    return '/dev/fuse is missing or not accessible: FUSE mounts are impossible here';
  }
  const { loadFuseNative } = await import('../../fuse/binding.ts');
  try {
    // Only a missing libfuse skips: an unpatched binding must fail the tests, not hide them.
    loadFuseNative({ requirePatched: false });
  } catch (error) {
    return `libfuse cannot be loaded: ${(error as Error).message}`;
  }
  if (process.getuid?.() !== 0) {
    try {
      await execFileAsync('fusermount', ['-V']);
    } catch {
      return 'not root and no fusermount: mounting is impossible';
    }
  }
  return undefined;
}

export function isMounted(mountpoint: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === mountpoint);
}

export interface TestMount {
  readonly mountpoint: string;
  readonly child: ChildProcess;
  /** The child's stderr so far (its log). */
  log(): string;
  /** SIGTERM to the child (it unmounts), then `umount -l` if the mount is still there. */
  stop(): Promise<void>;
}

export async function startMount(
  options: MountOptions & { providerText?: string; slowGetattrMs?: number; client?: 'memory' | 'cell' } = {},
  placement: { directory?: string; readyTimeoutMs?: number } = {},
): Promise<TestMount> {
  const readyTimeoutMs = placement.readyTimeoutMs ?? 20_000;
  const directory = placement.directory ?? (await mkdtemp(join(tmpdir(), 'zhsm-fuse-')));
  await chmod(directory, 0o755);
  const mountpoint = join(directory, 'mnt');
  // A dead mount already there (the stale-mount test) answers ENOTCONN: leave it to the daemon.
  await mkdir(mountpoint, { mode: 0o755, recursive: true }).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOTCONN') throw error;
  });
  const child = spawn(node, [serveScript, mountpoint, JSON.stringify(options)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ownsDirectory = placement.directory === undefined;
  let ready = false;

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      // Only a mount this child made is ours to take down.
      if (ready && isMounted(mountpoint)) await execFileAsync('umount', ['-l', mountpoint]).catch(() => {});
      if (ownsDirectory) await rm(directory, { recursive: true, force: true }).catch(() => {});
    })();
    return stopped;
  };

  try {
    await new Promise<void>((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(
        () => reject(new Error(`mount not ready in ${readyTimeoutMs} ms: ${stderr}`)),
        readyTimeoutMs,
      );
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes('ready')) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`mount child exited (${code ?? signal}) before ready: ${stderr}`));
      });
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { mountpoint, child, log: () => stderr, stop };
}

/** Runs a shell command as an unprivileged user (uid/gid 65534). */
export function asNobody(command: string, cwd: string) {
  return execFileAsync(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', '--', 'sh', '-c', command],
    {
      cwd,
    },
  );
}

/** The errno code (e.g. 'ENOENT') an fs call fails with. */
export async function errorCode(action: () => unknown): Promise<string | undefined> {
  try {
    await action();
  } catch (error) {
    return (error as NodeJS.ErrnoException).code;
  }
  return undefined;
}
