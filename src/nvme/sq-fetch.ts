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
import { native } from '../native/index.js';
import { executeAdmin, type AdminTarget } from './admin.js';
import { CommandError, parseCommand, type CommandResult, type NvmeCommand } from './command.js';
import { AdminOpcode, AsyncEvent, LogPageId, Status } from './constants.js';
import { SQE } from './layouts.js';
import { decodeInto, scratchCommand, wordsOf } from './sq-decode.js';
import type { QueueCore } from './core.js';
import type { CqPoster } from './cq-post.js';
import type { AsyncEvents } from './events.js';
import { executeIo, type IoContext } from './io.js';
import { SpanCache } from '../device/span-cache.js';
import { CompletionQueue, type SubmissionQueue } from './queues.js';
import { viewOf } from './shadow.js';

/** Passes of one drain before it yields to the event loop (a driver that never stops adding). */
const MAX_DRAIN_PASSES = 64;
/** Where a drain is: a pass reads the tail, fetches, then parks the queue (EventIdx) and maybe goes again. */
const enum Step {
  /** A new pass: the tail is in the shadow doorbell (or already known, without one). */
  PASS,
  /** A new pass, the tail just written to the doorbell register. */
  FRESH_PASS,
  FETCH,
  /** Set EventIdx for the driver's next doorbell. */
  PARK,
  POLL,
  /** Read the shadow tail once more after setting EventIdx. */
  RECHECK,
  END,
}

/** The submission side of one controller. */
export class SqFetcher {
  private readonly scratch = scratchCommand();
  /** The region last located by the commands of one synchronous fetch loop; good only while `spanning`. */
  private readonly spans = new SpanCache();
  private spanning = false;

  constructor(
    private readonly c: QueueCore,
    private readonly poster: CqPoster,
    private readonly events: Pick<AsyncEvents, 'hold'>,
    private readonly io: IoContext,
    /** Who runs admin commands (undefined on a queue thread, which serves no admin queue). */
    private readonly admin: AdminTarget | undefined,
  ) {}

  /**
   * Doorbell `index` (2y: SQ y tail, 2y+1: CQ y head) was written: by a
   * register write, or (`mapped`) in the doorbell page the client maps.
   * Both get the same checks and the same answers (an invalid doorbell
   * raises the same asynchronous event).
   */
  doorbell(index: number, value: number, mapped = false): void {
    const c = this.c;
    const qid = index >> 1;
    if (mapped) c.stats.mappedDoorbells++;
    else {
      c.stats.doorbellWrites++;
      if (qid > 0) c.stats.ioDoorbellWrites++;
    }
    if (!c.accepting) return;
    // With shadow doorbells the register write is only a wake-up: QEMU posts register writes, so one may
    // arrive after the driver moved on through the shadow buffer, and its value would move us backwards.
    if (index & 1) {
      const cq = c.cqs.get(qid);
      if (!cq) return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_REGISTER, LogPageId.ERROR);
      if (value >= cq.size || (!cq.shadow && !cq.validHead(value))) return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
      // The register write only wakes us: the head is the shadow buffer's.
      if (cq.shadow) return this.shadowHead(cq);
      cq.head = value;
      c.log?.cqHead(qid, value);
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
    c.log?.sqTail(qid, value);
    this.drain(sq, true);
  }

