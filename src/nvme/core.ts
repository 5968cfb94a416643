/**
 * What the parts of an NVMe controller share (the controller implements it):
 * its description and host, the queues, the registers, the shadow doorbells,
 * the session epoch, and the few calls one part makes into another. The
 * parts (BAR0, the CC/CSTS machine, SQ fetch, CQ posting, asynchronous
 * events) import this, never the controller, so nothing imports in a circle.
 */
import type { QueueMemory } from '../device/queue-memory.js';
import type { Bar0 } from './bar0.js';
import type { HealthCounters } from './identify.js';
import type { InflightLog } from './inflight-log.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';
import type { RemoteQueues } from './remote.js';
import type { ShadowDoorbells } from './shadow.js';
import type { ControllerConfig, ControllerHost, ControllerStats, FeatureValues } from './types.js';

/** The controller as its parts see it. */
export interface ControllerCore {
  readonly config: ControllerConfig;
  readonly host: ControllerHost;
  readonly memory: QueueMemory;
  readonly stats: ControllerStats;
  readonly health: HealthCounters;
  readonly regs: Bar0;
  readonly shadow: ShadowDoorbells;
  readonly sqs: Map<number, SubmissionQueue>;
  readonly cqs: Map<number, CompletionQueue>;
  /** Submission queues whose Delete waits for their commands. */
  readonly deleting: Set<SubmissionQueue>;
  features: FeatureValues;
  /**
   * Bumped by every reset: completions of older commands are dropped, and
   * so are their copies into guest memory (I/O reads it).
   */
  epoch: number;
  /** Where the I/O queues are served when not on this thread (`workers`), else undefined. */
  readonly remote: RemoteQueues | undefined;
  /** The in-flight log, while an isolated child serves the controller (undefined otherwise: nothing is logged). */
  readonly log: InflightLog | undefined;
  /** Fetching is paused for migration. */
  paused: boolean;
  /** Why CSTS.CFS was set (undefined while healthy). */
  fatalReason: string | undefined;
  /** Enabled, healthy and not shut down: doorbells count. */
  readonly accepting: boolean;
  /** Accepting and not paused for migration: commands are fetched. */
  readonly ready: boolean;
  readonly volatileWriteCache: boolean;
  /** Sets CSTS.CFS and stops every queue until the host resets the controller. */
  fatal(reason: string): void;
  /** Fetches and starts what the submission queue holds (see SqFetcher). */
  drain(sq: SubmissionQueue, fromDoorbell?: boolean): void;
  /** Queues a command's completion for posting (see CqPoster). */
  complete(sq: SubmissionQueue, cid: number, nsid: number, status: number, dw0: number, slot: number, why?: string): void;
  /** An admin command completed (before its completion is posted): the log's snapshot takes its effect and result. */
  adminCompleted(slot: number, status: number, dw0: number): void;
  /** Stores the registers in the log (after each change). */
  logRegisters(): void;
  /** Stores the configuration snapshot in the log. */
  logConfig(): void;
  /** Posts what waits on a completion queue. */
  flushCq(cq: CompletionQueue): void;
  /** Queues an asynchronous event. */
  asyncEvent(type: number, info: number, log: number): void;
  /** Counts `work` as a command executing until it settles. */
  track<T>(work: Promise<T>): Promise<T>;
  /** Resolves when no command is executing. */
  whenIdle(): Promise<void>;
}

/**
 * What submission fetch and completion posting use (sq-fetch.ts,
 * cq-post.ts): the part of the controller that a queue worker thread has
 * too (nvme/worker/), for the I/O queues it serves.
 */
export type QueueCore = Pick<
  ControllerCore,
  'memory' | 'stats' | 'shadow' | 'sqs' | 'cqs' | 'epoch' | 'log' | 'accepting' | 'ready' | 'fatal' | 'drain' | 'complete' | 'adminCompleted' | 'flushCq' | 'asyncEvent' | 'track'
> & {
  readonly config: Pick<ControllerConfig, 'pollMicroseconds'>;
  readonly host: Pick<ControllerHost, 'msixEnabled' | 'msixVectors' | 'raiseMsix' | 'raiseIntx'>;
  readonly regs: { readonly intms: number };
};
