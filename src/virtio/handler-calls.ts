/**
 * Calling a queue's request handler, the same on the main thread and on a
 * worker thread: the request completes with what the handler returns (0
 * when it throws or rejects), and handler calls still running are counted
 * per queue, so that a reset can wait until those it abandoned have
 * settled (their backend I/O may still write guest memory through
 * zero-copy views until then). A handler that finishes at once costs
 * nothing here; one that returns a Promise costs a counter.
 */
import type { MaybePromise } from '../device/spec.js';
import type { VirtqueueRequest } from './request.js';

export class HandlerCalls {
  /** Asynchronous calls running, by queue, since the queue's last reset. */
  private readonly running: number[] = [];
  /** Asynchronous calls running that a reset abandoned, by queue. */
  private readonly abandoned: number[] = [];
  /** Resets so far, by queue: a call counts against the generation it started in. */
  private readonly generation: number[] = [];
  private waiters: { queue: number | undefined; wake: () => void }[] = [];

  /** Calls `handler` and completes the request with its result. */
  run<C>(request: VirtqueueRequest, handler: (request: VirtqueueRequest, ctx: C) => MaybePromise<number>, ctx: C): void {
    let result: MaybePromise<number>;
    try {
      result = handler(request, ctx);
    } catch {
      request.complete(0);
      return;
    }
    if (!(result instanceof Promise)) {
      request.complete(result);
      return;
    }
    const q = request.queue;
    const generation = this.generation[q] ?? 0;
    this.running[q] = (this.running[q] ?? 0) + 1;
    result.then(
      (n) => {
        request.complete(n);
        this.ended(q, generation);
      },
      () => {
        request.complete(0);
        this.ended(q, generation);
      },
    );
  }

  /** Queue `q` was reset: its calls running now are abandoned (see {@link settled}). */
  abandon(q: number): void {
    this.abandoned[q] = (this.abandoned[q] ?? 0) + (this.running[q] ?? 0);
    this.running[q] = 0;
    this.generation[q] = (this.generation[q] ?? 0) + 1;
  }

  /** Resolves once the calls abandoned on queue `q` (on every queue when undefined) have settled. */
  settled(q?: number): Promise<void> {
    if (this.idle(q)) return Promise.resolve();
    return new Promise((wake) => this.waiters.push({ queue: q, wake }));
  }

  private idle(q: number | undefined): boolean {
    return q === undefined ? this.abandoned.every((n) => !n) : !this.abandoned[q];
  }

  private ended(q: number, generation: number): void {
    if (generation === (this.generation[q] ?? 0)) {
      this.running[q]--;
      return;
    }
    if (--this.abandoned[q] > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) {
      if (this.idle(w.queue)) w.wake();
      else this.waiters.push(w);
    }
  }
}
