/**
 * Mount a node's cell with FUSE: the cell client (node/client/cell-client.ts) over the node's
 * RemoteCell, served by fuse/mount.ts, with the hidden `/.zhsm/` folder showing this node's view
 * of the cell (`status`, `servers`, `tokens`). The serving process never touches the mount itself.
 *
 * A running daemon mounts through `ZhsmNode.mount()` (admin socket: `zhsm-node mount`), which
 * keeps its mounts and unmounts them when it stops.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Mount, mountFs } from '../../fuse/mount.ts';
import { listFuseMounts } from '../../fuse/stuck-mount.ts';
import { formatStatus } from '../cli/zhsm-format.ts';
import { CellClient } from '../client/cell-client.ts';
import { AlreadyExistsError, UnavailableError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import type { OpenToken } from '../metadata/records.ts';
import type { ZhsmNode } from './node.ts';
import { objectPaths } from './ops-admin.ts';

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
  const dead = (error: unknown) =>
    ['ENOTCONN', 'ECONNABORTED'].includes((error as NodeJS.ErrnoException).code ?? '');
  if (listFuseMounts().some((entry) => entry.mountpoint === where)) {
    // A mount left behind by a crash answers ENOTCONN / ECONNABORTED: mountFs replaces it. A live
    // one (another daemon's, or this daemon's own) is never taken over.
    let alive = true;
    try {
      statSync(where);
    } catch (error) {
      alive = !dead(error);
    }
    if (alive)
      throw new AlreadyExistsError(`${where} is already a live FUSE mount (unmount it first)`, {
        mountpoint: where,
      });
  }
  try {
    mkdirSync(where, { recursive: true, mode: 0o755 });
  } catch (error) {
    if (!dead(error) && (error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  // Directory ids are remembered as long as the kernel keeps its dentries (the 1 s entry timeout);
  // a closed file's token release rides with the next create when one follows within 5 ms (the
  // kernel does not wait for a release).
  const client = new CellClient(node.remote, {
    directoryCacheMs: 1000,
    releaseDelayMs: 5,
    ...(options.replicas === undefined ? {} : { replicas: options.replicas }),
  });
  const startedMs = Date.now();
  const mount: Mount = await mountFs(client, where, {
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    replaceStaleMount: true,
    onOperation: (operation, seconds, errno) => node.metrics.fuseOperation(operation, seconds, errno),
    virtualFiles: async (name) => {
      if (name === 'tokens') return formatTokens(node, await node.remote.tokens());
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

/**
 * One line per open token: object, path, mode, holder, expiry (the paths come from the object's
 * parent/name links: node/daemon/ops-admin.ts).
 */
async function formatTokens(node: ZhsmNode, tokens: readonly OpenToken[]): Promise<string> {
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
  const paths = await objectPaths(
    node.remote,
    tokens.map((t) => t.object),
  );
  const lines = tokens.map(
    (t, index) =>
      `${hex(t.object)} ${JSON.stringify(paths[index])} ${t.mode} ${t.holder} expires ${new Date(t.expiresMs).toISOString()}`,
  );
  return `${lines.join('\n')}\n`;
}
