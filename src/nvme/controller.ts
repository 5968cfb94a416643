/**
 * The NVMe controller (NVMe 1.4): one object that owns the queues, features,
 * identity and counters, and the parts that act on them, each in its file:
 * BAR0's registers ({@link Bar0}), the CC/CSTS machine
 * ({@link ControllerLifecycle}), submission queue fetch with shadow tails and
 * polling ({@link SqFetcher}), completion posting with back-pressure and
 * interrupts ({@link CqPoster}), asynchronous events and the error log
 * ({@link AsyncEvents}), and the migrating state (state.ts). It knows guest
 * memory only through {@link QueueMemory} and interrupts only through
 * {@link ControllerHost}, so it can run wherever those are.
 *
 * Failures the spec reports through a completion get a status code; those
 * it cannot report (a submission queue entry that cannot be read, a
 * completion that cannot be written) set CSTS.CFS and stop the controller
 * until the host resets it.
 */
import type { PersistentMemory } from '../device/persistent.js';
import type { QueueMemory } from '../device/queue-memory.js';
import type { AdminTarget } from './admin.js';
import { Csts, NvmeReg, PAGE_SIZE } from './constants.js';
import { CqPoster } from './cq-post.js';
import { AER_LIMIT, AsyncEvents, ERROR_LOG_ENTRIES } from './events.js';
import { Bar0 } from './bar0.js';
import { countIo, type ErrorEntry, type HealthCounters } from './identify.js';
import type { IoContext } from './io.js';
import type { InflightLog } from './inflight-log.js';
import { logPlace, openLog } from './log-control.js';
import { ControllerLifecycle } from './lifecycle.js';
import type { Namespace } from './namespace.js';
import { CompletionQueue, retireSq, SubmissionQueue } from './queues.js';
import type { RemoteQueues } from './remote.js';
import { adoptRemoteState, handRemoteState } from './remote-state.js';
import { configSnapshot, recoverController, relog, type RecoveryReport } from './recovery.js';
import { ShadowDoorbells, shadowQueues } from './shadow.js';
import { SqFetcher } from './sq-fetch.js';
import { checkObject, loadController, saveController, type ControllerState } from './state.js';
import { defaultFeatures, type ControllerConfig, type ControllerHost, type ControllerStats, type FatalReason, type FeatureValues } from './types.js';

/** One NVMe controller. */
export class NvmeController implements AdminTarget, IoContext {
  readonly stats: ControllerStats = { doorbellWrites: 0, shadowReads: 0, commands: 0, ioCommands: 0, ioDoorbellWrites: 0, mappedDoorbells: 0, completions: 0, interrupts: 0, fastCommands: 0, ioeventfdKicks: 0, lostKicks: 0 };
  /** Why CSTS.CFS was set (undefined while healthy). */
  fatalReason: FatalReason | undefined;
  readonly sqs = new Map<number, SubmissionQueue>();
  readonly cqs = new Map<number, CompletionQueue>();
  readonly health: HealthCounters = { unitsRead: 0, unitsWritten: 0, readCommands: 0, writeCommands: 0, powerCycles: 1, powerOnSeconds: 0, errorEntries: 0 };
  /** @internal */
  readonly regs: Bar0;
  /** @internal */
  readonly shadow: ShadowDoorbells;
  /** @internal */
  readonly events: AsyncEvents;
  /** @internal Bumped by every reset: completions of older commands are dropped, and so are their copies into guest memory (I/O reads it). */
  epoch = 0;
  /** @internal Submission queues whose Delete waits for their commands. */
  readonly deleting = new Set<SubmissionQueue>();
  /** @internal The in-flight log, while an isolated child serves the controller (see inflight-log.ts). */
  log: InflightLog | undefined;
  private readonly poster: CqPoster;
  private readonly fetcher: SqFetcher;
  private readonly lifecycle: ControllerLifecycle;
  /** Commands executing (fetched, not yet completed or dropped). */
  private running = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly startedAt = Date.now();
  private featureValues: FeatureValues;
  private pausedNow = false;

  constructor(
    readonly config: ControllerConfig,
    readonly host: ControllerHost,
    /** @internal Where the I/O queues are served when not here (worker threads: nvme/worker/). */
    readonly remote: RemoteQueues | undefined = undefined,
  ) {
    this.featureValues = defaultFeatures(this.volatileWriteCache);
    this.shadow = new ShadowDoorbells(host.memory, config.ioQueues);
    this.events = new AsyncEvents(this);
    this.poster = new CqPoster(this, this.events);
    this.fetcher = new SqFetcher(this, this.poster, this.events, this, this);
    this.lifecycle = new ControllerLifecycle(this, this.events);
    this.regs = new Bar0(config.maxQueueEntries, {
      cc: (v, before) => this.lifecycle.writeCc(v, before),
      doorbell: (index, value) => this.doorbell(index, value, false),
      csts: () => this.syncGate(),
    });
  }

