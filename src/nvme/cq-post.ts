/**
 * Completion posting (NVMe 1.4, 4.6): completions wait per completion
 * queue, are written with their phase tag last, each batch raises one
 * interrupt, and a full queue holds them back (reading the shadow head and
 * arming EventIdx) until the host frees entries. Room made in a queue lets
 * the submission queues that stopped fetching go on.
 */
import { CQE_SIZE, Status } from './constants.js';
import type { ControllerCore } from './core.js';
import type { AsyncEvents } from './events.js';
import { CompletionQueue, encodeCompletion, SubmissionQueue, writeCompletion } from './queues.js';
import { readU32, u32, viewOf, writeU32 } from './shadow.js';

/** The completion side of one controller. */
export class CqPoster {
  /** Inside a synchronous drain's fetch loop: completions wait in `collected` for the batch's end. */
  collecting = 0;
  private readonly collected: CompletionQueue[] = [];

  constructor(
    private readonly c: ControllerCore,
    private readonly events: AsyncEvents,
  ) {}

  /** The point where a command's completion is queued for posting (its CQE is written by {@link flush}). */
  complete(sq: SubmissionQueue, cid: number, nsid: number, status: number, dw0: number): void {
    if (status !== Status.SUCCESS) this.events.recordError(sq.id, cid, status, nsid);
    const cq = sq.cq;
    cq.pending.push({ sq, cid, status, dw0 });
    if (this.collecting > 0) {
      // A synchronous drain posts its batch when its fetch loop ends.
      if (!cq.collected) {
        cq.collected = true;
        this.collected.push(cq);
      }
      return;
    }
    if (!cq.flushing && !cq.scheduled) {
      cq.scheduled = true;
      // Completions that finish in the same turn share one pass and one interrupt.
      queueMicrotask(() => {
        cq.scheduled = false;
        this.flush(cq);
      });
    }
  }

  /** Posts the completions a synchronous drain collected. */
  publish(): void {
    while (this.collected.length > 0) {
      const cq = this.collected.pop()!;
      cq.collected = false;
      this.flush(cq);
    }
  }

  /** Posts what waits: at once through the queue's view when it can, else asynchronously. */
  flush(cq: CompletionQueue): void {
    if (cq.flushing || cq.pending.length === 0) return;
    if (this.postNow(cq)) return;
    cq.flushing = true;
    void this.postPending(cq);
  }

  /**
   * {@link postPending} at once, through views of the completion queue (and
   * of the shadow doorbells when it is full). True when done (also when the
   * queue is full and stays so); false when the rest needs the asynchronous
   * pass (no views, or memory not accessible now).
   */
  private postNow(cq: CompletionQueue): boolean {
    const words = this.c.memory.accessible() ? this.cqRing(cq) : undefined;
    if (!words) return false;
    const pending = cq.pending;
    let done = true;
    let n = 0;
    let freed: SubmissionQueue | Set<SubmissionQueue> | undefined;
    for (; n < pending.length; n++) {
      if (cq.full) {
        const room = cq.shadow ? this.roomFromShadowNow(cq) : false;
        if (room === undefined) done = false;
        if (!room) break;
      }
      const p = pending[n];
      writeCompletion(words, cq.tail * CQE_SIZE, p, cq.phase);
      cq.advance();
      if (--p.sq.outstanding === 0) p.sq.wakeIdle();
      // Nearly always one submission queue: spare the Set.
      if (freed === undefined) freed = p.sq;
      else if (freed !== p.sq) {
        if (!(freed instanceof Set)) freed = new Set([freed]);
        freed.add(p.sq);
      }
    }
    if (n === 0) return done;
    pending.splice(0, n);
    this.c.stats.completions += n;
    // One dirty record for the batch (a no-op unless migration logs).
    this.c.memory.markDirty(cq.base, cq.size * CQE_SIZE);
    if (cq.interruptsEnabled) this.interrupt(cq.vector);
    // Room in the completion budget: queues that stopped fetching may go on.
    if (freed instanceof Set) {
      for (const sq of freed) if (!sq.empty && !sq.dead) this.c.drain(sq);
    } else if (freed && !freed.empty && !freed.dead) {
      this.c.drain(freed);
    }
    return done;
  }

