/**
 * A virtqueue served on a worker thread, as the transport sees it: the
 * ring's configuration the driver writes lives here (a {@link RingState},
 * validated against this thread's view of guest memory on enable), and
 * every control of the running queue is forwarded to the worker.
 */
import type { QueueMemory } from '../../device/queue-memory.js';
import type { QueueControl } from '../queue-control.js';
import { RingState, type RingFeatures, type VirtqueueState } from '../ring.js';
import { ringMemoryError } from '../virtqueue.js';
import type { InflightLog } from '../inflight-log.js';

/** What a remote queue needs from the thread pool. */
export interface QueueLink {
  enable(q: number, state: RingState, ring: RingFeatures): void;
  restore(q: number, state: VirtqueueState, ring: RingFeatures): void;
  control(q: number, op: 'pause' | 'resume' | 'kick'): void;
  reset(q: number): Promise<void>;
  idle(q: number): Promise<VirtqueueState | undefined>;
  vectorChanged(q: number): void;
  /** The queue's inflight log is the memfd part at `where` (undefined: none). */
  attachLog(q: number, log: { fd: number; offset: number; maxSize: number } | undefined): void;
  /** Finishes what the log holds (see Virtqueue.recover). */
  recover(q: number): Promise<number>;
}

export class RemoteQueue implements QueueControl {
  /** The configuration; its indices are the worker's as last reported (on idle). */
  readonly state: RingState;
  private paused = false;
  /** The worker finished the last reset (its abandoned requests settled). */
  settled: Promise<void> = Promise.resolve();

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly memory: QueueMemory,
    private readonly link: QueueLink,
  ) {
    this.state = new RingState(index, maxSize);
  }

  get isEnabled(): boolean {
    return this.state.enabled;
  }

  setVector(vector: number): void {
    this.state.msixVector = vector;
    this.link.vectorChanged(this.index);
  }

  enable(ring: RingFeatures): string | undefined {
    const err = this.state.layoutError() ?? ringMemoryError(this.state, this.memory);
    if (err) return err;
    this.state.enable(ring);
    this.state.lastAvail = this.state.usedIdx = 0;
    this.link.enable(this.index, this.state, ring);
    // The worker starts it paused; the transport pauses it right after enabling when it should stay so.
    queueMicrotask(() => {
      if (!this.paused && this.isEnabled) this.link.control(this.index, 'resume');
    });
    return undefined;
  }

  reset(): void {
    this.state.reset();
    this.settled = this.link.reset(this.index);
  }

  kick(): void {
    if (this.isEnabled) this.link.control(this.index, 'kick');
  }

  pause(): void {
    this.paused = true;
    this.link.control(this.index, 'pause');
  }

  resume(): void {
    this.paused = false;
    this.link.control(this.index, 'resume');
  }

  async idle(): Promise<void> {
    const s = await this.link.idle(this.index);
    if (s) {
      this.state.lastAvail = s.lastAvail;
      this.state.usedIdx = s.usedIdx;
    }
  }

  save(): VirtqueueState {
    return this.state.save();
  }

  /** The worker maps the log's part of its memfd itself; a log it cannot map is not attached (it stays not live). */
  attachLog(log: InflightLog | undefined): void {
    this.link.attachLog(this.index, log?.where ? { ...log.where, maxSize: log.maxSize } : undefined);
  }

  recover(): Promise<number> {
    return this.link.recover(this.index);
  }

  restore(s: VirtqueueState, ring: RingFeatures): string | undefined {
    const err = this.state.restore(s) ?? (s.enabled ? this.state.enable(ring) : undefined);
    if (err) return err;
    this.link.restore(this.index, s, ring);
    return undefined;
  }
}
