/**
 * The header writer (on the primary): keeps every inode's META objects on the backends current,
 * so that the metadata can be rebuilt from the backends alone (`zhsm rebuild`).
 *
 * The state machine marks an inode (`h:<inode>` = the log index of its change) whenever it
 * changes; this loop drains the marks in batches: it writes the inode's META object (header with
 * the namespace fields, body = inline content) to `copies` backends chosen by rendezvous hashing
 * over the awake, non-cache backends (the same backends for one inode while the set of backends
 * is stable), then clears the marks it wrote (HeadersDone; a mark set again since stays).
 * A deleted inode's META objects are replaced by tombstones (its header as it was, flagged
 * deleted), so that a rebuild does not bring it back from a stale copy on a server that slept.
 *
 * A large file's META object carries its whole chunk list (1.7 MB at 100 GiB): while such a file
 * is being written, its object is rewritten at most every `msPerChunk` per chunk (10 s at 25,000
 * chunks, about 100 s at 256,000), not every pass; its mark stays until then. A rebuild after the
 * loss of every controller may then find such a file up to that long behind.
 *
 * Writes never wake a sleeping server: they go to awake ones. A backend's store keeps the newer
 * of two META objects of one inode (ctime, then change index), so late or repeated writes are
 * harmless.
 */
import { createHash } from 'node:crypto';
import { type Logger, silentLogger } from '../common/log.ts';
import { CACHE_TAG } from '../hsm/chains.ts';
import type { Command, Result } from '../metadata/records.ts';
import type { MetadataStateMachine } from '../metadata/state-machine.ts';
import type { MetaObject } from '../storage/service.ts';
import { metaObjectOf } from './meta-header.ts';

export interface HeaderWriterIo {
  propose(command: Omit<Command, 'timeMs'>): Promise<Result>;
  putMeta(backend: Uint8Array, objects: readonly MetaObject[]): Promise<number>;
}

export interface HeaderWriterOptions {
  readonly state: MetadataStateMachine;
  readonly io: HeaderWriterIo;
  readonly logger?: Logger;
  /** META copies per inode (default: the chains' copies, else 2). */
  readonly copies?: number;
  readonly intervalMs?: number;
  /** Marks per pass at most. */
  readonly batch?: number;
  /** A file of at least this many chunks is a large one (default 4096: 16 GiB of 4 MiB chunks). */
  readonly largeChunks?: number;
  /** A large file's META object is rewritten at most every this many ms per chunk (default 0.4). */
  readonly msPerChunk?: number;
  readonly nowMs?: () => number;
}

export interface HeaderWriterStatus {
  active: boolean;
  /** Marks seen pending in the last pass (at most one batch). */
  pending: number;
  written: number;
  failed: number;
  lastError: string;
}

const DEFAULT_COPIES = 2;
const OBJECTS_PER_REQUEST = 256;

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

/** The `count` backends an inode's META objects go to: highest rendezvous weight first. */
export function metaBackends(id: Uint8Array, backends: readonly Uint8Array[], count: number): Uint8Array[] {
  const weighted = backends.map((backend) => ({
    backend,
    weight: createHash('sha256').update(id).update(backend).digest().readBigUInt64BE(0),
  }));
  weighted.sort((a, b) => (a.weight < b.weight ? 1 : a.weight > b.weight ? -1 : 0));
  return weighted.slice(0, count).map((entry) => entry.backend);
}

export class HeaderWriter {
  readonly #state: MetadataStateMachine;
  readonly #io: HeaderWriterIo;
  readonly #log: Logger;
  readonly #copies: number | undefined;
  readonly #intervalMs: number;
  readonly #batch: number;
  readonly #largeChunks: number;
  readonly #msPerChunk: number;
  readonly #nowMs: () => number;
  /** Large files whose META object was written lately (hex id): not again before `dueMs`. */
  readonly #large = new Map<string, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = true;
  /** stop() was called: a pass under way writes no more (a pass run by hand is not stopped). */
  #stopping = false;
  #busy: Promise<void> = Promise.resolve();
  #lastWarnMs = 0;
  readonly #status: HeaderWriterStatus = { active: false, pending: 0, written: 0, failed: 0, lastError: '' };

  constructor(options: HeaderWriterOptions) {
    this.#state = options.state;
    this.#io = options.io;
    this.#log = (options.logger ?? silentLogger()).child({ module: 'header-writer' });
    this.#copies = options.copies;
    this.#intervalMs = options.intervalMs ?? 1_000;
    this.#batch = options.batch ?? 1024;
    this.#largeChunks = options.largeChunks ?? 4096;
    this.#msPerChunk = options.msPerChunk ?? 0.4;
    this.#nowMs = options.nowMs ?? Date.now;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#stopping = false;
    this.#status.active = true;
    this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopping = true;
    this.#status.active = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#busy;
  }

