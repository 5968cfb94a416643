/**
 * A virtqueue served on a worker thread, as the transport sees it: the
 * configuration the driver writes lives here (in a shadow Virtqueue that
 * also validates it against this thread's view of guest memory), and
 * every control of the running queue is forwarded to the worker.
 */
import type { QueueControl } from '../queue-control.js';
import { Virtqueue, type RingFeatures, type VirtqueueHost, type VirtqueueState } from '../virtqueue.js';

/** What a remote queue needs from the thread pool. */
export interface QueueLink {
  enable(q: number, shadow: Virtqueue, ring: RingFeatures): void;
  restore(q: number, state: VirtqueueState, ring: RingFeatures): void;
  control(q: number, op: 'pause' | 'resume' | 'kick'): void;
  reset(q: number): Promise<void>;
  idle(q: number): Promise<VirtqueueState | undefined>;
  vectorChanged(q: number): void;
}

export class RemoteQueue implements QueueControl {
  private readonly shadow: Virtqueue;
  private paused = false;
  /** Ring indices as the worker last reported them (on idle). */
  private progress = { lastAvail: 0, usedIdx: 0 };
  /** The worker finished the last reset (its abandoned requests settled). */
  settled: Promise<void> = Promise.resolve();

  constructor(
    readonly index: number,
    maxSize: number,
    host: VirtqueueHost,
    private readonly link: QueueLink,
  ) {
    this.shadow = new Virtqueue(index, maxSize, host);
  }

  get maxSize(): number {
    return this.shadow.maxSize;
  }
  get size(): number {
    return this.shadow.size;
  }
  set size(v: number) {
    this.shadow.size = v;
  }
  get desc(): number {
    return this.shadow.desc;
  }
  set desc(v: number) {
    this.shadow.desc = v;
  }
  get driver(): number {
    return this.shadow.driver;
  }
  set driver(v: number) {
    this.shadow.driver = v;
  }
  get device(): number {
    return this.shadow.device;
  }
  set device(v: number) {
    this.shadow.device = v;
  }
  get msixVector(): number {
    return this.shadow.msixVector;
  }
  set msixVector(v: number) {
    this.shadow.msixVector = v;
    this.link.vectorChanged(this.index);
  }
  get isEnabled(): boolean {
    return this.shadow.isEnabled;
  }

  enable(ring: RingFeatures): string | undefined {
    const err = this.shadow.enable(ring);
    if (err) return err;
    this.shadow.pause(); // the shadow never serves
    this.progress = { lastAvail: 0, usedIdx: 0 };
    this.link.enable(this.index, this.shadow, ring);
    // The worker starts it paused; the transport pauses it right after enabling when it should stay so.
    queueMicrotask(() => {
      if (!this.paused && this.isEnabled) this.link.control(this.index, 'resume');
    });
    return undefined;
  }

  reset(): void {
    this.shadow.reset();
    this.progress = { lastAvail: 0, usedIdx: 0 };
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
    const state = await this.link.idle(this.index);
    if (state) this.progress = { lastAvail: state.lastAvail, usedIdx: state.usedIdx };
  }

  save(): VirtqueueState {
    return { ...this.shadow.save(), ...this.progress };
  }

  restore(s: VirtqueueState, ring: RingFeatures): string | undefined {
    const err = this.shadow.restore(s, ring);
    if (err) return err;
    this.shadow.pause();
    this.progress = { lastAvail: s.lastAvail, usedIdx: s.usedIdx };
    this.link.restore(this.index, s, ring);
    return undefined;
  }
}
