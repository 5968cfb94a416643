/**
 * Completion posting (NVMe 1.4, 4.6): completions wait per completion
 * queue, are written with their phase tag last, each batch raises one
 * interrupt, and a full queue holds them back (reading the shadow head and
 * arming EventIdx) until the host frees entries. Room made in a queue lets
 * the submission queues that stopped fetching go on.
 */
import { Status } from './constants.js';
import { CQE } from './layouts.js';
import type { QueueCore } from './core.js';
import type { AsyncEvents } from './events.js';
import { then } from './maybe.js';
import { CompletionQueue, encodeCompletion, SubmissionQueue, writeCompletion, type PendingCompletion } from './queues.js';
import { viewOf } from './shadow.js';

/** Rejection of a wait for room that found none: the batch ends, its completions wait. */
const FULL = Symbol('completion queue full');

/** The completion side of one controller. */
export class CqPoster {
  /** Inside a synchronous drain's fetch loop: completions wait in `collected` for the batch's end. */
  collecting = 0;
  private readonly collected: CompletionQueue[] = [];

  constructor(
    private readonly c: QueueCore,
    private readonly events: Pick<AsyncEvents, 'recordError'>,
  ) {}

  /**
   * The point where a command's completion is queued for posting (its CQE
   * is written by {@link flush}); `slot`: its entry in the in-flight log.
   */
  complete(sq: SubmissionQueue, cid: number, nsid: number, status: number, dw0: number, slot: number, why?: string): void {
    if (status !== Status.SUCCESS) this.events.recordError(sq.id, cid, status, nsid, why);
    // An admin command's effect becomes durable with its result, before the host can see either.
    if (sq.id === 0 && slot >= 0) this.c.adminCompleted(slot, status, dw0);
    const cq = sq.cq;
    if (this.collecting > 0) {
      // A synchronous drain: the entry is written now when nothing waits before it (no record, no copy),
      // and the batch's interrupt is raised when its fetch loop ends.
      if (!this.postNow(cq, sq, cid, status, dw0, slot)) cq.pending.push({ sq, cid, status, dw0, slot });
      if (!cq.collected) {
        cq.collected = true;
        this.collected.push(cq);
      }
      return;
    }
    cq.pending.push({ sq, cid, status, dw0, slot });
    if (!cq.flushing && !cq.scheduled) {
      cq.scheduled = true;
      // Completions that finish in the same turn share one pass and one interrupt.
      queueMicrotask(() => {
        cq.scheduled = false;
        this.flush(cq);
      });
    }
  }

  /**
   * Writes a completion into its queue's view at once, when nothing waits
   * to be posted before it and the queue has room; false otherwise (it
   * must wait in `pending`). Its batch's interrupt comes from {@link publish}.
   */
  private postNow(cq: CompletionQueue, sq: SubmissionQueue, cid: number, status: number, dw0: number, slot: number): boolean {
    if (cq.pending.length > 0 || cq.flushing || cq.full) return false;
    const words = this.c.memory.accessible() ? this.cqRing(cq) : undefined;
    if (!words) return false;
    writeCompletion(words, cq.tail * CQE.size, sq, cid, status, dw0, cq.phase);
    cq.batchThroughRing = true;
    this.posted(cq, sq, slot);
    return true;
  }

  /** Posts the completions a synchronous drain collected (some already are), one interrupt per queue. */
  publish(): void {
    while (this.collected.length > 0) {
      const cq = this.collected.pop()!;
      cq.collected = false;
      if (cq.flushing) continue; // its flush ends the batch
      if (cq.pending.length > 0) this.flush(cq);
      else this.endBatch(cq);
    }
  }

  /**
   * Posts what waits, while the queue has room, then raises its interrupt
   * once for the batch (entries posted at once by the same drain included):
   * through views of the queue (and of the shadow doorbells when it is
   * full), else through copies, going on when they are done.
   */
  flush(cq: CompletionQueue): void {
    if (cq.flushing || cq.pending.length === 0) return;
    this.post(cq, this.c.epoch);
  }

  /** Posts from the head of `pending` on; when a step must wait, marks the queue flushing and goes on after it. */
  private post(cq: CompletionQueue, epoch: number): void {
    const pending = cq.pending;
    const words = this.c.memory.accessible() ? this.cqRing(cq) : undefined;
    let n = 0;
    let wait: Promise<unknown> | undefined;
    try {
      for (; n < pending.length; n++) {
        if (cq.full) {
          const room = cq.shadow ? this.roomFromShadow(cq) : false;
          if (room instanceof Promise) {
            wait = room.then((more) => more || Promise.reject(FULL));
            break;
          }
          if (!room) break;
        }
        const p = pending[n];
        if (words) {
          writeCompletion(words, cq.tail * CQE.size, p.sq, p.cid, p.status, p.dw0, cq.phase);
          cq.batchThroughRing = true;
        } else {
          const written = this.writeEntry(cq, p);
          if (written) {
            // The entry leaves `pending` now; it counts as posted once written.
            n++;
            wait = written.then(() => this.posted(cq, p.sq, p.slot));
            break;
          }
        }
        this.posted(cq, p.sq, p.slot);
      }
    } catch (e) {
      this.c.fatal(`cannot write CQ ${cq.id} entry ${cq.tail}: ${(e as Error).message}`);
      return;
    } finally {
      pending.splice(0, n);
    }
    if (!wait) return this.endBatch(cq);
    cq.flushing = true;
    wait.then(
      () => {
        cq.flushing = false;
        if (this.c.epoch === epoch) this.post(cq, epoch);
      },
      (e) => {
        cq.flushing = false;
        if (this.c.epoch !== epoch) return;
        if (e === FULL) return this.endBatch(cq);
        this.c.fatal(`cannot write CQ ${cq.id} entry ${cq.tail}: ${(e as Error).message}`);
      },
    );
  }

