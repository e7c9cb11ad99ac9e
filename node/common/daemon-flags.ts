/**
 * V8 flags every zhsm daemon (`zhsm-node start`) is launched with. They must be on Node's command
 * line: V8 sizes its heap when the process starts (setting them later with v8.setFlagsFromString
 * changes nothing, measured), and NODE_OPTIONS refuses them. bin/zhsm-node spells them out
 * (test/common/daemon-flags.test.ts checks it); everything else that starts a daemon (the local
 * cell, the `sim` power driver, the benchmarks, the test helpers) takes its arguments from
 * daemonStartArgs below.
 *
 * --initial-old-space-size: a data stream keeps many short-lived objects alive for a few
 * milliseconds (queued frames, promises of chunks in flight), long enough to be promoted out of
 * the young generation. With V8's default (an old generation sized from a ~25 MiB heap) that
 * promotion cost a storage server receiving a 1 GiB file about 32 full mark-compact collections
 * and 1.7-1.9 s of collector threads' CPU; with 128 MiB none in 2 GiB and 0.4-0.5 s per GiB
 * (`.scratch/perfwrite.ts`, --trace-gc). The cost is up to 128 MiB of heap before the first full
 * collection (V8 then sizes the limit from what is live, as usual).
 */
export const DAEMON_V8_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/**
 * What follows Node's own path to start a `zhsm-node` daemon: its V8 flags, then `cli start
 * --data DATA`, then `args`. `nodeArgs`: more options for Node (before the script).
 */
export function daemonStartArgs(options: {
  cli: string;
  data: string;
  args?: readonly string[];
  nodeArgs?: readonly string[];
}): string[] {
  const { cli, data, args = [], nodeArgs = [] } = options;
  return [...DAEMON_V8_FLAGS, ...nodeArgs, cli, 'start', '--data', data, ...args];
}
