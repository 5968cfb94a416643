/**
 * The virtio queue role's messages (inside the device-thread envelopes of
 * device/threads/messages.ts).
 */
import type { RingFeatures, VirtqueueState } from '../virtqueue.js';
import type { QueueWorkerSpec } from './handler.js';

/** What a queue thread starts with. */
export interface QueueRoleData {
  /** The handler module (a file URL) and the data its factory gets. */
  module: string;
  data: unknown;
  /** The queues this thread serves: index and largest size. */
  queues: { index: number; maxSize: number }[];
  /** Requests served, an Int32 per queue index (shared: the main thread reads it whenever it likes). */
  served: SharedArrayBuffer;
}

export type { QueueWorkerSpec };

/** Main thread to queue thread. */
export type ToQueues =
  | { t: 'enable'; q: number; size: number; desc: number; driver: number; device: number; ring: RingFeatures; features: string; vector: number; pollMicroseconds: number }
  | { t: 'restore'; q: number; state: VirtqueueState; ring: RingFeatures; features: string; pollMicroseconds: number }
  | { t: 'pause' | 'resume' | 'kick'; q: number }
  | { t: 'vector'; q: number; vector: number }
  /** The queue's inflight log (under --isolate): a part of a memfd this thread maps; without `fd`, none. */
  | { t: 'log'; q: number; fd?: number; offset?: number; maxSize?: number };

/** Requests with an answer: reset answers once abandoned requests settled; idle with the queue's state. */
export type AskQueues = { t: 'reset'; q: number } | { t: 'idle'; q: number } | { t: 'recover'; q: number };

/** Queue thread to main thread. */
export type FromQueues = { t: 'irq'; q: number } | { t: 'broken'; q: number; reason: string } | { t: 'needs-reset'; q: number; reason: string } | { t: 'warn'; q: number; message: string };
