/**
 * I/O queues served elsewhere (`nvmeController({ workers })`: on device
 * worker threads, nvme/worker/), as the controller sees them. The
 * controller keeps a stand-in of each such queue in its maps (ids, sizes,
 * bases, the CQ of each SQ: what admin commands and migration read); the
 * queue itself (head, tail, phase, commands in flight, completions
 * waiting) lives on its thread.
 */
import type { HealthCounters } from './identify.js';
import type { SavedCq, SavedSq } from './queues.js';
import type { ControllerStats } from './types.js';

/** A completion waiting for room, as it crosses threads. */
export interface SavedPending {
  cqid: number;
  sqid: number;
  cid: number;
  status: number;
  dw0: number;
}

/** The queues of the remote side, as migration saves them. */
export interface RemoteQueueState {
  cqs: SavedCq[];
  sqs: SavedSq[];
  pending: SavedPending[];
}

/** Guest addresses of the shadow doorbell and EventIdx buffers (Doorbell Buffer Config). */
export interface DoorbellBuffers {
  doorbells: number;
  eventIdx: number;
}

/**
 * Where the in-flight log lies in the journal memfd (an isolated child),
 * for threads to map it: `parts` parts of a log of `queues` queue ids of
 * up to `entries` entries each (see inflight-log.ts).
 */
export interface LogPlace {
  fd: number;
  offset: number;
  queues: number;
  entries: number;
  parts: number;
}

/** What the controller asks of the side that serves its I/O queues. */
export interface RemoteQueues {
  /** Threads serving the I/O queues: the in-flight log has a part for each, and one for the main thread. */
  readonly count: number;
  /**
   * Each thread logs its queues into its part of the log at `place` from
   * now on; `fresh`: the part holds nothing of value (a new log), else
   * what it holds is for {@link restart}.
   */
  attachLog(place: LogPlace, fresh: boolean): void;
  /**
   * Recovery handed the threads their queues ({@link restore}): each
   * starts again the logged commands of `slots` on its queues, then drains
   * them and raises each completion queue's interrupt once.
   */
  restart(slots: readonly number[]): void;
  /** The thread that serves I/O queue `qid` (an SQ must share its CQ's). */
  threadOf(qid: number): number;
  createCq(cq: SavedCq): void;
  createSq(sq: SavedSq): void;
  /** Resolves once the SQ is gone and the commands it started completed. */
  deleteSq(qid: number): Promise<void>;
  deleteCq(qid: number): void;
  /** Doorbell `index` (2y: SQ y tail, 2y+1: CQ y head, y ≥ 1) was written with `value` (by message, or in the mapped page). */
  doorbell(index: number, value: number, mapped: boolean): void;
  /** Doorbell Buffer Config: resolves once every thread wrote its queues' current values into both buffers. */
  shadowBuffers(buffers: DoorbellBuffers): Promise<void>;
  /** What every thread follows at once: doorbells count (`accepting`), fetching is paused (migration), the write cache is on. */
  gate(accepting: boolean, paused: boolean, writeCache: boolean): void;
  /**
   * A reset abandons every I/O queue: resolves once none of their commands
   * can write guest memory (a thread that does not let go within the reset
   * timeout is ended, its mappings revoked, and started again).
   */
  abandon(): Promise<void>;
  /** Waits until no command is in flight and nothing is being posted; resolves with the queues' state. */
  idle(): Promise<RemoteQueueState>;
  /** Fetches again after a pause (picks up doorbells written meanwhile). */
  resume(): void;
  /** Builds the queues from a migrated state (paused until {@link resume}). */
  restore(state: RemoteQueueState, buffers: DoorbellBuffers | undefined): void;
  /** The threads' counters, added to the controller's. */
  addCounters(stats: ControllerStats, health: HealthCounters): void;
}
