#!/usr/bin/env node
/**
 * Bundles the two CLIs (zhsm-node, zhsm) into dist/ with esbuild, so that a command starts by
 * loading a few files instead of compiling ~700 modules one by one: importing the daemon took
 * about 0.5 s from the sources (with Node's compile cache), 0.18 s from the bundle. A storage
 * server's start is on the path of every wake-up, and every CLI command pays it.
 *
 * Run by `npm ci` (the root package's `postinstall`, after the fuse-native build) and by
 * `npm run build`. The entries (node/cli/node.ts, node/cli/zhsm.ts) use the bundle only while the
 * source files are exactly those it was built from (node/cli/bundle.ts), so an edited checkout
 * runs its sources until the next build, never stale code. ZHSM_NO_BUNDLE=1 always runs the
 * sources.
 *
 * Output: dist/zhsm-node.mjs, dist/zhsm.mjs (sharing chunks), dist/hash-thread.mjs (the store's
 * hash worker), a copy of proto/*.proto and protos.json, the same schemas parsed (loaded at run
 * time next to the code). Native addons (classic-level, fuse-native, @node-rs/xxhash, @napi-rs/blake-hash) stay in
 * node_modules.
 *
 * Without esbuild (an install without dev dependencies), or when any step fails, it says so, leaves
 * no dist/ behind and exits 0: the sources run, and `npm ci` does not fail for a missing speed-up.
 */
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.log('bundle: esbuild is not installed; zhsm runs from its TypeScript sources');
  process.exit(0);
}

const started = performance.now();
/** Whether this run has started replacing dist/ (a failure before that leaves it as it was). */
let replacing = false;
try {
  await build();
} catch (error) {
  // A failed bundle must not leave a half one behind: the sources run instead. (A bundle left as
  // it was is still checked against the sources at every start.)
  if (replacing) rmSync(dist, { recursive: true, force: true });
  console.error(`bundle: not built (${error.message}); zhsm runs from its TypeScript sources`);
  process.exit(0);
}
console.log(`bundle: dist/ built in ${((performance.now() - started) / 1000).toFixed(1)} s`);

async function build() {
  const { sourceFingerprint } = await import(pathToFileURL(join(root, 'node', 'cli', 'bundle.ts')).href);
  // The sources as they are when the build starts (what it reads).
  const fingerprint = sourceFingerprint(root);
  replacing = true;
  rmSync(dist, { recursive: true, force: true });
  mkdirSync(dist, { recursive: true });
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: {
      'zhsm-node': 'node/cli/node-cli.ts',
      zhsm: 'node/cli/zhsm-cli.ts',
      'hash-thread': 'node/store/hash-thread.ts',
    },
    outdir: dist,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    // Native addons and what loads them stay where npm put them.
    external: [
      'classic-level',
      'fuse-native',
      'node-gyp-build',
      '@node-rs/xxhash',
      '@napi-rs/blake-hash',
      'fuse-shared-library-linux',
    ],
    // CommonJS dependencies inside an ES module bundle still call require().
    banner: {
      js: "import { createRequire as __zhsmRequire } from 'node:module'; const require = __zhsmRequire(import.meta.url);",
    },
    sourcemap: 'linked',
    logLevel: 'warning',
  });
  for (const file of readdirSync(join(root, 'proto'))) {
    if (file.endsWith('.proto')) copyFileSync(join(root, 'proto', file), join(dist, file));
  }
  // The schemas parsed once here (proto/index.ts loads them from protos.json when it is next to
  // the code): the same parser, so the same result, without the parsing at every start.
  const { parseProtoFiles } = await import(pathToFileURL(join(root, 'proto', 'index.ts')).href);
  writeFileSync(join(dist, 'protos.json'), JSON.stringify(parseProtoFiles(join(root, 'proto')).toJSON()));
  // Written last: its presence says the bundle is complete, and it names the sources it was built
  // from, as they were when the build started (node/cli/bundle.ts compares them with the
  // checkout's at every start; a file changed during the build makes the next start run the
  // sources).
  writeFileSync(join(dist, 'BUILT'), fingerprint);
}
