/**
 * The NVMe controller (NVMe 1.4): BAR0 registers, the enable / disable /
 * shutdown state machine, queues in guest memory and their doorbells
 * (registers or shadow doorbells with EventIdx), completion posting with
 * phase tags and back-pressure on full completion queues, interrupts, and
 * asynchronous events. It knows guest memory only through
 * {@link QueueMemory} and interrupts only through {@link ControllerHost},
 * so it can run wherever those are (a worker thread later).
 *
 * I/O queues whose memory has zero-copy views are served synchronously on
 * their doorbell (the controller's drainNow): Read, Write and
 * Flush that the backend finishes at once complete without a Promise, and
 * each batch's completions are posted with one interrupt. Everything else
 * takes the asynchronous path, with the same checks and status codes.
 *
 * Failures the spec reports through a completion get a status code; those
 * it cannot report (a submission queue entry that cannot be read, a
 * completion that cannot be written) set CSTS.CFS and stop the controller
 * until the host resets it.
 */
import type { QueueMemory } from '../device/queue-memory.js';
import { executeAdmin, type AdminTarget } from './admin.js';
import { CommandError, parseCommand, type CommandResult, type NvmeCommand } from './command.js';
import { AdminOpcode, AsyncEvent, Cc, CQE_SIZE, Csts, LogPageId, NvmeReg, PAGE_SIZE, Shutdown, SQE_SIZE, Status } from './constants.js';
import type { ErrorEntry, HealthCounters } from './identify.js';
import { executeIo, executeIoNow, type FastCommand, type IoContext } from './io.js';
import type { Namespace } from './namespace.js';
import { CompletionQueue, encodeCompletion, SubmissionQueue, writeCompletion } from './queues.js';
import { checkArray, checkInt, checkObject, type ControllerState } from './state.js';
import { defaultFeatures, type ControllerConfig, type FeatureValues } from './config.js';

/** What the controller needs from the device around it. */
export interface ControllerHost {
  readonly memory: QueueMemory;
  /** The guest enabled MSI-X: completions raise the queue's vector. */
  msixEnabled(): boolean;
  /** MSI-X vectors the function has. */
  msixVectors(): number;
  raiseMsix(vector: number): void;
  /** Pin-based interrupt (when MSI-X is off and INTMS does not mask it). */
  raiseIntx(): void;
}

/** Counters for tests, logs and benchmarks. */
export interface ControllerStats {
  /** Doorbell register writes (each one a message under QEMU). */
  doorbellWrites: number;
  /** Submission queue doorbells read from the shadow buffer. */
  shadowReads: number;
  /** Commands fetched, admin and I/O. */
  commands: number;
  /** I/O commands fetched. */
  ioCommands: number;
  /** Doorbell register writes for I/O queues. */
  ioDoorbellWrites: number;
  completions: number;
  interrupts: number;
  /** I/O commands that finished during their doorbell, without waiting (the synchronous fast path). */
  fastCommands: number;
}

/** Why the controller set CSTS.CFS, for logs and tests. */
export type FatalReason = string;

const NVME_VERSION = 0x00010400;
const TIMEOUT_UNITS = 20; // CAP.TO: 10 s in 500 ms units
const AER_LIMIT = 4;
const ERROR_LOG_ENTRIES = 4;
const MAX_PENDING_EVENTS = 16;
const DSTRD = 0;
const DOORBELL_STRIDE = 4 << DSTRD;
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

interface AsyncEventRecord {
  type: number;
  info: number;
  log: number;
}

/** One NVMe controller. */
export class NvmeController implements AdminTarget, IoContext {
  readonly stats: ControllerStats = { doorbellWrites: 0, shadowReads: 0, commands: 0, ioCommands: 0, ioDoorbellWrites: 0, completions: 0, interrupts: 0, fastCommands: 0 };
  /** Why CSTS.CFS was set (undefined while healthy). */
  fatalReason: FatalReason | undefined;
  readonly sqs = new Map<number, SubmissionQueue>();
  readonly cqs = new Map<number, CompletionQueue>();
  features: FeatureValues;
  /** Shadow doorbell and EventIdx buffers (Doorbell Buffer Config). */
  dbbuf: { doorbells: number; eventIdx: number } | undefined;
  readonly errors: ErrorEntry[] = [];
  readonly health: HealthCounters = { unitsRead: 0, unitsWritten: 0, readCommands: 0, writeCommands: 0, powerCycles: 1, powerOnSeconds: 0, errorEntries: 0 };

  private cc = 0;
  private csts = 0;
  private aqa = 0;
  private asq = 0n;
  private acq = 0n;
  private intms = 0;
  /** Bumped by every reset: completions of older commands are dropped. */
  private epoch = 0;
  /** Commands executing (fetched, not yet completed or dropped). */
  private running = 0;
  private idleWaiters: (() => void)[] = [];
  /** Submission queues whose Delete waits for their commands. */
  private readonly deleting = new Set<SubmissionQueue>();
  private readonly aers: { sq: SubmissionQueue; cid: number }[] = [];
  private readonly events: AsyncEventRecord[] = [];
  private readonly maskedEventTypes = new Set<number>();
  private readonly startedAt = Date.now();
  private paused = false;
  /** Inside a synchronous drain's fetch loop: completions wait in `collected` for the batch's end. */
  private collecting = 0;
  private readonly collected: CompletionQueue[] = [];
  /** Views of the shadow doorbell and EventIdx buffers, for the `dbbuf` they were taken for. */
  private shadowCache: { of: { doorbells: number; eventIdx: number }; doorbells: Uint8Array; eventIdx: Uint8Array } | undefined;
  private readonly scratch: ScratchCommand = { opcode: 0, fuse: 0, psdt: 0, cid: 0, nsid: 0, prp1: 0, prp2: 0, cdw10: 0, cdw11: 0, cdw12: 0 };

  constructor(
    readonly config: ControllerConfig,
    readonly host: ControllerHost,
  ) {
    this.features = defaultFeatures(this.volatileWriteCache);
  }

  // ---- identity used by admin and I/O ----