  /**
   * Doorbell `index` rang through its ioeventfd: a kick without a value
   * (the eventfd carries none). With shadow doorbells the value is the
   * shadow buffer's, as for a register write; a queue without them cannot
   * tell its new tail or head, so the kick is lost, counted and reported
   * as an Invalid Doorbell Write Value event (QEMU's own NVMe binds
   * ioeventfds only once shadow doorbells are on; a vfio-user client binds
   * them once, so the option says the driver must turn them on first).
   */
  kick(index: number): void {
    const c = this.c;
    c.stats.ioeventfdKicks++;
    if (!c.accepting) return;
    const qid = index >> 1;
    const q = index & 1 ? c.cqs.get(qid) : c.sqs.get(qid);
    if (!q) return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_REGISTER, LogPageId.ERROR);
    if (!q.shadow) {
      c.stats.lostKicks++;
      return c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
    }
    if (q instanceof CompletionQueue) this.shadowHead(q);
    else this.drain(q);
  }

  /** Takes a CQ's head from its shadow doorbell. */
  private shadowHead(cq: CompletionQueue): void {
    const v = this.c.shadow.readDoorbell(cq.shadow!);
    if (typeof v === 'number') this.headWritten(cq, v);
    else void this.headLater(cq, v);
  }

  private headWritten(cq: CompletionQueue, head: number): void {
    if (cq.validHead(head)) {
      cq.head = head;
      this.c.log?.cqHead(cq.id, head);
    }
    this.poster.flush(cq);
  }

  /** A shadow CQ head being copied out of guest memory. */
  private async headLater(cq: CompletionQueue, head: Promise<number>): Promise<void> {
    const c = this.c;
    const epoch = c.epoch;
    try {
      const v = await head;
      if (c.epoch === epoch && c.cqs.has(cq.id)) this.headWritten(cq, v);
    } catch (e) {
      if (c.epoch === epoch) c.fatal(`CQ ${cq.id} shadow doorbell: ${(e as Error).message}`);
    }
  }

  /**
   * Takes the SQ tail from the shadow doorbell (queues without one keep the
   * tail their doorbell register wrote); false when the driver wrote an
   * impossible value.
   */
  private shadowTail(sq: SubmissionQueue): boolean | Promise<boolean> {
    if (!sq.shadow) return true;
    this.c.stats.shadowReads++;
    const v = this.c.shadow.readDoorbell(sq.shadow);
    return typeof v === 'number' ? this.tailRead(sq, v) : v.then((x) => this.tailRead(sq, x));
  }

  private tailRead(sq: SubmissionQueue, v: number): boolean {
    if (v >= sq.size) {
      this.c.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
      return false;
    }
    sq.tail = v;
    return true;
  }

  /**
   * Fetches and starts every command between head and tail, as far as the
   * queue's completion budget allows, then tells the driver through
   * EventIdx when to ring next. `fromDoorbell`: the tail was just written to
   * the doorbell register (queues without shadow doorbells). It runs
   * synchronously while queue memory has views and commands finish at once
   * (no Promise per command); a step that must wait (a copy, an admin
   * command) continues when it settles.
   */
  drain(sq: SubmissionQueue, fromDoorbell = false): void {
    if (sq.draining) {
      sq.again = true;
      return;
    }
    sq.draining = true;
    const epoch = this.c.epoch;
    let rest: Promise<void> | undefined;
    try {
      rest = this.run(sq, epoch, fromDoorbell ? Step.FRESH_PASS : Step.PASS, 0);
    } catch (e) {
      this.failed(sq, epoch, e);
    }
    if (!rest) {
      sq.draining = false;
      return;
    }
    rest.then(
      () => void (sq.draining = false),
      (e) => {
        sq.draining = false;
        this.failed(sq, epoch, e);
      },
    );
  }

  private failed(sq: SubmissionQueue, epoch: number, e: unknown): void {
    if (this.live(sq, epoch)) this.c.fatal(`SQ ${sq.id}: ${(e as Error).message}`);
    // Whatever the fault left collected.
    this.poster.publish();
  }

  /** The drain's steps from `step` on, synchronously until one must wait. */
  private run(sq: SubmissionQueue, epoch: number, step: Step, passes: number): Promise<void> | undefined {
    const c = this.c;
    for (;;) {
      switch (step) {
        case Step.PASS:
        case Step.FRESH_PASS:
          if (++passes > MAX_DRAIN_PASSES) {
            // A driver that never stops adding: let the event loop run.
            setImmediate(() => this.drain(sq));
            return undefined;
          }
          sq.again = false;
          if (step === Step.FRESH_PASS) {
            step = Step.FETCH;
            break;
          } else {
            step = Step.FETCH;
            const ok = this.shadowTail(sq);
            if (ok instanceof Promise) return ok.then((yes) => (yes ? this.run(sq, epoch, step, passes) : undefined));
            if (!ok) return undefined;
            break;
          }
        case Step.FETCH: {
          step = Step.PARK;
          const wait = this.fetchAll(sq, epoch);
          if (wait) return wait.then(() => this.run(sq, epoch, step, passes));
          break;
        }
        case Step.PARK: {
          if (!this.live(sq, epoch) || !sq.shadow) {
            step = Step.END;
            break;
          }
          const polling = c.config.pollMicroseconds > 0;
          // Polling: EventIdx one behind the tail, so the driver's next submissions do not ring meanwhile.
          // Otherwise: tell the driver where we are, then look again (it may have moved the tail without ringing).
          step = polling ? Step.POLL : Step.RECHECK;
          const wait = c.shadow.writeEventIdx(sq.shadow, polling ? (sq.tail - 1) & 0xffff : sq.tail);
          if (wait) return wait.then(() => this.run(sq, epoch, step, passes));
          break;
        }
        case Step.POLL:
          this.startPolling(sq);
          step = Step.END;
          break;
        case Step.RECHECK: {
          const before = sq.tail;
          step = Step.END;
          // EventIdx stored before the tail is loaded: the driver does the mirror image (tail, barrier, EventIdx).
          native.memoryFence();
          const ok = this.shadowTail(sq);
          if (ok instanceof Promise) return ok.then((yes) => (yes ? this.rechecked(sq, epoch, before, passes) : undefined));
          if (!ok) return undefined;
          if (sq.tail !== before) sq.again = true;
          break;
        }
        case Step.END:
          if (!sq.again || !this.live(sq, epoch)) return undefined;
          step = Step.PASS;
          break;
      }
    }
  }

  private rechecked(sq: SubmissionQueue, epoch: number, before: number, passes: number): Promise<void> | undefined {
    if (sq.tail !== before) sq.again = true;
    return this.run(sq, epoch, Step.END, passes);
  }

  /** The queue is fetching for the session of `epoch`. */
  private live(sq: SubmissionQueue, epoch: number): boolean {
    return !sq.dead && this.c.epoch === epoch && this.c.ready;
  }

  /**
   * Takes commands while the queue has some and its completion budget
   * allows: from the queue's view when it has one, else copied entry by
   * entry. Completions of commands that finish here wait in the poster and
   * are posted together, with one interrupt, when the loop stops.
   */
  private fetchAll(sq: SubmissionQueue, epoch: number): Promise<void> | undefined {
    const poster = this.poster;
    const ring = this.c.memory.accessible() ? this.sqRing(sq) : undefined;
    let wait: Promise<void> | undefined;
    if (!this.live(sq, epoch)) return undefined;
    const c = this.c;
    poster.collecting++;
    // Commands taken from the ring's view in this loop share one region cache (see SpanCache).
    this.spanning = ring !== undefined;
    this.spans.clear();
    try {
      // Only a fault (sq.dead, a new epoch) can stop the controller while this loop runs synchronously.
      const log = c.log;
      while (!sq.dead && c.epoch === epoch && !sq.empty && sq.outstanding < sq.size - 1) {
        if (log && !log.hasRoom) {
          // Every log entry holds a command: go on once a completion frees one.
          log.starved = true;
          break;
        }
        wait = ring ? this.take(sq, ring, sq.head * SQE.size) : this.fetchCopy(sq, epoch);
        if (wait) break;
      }
    } finally {
      poster.collecting--;
      this.spanning = false;
    }
    poster.publish();
    return wait?.then(() => this.fetchAll(sq, epoch));
  }

  /** Copies the entry at the head out of guest memory (by mapping or by message), then takes it. */
  private fetchCopy(sq: SubmissionQueue, epoch: number): Promise<void> {
    const at = sq.head;
    return this.c.memory.read(sq.base + at * SQE.size, SQE.size).then(
      (entry) => (this.live(sq, epoch) ? this.take(sq, entry, 0) : undefined),
      (e) => {
        if (this.live(sq, epoch)) this.c.fatal(`cannot read SQ ${sq.id} entry ${at}: ${(e as Error).message}`);
      },
    );
  }

  /**
   * The point where a command is taken: the head moves past it, it counts
   * as outstanding until its completion is posted, and it starts. Its data
   * moves in io.ts (Read, Write) and its completion is queued by
   * `complete()`. Returns a Promise when fetching must wait for it (admin
   * commands run one at a time).
   */
  private take(sq: SubmissionQueue, bytes: Uint8Array, at: number): Promise<void> | undefined {
    const c = this.c;
    sq.head = (sq.head + 1) % sq.size;
    // Logged before it starts, so no completion can report this head before the log holds the entry.
    const slot = c.log ? c.log.taken(sq.id, sq.head, bytes, at) : -1;
    sq.outstanding++;
    c.stats.commands++;
    return this.start(sq, bytes, at, slot);
  }

  /**
   * Starts a command taken (or taken by a predecessor process and found in
   * the in-flight log: recovery.ts), its entry at `at` of `bytes`.
   */
  start(sq: SubmissionQueue, bytes: Uint8Array, at: number, slot: number): Promise<void> | undefined {
    const c = this.c;
    if (sq.id === 0) return this.runAdmin(sq, parseCommand(bytes.subarray(at, at + SQE.size)), slot);
    c.stats.ioCommands++;
    const cmd = decodeInto(this.scratch, wordsOf(bytes, sq.ring, sq.words), at);
    const cid = cmd.cid;
    const nsid = cmd.nsid;
    let execution: CommandResult | Promise<CommandResult>;
    try {
      execution = executeIo(cmd, this.io, this.spanning ? this.spans : undefined);
    } catch (e) {
      c.stats.fastCommands++;
      c.complete(sq, cid, nsid, statusOf(e), 0, slot, reasonOf(e));
      return undefined;
    }
    if (execution instanceof Promise) {
      void this.completeWith(sq, cid, nsid, c.epoch, execution, slot);
    } else {
      // Finished at once: no Promise, and its completion is posted with the batch's.
      c.stats.fastCommands++;
      c.complete(sq, cid, nsid, Status.SUCCESS, execution.dw0 ?? 0, slot);
    }
    return undefined;
  }

  /** The view of a whole submission queue, (re)taken when missing or unmapped; undefined when it has none. */
  private sqRing(sq: SubmissionQueue): Uint8Array | undefined {
    const length = sq.size * SQE.size;
    if (sq.ring?.length !== length) {
      sq.ring = viewOf(this.c.memory, sq.base, length, false);
      sq.words = sq.ring && new DataView(sq.ring.buffer, sq.ring.byteOffset, length);
    }
    return sq.ring;
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
        await c.shadow.writeEventIdx(sq.shadow, sq.tail);
        native.memoryFence();
        if (!(await this.shadowTail(sq))) return;
        if (sq.tail !== before) this.drain(sq);
      } catch (e) {
        sq.polling = false;
        if (c.epoch === epoch && !sq.dead) c.fatal(`SQ ${sq.id} shadow doorbell: ${(e as Error).message}`);
      }
    };
    setImmediate(() => void tick());
  }

  /** Runs an admin command; fetching waits for it. Asynchronous Event Requests are held until an event. */
  private runAdmin(sq: SubmissionQueue, cmd: NvmeCommand, slot: number): Promise<void> | undefined {
    if (cmd.opcode === AdminOpcode.ASYNC_EVENT_REQUEST) {
      this.events.hold(sq, cmd.cid, cmd.nsid, slot);
      return undefined;
    }
    const log = this.c.log;
    if (log && slot >= 0) log.runningAdmin = slot;
    if (!this.admin) throw new Error('no admin queue here');
    return this.completeWith(sq, cmd.cid, cmd.nsid, this.c.epoch, executeAdmin(cmd, this.admin), slot);
  }

  /**
   * Recovery: the admin queue's fetching waits for `running` (an admin
   * command started again), as it waits for any admin command, then goes on.
   */
  resumeAfter(sq: SubmissionQueue, running: Promise<void>): void {
    sq.draining = true;
    const epoch = this.c.epoch;
    running.then(
      () => {
        sq.draining = false;
        if (this.live(sq, epoch)) this.drain(sq);
      },
      (e) => {
        sq.draining = false;
        this.failed(sq, epoch, e);
      },
    );
  }

  /**
   * Waits for a command's execution and queues its completion, unless a
   * reset (a new `epoch`) has discarded the queue meanwhile.
   */
  private async completeWith(sq: SubmissionQueue, cid: number, nsid: number, epoch: number, execution: Promise<CommandResult>, slot: number): Promise<void> {
    let status: number = Status.SUCCESS;
    let dw0 = 0;
    let why: string | undefined;
    try {
      dw0 = (await this.c.track(execution)).dw0 ?? 0;
    } catch (e) {
      status = statusOf(e);
      // The reason of an I/O command's failure goes to the server's log (an admin command's stays in the error log page).
      if (sq.id !== 0) why = reasonOf(e);
    }
    if (this.c.epoch === epoch) this.c.complete(sq, cid, nsid, status, dw0, slot, why);
  }
}

/** Why a command failed, for the server's log. */
function reasonOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The completion status of a command that failed with `e`. */
function statusOf(e: unknown): number {
  return e instanceof CommandError ? e.status : Status.INTERNAL_ERROR;
}
