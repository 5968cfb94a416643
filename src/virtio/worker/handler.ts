/**
 * What a module serving virtqueues on a worker thread exports. The module
 * is named by URL in the queue spec (`worker: { module, data }`); each
 * worker thread imports it and calls `createQueueHandler(data)` once.
 *
 * @example
 * ```ts
 * // my-queue.ts
 * import type { WorkerQueueHandler } from 'muser';
 * export function createQueueHandler(data: { fill: number }): WorkerQueueHandler {
 *   return async (req) => {
 *     const io = await req.buffers('writable', 0, req.writableLength);
 *     for (const b of io.buffers) b.fill(data.fill);
 *     await io.finish(true);
 *     return req.writableLength;
 *   };
 * }
 * ```
 */
import type { MaybePromise } from '../../device/spec.js';
import type { VirtqueueRequest } from '../request.js';

/** What a handler on a worker thread may use besides the request. */
export interface WorkerQueueContext {
  /** Features the driver accepted. */
  readonly features: bigint;
  /** True when the negotiated features include bit `n`. */
  hasFeature(n: number): boolean;
  /** The driver broke the device's contract: set DEVICE_NEEDS_RESET and stop. */
  needsReset(reason: string): void;
  /** A request failed: say why in the server's log, rate-limited (as {@link VirtioContext.warnDriver}). */
  warnDriver(message: string): void;
}

/** Serves one request on a worker thread; resolves with the bytes written into the writable area. */
export type WorkerQueueHandler = (request: VirtqueueRequest, ctx: WorkerQueueContext) => MaybePromise<number>;

/** Where a queue is served off the main thread. */
export interface QueueWorkerSpec {
  /**
   * The module (a file URL or absolute path) exporting
   * `createQueueHandler(data): WorkerQueueHandler | Promise<WorkerQueueHandler>`.
   */
  module: string | URL;
  /** Structured-cloneable data for createQueueHandler (a {@link SharedBackend} handle, limits...). */
  data?: unknown;
  /** Queues with the same thread number share one worker thread (default: the queue's own index). */
  thread?: number;
  /**
   * How long a reset waits for the thread to let go of the requests it
   * abandons before ending the thread and starting a new one (default
   * 30000 ms; the shortest of a thread's queues applies).
   */
  resetTimeoutMs?: number;
}
