/**
 * Which code a CLI entry runs: the bundle in dist/ (scripts/bundle.mjs, built by `npm ci` and
 * `npm run build`) when it is complete and newer than every source file, else the TypeScript
 * sources. An edited checkout so never runs stale code: it runs its sources until the next build.
 * ZHSM_NO_BUNDLE=1 always runs the sources.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../common/package-root.ts';

/** Where the bundled code comes from (what a change must rebuild). */
export const bundleSources = ['node', 'fuse', 'consensus', 'proto'];

/** The newest modification time (ms) of the files under `directory`, 0 when it has none. */
function newestUnder(directory: string): number {
  let newest = 0;
  for (const entry of readdirSync(directory, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/**
 * The URL of `dist/<name>` if the bundle is to be used, else undefined. `root` is the checkout
 * (tests pass another).
 */
export function bundled(name: string, root: string = packageRoot): string | undefined {
  if (process.env.ZHSM_NO_BUNDLE === '1') return undefined;
  const dist = join(root, 'dist');
  let builtMs: number;
  try {
    // BUILT is written last: without it the bundle is incomplete.
    builtMs = statSync(join(dist, 'BUILT')).mtimeMs;
    statSync(join(dist, name));
  } catch {
    return undefined;
  }
  for (const source of bundleSources) {
    try {
      if (newestUnder(join(root, source)) > builtMs) return undefined;
    } catch {
      return undefined;
    }
  }
  return pathToFileURL(join(dist, name)).href;
}
