/**
 * Messages between the main thread and a queue worker thread. Everything
 * crosses as structured clones; fds are numbers of this process, and the
 * side that receives one owns it (the sender dup'd it).
 */
import type { SharedBackend } from '../../block/shared.js';
import type { RingFeatures, VirtqueueState } from '../virtqueue.js';

/** Slots of the flags shared with every worker (an Int32Array over a SharedArrayBuffer). */
export const Flag = {
  /** 1 while the device may touch guest memory (Bus Master Enable set, DMA not held). */
  ACCESSIBLE: 0,
  /** Queue q's interrupt route generation lives at ROUTE + q: a direct eventfd is valid only for the generation it came with. */
  ROUTE: 1,
} as const;

/** What a worker thread starts with (its `workerData`). */
export interface WorkerStart {
  /** The handler module (a file URL) and the data its factory gets. */
  module: string;
  data: unknown;
  /** The queues this thread serves: index and largest size. */
  queues: { index: number; maxSize: number }[];
  flags: SharedArrayBuffer;
}

/** The handle of a worker-opened backend, as modules commonly pass it in `data`. */
export type { SharedBackend };

export type ToWorker =
  | { t: 'map'; iova: number; size: number; offset: number; prot: number; fd: number | undefined }
  | { t: 'unmap'; iova: number; size: number; id: number }
  | { t: 'logging'; pageSize: number }
  | { t: 'enable'; q: number; size: number; desc: number; driver: number; device: number; ring: RingFeatures; features: string }
  | { t: 'restore'; q: number; state: VirtqueueState; ring: RingFeatures; features: string }
  | { t: 'pause' | 'resume' | 'kick'; q: number }
  | { t: 'reset'; q: number; id: number }
  | { t: 'idle'; q: number; id: number }
  | { t: 'route'; q: number; fd: number; gen: number }
  | { t: 'ioeventfd'; q: number; fd: number; spinNs: number }
  | { t: 'ioeventfd-close'; q: number }
  | { t: 'dma-done'; id: number; data?: Uint8Array; errno?: number; message?: string };

export type FromWorker =
  | { t: 'ready' }
  | { t: 'failed'; message: string }
  | { t: 'irq'; q: number }
  | { t: 'broken'; q: number; reason: string }
  | { t: 'needs-reset'; reason: string }
  | { t: 'dma-read'; id: number; iova: number; length: number }
  | { t: 'dma-write'; id: number; iova: number; data: Uint8Array }
  | { t: 'dirty'; ranges: number[] }
  | { t: 'unmapped'; id: number }
  | { t: 'reset-done'; id: number }
  | { t: 'idle'; id: number; state: VirtqueueState };
