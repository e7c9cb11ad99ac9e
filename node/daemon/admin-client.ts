/**
 * Talk to a running daemon through its admin socket (`DIR/admin.sock`, newline-delimited JSON;
 * only local users who can open the data directory reach it).
 */
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { type ErrorCode, UnavailableError, ZhsmError } from '../common/errors.ts';
import { paths } from './config.ts';

/** No daemon answers on the data directory's admin socket (not running, or not a data directory). */
export class DaemonUnreachableError extends UnavailableError {
  constructor(message: string) {
    super(message);
    this.name = 'DaemonUnreachableError';
  }
}

export async function adminRequest<T extends Record<string, unknown>>(
  data: string,
  request: Record<string, unknown>,
  timeoutMs = 30_000,
): Promise<T> {
  const path = paths(data).adminSocket;
  return new Promise<T>((resolve, reject) => {
    const socket = connect(path);
    let buffered = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ZhsmError('TIMEOUT', `the daemon did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (text: string) => {
      buffered += text;
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(timer);
      socket.end();
      try {
        const reply = JSON.parse(buffered.slice(0, newline)) as {
          ok: boolean;
          code?: ErrorCode;
          message?: string;
        };
        if (!reply.ok) reject(new ZhsmError(reply.code ?? 'IO_ERROR', reply.message ?? 'the daemon refused'));
        else resolve(reply as unknown as T);
      } catch (error) {
        reject(new ZhsmError('DECODE_ERROR', `bad answer from the daemon: ${(error as Error).message}`));
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')
        reject(
          new DaemonUnreachableError(
            existsSync(paths(data).config)
              ? `no running zhsm node for ${paths(data).base} (start it with: zhsm-node start --data ${data})`
              : `no running zhsm node for ${paths(data).base}: it is not a node's data directory (no node.json)`,
          ),
        );
      else
        reject(
          new DaemonUnreachableError(`cannot reach the daemon of ${paths(data).base}: ${error.message}`),
        );
    });
  });
}
