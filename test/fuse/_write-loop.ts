/**
 * Child process for the failover test: a write loop on a mount. Usage:
 *   node _write-loop.ts DIRECTORY
 * Operation i: create DIRECTORY/f<i> (exclusive) with `loopContent(i)`, fsync, close; then append
 * `loopLine(i)` to DIRECTORY/log, fsync, close. After each operation it prints one JSON line:
 * {"ack":i,"startMs":..,"endMs":..} or {"error":i,"code":"EIO","op":"create"|"append",...}, and
 * goes on with i+1. SIGTERM (or stdin closing) stops it after the current operation.
 */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { patternBytes } from '../helpers.ts';

export function loopContent(i: number): Buffer {
  return patternBytes(1_000 + ((i * 7_919) % 150_000), i + 1);
}

export function loopLine(i: number): string {
  return `line ${i}\n`;
}

function writeAll(fd: number, bytes: Buffer): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
}

if (import.meta.main) {
  const directory = process.argv[2];
  if (directory === undefined) throw new Error('usage: _write-loop.ts DIRECTORY');
  let stop = false;
  process.on('SIGTERM', () => {
    stop = true;
  });
  process.stdin.on('close', () => {
    stop = true;
  });
  process.stdin.resume();
  const report = (record: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(record)}\n`);
  for (let i = 0; !stop; i++) {
    const startMs = Date.now();
    let op = 'create';
    let fd: number | undefined;
    try {
      fd = openSync(join(directory, `f${i}`), 'wx', 0o644);
      writeAll(fd, loopContent(i));
      fsyncSync(fd);
      closeSync(fd);
      op = 'append';
      fd = undefined;
      fd = openSync(join(directory, 'log'), 'a', 0o644);
      writeAll(fd, Buffer.from(loopLine(i)));
      fsyncSync(fd);
      closeSync(fd);
      fd = undefined;
      report({ ack: i, startMs, endMs: Date.now() });
    } catch (error) {
      if (fd !== undefined)
        try {
          closeSync(fd);
        } catch {}
      const e = error as NodeJS.ErrnoException;
      report({ error: i, op, code: e.code ?? 'UNKNOWN', message: e.message, startMs, endMs: Date.now() });
    }
    // Let signals and stdin events in between operations.
    await new Promise((resolve) => setImmediate(resolve));
  }
  process.exit(0);
}