  status(): HeaderWriterStatus {
    return { ...this.#status };
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#busy = this.pass()
        .catch((error: unknown) => {
          this.#status.lastError = (error as Error).message;
          this.#warn(error, 'META header pass failed');
          return { pending: 0, cleared: 0 };
        })
        // A full batch that made progress: go on at once. Otherwise wait: for more changes, or
        // for a backend to write to (with every server asleep or failing, going on at once would
        // re-read the same marks in a busy loop on the primary).
        .then((result) =>
          this.#schedule(result.pending >= this.#batch && result.cleared > 0 ? 0 : this.#intervalMs),
        );
    }, delayMs);
  }

  #warn(error: unknown, message: string): void {
    const now = Date.now();
    if (now - this.#lastWarnMs < 30_000) return;
    this.#lastWarnMs = now;
    this.#log.warn({ err: error }, message);
  }

  /**
   * Write the META objects of (up to a batch of) the marked inodes. Returns the marks seen, the
   * objects written, and the marks cleared (written everywhere, or nothing left to write).
   */
  async pass(): Promise<{ pending: number; written: number; cleared: number }> {
    const marks = await this.#state.headerMarks(this.#batch);
    this.#status.pending = marks.length;
    if (marks.length === 0) return { pending: 0, written: 0, cleared: 0 };
    const [servers, backends, chains] = await Promise.all([
      this.#state.servers(),
      this.#state.backends(),
      this.#state.chains(),
    ]);
    const awake = new Set(
      servers
        .filter(
          (server) => server.online && (server.power === 'ON' || server.power === 'POWER_STATE_UNSPECIFIED'),
        )
        .map((server) => hex(server.uuid)),
    );
    const eligible = backends
      .filter((backend) => awake.has(hex(backend.serverUuid)) && !backend.tags.includes(CACHE_TAG))
      .map((backend) => backend.uuid)
      .sort(Buffer.compare);
    if (eligible.length === 0) return { pending: marks.length, written: 0, cleared: 0 };
    const copies = Math.min(eligible.length, this.#copies ?? (chains?.copies || DEFAULT_COPIES));

    const perBackend = new Map<string, { backend: Uint8Array; objects: MetaObject[]; marks: string[] }>();
    const targetsOf = new Map<string, number>();
    const done: Array<{ id: Uint8Array; queued: number }> = [];
    const byId = new Map<string, { id: Uint8Array; queued: number }>();
    const now = this.#nowMs();
    for (const [key, dueMs] of this.#large) if (dueMs <= now) this.#large.delete(key);
    for (const mark of marks) {
      // A large file written lately: its mark waits (not read: loading its list costs).
      if (this.#large.has(hex(mark.id))) continue;
      const inode = await this.#state.inode(mark.id);
      if (inode !== undefined && inode.chunks.length >= this.#largeChunks)
        this.#large.set(hex(mark.id), now + inode.chunks.length * this.#msPerChunk);
      // Deleted: its META objects become tombstones.
      const dead = inode === undefined ? await this.#state.deletedInode(mark.id) : undefined;
      if (inode === undefined && dead === undefined) {
        done.push(mark);
        continue;
      }
      const key = hex(mark.id);
      byId.set(key, mark);
      const names = inode !== undefined && inode.nlink > 1 ? await this.#state.names(inode.id) : [];
      const object =
        inode !== undefined
          ? metaObjectOf(inode, mark.queued, false, names)
          : metaObjectOf(dead!, mark.queued, true);
      const targets = metaBackends(mark.id, eligible, copies);
      targetsOf.set(key, targets.length);
      for (const backend of targets) {
        const backendKey = hex(backend);
        let group = perBackend.get(backendKey);
        if (group === undefined) {
          group = { backend, objects: [], marks: [] };
          perBackend.set(backendKey, group);
        }
        group.objects.push(object);
        group.marks.push(key);
      }
    }
    const succeeded = new Map<string, number>();
    let written = 0;
    await Promise.all(
      [...perBackend.values()].map(async (group) => {
        for (let start = 0; start < group.objects.length; start += OBJECTS_PER_REQUEST) {
          if (this.#stopping) return;
          const objects = group.objects.slice(start, start + OBJECTS_PER_REQUEST);
          try {
            written += await this.#io.putMeta(group.backend, objects);
            for (const key of group.marks.slice(start, start + OBJECTS_PER_REQUEST))
              succeeded.set(key, (succeeded.get(key) ?? 0) + 1);
          } catch (error) {
            this.#status.failed += objects.length;
            this.#status.lastError = (error as Error).message;
            this.#warn(error, `cannot write META objects to backend ${hex(group.backend)}`);
          }
        }
      }),
    );
    for (const [key, count] of succeeded) if (count >= (targetsOf.get(key) ?? 0)) done.push(byId.get(key)!);
    this.#status.written += written;
    for (let start = 0; start < done.length; start += 1024)
      await this.#io.propose({ headersDone: { files: done.slice(start, start + 1024) } });
    return { pending: marks.length, written, cleared: done.length };
  }
}
