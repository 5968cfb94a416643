/**
 * What a virtqueue needs from its transport (the main thread's
 * VirtioPciTransport, or a worker thread's queue role): guest memory, the
 * bounce budget, the interrupt, the handler, and the polling window.
 */
import type { QueueMemory } from '../device/queue-memory.js';
import type { VirtqueueRequest } from './request.js';
import type { BounceBudget } from './bounce-budget.js';
import type { QueueControl } from './queue-control.js';

/** What a virtqueue needs from its transport. */
export interface VirtqueueHost {
  readonly memory: QueueMemory;
  /** Bounce-buffer bytes shared by the device's queues. */
  readonly bounce: BounceBudget;
  /** Raise this queue's used-buffer interrupt. */
  interrupt(queue: QueueControl): void;
  /** The driver broke the ring: stop and ask for a reset. */
  onBroken(queue: QueueControl, reason: string): void;
  /** Serve one request; complete it with request.complete(bytesWritten). */
  dispatch(request: VirtqueueRequest): void;
  /**
   * After a drain, keep reading the avail index of the idle queue for this
   * many microseconds, with the driver's notifications off (0 or absent:
   * ask for notifications at once). Read at each drain's end.
   */
  readonly pollMicroseconds?: number;
}
