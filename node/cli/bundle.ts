/**
 * Which code a CLI entry runs: the bundle in dist/ (scripts/bundle.mjs, built by `npm ci` and
 * `npm run build`) when it was built from exactly the source files there are now, else the
 * TypeScript sources. An edited checkout so never runs stale code: it runs its sources until the
 * next build. "Exactly" is every file's path, size and modification time under the bundled
 * directories, as recorded in dist/BUILT: a file edited, added, removed, checked out, or copied
 * in with its old time kept (rsync -a, cp -p) all count as changes. ZHSM_NO_BUNDLE=1 always runs
 * the sources.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../common/package-root.ts';

/** Where the bundled code comes from (what a change must rebuild). */
export const bundleSources = ['node', 'fuse', 'consensus', 'proto'];

/** Every source file (path relative to `root`) with its size and modification time, sorted. */
export function sourceFingerprint(root: string): string {
  const files: string[] = [];
  for (const source of bundleSources) {
    for (const entry of readdirSync(join(root, source), { withFileTypes: true, recursive: true })) {
      if (!entry.isFile()) continue;
      const path = join(entry.parentPath, entry.name);
      const { size, mtimeMs } = statSync(path);
      files.push(`${relative(root, path)}\t${size}\t${mtimeMs}`);
    }
  }
  return files.sort().join('\n');
}

/**
 * The URL of `dist/<name>` if the bundle is to be used, else undefined. `root` is the checkout
 * (tests pass another).
 */
export function bundled(name: string, root: string = packageRoot): string | undefined {
  if (process.env.ZHSM_NO_BUNDLE === '1') return undefined;
  const dist = join(root, 'dist');
  try {
    // BUILT is written last (without it the bundle is incomplete): the sources it was built from.
    const built = readFileSync(join(dist, 'BUILT'), 'utf8');
    statSync(join(dist, name));
    if (built !== sourceFingerprint(root)) return undefined;
  } catch {
    return undefined;
  }
  return pathToFileURL(join(dist, name)).href;
}
