/**
 * Counts a backend's requests in flight so that close() can wait for them,
 * and refuses new requests once closing has begun. A request that finishes
 * at once is never counted: only Promises are.
 */
import { BlockError, type MaybePromise } from './backend.js';

export class InFlight {
  private count = 0;
  private closing = false;
  private idle: (() => void)[] = [];

  /** Requests started and not yet settled. */
  get size(): number {
    return this.count;
  }

  /** True once close() has begun. */
  get closed(): boolean {
    return this.closing;
  }

  /** Throws BlockError('EIO') once closing has begun. */
  checkOpen(): void {
    if (this.closing) throw new BlockError('EIO', 'the disk is closed');
  }

  /** Counts `result` until it settles, when it is a Promise; returns it. */
  track<T>(result: MaybePromise<T>): MaybePromise<T> {
    if (!(result instanceof Promise)) return result;
    this.count++;
    return result.finally(() => {
      if (--this.count === 0) for (const wake of this.idle.splice(0)) wake();
    });
  }

  /** Runs an asynchronous request, tracked, after {@link checkOpen} (which throws at once). */
  run<T>(op: () => Promise<T>): Promise<T> {
    this.checkOpen();
    return this.track(op()) as Promise<T>;
  }

  /** Refuses new requests and resolves once every tracked request has settled. */
  drain(): Promise<void> {
    this.closing = true;
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }
}