  get features(): FeatureValues {
    return this.featureValues;
  }

  set features(f: FeatureValues) {
    this.featureValues = f;
    this.syncGate();
  }

  /** @internal Paused for migration: nothing is fetched. */
  get paused(): boolean {
    return this.pausedNow;
  }

  set paused(p: boolean) {
    this.pausedNow = p;
    this.syncGate();
  }

  /** What the queue threads follow at once: enabled, paused, write cache. */
  private syncGate(): void {
    this.remote?.gate(this.accepting, this.pausedNow, this.writeCacheEnabled);
  }

  /** A doorbell write (2y: SQ y tail, 2y+1: CQ y head): served here, or by the I/O queue's thread. */
  private doorbell(index: number, value: number, mapped: boolean): void {
    if (this.remote && index >= 2) this.remote.doorbell(index, value, mapped);
    else this.fetcher.doorbell(index, value, mapped);
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

  /** The error log, newest last. */
  get errors(): readonly ErrorEntry[] {
    return this.events.errors;
  }

  /** Shadow doorbell and EventIdx buffers (Doorbell Buffer Config). */
  get dbbuf(): { doorbells: number; eventIdx: number } | undefined {
    return this.shadow.buffers;
  }

  namespace(nsid: number): Namespace | undefined {
    return nsid >= 1 ? this.config.namespaces[nsid - 1] : undefined;
  }

  account(write: boolean, bytes: number): void {
    countIo(this.health, write, bytes);
  }

  healthNow(): HealthCounters {
    const h = { ...this.health, powerOnSeconds: (Date.now() - this.startedAt) / 1000 };
    this.remote?.addCounters({ ...this.stats }, h);
    return h;
  }

  /** The counters, those of the queue threads included. */
  counters(): ControllerStats {
    const stats = { ...this.stats };
    this.remote?.addCounters(stats, { ...this.health });
    return stats;
  }

  /** @internal The thread serving I/O queue `qid` (undefined: all are served here). */
  threadOf(qid: number): number | undefined {
    return this.remote?.threadOf(qid);
  }

  // ---- registers and state ----

  /** CAP: MQES, CQR, TO, DSTRD, CSS (NVM), MPSMIN = MPSMAX = 4 KiB. */
  get cap(): bigint {
    return this.regs.cap;
  }

  /** Enabled, healthy and not shut down: doorbells count. */
  get accepting(): boolean {
    const csts = this.regs.csts;
    return (csts & (Csts.RDY | Csts.CFS)) === Csts.RDY && (csts & Csts.SHST_MASK) === 0;
  }

  /** Accepting and not paused for migration: commands are fetched. */
  get ready(): boolean {
    return this.accepting && !this.paused;
  }

  /** CSTS as the host reads it. */
  get status(): number {
    return this.regs.csts;
  }

  /** Reads `length` bytes of BAR0 at `offset`. */
  readRegister(offset: number, length: number): Uint8Array {
    return this.regs.read(offset, length);
  }

  /** A host write to BAR0. */
  writeRegister(offset: number, data: Uint8Array): void {
    this.regs.write(offset, data);
    if (this.log && offset < NvmeReg.DOORBELLS) this.logRegisters();
  }

  // ---- the in-flight log (isolated children) ----

  /**
   * @internal Starts logging into `memory` for a new connection (its log is empty);
   * a log a predecessor left is for {@link recover}. The controller is at
   * reset here: nothing is in flight yet.
   */
  attachLog(memory: PersistentMemory): void {
    const log = openLog(this, memory);
    if (!log.fresh) return;
    const place = logPlace(this, memory, log);
    this.log = log;
    log.clear();
    this.logRegisters();
    if (place) this.remote!.attachLog(place, true);
  }

  /**
   * @internal In a successor process: takes over the log a predecessor left in
   * `memory` and carries on what it had in flight (see recovery.ts). The
   * controller must be fresh (at reset). A state that does not load
   * leaves the controller reset, its log cleared, and throws.
   */
  recover(memory: PersistentMemory): RecoveryReport | Promise<RecoveryReport> {
    const log = openLog(this, memory);
    const place = logPlace(this, memory, log);
    this.log = log;
    // The threads log their queues into their parts from now on (what those hold is recovery's).
    if (place) this.remote!.attachLog(place, false);
    try {
      return recoverController(this, log, {
        start: (sq, bytes, at, slot) => this.fetcher.start(sq, bytes, at, slot),
        resumeAfter: (sq, running) => this.fetcher.resumeAfter(sq, running),
        interrupt: (vector) => this.poster.interrupt(vector),
        shutdown: () => this.lifecycle.shutdown(),
        handOver: (slots) => {
          handRemoteState(this, this.remote!);
          this.remote!.restart(slots);
        },
      });
    } catch (e) {
      void this.reset();
      throw e;
    }
  }

  /** @internal Stores the registers in the log. */
  logRegisters(): void {
    const r = this.regs;
    this.log?.registers({ cc: r.cc, csts: r.csts, aqa: r.aqa, intms: r.intms, asq: r.asq, acq: r.acq });
  }

  /** @internal Stores the configuration in the log (queues, features, events). */
  logConfig(): void {
    this.log?.writeSnapshot(configSnapshot(this, null));
  }

  /** @internal An admin command completed: the snapshot takes its effect with its result, unless another one is half-way. */
  adminCompleted(slot: number, status: number, dw0: number): void {
    const log = this.log;
    if (!log) return;
    if (slot === log.runningAdmin) {
      log.runningAdmin = -1;
      log.writeSnapshot(configSnapshot(this, { seq: log.seqOf(slot), status, dw0 }));
    } else if (log.runningAdmin < 0) {
      // An Asynchronous Event Request (events and masks changed); with an admin command half-way, its completion writes them.
      log.writeSnapshot(configSnapshot(this, null));
    }
  }

  /**
   * Doorbell `index` (2y: SQ y tail, 2y+1: CQ y head) read `value` in the
   * mapped doorbell page (`mmapDoorbells`): served as a register write of
   * that value, without a message.
   */
  mappedDoorbell(index: number, value: number): void {
    this.doorbell(index, value, true);
  }

  /** Doorbell `index` rang through its ioeventfd: a kick, its value taken from the shadow doorbell (see SqFetcher.kick). */
  kick(index: number): void {
    this.fetcher.kick(index);
  }

  /**
   * Power-on reset (FLR, a client's DEVICE_RESET, disconnect): registers
   * back to their reset values at once; commands still in the backend are
   * abandoned (their completions and copies dropped). Resolves once none
   * of them can write guest memory: the reset's reply waits for that.
   */
  reset(): Promise<void> {
    return this.lifecycle.reset();
  }

  /** Sets CSTS.CFS and stops every queue until the host resets the controller. */
  fatal(reason: string): void {
    this.lifecycle.fatal(reason);
  }

  /** Resolves when no command is executing. */
  whenIdle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** @internal Counts `work` as a command executing until it settles. */
  track<T>(work: Promise<T>): Promise<T> {
    this.running++;
    return work.finally(() => {
      if (--this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  /** @internal */
  drain(sq: SubmissionQueue, fromDoorbell = false): void {
    this.fetcher.drain(sq, fromDoorbell);
  }

  /** @internal */
  complete(sq: SubmissionQueue, cid: number, nsid: number, status: number, dw0: number, slot: number, why?: string): void {
    this.poster.complete(sq, cid, nsid, status, dw0, slot, why);
  }

  /**
   * @internal Raises, the ordinary way (MSI-X, or INTx unless INTMS masks
   * it), an interrupt a queue thread could not signal itself: not counted
   * here, the thread counted it.
   */
  raiseThreadInterrupt(vector: number): void {
    this.poster.raise(vector);
  }

  /** @internal */
  flushCq(cq: CompletionQueue): void {
    this.poster.flush(cq);
  }

  // ---- asynchronous events ----

  /** Queues an asynchronous event and completes a waiting Asynchronous Event Request with it. */
  asyncEvent(type: number, info: number, log: number): void {
    this.events.raise(type, info, log);
  }

  /** Get Log Page read `log` without Retain Asynchronous Event: unmask the event types it reports. */
  logRead(log: number, retain: boolean): void {
    this.events.logRead(log, retain);
  }

  // ---- queue management (admin commands) ----

  /** Creates I/O completion queue `id` (checks done by the caller). */
  addCq(id: number, base: number, size: number, interruptsEnabled: boolean, vector: number): void {
    const cq = new CompletionQueue(id, base, size, interruptsEnabled, vector);
    cq.shadow = this.shadow.slots(id, true);
    this.cqs.set(id, cq);
    this.log?.queueCreated(id, false);
    if (id > 0) this.remote?.createCq({ id, base, size, head: 0, tail: 0, phase: 1, interruptsEnabled, vector });
  }

  /** Creates I/O submission queue `id` on `cq`. */
  addSq(id: number, base: number, size: number, cq: CompletionQueue): void {
    const sq = new SubmissionQueue(id, base, size, cq);
    sq.shadow = this.shadow.slots(id, false);
    cq.sqs.add(sq);
    this.sqs.set(id, sq);
    this.log?.queueCreated(id, true);
    this.remote?.createSq({ id, base, size, head: 0, tail: 0, cqid: cq.id, outstanding: 0 });
  }

  /** Deletes an I/O submission queue once the commands it started completed. */
  async removeSq(sq: SubmissionQueue): Promise<void> {
    this.sqs.delete(sq.id);
    this.deleting.add(sq);
    try {
      await (this.remote ? this.remote.deleteSq(sq.id) : retireSq(sq, () => this.epoch));
    } finally {
      this.deleting.delete(sq);
    }
    sq.cq.sqs.delete(sq);
  }

  removeCq(cq: CompletionQueue): void {
    this.cqs.delete(cq.id);
    this.remote?.deleteCq(cq.id);
  }

  /** Doorbell Buffer Config: shadow doorbells and EventIdx for the I/O queues (Linux never shadows the admin queue). */
  async setDoorbellBuffer(doorbells: number, eventIdx: number): Promise<void> {
    this.shadow.buffers = { doorbells, eventIdx };
    // Queues that already exist start from their current tail and head, in both buffers (on their threads: theirs).
    const here = <Q extends { id: number }>(qs: Iterable<Q>): Q[] => [...qs].filter((q) => !this.remote || q.id === 0);
    await shadowQueues(this.shadow, this.memory, here(this.sqs.values()), here(this.cqs.values()));
    await this.remote?.shadowBuffers({ doorbells, eventIdx });
  }

  /** Bytes of one shadow buffer covering every queue id the controller offers. */
  get doorbellBufferBytes(): number {
    return this.shadow.bytes;
  }

  /** True once the controller has I/O queues (Number of Queues can no longer change). */
  get hasIoQueues(): boolean {
    return this.sqs.size > 1 || this.cqs.size > 1;
  }

  // ---- migration ----

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
    if (this.remote) adoptRemoteState(this, await this.remote.idle());
  }

  /** Fetches again after {@link quiesce} or {@link restore}; picks up tails written meanwhile. */
  resume(): void {
    this.paused = false;
    if (!this.ready) return;
    this.catchUpDoorbellPage();
    // The threads' queues are theirs: the stand-ins here only carried their state to a save.
    const here = (q: { id: number }): boolean => !this.remote || q.id === 0;
    for (const cq of this.cqs.values()) if (here(cq)) this.flushCq(cq);
    for (const sq of this.sqs.values()) if (here(sq) && (!sq.empty || sq.shadow)) this.drain(sq);
    this.remote?.resume();
  }

  /**
   * Doorbells the guest left in the mapped page that the controller may
   * not have seen: written just before a migration stopped the device (on
   * the destination the page arrives with the device's memory).
   */
  private catchUpDoorbellPage(): void {
    const page = this.host.doorbellPage;
    if (!page) return;
    for (const cq of [...this.cqs.values()]) {
      const v = page.unseen(2 * cq.id + 1);
      if (v !== undefined) this.doorbell(2 * cq.id + 1, v, true);
    }
    for (const sq of [...this.sqs.values()]) {
      const v = page.unseen(2 * sq.id);
      if (v !== undefined) this.doorbell(2 * sq.id, v, true);
    }
  }

  /** The state that migrates; take it while quiesced. */
  save(): ControllerState {
    return saveController(this);
  }

  /**
   * Loads a saved state (migration RESUMING); throws, leaving the controller
   * reset, when it is malformed or does not fit this controller. The
   * controller stays paused until {@link resume}.
   */
  restore(saved: unknown): void {
    // Loading happens while stopped: nothing is in flight to wait for.
    void this.reset();
    this.paused = true;
    try {
      loadController(this, checkObject(saved, 'state'));
    } catch (e) {
      void this.reset();
      throw e;
    }
    if (this.log) relog(this, this.log);
    if (this.remote) handRemoteState(this, this.remote);
  }
}
