/**
 * Talk to a running daemon through its admin socket (`DIR/admin.sock`, newline-delimited JSON;
 * only local users who can open the data directory reach it), or — `zhsm --node MULTIADDR` —
 * to any node of the cell over the network (`/zhsm/admin/1.0.0`): the credential is the identity
 * key of a member's data directory (`--data DIR`), so only members get an answer, over Noise.
 */
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { type ErrorCode, InvalidArgumentError, UnavailableError, ZhsmError } from '../common/errors.ts';
import { paths } from './config.ts';

/** No daemon answers on the data directory's admin socket (not running, or not a data directory). */
export class DaemonUnreachableError extends UnavailableError {
  constructor(message: string) {
    super(message);
    this.name = 'DaemonUnreachableError';
  }
}

let remoteNode: string | undefined;

/** Send the admin requests of this process to `node` (a multiaddr ending in /p2p/<peer id>). */
export function useRemoteAdmin(node: string | undefined): void {
  remoteNode = node;
}

export async function adminRequest<T extends Record<string, unknown>>(
  data: string,
  request: Record<string, unknown>,
  timeoutMs = 30_000,
): Promise<T> {
  if (remoteNode !== undefined) return remoteAdminRequest<T>(remoteNode, data, request, timeoutMs);
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

/** One admin request to a node over the network, as the member whose data directory is `data`. */
async function remoteAdminRequest<T extends Record<string, unknown>>(
  node: string,
  data: string,
  request: Record<string, unknown>,
  timeoutMs: number,
): Promise<T> {
  // Loaded here: the local socket path stays free of libp2p (a CLI call starts in 0.6 s).
  const [{ multiaddr }, { loadIdentity }, { createHost }, { call }, { adminMethod }] = await Promise.all([
    import('@multiformats/multiaddr'),
    import('../net/identity.ts'),
    import('../net/host.ts'),
    import('../net/rpc.ts'),
    import('./protocols.ts'),
  ]);
  let address: ReturnType<typeof multiaddr>;
  try {
    address = multiaddr(node);
  } catch (error) {
    throw new InvalidArgumentError(`--node: not a multiaddr: ${node} (${(error as Error).message})`);
  }
  if (address.getComponents().find((component) => component.name === 'p2p') === undefined)
    throw new InvalidArgumentError(`--node must end in /p2p/<peer id>: ${node}`);
  const identity = await loadIdentity(paths(data).base);
  const host = await createHost({
    privateKey: identity.privateKey,
    listen: [],
    isMember: () => false,
    relayServer: false,
  });
  try {
    const response = await call(
      host,
      address,
      adminMethod,
      { json: JSON.stringify(request) },
      { timeoutMs },
    ).catch((error: unknown) => {
      if (error instanceof ZhsmError && error.code === 'PERMISSION_DENIED')
        throw new ZhsmError(
          'PERMISSION_DENIED',
          `${node} refused: the identity of ${paths(data).base} is not a member of its cell (${error.message})`,
        );
      const dial =
        error instanceof ZhsmError && error.code === 'IO_ERROR' && error.message.startsWith('cannot open');
      if (dial || (error instanceof ZhsmError && ['UNAVAILABLE', 'TIMEOUT', 'CLOSED'].includes(error.code)))
        throw new DaemonUnreachableError(`cannot reach ${node}: ${error.message}`);
      throw error;
    });
    const reply = JSON.parse(response.json) as { ok: boolean; code?: ErrorCode; message?: string };
    if (!reply.ok) throw new ZhsmError(reply.code ?? 'IO_ERROR', reply.message ?? 'the daemon refused');
    return reply as unknown as T;
  } finally {
    await host.stop();
  }
}
