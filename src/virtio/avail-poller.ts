/**
 * Polling an idle virtqueue's avail index (the `--poll` window): while it
 * polls, the driver's notifications stay off, so a new chain costs the
 * driver no kick and the device no wake-up. The index is read on every
 * turn of the event loop until it moves (then the queue drains) or the
 * window closes; then notifications are asked for again and the index read
 * once more after a full barrier, so a chain added meanwhile is never left
 * without a kick.
 */

import { native } from '../native/index.js';

/** What the poller needs from its queue. */
export interface PolledQueue {
  /** True while this generation's queue may be polled (enabled, not draining, broken or paused). */
  mayPoll(gen: number): boolean;
  /** True while `gen` is the queue's generation (no reset since). */
  isCurrent(gen: number): boolean;
  /** The avail index through the ring's view, or undefined without one. */
  availIdxView(): number | undefined;
  /** The avail index, through a view or a message. */
  readAvailIdx(): number | Promise<number>;
  /** The index of the next chain the device will take. */
  lastAvail(): number;
  /** Lets the driver notify again (NO_NOTIFY cleared, or avail_event at the next index). */
  askForNotifications(): Promise<void> | undefined;
  /** Drains the queue. */
  kick(): void;
  /** Reports a memory fault of this generation. */
  failWith(gen: number, e: unknown): void;
}

/** Polls one queue's avail index for a window of microseconds. */
export class AvailPoller {
  private polling = false;
  private until = 0;

  constructor(private readonly queue: PolledQueue) {}

  /** Starts polling for `microseconds` (or extends a running poll's window). */
  start(gen: number, microseconds: number): void {
    this.until = performance.now() + microseconds / 1000;
    if (this.polling) return;
    this.polling = true;
    const q = this.queue;
    const tick = (): void => {
      // A drain running (it polls again when it ends), a reset, a pause (resume drains), a broken ring: stop here.
      if (!this.polling || !q.mayPoll(gen)) {
        if (q.isCurrent(gen)) this.polling = false;
        return;
      }
      const idx = q.availIdxView();
      if (idx !== undefined && idx !== q.lastAvail()) {
        this.polling = false;
        q.kick();
        return;
      }
      if (idx !== undefined && performance.now() < this.until) {
        setImmediate(tick);
        return;
      }
      this.polling = false;
      this.askAndLook(gen);
    };
    setImmediate(tick);
  }

  /** Stops at the next tick (a reset). */
  stop(): void {
    this.polling = false;
  }

  private askAndLook(gen: number): void {
    const q = this.queue;
    const look = (): void => {
      if (!q.isCurrent(gen)) return;
      // The store above before the load below: the driver does the mirror image (add, barrier, read flags).
      native.memoryFence();
      const idx = q.readAvailIdx();
      if (typeof idx !== 'number') void idx.then((v) => q.isCurrent(gen) && v !== q.lastAvail() && q.kick(), (e: unknown) => q.failWith(gen, e));
      else if (idx !== q.lastAvail()) q.kick();
    };
    const asked = q.askForNotifications();
    if (asked) asked.then(look, (e: unknown) => q.failWith(gen, e));
    else look();
  }
}
