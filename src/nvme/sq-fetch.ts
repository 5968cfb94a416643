/**
 * Submission queue fetch (NVMe 1.4, 4.1 and 7.2): doorbells, tails read
 * from the shadow doorbell buffer (with EventIdx, and polling while a queue
 * is idle), and the fetch loop that takes each command and starts it.
 *
 * I/O queues whose memory has zero-copy views are served synchronously on
 * their doorbell: Read, Write and Flush that the backend finishes at once
 * complete without a Promise, and each batch's completions are posted with
 * one interrupt. Everything else takes the asynchronous path, with the same
 * checks and status codes.
 */
import { executeAdmin, type AdminTarget } from './admin.js';
import { CommandError, parseCommand, type CommandResult, type NvmeCommand } from './command.js';
import { AdminOpcode, AsyncEvent, LogPageId, SQE_SIZE, Status } from './constants.js';
import type { ControllerCore } from './core.js';
import type { CqPoster } from './cq-post.js';
import type { AsyncEvents } from './events.js';
import { executeIo, executeIoNow, type FastCommand, type IoContext } from './io.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';
import { readU32, u32, viewOf, writeU32, type ShadowViews } from './shadow.js';

/** Passes of one synchronous drain before it yields to the event loop (a driver that never stops adding). */
const MAX_DRAIN_PASSES = 64;
/** What a synchronous drain leaves to the asynchronous one. */
const enum Drained {
  /** Nothing: the drain is over. */
  DONE,
  /** The rest, with the tail already known (a doorbell register carried it). */
  FRESH,
  /** The rest, the shadow tail to be read first. */
  REST,
}

/** The fast path's scratch decode of a submission queue entry (one at a time, never kept). */
interface ScratchCommand extends FastCommand {
  opcode: number;
  fuse: number;
  psdt: number;
  cid: number;
  nsid: number;
  prp1: number;
  prp2: number;
  cdw10: number;
  cdw11: number;
  cdw12: number;
}

/** The submission side of one controller. */
export class SqFetcher {
  private readonly scratch: ScratchCommand = { opcode: 0, fuse: 0, psdt: 0, cid: 0, nsid: 0, prp1: 0, prp2: 0, cdw10: 0, cdw11: 0, cdw12: 0 };

  constructor(
    private readonly c: ControllerCore,
    private readonly poster: CqPoster,
    private readonly events: AsyncEvents,
    private readonly commands: AdminTarget & IoContext,
  ) {}

