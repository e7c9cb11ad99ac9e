/**
 * What a client needs from a cell: metadata commands through the primary, linearizable metadata
 * reads, and chunk transfers with storage servers. The cell client (cell-client.ts) is written
 * against this interface; `LocalCell` (local-cell.ts) implements it in one process, the daemon's
 * libp2p client over the network.
 */
import type {
  BackendRecord,
  Command,
  Inode,
  Location,
  Result,
  ServerRecord,
  StoredChains,
} from '../metadata/records.ts';
import type { ReaddirEntry } from '../metadata/state-machine.ts';

/** Linearizable reads of the metadata (served after a read barrier at the primary). */
export interface MetadataReader {
  root(): Promise<Uint8Array>;
  inode(id: Uint8Array): Promise<Inode | undefined>;
  lookup(parent: Uint8Array, name: string): Promise<Inode | undefined>;
  /**
   * A path walk in one round trip: from the inode `start` along `names`, the deepest inode
   * reached (undefined: `start` is gone) and how many names it took.
   */
  resolve?(start: Uint8Array, names: readonly string[]): Promise<{ inode?: Inode; depth: number }>;
  readdir(parent: Uint8Array, options: { after?: string; limit?: number }): Promise<ReaddirEntry[]>;
  locations(object: Uint8Array): Promise<Array<{ backend: Uint8Array; location: Location }>>;
  backends(): Promise<BackendRecord[]>;
  servers(): Promise<ServerRecord[]>;
  /** The placement chains (undefined: none set; the client's own replica count applies). */
  chains?(): Promise<StoredChains | undefined>;
}

export interface CellApi {
  /** The peer id (or another stable name) of this client: the holder of its open tokens. */
  readonly clientId: string;
  /** Propose a metadata command through the primary (retried across failovers). */
  propose(command: Omit<Command, 'timeMs'>): Promise<Result>;
  /**
   * Several commands in one round trip, each its own log entry, applied in order (results in
   * order). Optional: without it the client proposes one command at a time.
   */
  proposeBatch?(commands: ReadonlyArray<Omit<Command, 'timeMs'>>): Promise<Result[]>;
  readonly metadata: MetadataReader;
  /** Store a chunk object on one backend (verified against `hash`, durable when it resolves). */
  writeChunk(backend: Uint8Array, id: Uint8Array, bytes: Uint8Array, hash: Uint8Array): Promise<void>;
  /**
   * Read a byte range of a chunk object from one backend: verified by the backend's block
   * checksums, and end to end against `expectedHash` (its content hash, node/store/content-hash.ts)
   * when the range is the whole object. An empty `expectedHash`: none is known (a trimmed chunk).
   * With `into` (at least `length` bytes) the bytes land there, copied once, and the filled part
   * of it is returned.
   */
  readChunk(
    backend: Uint8Array,
    id: Uint8Array,
    offset: number,
    length: number,
    expectedHash?: Uint8Array,
    into?: Uint8Array,
  ): Promise<Uint8Array>;
  /** Delete objects that are no longer referenced, wherever they are (missing is fine). */
  deleteObjects(ids: readonly Uint8Array[]): Promise<void>;
  /** The cell's wall clock as this client sees it (token expiry). */
  nowMs(): number;
}
