/**
 * What the transport needs from one of its queues: the configuration the
 * driver writes through the common config, and the controls of a running
 * queue. A {@link Virtqueue} serves its ring on the main thread; a
 * RemoteQueue (worker/remote-queue.ts) forwards to a worker thread that
 * serves it there.
 */
import type { RingFeatures, RingState, VirtqueueState } from './ring.js';
import type { InflightLog } from './inflight-log.js';

export interface QueueControl {
  readonly index: number;
  readonly maxSize: number;
  /** The ring's configuration as the driver writes it (size, addresses, vector) and its indices. */
  readonly state: RingState;
  readonly isEnabled: boolean;
  /** Sets the queue's MSI-X vector. */
  setVector(vector: number): void;
  /** Enables the queue with the size and addresses the driver wrote; an error message when unusable. */
  enable(ring: RingFeatures): string | undefined;
  /** Back to the reset state; requests in flight are abandoned. */
  reset(): void;
  /** The driver notified the queue. */
  kick(): void;
  /** Stops taking requests (completions still publish). */
  pause(): void;
  /** Takes requests again. */
  resume(): void;
  /** Resolves when nothing is in flight or waiting to be published. */
  idle(): Promise<void>;
  /** The state that migrates (take it while idle). */
  save(): VirtqueueState;
  /** Restores saved state; an error message when unusable. */
  restore(s: VirtqueueState, ring: RingFeatures): string | undefined;
  /** Records taken and published chains in `log` from now on (undefined: no more); see Virtqueue.attachLog. */
  attachLog(log: InflightLog | undefined): void;
  /** In a successor process: finishes what the attached log holds (see Virtqueue.recover); resolves with the chains handed out again. */
  recover(): Promise<number>;
}