  /** Doorbell `index` (2y: SQ y tail, 2y+1: CQ y head) was written. */
  doorbell(index: number, value: number): void {
    const c = this.c;
    c.stats.doorbellWrites++;
    const qid = index >> 1;
    if (qid > 0) c.stats.ioDoorbellWrites++;
    if (!c.accepting) return;
    // With shadow doorbells the register write is only a wake-up: QEMU posts register writes, so one may
    // arrive after the driver moved on through the shadow buffer, and its value would move us backwards.
    if (index & 1) {
      const cq = c.cqs.get(qid);
      if (!cq) return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_REGISTER, LogPageId.ERROR);
      if (value >= cq.size || (!cq.shadow && !cq.validHead(value))) return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
      if (cq.shadow) {
        const db = c.memory.accessible() ? c.shadow.views() : undefined;
        if (!db) return void this.shadowHead(cq);
        const v = u32(db.doorbells, cq.shadow.doorbell - c.shadow.buffers!.doorbells);
        if (cq.validHead(v)) cq.head = v;
        this.poster.flush(cq);
        return;
      }
      cq.head = value;
      this.poster.flush(cq);
      return;
    }
    const sq = c.sqs.get(qid);
    if (!sq) return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_REGISTER, LogPageId.ERROR);
    if (value >= sq.size) return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
    if (sq.shadow) {
      this.drain(sq);
      return;
    }
    sq.tail = value;
    this.drain(sq, true);
  }

  /** A CQ head doorbell under shadow doorbells: take the head from the shadow buffer, then post what waits. */
  private async shadowHead(cq: CompletionQueue): Promise<void> {
    const c = this.c;
    const epoch = c.epoch;
    try {
      const v = await readU32(c.memory, cq.shadow!.doorbell);
      if (c.epoch !== epoch || !c.cqs.has(cq.id)) return;
      if (cq.validHead(v)) cq.head = v;
      this.poster.flush(cq);
    } catch (e) {
      if (c.epoch === epoch) c.fatal(`CQ ${cq.id} shadow doorbell: ${(e as Error).message}`);
    }
  }

  /** Takes the SQ tail from the shadow doorbell; false when the driver wrote an impossible value. */
  private async shadowTail(sq: SubmissionQueue): Promise<boolean> {
    if (!sq.shadow) return true;
    this.c.stats.shadowReads++;
    const v = await readU32(this.c.memory, sq.shadow.doorbell);
    if (v >= sq.size) {
      this.c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
      return false;
    }
    sq.tail = v;
    return true;
  }

  /**
   * Fetches and starts every command between head and tail, as far as the
   * queue's completion budget allows. `fromDoorbell`: the tail was just
   * written to the doorbell register (queues without shadow doorbells).
   * I/O queues go synchronously while their memory has views (see
   * {@link drainNow}); the rest goes on asynchronously.
   */
  drain(sq: SubmissionQueue, fromDoorbell = false): void {
    if (sq.draining) {
      sq.again = true;
      return;
    }
    const c = this.c;
    let fresh = fromDoorbell;
    if (sq.id !== 0) {
      const epoch = c.epoch;
      let rest = Drained.DONE;
      sq.draining = true;
      try {
        rest = this.drainNow(sq, fresh);
      } catch (e) {
        if (!sq.dead && c.epoch === epoch && c.ready) c.fatal(`SQ ${sq.id}: ${(e as Error).message}`);
      } finally {
        sq.draining = false;
        // Whatever a fault left collected.
        this.poster.publish();
      }
      if (rest === Drained.DONE) return;
      fresh = rest === Drained.FRESH;
    }
    void this.drainAsync(sq, fresh);
  }

  /**
   * The synchronous drain of an I/O queue: reads the shadow tail, fetches
   * entries and runs them through {@link executeIoNow} from views of the
   * queue and doorbell memory, posts the batch's completions with one
   * interrupt per completion queue, and updates EventIdx, without a
   * Promise per command. A command that must wait continues on its own
   * Promise; one the fast path does not take goes to {@link runIo}. When
   * queue memory has no views (or cannot be reached now), it stops before
   * touching it and returns what the asynchronous drain must do.
   */
  private drainNow(sq: SubmissionQueue, fresh: boolean): Drained {
    const c = this.c;
    const epoch = c.epoch;
    let passes = 0;
    do {
      const db = sq.shadow ? c.shadow.views() : undefined;
      const ring = c.memory.accessible() ? this.sqRing(sq) : undefined;
      if (!ring || (sq.shadow && !db)) return fresh ? Drained.FRESH : Drained.REST;
      if (++passes > MAX_DRAIN_PASSES) {
        setImmediate(() => this.drain(sq));
        return Drained.DONE;
      }
      sq.again = false;
      if (!fresh && db && !this.shadowTailNow(sq, db)) return Drained.DONE;
      fresh = false;
      this.poster.collecting++;
      try {
        while (this.live(sq, epoch) && !sq.empty && sq.outstanding < sq.size - 1) this.fetchNow(sq, ring);
      } finally {
        this.poster.collecting--;
      }
      this.poster.publish();
      if (this.live(sq, epoch) && db && sq.shadow) {
        const eventIdx = sq.shadow.eventIdx - c.shadow.buffers!.eventIdx;
        if (c.config.pollMicroseconds > 0) {
          // EventIdx one behind the tail: the driver's next submissions do not ring while we poll.
          c.shadow.setThroughView(db.eventIdx, eventIdx, sq.shadow.eventIdx, (sq.tail - 1) & 0xffff);
          this.startPolling(sq);
        } else {
          // Tell the driver where we are, then look again: it may have moved the tail meanwhile without ringing.
          c.shadow.setThroughView(db.eventIdx, eventIdx, sq.shadow.eventIdx, sq.tail);
          const before = sq.tail;
          if (!this.shadowTailNow(sq, db)) return Drained.DONE;
          if (sq.tail !== before) sq.again = true;
        }
      }
    } while (sq.again && this.live(sq, epoch));
    return Drained.DONE;
  }

  /** The queue is fetching for the session of `epoch`. */
  private live(sq: SubmissionQueue, epoch: number): boolean {
    return !sq.dead && this.c.epoch === epoch && this.c.ready;
  }

  /** Fetches the entry at the head from the queue's view and runs it: at once if it can, else on its own Promise. */
  private fetchNow(sq: SubmissionQueue, ring: Uint8Array): void {
    const c = this.c;
    const at = sq.head * SQE_SIZE;
    sq.head = (sq.head + 1) % sq.size;
    sq.outstanding++;
    c.stats.commands++;
    c.stats.ioCommands++;
    const cmd = decodeInto(this.scratch, ring, at);
    const result = executeIoNow(cmd, this.commands);
    if (result === undefined) {
      void this.runIo(sq, parseCommand(ring.subarray(at, at + SQE_SIZE)));
    } else if (typeof result === 'number') {
      c.stats.fastCommands++;
      this.c.complete(sq, cmd.cid, cmd.nsid, result, 0);
    } else {
      void this.completeWith(sq, { cid: cmd.cid, nsid: cmd.nsid }, c.epoch, result);
    }
  }

  /** Takes the SQ tail from the shadow doorbell's view; false when the driver wrote an impossible value. */
  private shadowTailNow(sq: SubmissionQueue, db: ShadowViews): boolean {
    const c = this.c;
    c.stats.shadowReads++;
    const v = u32(db.doorbells, sq.shadow!.doorbell - c.shadow.buffers!.doorbells);
    if (v >= sq.size) {
      c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
      return false;
    }
    sq.tail = v;
    return true;
  }

  /** The view of a whole submission queue, (re)taken when missing or unmapped; undefined when it has none. */
  private sqRing(sq: SubmissionQueue): Uint8Array | undefined {
    const length = sq.size * SQE_SIZE;
    if (sq.ring?.length !== length) sq.ring = viewOf(this.c.memory, sq.base, length, false);
    return sq.ring;
  }

  /** The asynchronous drain: queue memory by copies (or messages), for the admin queue and memory without views. */
  private async drainAsync(sq: SubmissionQueue, fromDoorbell: boolean): Promise<void> {
    if (sq.draining) {
      sq.again = true;
      return;
    }
    const c = this.c;
    sq.draining = true;
    const epoch = c.epoch;
    const live = (): boolean => !sq.dead && c.epoch === epoch && c.ready;
    try {
      // A doorbell register write carried the tail itself.
      let fresh = fromDoorbell;
      do {
        sq.again = false;
        if (!fresh && !(await this.shadowTail(sq))) return;
        fresh = false;
        while (live() && !sq.empty && sq.outstanding < sq.size - 1) {
          const addr = sq.base + sq.head * SQE_SIZE;
          let entry: Uint8Array;
          try {
            entry = await c.memory.read(addr, SQE_SIZE);
          } catch (e) {
            if (live()) c.fatal(`cannot read SQ ${sq.id} entry ${sq.head}: ${(e as Error).message}`);
            return;
          }
          if (!live()) return;
          sq.head = (sq.head + 1) % sq.size;
          sq.outstanding++;
          c.stats.commands++;
          const cmd = parseCommand(entry);
          if (sq.id === 0) {
            await this.runAdmin(sq, cmd);
          } else {
            c.stats.ioCommands++;
            void this.runIo(sq, cmd);
          }
        }
        if (live() && sq.shadow && c.config.pollMicroseconds > 0) {
          // EventIdx one behind the tail: the driver's next submissions do not ring while we poll.
          await writeU32(c.memory, sq.shadow.eventIdx, (sq.tail - 1) & 0xffff);
          this.startPolling(sq);
        } else if (live() && sq.shadow) {
          // Tell the driver where we are, then look again: it may have moved the tail meanwhile without ringing.
          await writeU32(c.memory, sq.shadow.eventIdx, sq.tail);
          const before = sq.tail;
          if (!(await this.shadowTail(sq))) return;
          if (sq.tail !== before) sq.again = true;
        }
      } while (sq.again && live());
    } catch (e) {
      if (live()) c.fatal(`SQ ${sq.id}: ${(e as Error).message}`);
    } finally {
      sq.draining = false;
    }
  }

  /** Polls the shadow tail of an idle submission queue until it moves or the window closes. */
  private startPolling(sq: SubmissionQueue): void {
    const c = this.c;
    sq.pollUntil = performance.now() + c.config.pollMicroseconds / 1000;
    if (sq.polling) return;
    sq.polling = true;
    const epoch = c.epoch;
    const tick = async (): Promise<void> => {
      try {
        if (sq.dead || c.epoch !== epoch || !c.ready || sq.draining || !sq.shadow) return void (sq.polling = false);
        const before = sq.tail;
        if (!(await this.shadowTail(sq))) return void (sq.polling = false);
        if (sq.tail !== before) {
          sq.polling = false;
          this.drain(sq);
          return;
        }
        if (performance.now() < sq.pollUntil) {
          setImmediate(() => void tick());
          return;
        }
        // The window closed: ask for doorbells again, then look once more for a tail written meanwhile.
        sq.polling = false;
        await writeU32(c.memory, sq.shadow.eventIdx, sq.tail);
        if (!(await this.shadowTail(sq))) return;
        if (sq.tail !== before) this.drain(sq);
      } catch (e) {
        sq.polling = false;
        if (c.epoch === epoch && !sq.dead) c.fatal(`SQ ${sq.id} shadow doorbell: ${(e as Error).message}`);
      }
    };
    setImmediate(() => void tick());
  }

  private async runIo(sq: SubmissionQueue, cmd: NvmeCommand): Promise<void> {
    const epoch = this.c.epoch;
    await this.completeWith(sq, cmd, epoch, executeIo(cmd, this.commands));
  }

  private async runAdmin(sq: SubmissionQueue, cmd: NvmeCommand): Promise<void> {
    const epoch = this.c.epoch;
    if (cmd.opcode === AdminOpcode.ASYNC_EVENT_REQUEST) {
      this.events.hold(sq, cmd.cid, cmd.nsid);
      return;
    }
    await this.completeWith(sq, cmd, epoch, executeAdmin(cmd, this.commands));
  }

  /**
   * Waits for a command's execution and posts its completion, unless a reset
   * (a new `epoch`) has discarded the queue meanwhile.
   */
  private async completeWith(sq: SubmissionQueue, cmd: Pick<NvmeCommand, 'cid' | 'nsid'>, epoch: number, execution: Promise<CommandResult>): Promise<void> {
    let status: number = Status.SUCCESS;
    let dw0 = 0;
    try {
      dw0 = (await this.c.track(execution)).dw0 ?? 0;
    } catch (e) {
      status = e instanceof CommandError ? e.status : Status.INTERNAL_ERROR;
    }
    if (this.c.epoch === epoch) this.c.complete(sq, cmd.cid, cmd.nsid, status, dw0);
  }
}

/** Decodes the fields the fast path reads of the entry at `at` into `out`. */
function decodeInto(out: ScratchCommand, b: Uint8Array, at: number): ScratchCommand {
  const flags = b[at + 1];
  out.opcode = b[at];
  out.fuse = flags & 3;
  out.psdt = (flags >> 6) & 3;
  out.cid = b[at + 2] | (b[at + 3] << 8);
  out.nsid = u32(b, at + 4);
  out.prp1 = u32(b, at + 28) * 0x1_0000_0000 + u32(b, at + 24);
  out.prp2 = u32(b, at + 36) * 0x1_0000_0000 + u32(b, at + 32);
  out.cdw10 = u32(b, at + 40);
  out.cdw11 = u32(b, at + 44);
  out.cdw12 = u32(b, at + 48);
  return out;
}
