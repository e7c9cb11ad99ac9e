/**
 * The zhsm checkout this code runs from: the nearest directory above this module with zhsm's
 * package.json. The same answer from the TypeScript sources (node/common/) and from the bundle
 * (dist/, see scripts/bundle.mjs), where paths relative to a module's own file would differ.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

function findRoot(start: string): string {
  for (let directory = start; ; directory = dirname(directory)) {
    const manifest = join(directory, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'zhsm')
          return directory;
      } catch {
        // Not readable as JSON: not ours; look further up.
      }
    }
    if (dirname(directory) === directory) throw new Error(`no zhsm package.json above ${start}`);
  }
}

export const packageRoot: string = findRoot(import.meta.dirname);