  get memory(): QueueMemory {
    return this.host.memory;
  }

  get maxTransfer(): number {
    return PAGE_SIZE << this.config.mdts;
  }

  get volatileWriteCache(): boolean {
    return this.config.namespaces.some((ns) => ns.capabilities.flush);
  }

  get writeCacheEnabled(): boolean {
    return (this.features.writeCache & 1) === 1;
  }

  get aerLimit(): number {
    return AER_LIMIT;
  }

  get errorLogEntries(): number {
    return ERROR_LOG_ENTRIES;
  }

  namespace(nsid: number): Namespace | undefined {
    return nsid >= 1 ? this.config.namespaces[nsid - 1] : undefined;
  }

  account(write: boolean, bytes: number): void {
    if (write) {
      this.health.writeCommands++;
      this.health.unitsWritten += bytes / 512;
    } else {
      this.health.readCommands++;
      this.health.unitsRead += bytes / 512;
    }
  }

  healthNow(): HealthCounters {
    return { ...this.health, powerOnSeconds: (Date.now() - this.startedAt) / 1000 };
  }

  // ---- registers ----

  /** CAP: MQES, CQR, TO, DSTRD, CSS (NVM), MPSMIN = MPSMAX = 4 KiB. */
  get cap(): bigint {
    const mqes = BigInt(this.config.maxQueueEntries - 1);
    return mqes | (1n << 16n) | (BigInt(TIMEOUT_UNITS) << 24n) | (BigInt(DSTRD) << 32n) | (1n << 37n);
  }

  /** Enabled, healthy and not shut down: doorbells count. */
  get accepting(): boolean {
    return (this.csts & (Csts.RDY | Csts.CFS)) === Csts.RDY && (this.csts & Csts.SHST_MASK) === 0;
  }

  /** Accepting and not paused for migration: commands are fetched. */
  get ready(): boolean {
    return this.accepting && !this.paused;
  }

  /** CSTS as the host reads it. */
  get status(): number {
    return this.csts;
  }

  /** Reads `length` bytes of BAR0 at `offset`. */
  readRegister(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    if (offset >= 0x40) return out; // doorbells and reserved space read as zero
    const img = Buffer.alloc(0x48);
    img.writeBigUInt64LE(this.cap, NvmeReg.CAP);
    img.writeUInt32LE(NVME_VERSION, NvmeReg.VS);
    img.writeUInt32LE(this.intms, NvmeReg.INTMS);
    img.writeUInt32LE(this.intms, NvmeReg.INTMC);
    img.writeUInt32LE(this.cc, NvmeReg.CC);
    img.writeUInt32LE(this.csts, NvmeReg.CSTS);
    img.writeUInt32LE(this.aqa, NvmeReg.AQA);
    img.writeBigUInt64LE(this.asq, NvmeReg.ASQ);
    img.writeBigUInt64LE(this.acq, NvmeReg.ACQ);
    img.copy(out, 0, offset, Math.min(img.length, offset + length));
    return out;
  }

