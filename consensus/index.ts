/** The public surface of the consensus core (lowest-id Raft); see consensus/raft.ts for the protocol. */
export {
  decodeEntry,
  decodeHardState,
  decodeMessage,
  decodeSnapshot,
  encodeEntry,
  encodeHardState,
  encodeMessage,
  encodeSnapshot,
} from './codec.ts';
export { type ConfigRecord, decodeConfigRecord, encodeConfigRecord, MEMBERS_MAX } from './membership.ts';
export {
  APPEND_LOST_HEARTBEATS,
  CATCH_UP_GAP_ENTRIES_MAX,
  COMMITTED_ENTRIES_PER_READY_MAX,
  createRaft,
  defaultRaftConfig,
  HANDOFF_BACKOFF_EXPONENT_MAX,
  LOWEST_ID_HANDOFF_ELECTIONS,
  MESSAGES_QUEUED_MAX,
  READ_REQUESTS_PENDING_MAX,
  UNCOMMITTED_ENTRIES_MAX,
} from './raft.ts';
export { LevelRaftStorage } from './storage-level.ts';
export { EMPTY_HARD_STATE, type MemoryRaftState, MemoryRaftStorage } from './storage-memory.ts';
export * from './types.ts';
