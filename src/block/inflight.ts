/**
 * Counts a backend's requests in flight so that close() can wait for them,
 * and refuses new requests once closing has begun.
 */
import { BlockError } from './backend.js';

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

  /**
   * Runs `op` as one tracked request. Throws (as a rejected Promise)
   * BlockError('EIO') once closing has begun; synchronous throws from `op`
   * become rejections too.
   */
  async run<T>(op: () => Promise<T>): Promise<T> {
    if (this.closing) throw new BlockError('EIO', 'the disk is closed');
    this.count++;
    try {
      return await op();
    } finally {
      if (--this.count === 0) for (const wake of this.idle.splice(0)) wake();
    }
  }

  /** Refuses new requests and resolves once every tracked request has settled. */
  drain(): Promise<void> {
    this.closing = true;
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }
}