  /** A host write to BAR0. */
  writeRegister(offset: number, data: Uint8Array): void {
    if (offset >= NvmeReg.DOORBELLS) {
      if (data.length !== 4 || (offset - NvmeReg.DOORBELLS) % DOORBELL_STRIDE !== 0) return;
      const value = data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24);
      this.doorbell((offset - NvmeReg.DOORBELLS) / DOORBELL_STRIDE, value >>> 0);
      return;
    }
    // Registers are served a dword at a time; narrower writes merge into the current value.
    for (let at = offset & ~3; at < offset + data.length; at += 4) {
      const cur = this.readRegister(at, 4);
      for (let i = 0; i < 4; i++) {
        const src = at + i - offset;
        if (src >= 0 && src < data.length) cur[i] = data[src];
      }
      this.writeDword(at, cur.readUInt32LE(0));
    }
  }

  private writeDword(offset: number, v: number): void {
    switch (offset) {
      case NvmeReg.INTMS:
        this.intms = (this.intms | v) >>> 0;
        return;
      case NvmeReg.INTMC:
        this.intms = (this.intms & ~v) >>> 0;
        return;
      case NvmeReg.CC:
        this.writeCc(v >>> 0);
        return;
      case NvmeReg.AQA:
        if (!(this.cc & Cc.EN)) this.aqa = v & 0x0fff0fff;
        return;
      case NvmeReg.ASQ:
      case NvmeReg.ASQ + 4:
        if (!(this.cc & Cc.EN)) this.asq = setHalf(this.asq, offset - NvmeReg.ASQ, v);
        return;
      case NvmeReg.ACQ:
      case NvmeReg.ACQ + 4:
        if (!(this.cc & Cc.EN)) this.acq = setHalf(this.acq, offset - NvmeReg.ACQ, v);
        return;
      default:
        return; // read-only or reserved
    }
  }

  private writeCc(v: number): void {
    const before = this.cc;
    this.cc = v & 0x00fffff1;
    const wasEnabled = (before & Cc.EN) !== 0;
    const enabled = (v & Cc.EN) !== 0;
    if (wasEnabled && !enabled) {
      this.disable();
      return;
    }
    if (!wasEnabled && enabled) {
      this.enable();
      return;
    }
    const shn = (v >> Cc.SHN_SHIFT) & 3;
    const prevShn = (before >> Cc.SHN_SHIFT) & 3;
    if (enabled && shn !== Shutdown.NONE && prevShn === Shutdown.NONE) this.shutdown();
  }

  private enable(): void {
    const problem = this.enableProblem();
    if (problem) {
      this.fatal(`enable refused: ${problem}`);
      return;
    }
    // A host that re-enables before RDY cleared still starts from nothing: commands of the old session are dropped.
    this.epoch++;
    this.clearQueues();
    const acqs = ((this.aqa >> 16) & 0xfff) + 1;
    const asqs = (this.aqa & 0xfff) + 1;
    const cq = new CompletionQueue(0, Number(this.acq), acqs, true, 0);
    const sq = new SubmissionQueue(0, Number(this.asq), asqs, cq);
    cq.sqs.add(sq);
    this.cqs.set(0, cq);
    this.sqs.set(0, sq);
    this.csts = Csts.RDY;
  }

  /** What is wrong with the admin queue settings or CC, if anything. */
  private enableProblem(): string | undefined {
    const asqs = this.aqa & 0xfff;
    const acqs = (this.aqa >> 16) & 0xfff;
    if (asqs < 1 || acqs < 1) return `AQA 0x${this.aqa.toString(16)} gives an admin queue of fewer than 2 entries`;
    if (this.asq & 0xfffn || this.acq & 0xfffn) return 'ASQ or ACQ is not page aligned';
    if (this.asq > BigInt(Number.MAX_SAFE_INTEGER) || this.acq > BigInt(Number.MAX_SAFE_INTEGER)) return 'ASQ or ACQ is out of range';
    if ((this.cc >> Cc.CSS_SHIFT) & 7) return 'CC.CSS selects a command set other than NVM';
    if ((this.cc >> Cc.MPS_SHIFT) & 0xf) return 'CC.MPS selects a page size other than 4 KiB';
    if ((this.cc >> Cc.AMS_SHIFT) & 7) return 'CC.AMS selects an arbitration other than round robin';
    if (!this.memory.mapped(Number(this.asq), (asqs + 1) * SQE_SIZE, false)) return 'the admin submission queue is not in mapped memory';
    if (!this.memory.mapped(Number(this.acq), (acqs + 1) * CQE_SIZE, true)) return 'the admin completion queue is not in writable mapped memory';
    return undefined;
  }

  /** CC.EN 1 -> 0: stop, wait for commands that hold guest memory, then forget everything. */
  private disable(): void {
    this.stopQueues();
    const epoch = this.epoch;
    void this.whenIdle().then(() => {
      if (this.epoch !== epoch || this.cc & Cc.EN) return;
      this.clearQueues();
      this.csts = 0;
      this.fatalReason = undefined;
    });
  }

  /** CC.SHN: stop fetching, finish commands in flight, flush, report shutdown complete. */
  private shutdown(): void {
    this.csts = (this.csts & ~Csts.SHST_MASK) | (Shutdown.OCCURRING << Csts.SHST_SHIFT);
    const epoch = this.epoch;
    void this.whenIdle()
      .then(async () => {
        for (const ns of this.config.namespaces) if (ns.capabilities.flush) await ns.disk.flush().catch(() => undefined);
      })
      .then(() => {
        if (this.epoch !== epoch) return;
        this.csts = (this.csts & ~Csts.SHST_MASK) | (Shutdown.COMPLETE << Csts.SHST_SHIFT);
      });
  }

  /** Stops fetching and abandons what waits (AERs, pending completions); the epoch drops late completions. */
  private stopQueues(): void {
    this.epoch++;
    for (const sq of [...this.sqs.values(), ...this.deleting]) {
      sq.dead = true;
      sq.wakeIdle();
    }
    for (const cq of this.cqs.values()) cq.pending.length = 0;
    this.aers.length = 0;
  }

  private clearQueues(): void {
    this.sqs.clear();
    this.cqs.clear();
    this.dbbuf = undefined;
    this.features = defaultFeatures(this.volatileWriteCache);
    this.events.length = 0;
    this.maskedEventTypes.clear();
    this.aers.length = 0;
  }

  /**
   * Power-on reset (FLR, a client's DEVICE_RESET, disconnect): registers
   * back to their reset values at once. Commands still in the backend finish
   * and are dropped.
   */
  reset(): void {
    this.stopQueues();
    this.clearQueues();
    this.cc = this.csts = this.aqa = this.intms = 0;
    this.asq = this.acq = 0n;
    this.fatalReason = undefined;
    this.errors.length = 0;
    this.health.powerCycles++;
  }

  /** Sets CSTS.CFS and stops every queue until the host resets the controller. */
  fatal(reason: string): void {
    if (this.csts & Csts.CFS) return;
    this.fatalReason = reason;
    this.csts |= Csts.CFS;
    this.stopQueues();
  }

  /** Resolves when no command is executing. */
  whenIdle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // ---- doorbells ----

  /** Doorbell `index` (2y: SQ y tail, 2y+1: CQ y head) was written. */
  private doorbell(index: number, value: number): void {
    this.stats.doorbellWrites++;
    const qid = index >> 1;
    if (qid > 0) this.stats.ioDoorbellWrites++;
    if (!this.accepting) return;
    // With shadow doorbells the register write is only a wake-up: QEMU posts register writes, so one may
    // arrive after the driver moved on through the shadow buffer, and its value would move us backwards.
    if (index & 1) {
      const cq = this.cqs.get(qid);
      if (!cq) return this.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_REGISTER, LogPageId.ERROR);
      if (value >= cq.size || (!cq.shadow && !cq.validHead(value))) return this.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
      if (cq.shadow) {
        const db = this.memory.accessible() ? this.shadowViews() : undefined;
        if (!db) return void this.shadowHead(cq);
        const v = u32(db.doorbells, cq.shadow.doorbell - this.dbbuf!.doorbells);
        if (cq.validHead(v)) cq.head = v;
        this.flushCq(cq);
        return;
      }
      cq.head = value;
      this.flushCq(cq);
      return;
    }
    const sq = this.sqs.get(qid);
    if (!sq) return this.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_REGISTER, LogPageId.ERROR);
    if (value >= sq.size) return this.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
    if (sq.shadow) {
      this.drain(sq);
      return;
    }
    sq.tail = value;
    this.drain(sq, true);
  }

  /** A CQ head doorbell under shadow doorbells: take the head from the shadow buffer, then post what waits. */
  private async shadowHead(cq: CompletionQueue): Promise<void> {
    const epoch = this.epoch;
    try {
      const v = await this.readU32(cq.shadow!.doorbell);
      if (this.epoch !== epoch || !this.cqs.has(cq.id)) return;
      if (cq.validHead(v)) cq.head = v;
      this.flushCq(cq);
    } catch (e) {
      if (this.epoch === epoch) this.fatal(`CQ ${cq.id} shadow doorbell: ${(e as Error).message}`);
    }
  }

  private async readU32(addr: number): Promise<number> {
    const b = await this.memory.read(addr, 4);
    return (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  }

  private async writeU32(addr: number, v: number): Promise<void> {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    await this.memory.write(addr, b);
  }

  /** Takes the SQ tail from the shadow doorbell; false when the driver wrote an impossible value. */
  private async shadowTail(sq: SubmissionQueue): Promise<boolean> {
    if (!sq.shadow) return true;
    this.stats.shadowReads++;
    const v = await this.readU32(sq.shadow.doorbell);
    if (v >= sq.size) {
      this.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
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
  private drain(sq: SubmissionQueue, fromDoorbell = false): void {
    if (sq.draining) {
      sq.again = true;
      return;
    }
    let fresh = fromDoorbell;
    if (sq.id !== 0) {
      const epoch = this.epoch;
      let rest = Drained.DONE;
      sq.draining = true;
      try {
        rest = this.drainNow(sq, fresh);
      } catch (e) {
        if (!sq.dead && this.epoch === epoch && this.ready) this.fatal(`SQ ${sq.id}: ${(e as Error).message}`);
      } finally {
        sq.draining = false;
        // Whatever a fault left collected.
        this.publish();
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
    const epoch = this.epoch;
    let passes = 0;
    do {
      const db = sq.shadow ? this.shadowViews() : undefined;
      const ring = this.memory.accessible() ? this.sqRing(sq) : undefined;
      if (!ring || (sq.shadow && !db)) return fresh ? Drained.FRESH : Drained.REST;
      if (++passes > MAX_DRAIN_PASSES) {
        setImmediate(() => this.drain(sq));
        return Drained.DONE;
      }
      sq.again = false;
      if (!fresh && db && !this.shadowTailNow(sq, db)) return Drained.DONE;
      fresh = false;
      this.collecting++;
      try {
        while (this.live(sq, epoch) && !sq.empty && sq.outstanding < sq.size - 1) this.fetchNow(sq, ring);
      } finally {
        this.collecting--;
      }
      this.publish();
      if (this.live(sq, epoch) && db && sq.shadow) {
        const eventIdx = sq.shadow.eventIdx - this.dbbuf!.eventIdx;
        if (this.config.pollMicroseconds > 0) {
          // EventIdx one behind the tail: the driver's next submissions do not ring while we poll.
          this.setShadow(db.eventIdx, eventIdx, sq.shadow.eventIdx, (sq.tail - 1) & 0xffff);
          this.startPolling(sq);
        } else {
          // Tell the driver where we are, then look again: it may have moved the tail meanwhile without ringing.
          this.setShadow(db.eventIdx, eventIdx, sq.shadow.eventIdx, sq.tail);
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
    return !sq.dead && this.epoch === epoch && this.ready;
  }

  /** Fetches the entry at the head from the queue's view and runs it: at once if it can, else on its own Promise. */
  private fetchNow(sq: SubmissionQueue, ring: Uint8Array): void {
    const at = sq.head * SQE_SIZE;
    sq.head = (sq.head + 1) % sq.size;
    sq.outstanding++;
    this.stats.commands++;
    this.stats.ioCommands++;
    const cmd = decodeInto(this.scratch, ring, at);
    const result = executeIoNow(cmd, this);
    if (result === undefined) {
      void this.runIo(sq, parseCommand(ring.subarray(at, at + SQE_SIZE)));
    } else if (typeof result === 'number') {
      this.stats.fastCommands++;
      this.complete(sq, cmd.cid, cmd.nsid, result, 0);
    } else {
      void this.completeWith(sq, { cid: cmd.cid, nsid: cmd.nsid }, this.epoch, result);
    }
  }

  /** Takes the SQ tail from the shadow doorbell's view; false when the driver wrote an impossible value. */
  private shadowTailNow(sq: SubmissionQueue, db: { doorbells: Uint8Array }): boolean {
    this.stats.shadowReads++;
    const v = u32(db.doorbells, sq.shadow!.doorbell - this.dbbuf!.doorbells);
    if (v >= sq.size) {
      this.asyncEvent(AsyncEvent.TYPE_ERROR, AsyncEvent.INFO_INVALID_DOORBELL_VALUE, LogPageId.ERROR);
      return false;
    }
    sq.tail = v;
    return true;
  }

  /** Writes a shadow buffer dword through its view, recording it for migration's dirty log. */
  private setShadow(view: Uint8Array, at: number, addr: number, v: number): void {
    view[at] = v & 0xff;
    view[at + 1] = (v >>> 8) & 0xff;
    view[at + 2] = (v >>> 16) & 0xff;
    view[at + 3] = v >>> 24;
    this.memory.markDirty(addr, 4);
  }

  /** The view of a whole submission queue, (re)taken when missing or unmapped; undefined when it has none. */
  private sqRing(sq: SubmissionQueue): Uint8Array | undefined {
    const length = sq.size * SQE_SIZE;
    if (sq.ring?.length !== length) sq.ring = this.viewOf(sq.base, length, false);
    return sq.ring;
  }

  /** The view of a whole completion queue and its words, as {@link sqRing}. */
  private cqRing(cq: CompletionQueue): DataView | undefined {
    const length = cq.size * CQE_SIZE;
    if (cq.ring?.length !== length) {
      cq.ring = this.viewOf(cq.base, length, true);
      cq.words = cq.ring && new DataView(cq.ring.buffer, cq.ring.byteOffset, length);
    }
    return cq.words;
  }

  /** Views of the shadow doorbell and EventIdx buffers, as {@link sqRing}. */
  private shadowViews(): { doorbells: Uint8Array; eventIdx: Uint8Array } | undefined {
    const dbbuf = this.dbbuf;
    if (!dbbuf) return undefined;
    const length = this.doorbellBufferBytes;
    const c = this.shadowCache;
    if (c && c.of === dbbuf && c.doorbells.length === length && c.eventIdx.length === length) return c;
    const doorbells = this.viewOf(dbbuf.doorbells, length, false);
    const eventIdx = this.viewOf(dbbuf.eventIdx, length, true);
    this.shadowCache = doorbells && eventIdx ? { of: dbbuf, doorbells, eventIdx } : undefined;
    return this.shadowCache;
  }

  /** One zero-copy view of [addr, addr+length), or undefined (no views there, not mapped, not accessible now). */
  private viewOf(addr: number, length: number, write: boolean): Uint8Array | undefined {
    try {
      const v = this.memory.views(addr, length, write);
      return v && v.length === 1 && v[0].length === length ? v[0] : undefined;
    } catch {
      return undefined;
    }
  }

  /** The asynchronous drain: queue memory by copies (or messages), for the admin queue and memory without views. */
  private async drainAsync(sq: SubmissionQueue, fromDoorbell: boolean): Promise<void> {
    if (sq.draining) {
      sq.again = true;
      return;
    }
    sq.draining = true;
    const epoch = this.epoch;
    const live = (): boolean => !sq.dead && this.epoch === epoch && this.ready;
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
            entry = await this.memory.read(addr, SQE_SIZE);
          } catch (e) {
            if (live()) this.fatal(`cannot read SQ ${sq.id} entry ${sq.head}: ${(e as Error).message}`);
            return;
          }
          if (!live()) return;
          sq.head = (sq.head + 1) % sq.size;
          sq.outstanding++;
          this.stats.commands++;
          const cmd = parseCommand(entry);
          if (sq.id === 0) {
            await this.runAdmin(sq, cmd);
          } else {
            this.stats.ioCommands++;
            void this.runIo(sq, cmd);
          }
        }
        if (live() && sq.shadow && this.config.pollMicroseconds > 0) {
          // EventIdx one behind the tail: the driver's next submissions do not ring while we poll.
          await this.writeU32(sq.shadow.eventIdx, (sq.tail - 1) & 0xffff);
          this.startPolling(sq);
        } else if (live() && sq.shadow) {
          // Tell the driver where we are, then look again: it may have moved the tail meanwhile without ringing.
          await this.writeU32(sq.shadow.eventIdx, sq.tail);
          const before = sq.tail;
          if (!(await this.shadowTail(sq))) return;
          if (sq.tail !== before) sq.again = true;
        }
      } while (sq.again && live());
    } catch (e) {
      if (live()) this.fatal(`SQ ${sq.id}: ${(e as Error).message}`);
    } finally {
      sq.draining = false;
    }
  }

  /** Polls the shadow tail of an idle submission queue until it moves or the window closes. */
  private startPolling(sq: SubmissionQueue): void {
    sq.pollUntil = performance.now() + this.config.pollMicroseconds / 1000;
    if (sq.polling) return;
    sq.polling = true;
    const epoch = this.epoch;
    const tick = async (): Promise<void> => {
      try {
        if (sq.dead || this.epoch !== epoch || !this.ready || sq.draining || !sq.shadow) return void (sq.polling = false);
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
        await this.writeU32(sq.shadow.eventIdx, sq.tail);
        if (!(await this.shadowTail(sq))) return;
        if (sq.tail !== before) this.drain(sq);
      } catch (e) {
        sq.polling = false;
        if (this.epoch === epoch && !sq.dead) this.fatal(`SQ ${sq.id} shadow doorbell: ${(e as Error).message}`);
      }
    };
    setImmediate(() => void tick());
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.running++;
    return work.finally(() => {
      if (--this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  private async runIo(sq: SubmissionQueue, cmd: NvmeCommand): Promise<void> {
    const epoch = this.epoch;
    await this.completeWith(sq, cmd, epoch, executeIo(cmd, this));
  }

  private async runAdmin(sq: SubmissionQueue, cmd: NvmeCommand): Promise<void> {
    const epoch = this.epoch;
    if (cmd.opcode === AdminOpcode.ASYNC_EVENT_REQUEST) {
      if (this.aers.length >= AER_LIMIT) {
        this.complete(sq, cmd.cid, cmd.nsid, Status.ASYNC_EVENT_LIMIT_EXCEEDED, 0);
        return;
      }
      this.aers.push({ sq, cid: cmd.cid });
      this.deliverEvents();
      return;
    }
    await this.completeWith(sq, cmd, epoch, executeAdmin(cmd, this));
  }

  /**
   * Waits for a command's execution and posts its completion, unless a reset
   * (a new `epoch`) has discarded the queue meanwhile.
   */
  private async completeWith(sq: SubmissionQueue, cmd: Pick<NvmeCommand, 'cid' | 'nsid'>, epoch: number, execution: Promise<CommandResult>): Promise<void> {
    let status: number = Status.SUCCESS;
    let dw0 = 0;
    try {
      dw0 = (await this.track(execution)).dw0 ?? 0;
    } catch (e) {
      status = e instanceof CommandError ? e.status : Status.INTERNAL_ERROR;
    }
    if (this.epoch === epoch) this.complete(sq, cmd.cid, cmd.nsid, status, dw0);
  }

  // ---- completions ----

  private complete(sq: SubmissionQueue, cid: number, nsid: number, status: number, dw0: number): void {
    if (status !== Status.SUCCESS) {
      this.health.errorEntries++;
      this.errors.push({ count: this.health.errorEntries, sqid: sq.id, cid, status, nsid });
      if (this.errors.length > ERROR_LOG_ENTRIES) this.errors.shift();
    }
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
        this.flushCq(cq);
      });
    }
  }

  /** Posts the completions a synchronous drain collected. */
  private publish(): void {
    while (this.collected.length > 0) {
      const cq = this.collected.pop()!;
      cq.collected = false;
      this.flushCq(cq);
    }
  }

  /** Posts what waits: at once through the queue's view when it can, else asynchronously. */
  private flushCq(cq: CompletionQueue): void {
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
    const words = this.memory.accessible() ? this.cqRing(cq) : undefined;
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
      const c = pending[n];
      writeCompletion(words, cq.tail * CQE_SIZE, c, cq.phase);
      cq.advance();
      if (--c.sq.outstanding === 0) c.sq.wakeIdle();
      // Nearly always one submission queue: spare the Set.
      if (freed === undefined) freed = c.sq;
      else if (freed !== c.sq) {
        if (!(freed instanceof Set)) freed = new Set([freed]);
        freed.add(c.sq);
      }
    }
    if (n === 0) return done;
    pending.splice(0, n);
    this.stats.completions += n;
    // One dirty record for the batch (a no-op unless migration logs).
    this.memory.markDirty(cq.base, cq.size * CQE_SIZE);
    if (cq.interruptsEnabled) this.interrupt(cq.vector);
    // Room in the completion budget: queues that stopped fetching may go on.
    if (freed instanceof Set) {
      for (const sq of freed) if (!sq.empty && !sq.dead) this.drain(sq);
    } else if (freed && !freed.empty && !freed.dead) {
      this.drain(freed);
    }
    return done;
  }

  /** {@link roomFromShadow} through views; undefined when the shadow buffers have none now. */
  private roomFromShadowNow(cq: CompletionQueue): boolean | undefined {
    const db = this.shadowViews();
    if (!db || !cq.shadow) return undefined;
    const head = cq.shadow.doorbell - this.dbbuf!.doorbells;
    const v = u32(db.doorbells, head);
    if (cq.validHead(v)) cq.head = v;
    if (!cq.full) return true;
    this.setShadow(db.eventIdx, cq.shadow.eventIdx - this.dbbuf!.eventIdx, cq.shadow.eventIdx, cq.head);
    const again = u32(db.doorbells, head);
    if (cq.validHead(again)) cq.head = again;
    return !cq.full;
  }

  /** Writes pending completions while the queue has room, then raises its interrupt once. */
  private async postPending(cq: CompletionQueue): Promise<void> {
    const epoch = this.epoch;
    let posted = 0;
    const freed = new Set<SubmissionQueue>();
    try {
      while (cq.pending.length > 0 && this.epoch === epoch) {
        if (cq.full && !(await this.roomFromShadow(cq))) break;
        const c = cq.pending.shift()!;
        const entry = new Uint8Array(CQE_SIZE);
        encodeCompletion(c, cq.phase, entry);
        try {
          await this.postEntry(cq.slot, entry);
        } catch (e) {
          this.fatal(`cannot write CQ ${cq.id} entry ${cq.tail}: ${(e as Error).message}`);
          return;
        }
        cq.advance();
        if (--c.sq.outstanding === 0) c.sq.wakeIdle();
        freed.add(c.sq);
        posted++;
        this.stats.completions++;
      }
    } finally {
      cq.flushing = false;
    }
    if (this.epoch !== epoch) return;
    if (posted > 0 && cq.interruptsEnabled) this.interrupt(cq.vector);
    // Room in the completion budget: queues that stopped fetching may go on.
    for (const sq of freed) if (!sq.empty && !sq.dead) this.drain(sq);
    // Completions that arrived while this pass awaited memory.
    if (cq.pending.length > 0 && !cq.full) this.flushCq(cq);
  }

  /** The CQ looks full: read the shadow head, and arm EventIdx so the driver rings when it frees entries. */
  private async roomFromShadow(cq: CompletionQueue): Promise<boolean> {
    if (!cq.shadow) return false;
    const v = await this.readU32(cq.shadow.doorbell);
    if (cq.validHead(v)) cq.head = v;
    if (!cq.full) return true;
    await this.writeU32(cq.shadow.eventIdx, cq.head);
    const again = await this.readU32(cq.shadow.doorbell);
    if (cq.validHead(again)) cq.head = again;
    return !cq.full;
  }

  /** Writes a CQE so that its phase tag (dword 3) lands last. */
  private async postEntry(addr: number, entry: Uint8Array): Promise<void> {
    const views = this.memory.views(addr, CQE_SIZE, true);
    if (views && views.length === 1) {
      const unpin = this.memory.pin(addr, CQE_SIZE);
      try {
        views[0].set(entry.subarray(0, 12), 0);
        views[0].set(entry.subarray(12), 12);
      } finally {
        unpin();
      }
      return;
    }
    await this.memory.write(addr, entry);
  }

  private interrupt(vector: number): void {
    this.stats.interrupts++;
    if (this.host.msixEnabled()) {
      if (vector < this.host.msixVectors()) this.host.raiseMsix(vector);
      return;
    }
    if (!(this.intms & 1)) this.host.raiseIntx();
  }

  // ---- asynchronous events ----

  /** Queues an asynchronous event and completes a waiting Asynchronous Event Request with it. */
  asyncEvent(type: number, info: number, log: number): void {
    if (!this.accepting) return;
    if (this.events.length >= MAX_PENDING_EVENTS) return;
    if (this.events.some((e) => e.type === type && e.info === info)) return;
    this.events.push({ type, info, log });
    this.deliverEvents();
  }

  private deliverEvents(): void {
    while (this.aers.length > 0) {
      const i = this.events.findIndex((e) => !this.maskedEventTypes.has(e.type));
      if (i < 0) return;
      const [e] = this.events.splice(i, 1);
      const aer = this.aers.shift()!;
      // An event type stays masked until the host reads its log page.
      this.maskedEventTypes.add(e.type);
      this.complete(aer.sq, aer.cid, 0, Status.SUCCESS, e.type | (e.info << 8) | (e.log << 16));
    }
  }

  /** Get Log Page read `log` without Retain Asynchronous Event: unmask the event types it reports. */
  logRead(log: number, retain: boolean): void {
    if (retain) return;
    if (log === LogPageId.ERROR) this.maskedEventTypes.delete(AsyncEvent.TYPE_ERROR);
    if (log === LogPageId.SMART) this.maskedEventTypes.delete(AsyncEvent.TYPE_SMART);
    this.deliverEvents();
  }

  // ---- queue management (admin commands) ----

  /** Creates I/O completion queue `id` (checks done by the caller). */
  addCq(id: number, base: number, size: number, interruptsEnabled: boolean, vector: number): void {
    const cq = new CompletionQueue(id, base, size, interruptsEnabled, vector);
    cq.shadow = this.shadowSlots(id, true);
    this.cqs.set(id, cq);
  }

  /** Creates I/O submission queue `id` on `cq`. */
  addSq(id: number, base: number, size: number, cq: CompletionQueue): void {
    const sq = new SubmissionQueue(id, base, size, cq);
    sq.shadow = this.shadowSlots(id, false);
    cq.sqs.add(sq);
    this.sqs.set(id, sq);
  }

  /** Deletes an I/O submission queue once the commands it started completed. */
  async removeSq(sq: SubmissionQueue): Promise<void> {
    sq.dead = true;
    this.sqs.delete(sq.id);
    this.deleting.add(sq);
    const epoch = this.epoch;
    try {
      while (sq.outstanding > 0 && this.epoch === epoch) await new Promise<void>((r) => sq.idleWaiters.push(r));
    } finally {
      this.deleting.delete(sq);
    }
    sq.cq.sqs.delete(sq);
  }

  removeCq(cq: CompletionQueue): void {
    this.cqs.delete(cq.id);
  }

  /** Doorbell Buffer Config: shadow doorbells and EventIdx for the I/O queues (Linux never shadows the admin queue). */
  async setDoorbellBuffer(doorbells: number, eventIdx: number): Promise<void> {
    this.dbbuf = { doorbells, eventIdx };
    // Queues that already exist start from their current tail and head, in both buffers.
    for (const sq of this.sqs.values()) {
      sq.shadow = this.shadowSlots(sq.id, false);
      if (sq.shadow) {
        await this.writeU32(sq.shadow.doorbell, sq.tail);
        await this.writeU32(sq.shadow.eventIdx, sq.tail);
      }
    }
    for (const cq of this.cqs.values()) {
      cq.shadow = this.shadowSlots(cq.id, true);
      if (cq.shadow) {
        await this.writeU32(cq.shadow.doorbell, cq.head);
        await this.writeU32(cq.shadow.eventIdx, cq.head);
      }
    }
  }

  /** Bytes of one shadow buffer covering every queue id the controller offers. */
  get doorbellBufferBytes(): number {
    return (this.config.ioQueues + 1) * 2 * DOORBELL_STRIDE;
  }

  private shadowSlots(qid: number, cq: boolean): { doorbell: number; eventIdx: number } | undefined {
    if (!this.dbbuf || qid === 0) return undefined;
    const at = (2 * qid + (cq ? 1 : 0)) * DOORBELL_STRIDE;
    return { doorbell: this.dbbuf.doorbells + at, eventIdx: this.dbbuf.eventIdx + at };
  }

  /** True once the controller has I/O queues (Number of Queues can no longer change). */
  get hasIoQueues(): boolean {
    return this.sqs.size > 1 || this.cqs.size > 1;
  }

  /**
   * Pauses fetching (migration STOP) and waits until every command in flight
   * completed and its completion was posted (or waits, saved, for room in a
   * full completion queue). Doorbells written meanwhile are kept.
   */
  async quiesce(): Promise<void> {
    this.paused = true;
    await this.whenIdle();
    const busy = (): boolean => [...this.sqs.values()].some((q) => q.draining) || [...this.cqs.values()].some((q) => q.flushing || q.scheduled);
    while (busy()) await new Promise((r) => setImmediate(r));
  }

  /** Fetches again after {@link quiesce} or {@link restore}; picks up tails written meanwhile. */
  resume(): void {
    this.paused = false;
    if (!this.ready) return;
    for (const cq of this.cqs.values()) this.flushCq(cq);
    for (const sq of this.sqs.values()) if (!sq.empty || sq.shadow) this.drain(sq);
  }

  /** The state that migrates; take it while quiesced. */
  save(): ControllerState {
    const pending: ControllerState['pending'] = [];
    for (const cq of this.cqs.values()) for (const c of cq.pending) pending.push({ cqid: cq.id, sqid: c.sq.id, cid: c.cid, status: c.status, dw0: c.dw0 });
    return {
      cc: this.cc,
      csts: this.csts,
      aqa: this.aqa,
      asq: this.asq.toString(),
      acq: this.acq.toString(),
      intms: this.intms,
      features: { ...this.features },
      dbbuf: this.dbbuf ? { ...this.dbbuf } : null,
      cqs: [...this.cqs.values()].map((q) => ({ id: q.id, base: q.base, size: q.size, head: q.head, tail: q.tail, phase: q.phase, interruptsEnabled: q.interruptsEnabled, vector: q.vector })),
      sqs: [...this.sqs.values()].map((q) => ({ id: q.id, base: q.base, size: q.size, head: q.head, tail: q.tail, cqid: q.cq.id, outstanding: q.outstanding })),
      pending,
      aers: this.aers.map((a) => ({ sqid: a.sq.id, cid: a.cid })),
      events: this.events.map((e) => ({ ...e })),
      maskedEventTypes: [...this.maskedEventTypes],
      errors: this.errors.map((e) => ({ ...e })),
      health: { ...this.health },
    };
  }

  /**
   * Loads a saved state (migration RESUMING); throws, leaving the controller
   * reset, when it is malformed or does not fit this controller. The
   * controller stays paused until {@link resume}.
   */
  restore(saved: unknown): void {
    this.reset();
    this.paused = true;
    try {
      this.load(checkObject(saved, 'state'));
    } catch (e) {
      this.reset();
      throw e;
    }
  }

  private load(s: Record<string, unknown>): void {
    const u32 = (v: unknown, what: string): number => checkInt(v, 0, 0xffffffff, what);
    const addr = (v: unknown, what: string): number => checkInt(v, 0, Number.MAX_SAFE_INTEGER, what);
    const big = (v: unknown, what: string): bigint => {
      if (typeof v !== 'string' || !/^\d{1,20}$/.test(v) || BigInt(v) >= 1n << 64n) throw new Error(`nvme state: ${what} is not a 64-bit value`);
      return BigInt(v);
    };
    this.cc = u32(s.cc, 'cc') & 0x00fffff1;
    this.csts = u32(s.csts, 'csts') & 0xf;
    this.aqa = u32(s.aqa, 'aqa') & 0x0fff0fff;
    this.asq = big(s.asq, 'asq');
    this.acq = big(s.acq, 'acq');
    this.intms = u32(s.intms, 'intms');
    const f = checkObject(s.features, 'features');
    const fv = defaultFeatures(this.volatileWriteCache);
    for (const key of Object.keys(fv) as (keyof FeatureValues)[]) {
      if (key === 'queuesAllocated') fv.queuesAllocated = f.queuesAllocated === true;
      else fv[key] = u32(f[key], `features.${key}`);
    }
    this.features = fv;
    if (s.dbbuf !== null) {
      if (!this.config.shadowDoorbells) throw new Error('nvme state: shadow doorbells are not offered here');
      const d = checkObject(s.dbbuf, 'dbbuf');
      this.dbbuf = { doorbells: addr(d.doorbells, 'dbbuf.doorbells'), eventIdx: addr(d.eventIdx, 'dbbuf.eventIdx') };
    }
    const maxQid = this.config.ioQueues;
    const maxEntries = 4096;
    for (const [i, raw] of checkArray(s.cqs, 'cqs').entries()) {
      const q = checkObject(raw, `cqs[${i}]`);
      const id = checkInt(q.id, 0, maxQid, `cqs[${i}].id`);
      const size = checkInt(q.size, 2, maxEntries, `cqs[${i}].size`);
      if (this.cqs.has(id)) throw new Error(`nvme state: CQ ${id} twice`);
      const cq = new CompletionQueue(id, addr(q.base, `cqs[${i}].base`), size, q.interruptsEnabled === true, checkInt(q.vector, 0, 2047, `cqs[${i}].vector`));
      cq.head = checkInt(q.head, 0, size - 1, `cqs[${i}].head`);
      cq.tail = checkInt(q.tail, 0, size - 1, `cqs[${i}].tail`);
      cq.phase = checkInt(q.phase, 0, 1, `cqs[${i}].phase`);
      cq.shadow = this.shadowSlots(id, true);
      this.cqs.set(id, cq);
    }
    for (const [i, raw] of checkArray(s.sqs, 'sqs').entries()) {
      const q = checkObject(raw, `sqs[${i}]`);
      const id = checkInt(q.id, 0, maxQid, `sqs[${i}].id`);
      const size = checkInt(q.size, 2, maxEntries, `sqs[${i}].size`);
      const cq = this.cqs.get(checkInt(q.cqid, 0, maxQid, `sqs[${i}].cqid`));
      if (!cq || (id === 0) !== (cq.id === 0) || this.sqs.has(id)) throw new Error(`nvme state: SQ ${id} has no valid completion queue`);
      const sq = new SubmissionQueue(id, addr(q.base, `sqs[${i}].base`), size, cq);
      sq.head = checkInt(q.head, 0, size - 1, `sqs[${i}].head`);
      sq.tail = checkInt(q.tail, 0, size - 1, `sqs[${i}].tail`);
      sq.outstanding = checkInt(q.outstanding, 0, size, `sqs[${i}].outstanding`);
      sq.shadow = this.shadowSlots(id, false);
      cq.sqs.add(sq);
      this.sqs.set(id, sq);
    }
    if (this.csts & Csts.RDY && (!this.sqs.has(0) || !this.cqs.has(0))) throw new Error('nvme state: ready without an admin queue');
    for (const [i, raw] of checkArray(s.pending, 'pending').entries()) {
      const p = checkObject(raw, `pending[${i}]`);
      const sq = this.sqs.get(checkInt(p.sqid, 0, maxQid, `pending[${i}].sqid`));
      const cq = this.cqs.get(checkInt(p.cqid, 0, maxQid, `pending[${i}].cqid`));
      if (!sq || sq.cq !== cq) throw new Error(`nvme state: pending completion ${i} names no queue pair`);
      cq.pending.push({ sq, cid: checkInt(p.cid, 0, 0xffff, 'cid'), status: checkInt(p.status, 0, 0x7fff, 'status'), dw0: u32(p.dw0, 'dw0') });
    }
    const admin = this.sqs.get(0);
    for (const [i, raw] of checkArray(s.aers, 'aers').entries()) {
      const a = checkObject(raw, `aers[${i}]`);
      if (!admin || a.sqid !== 0 || this.aers.length >= AER_LIMIT) throw new Error(`nvme state: AER ${i} does not fit`);
      this.aers.push({ sq: admin, cid: checkInt(a.cid, 0, 0xffff, `aers[${i}].cid`) });
    }
    for (const [i, raw] of checkArray(s.events, 'events').slice(0, MAX_PENDING_EVENTS).entries()) {
      const e = checkObject(raw, `events[${i}]`);
      this.events.push({ type: checkInt(e.type, 0, 7, 'type'), info: checkInt(e.info, 0, 255, 'info'), log: checkInt(e.log, 0, 255, 'log') });
    }
    for (const t of checkArray(s.maskedEventTypes, 'maskedEventTypes')) this.maskedEventTypes.add(checkInt(t, 0, 7, 'masked event type'));
    for (const [i, raw] of checkArray(s.errors, 'errors').slice(-ERROR_LOG_ENTRIES).entries()) {
      const e = checkObject(raw, `errors[${i}]`);
      this.errors.push({ count: addr(e.count, 'count'), sqid: checkInt(e.sqid, 0, 0xffff, 'sqid'), cid: checkInt(e.cid, 0, 0xffff, 'cid'), status: checkInt(e.status, 0, 0x7fff, 'status'), nsid: u32(e.nsid, 'nsid') });
    }
    const h = checkObject(s.health, 'health');
    for (const key of Object.keys(this.health) as (keyof HealthCounters)[]) this.health[key] = checkInt(h[key], 0, Number.MAX_SAFE_INTEGER, `health.${key}`);
  }
}

/** A little-endian dword of a view. */
function u32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
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

function setHalf(v: bigint, half: number, dword: number): bigint {
  const d = BigInt(dword >>> 0);
  return half === 0 ? (v & ~0xffffffffn) | d : (v & 0xffffffffn) | (d << 32n);
}