  /** The point where a completion counts as posted: its CQE is in guest memory. */
  private posted(cq: CompletionQueue, sq: SubmissionQueue, slot: number): void {
    cq.advance();
    // Entry freed, then the tail: recovery finds a CQE posted past the logged tail by its phase.
    if (slot >= 0) this.c.log?.posted(slot, cq.id, cq.tail, cq.phase);
    if (--sq.outstanding === 0) sq.wakeIdle();
    cq.batchPosted++;
    // Nearly always one submission queue: spare the Set.
    const freed = cq.batchFreed;
    if (freed === undefined) cq.batchFreed = sq;
    else if (freed !== sq) {
      if (freed instanceof Set) freed.add(sq);
      else cq.batchFreed = new Set([freed, sq]);
    }
  }

  /** The batch is posted: one interrupt, then the submission queues it gave room may fetch again. */
  private endBatch(cq: CompletionQueue): void {
    const n = cq.batchPosted;
    if (n === 0) return;
    const freed = cq.batchFreed;
    cq.batchPosted = 0;
    cq.batchFreed = undefined;
    this.c.stats.completions += n;
    // One dirty record for the batch (a no-op unless migration logs).
    if (cq.batchThroughRing) this.c.memory.markDirty(cq.base, cq.size * CQE.size);
    cq.batchThroughRing = false;
    if (cq.interruptsEnabled) this.interrupt(cq.vector);
    // Room in the completion budget: queues that stopped fetching may go on.
    if (freed instanceof Set) {
      for (const sq of freed) if (!sq.empty && !sq.dead) this.c.drain(sq);
    } else if (freed && !freed.empty && !freed.dead) {
      this.c.drain(freed);
    }
    // Completions that arrived while the batch waited for memory.
    if (cq.pending.length > 0 && !cq.full) this.flush(cq);
    const log = this.c.log;
    if (log?.starved) {
      // Fetching stopped for want of log entries: posting freed some.
      log.starved = false;
      for (const sq of this.c.sqs.values()) if (!sq.empty && !sq.dead) this.c.drain(sq);
    }
  }

  /** The CQ looks full: read the shadow head, and arm EventIdx so the driver rings when it frees entries. */
  private roomFromShadow(cq: CompletionQueue): boolean | Promise<boolean> {
    const shadow = this.c.shadow;
    const slots = cq.shadow!;
    return then(shadow.readDoorbell(slots), (v) => {
      this.headFromShadow(cq, v);
      if (!cq.full) return true;
      return then(shadow.writeEventIdx(slots, cq.head), () =>
        then(shadow.readDoorbell(slots), (again) => {
          this.headFromShadow(cq, again);
          return !cq.full;
        }),
      );
    });
  }

  /** Takes a valid shadow head, and logs it: a successor scanning for unlogged posts stops at a full queue, by the logged head. */
  private headFromShadow(cq: CompletionQueue, head: number): void {
    if (!cq.validHead(head) || head === cq.head) return;
    cq.head = head;
    this.c.log?.cqHead(cq.id, head);
  }

  /** Writes a CQE outside the queue's view so that its phase tag (dword 3) lands last; a Promise when copied. */
  private writeEntry(cq: CompletionQueue, p: PendingCompletion): Promise<void> | undefined {
    const memory = this.c.memory;
    const addr = cq.slot;
    const entry = encodeCompletion(p, cq.phase);
    const views = memory.views(addr, CQE.size, true);
    if (views && views.length === 1) {
      const unpin = memory.pin(addr, CQE.size);
      try {
        views[0].set(entry.subarray(0, 12), 0);
        views[0].set(entry.subarray(12), 12);
      } finally {
        unpin();
      }
      return undefined;
    }
    return memory.write(addr, entry);
  }

  /** The view of a whole completion queue and its words, (re)taken when missing or unmapped; undefined when it has none. */
  private cqRing(cq: CompletionQueue): DataView | undefined {
    const length = cq.size * CQE.size;
    if (cq.ring?.length !== length) {
      cq.ring = viewOf(this.c.memory, cq.base, length, true);
      cq.words = cq.ring && new DataView(cq.ring.buffer, cq.ring.byteOffset, length);
    }
    return cq.words;
  }

  /** Raises the queue's interrupt, counted: its MSI-X vector, or INTx unless INTMS masks it. */
  interrupt(vector: number): void {
    this.c.stats.interrupts++;
    this.raise(vector);
  }

  /** Raises `vector` without counting it: a queue thread counted it in its own counters before handing it here. */
  raise(vector: number): void {
    const c = this.c;
    if (c.host.msixEnabled()) {
      if (vector < c.host.msixVectors()) c.host.raiseMsix(vector);
      return;
    }
    if (!(c.regs.intms & 1)) c.host.raiseIntx();
  }
}
