/**
 * An eventfd the client hands to the device for an interrupt, with a way
 * to wait for it to fire.
 */
import { native, PollEvent, PollMode, type PollHandle } from '../native/index.js';

/** An owned eventfd that counts signals as they arrive. */
export class EventFd {
  readonly fd: number;
  /** Total signals received so far. */
  total = 0;
  private poll: PollHandle | undefined;
  private waiters: ((n: number) => void)[] = [];
  private listener: ((count: number) => void) | undefined;

  constructor() {
    this.fd = native.eventfd(0);
    this.poll = native.pollStart(this.fd, PollMode.EventFd, (kind, count) => {
      if (kind !== PollEvent.Count) return;
      this.total += count as number;
      this.listener?.(count as number);
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) w(this.total);
    });
  }

  /** Calls `fn` with the count of each batch of signals. */
  onSignal(fn: (count: number) => void): void {
    this.listener = fn;
  }

  /** Resolves with the running total once `total` reaches at least `atLeast`; rejects after `timeoutMs`. */
  waitFor(atLeast = this.total + 1, timeoutMs = 5000): Promise<number> {
    if (this.total >= atLeast) return Promise.resolve(this.total);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`eventfd: ${this.total} of ${atLeast} signals after ${timeoutMs} ms`)), timeoutMs);
      const check = (total: number): void => {
        if (total >= atLeast) {
          clearTimeout(timer);
          resolve(total);
        } else {
          this.waiters.push(check);
        }
      };
      this.waiters.push(check);
    });
  }

  /** Stops watching and closes the fd. */
  close(): void {
    if (!this.poll) return;
    native.pollStop(this.poll);
    this.poll = undefined;
    native.close(this.fd);
  }
}