  /** {@link roomFromShadow} through views; undefined when the shadow buffers have none now. */
  private roomFromShadowNow(cq: CompletionQueue): boolean | undefined {
    const shadow = this.c.shadow;
    const db = shadow.views();
    if (!db || !cq.shadow) return undefined;
    const head = cq.shadow.doorbell - shadow.buffers!.doorbells;
    const v = u32(db.doorbells, head);
    if (cq.validHead(v)) cq.head = v;
    if (!cq.full) return true;
    shadow.setThroughView(db.eventIdx, cq.shadow.eventIdx - shadow.buffers!.eventIdx, cq.shadow.eventIdx, cq.head);
    const again = u32(db.doorbells, head);
    if (cq.validHead(again)) cq.head = again;
    return !cq.full;
  }

  /** Writes pending completions while the queue has room, then raises its interrupt once. */
  private async postPending(cq: CompletionQueue): Promise<void> {
    const epoch = this.c.epoch;
    let posted = 0;
    const freed = new Set<SubmissionQueue>();
    try {
      while (cq.pending.length > 0 && this.c.epoch === epoch) {
        if (cq.full && !(await this.roomFromShadow(cq))) break;
        const p = cq.pending.shift()!;
        const entry = new Uint8Array(CQE_SIZE);
        encodeCompletion(p, cq.phase, entry);
        try {
          await this.postEntry(cq.slot, entry);
        } catch (e) {
          this.c.fatal(`cannot write CQ ${cq.id} entry ${cq.tail}: ${(e as Error).message}`);
          return;
        }
        cq.advance();
        if (--p.sq.outstanding === 0) p.sq.wakeIdle();
        freed.add(p.sq);
        posted++;
        this.c.stats.completions++;
      }
    } finally {
      cq.flushing = false;
    }
    if (this.c.epoch !== epoch) return;
    if (posted > 0 && cq.interruptsEnabled) this.interrupt(cq.vector);
    // Room in the completion budget: queues that stopped fetching may go on.
    for (const sq of freed) if (!sq.empty && !sq.dead) this.c.drain(sq);
    // Completions that arrived while this pass awaited memory.
    if (cq.pending.length > 0 && !cq.full) this.flush(cq);
  }

  /** The CQ looks full: read the shadow head, and arm EventIdx so the driver rings when it frees entries. */
  private async roomFromShadow(cq: CompletionQueue): Promise<boolean> {
    if (!cq.shadow) return false;
    const v = await readU32(this.c.memory, cq.shadow.doorbell);
    if (cq.validHead(v)) cq.head = v;
    if (!cq.full) return true;
    await writeU32(this.c.memory, cq.shadow.eventIdx, cq.head);
    const again = await readU32(this.c.memory, cq.shadow.doorbell);
    if (cq.validHead(again)) cq.head = again;
    return !cq.full;
  }

  /** Writes a CQE so that its phase tag (dword 3) lands last. */
  private async postEntry(addr: number, entry: Uint8Array): Promise<void> {
    const memory = this.c.memory;
    const views = memory.views(addr, CQE_SIZE, true);
    if (views && views.length === 1) {
      const unpin = memory.pin(addr, CQE_SIZE);
      try {
        views[0].set(entry.subarray(0, 12), 0);
        views[0].set(entry.subarray(12), 12);
      } finally {
        unpin();
      }
      return;
    }
    await memory.write(addr, entry);
  }

  /** The view of a whole completion queue and its words, (re)taken when missing or unmapped; undefined when it has none. */
  private cqRing(cq: CompletionQueue): DataView | undefined {
    const length = cq.size * CQE_SIZE;
    if (cq.ring?.length !== length) {
      cq.ring = viewOf(this.c.memory, cq.base, length, true);
      cq.words = cq.ring && new DataView(cq.ring.buffer, cq.ring.byteOffset, length);
    }
    return cq.words;
  }

  /** Raises the queue's interrupt: its MSI-X vector, or INTx unless INTMS masks it. */
  interrupt(vector: number): void {
    const c = this.c;
    c.stats.interrupts++;
    if (c.host.msixEnabled()) {
      if (vector < c.host.msixVectors()) c.host.raiseMsix(vector);
      return;
    }
    if (!(c.regs.intms & 1)) c.host.raiseIntx();
  }
}
