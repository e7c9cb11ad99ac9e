/**
 * Mount a node's cell with FUSE: the cell client (node/client/cell-client.ts) over the node's
 * RemoteCell, served by fuse/mount.ts, with the hidden `/.zhsm/` folder showing this node's view
 * of the cell (`status`, `servers`, `tokens`). The serving process never touches the mount itself.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Mount, mountFs } from '../../fuse/mount.ts';
import { formatStatus } from '../cli/zhsm-format.ts';
import { CellClient } from '../client/cell-client.ts';
import { UnavailableError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import type { ZhsmNode } from './node.ts';

export interface NodeMount {
  readonly mountpoint: string;
  readonly client: CellClient;
  /** Unmount, then release what the client still holds. */
  unmount(): Promise<void>;
}

export async function mountNode(
  node: ZhsmNode,
  mountpoint: string,
  options: { replicas?: number; logger?: Logger } = {},
): Promise<NodeMount> {
  const where = resolve(mountpoint);
  if (!existsSync('/dev/fuse'))
    throw new UnavailableError('/dev/fuse is missing; FUSE is needed to mount the cell');
  try {
    mkdirSync(where, { recursive: true, mode: 0o755 });
  } catch (error) {
    // A mount left behind by a crash answers ENOTCONN / ECONNABORTED: mountFs replaces it.
    if (!['ENOTCONN', 'ECONNABORTED', 'EEXIST'].includes((error as NodeJS.ErrnoException).code ?? ''))
      throw error;
  }
  const client = new CellClient(
    node.remote,
    options.replicas === undefined ? {} : { replicas: options.replicas },
  );
  const startedMs = Date.now();
  const mount: Mount = await mountFs(client, where, {
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    replaceStaleMount: true,
    virtualFiles: async (name) => {
      if (name === 'tokens') {
        const tokens = await node.remote.tokens();
        return `${tokens
          .map(
            (t) =>
              `${Buffer.from(t.object).toString('hex')} ${t.mode} ${t.holder} expires ${new Date(t.expiresMs).toISOString()}`,
          )
          .join('\n')}\n`;
      }
      if (name === 'servers') return `${JSON.stringify((await node.status()).servers, null, 2)}\n`;
      return `${formatStatus(await node.status())}\n\nmounted for: ${Math.round((Date.now() - startedMs) / 1000)} s\n`;
    },
  });
  return {
    mountpoint: where,
    client,
    async unmount() {
      await mount.unmount();
      await client.closeAll();
    },
  };
}
