/**
 * The NVMe queue role's messages (inside the device-thread envelopes of
 * device/threads/messages.ts).
 */
import type { SharedBackend } from '../../block/shared.js';
import type { LogPlace, RemoteQueueState } from '../remote.js';
import type { ShadowBuffers } from '../shadow.js';
import type { SavedCq, SavedSq } from '../queues.js';

/** What a queue thread starts with. */
export interface NvmeRoleData {
  /** Each namespace's storage, opened by the thread itself, and its options. */
  namespaces: { backend: SharedBackend; readOnly: boolean; lbaSize: number }[];
  serial: string;
  ioQueues: number;
  mdts: number;
  pollMicroseconds: number;
  /** Resets the main thread sent this thread before it started (see FromNvmeThread). */
  gen: number;
  /** Gate words the main thread stores and this thread loads (see Gate). */
  gate: SharedArrayBuffer;
  /** This thread's counters (Float64: the stats, then the health counters), written here, read by the main thread. */
  counters: SharedArrayBuffer;
  /** The in-flight log to map (under --isolate, once a connection has one). */
  log?: ThreadLogPlace;
}

/** A thread's part of the in-flight log (see inflight-log.ts); `fresh`: what the part holds is no one's (forgotten). */
export interface ThreadLogPlace extends LogPlace {
  part: number;
  fresh: boolean;
}

/** Words of the gate. */
export const Gate = {
  /** 1: the controller is enabled, healthy and not shut down (doorbells count). */
  ACCEPTING: 0,
  /** 1: fetching is paused (migration). */
  PAUSED: 1,
  /** 1: the volatile write cache is enabled (writes are not forced to media). */
  WRITE_CACHE: 2,
  WORDS: 3,
} as const;

/** Main thread to queue thread. */
export type ToNvmeThread =
  | { t: 'cq'; cq: SavedCq }
  | { t: 'sq'; sq: SavedSq }
  | { t: 'delete-cq'; qid: number }
  | { t: 'doorbell'; index: number; value: number; mapped: boolean }
  | { t: 'resume' }
  | { t: 'restore'; state: RemoteQueueState; buffers: ShadowBuffers | undefined }
  | { t: 'log'; place: ThreadLogPlace }
  /** Recovery: start the logged commands of these slots again (see RemoteQueues.restart). */
  | { t: 'restart'; slots: readonly number[] };

/** Requests with an answer. */
export type AskNvmeThread =
  | { t: 'delete-sq'; qid: number }
  | { t: 'dbbuf'; buffers: ShadowBuffers }
  /** Abandon every queue; answered once no command of theirs can write guest memory. */
  | { t: 'reset' }
  /** Answered with the queues' state once nothing is in flight. */
  | { t: 'idle' };

/**
 * Queue thread to main thread; `gen`: the resets the thread had taken, so
 * that what it said about queues a later reset discarded is ignored.
 */
export type FromNvmeThread =
  | { t: 'irq'; vector: number; gen: number }
  | { t: 'event'; type: number; info: number; log: number; gen: number }
  | { t: 'error'; sqid: number; cid: number; status: number; nsid: number; why?: string; gen: number }
  | { t: 'fatal'; reason: string; gen: number };
