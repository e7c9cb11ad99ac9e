/**
 * V8 settings for processes that move file data (imported first by the daemon's entry point, and
 * by the benchmarks, which host cell clients in their own process).
 *
 * Chunk data lives in ArrayBuffers (Noise's cipher output, read spans, write buffers). By default
 * V8 runs a full mark-compact collection whenever about 64 MiB of such external memory has been
 * allocated since the last one, whatever the heap's size: at 100-200 MiB/s that is several full
 * collections a second, each a pause of tens of ms that every request waits out (measured: the
 * first byte of a 4 MiB chunk read took 40-80 ms, 10-20 ms without). Counting external memory
 * in V8's global limit instead collects as the whole footprint grows, like any heap growth.
 * Measured here, serial 4 MiB chunk reads: 56 -> 81 MiB/s with the setting on the storage server
 * alone. It must be set before the heap grows, hence at startup.
 */
import { setFlagsFromString } from 'node:v8';

/**
 * The Node majors whose V8 has the flag (checked: Node 24, V8 13.6). Elsewhere V8 stays as it is:
 * an unknown flag would print an error line at every start.
 */
const TUNED_NODE_MAJORS = new Set([24]);
const major = Number(process.versions.node.split('.')[0]);

// ZHSM_V8_DEFAULTS=1 leaves V8 as it is (for comparisons).
if (process.env.ZHSM_V8_DEFAULTS !== '1' && TUNED_NODE_MAJORS.has(major))
  setFlagsFromString('--external-memory-accounted-in-global-limit');
