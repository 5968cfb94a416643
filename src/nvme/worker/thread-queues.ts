/**
 * The I/O queues one device worker thread serves (`nvmeController({
 * workers })`): the same submission fetch and completion posting as the
 * main thread (sq-fetch.ts, cq-post.ts, io.ts), over this thread's own
 * guest memory mappings and namespaces. Interrupts go straight to the
 * MSI-X eventfd while routed; asynchronous events, the error log and a
 * controller fatal status are the main thread's, told by message; the
 * gate (enabled, paused, write cache) is read from shared memory. Under
 * --isolate the queues log into this thread's part of the in-flight log
 * (log-mapping.ts), and recovery hands over the commands to start again.
 */
import type { ThreadRuntime } from '../../device/threads/runtime.js';
import type { QueueCore } from '../core.js';
import { CqPoster } from '../cq-post.js';
import { PAGE_SIZE } from '../constants.js';
import { countIo, type HealthCounters } from '../identify.js';
import type { InflightLog } from '../inflight-log.js';
import type { IoContext } from '../io.js';
import type { Namespace } from '../namespace.js';
import { CompletionQueue, retireSq, SubmissionQueue } from '../queues.js';
import type { RemoteQueueState } from '../remote.js';
import { ShadowDoorbells, shadowQueues, type ShadowBuffers } from '../shadow.js';
import { SqFetcher } from '../sq-fetch.js';
import { savedCq, savedPending, savedSq, type SavedCq, type SavedSq } from '../state.js';
import type { ControllerStats } from '../types.js';
import { sharedCounters } from './counters.js';
import { LogMapping } from './log-mapping.js';
import { Gate, type AskNvmeThread, type FromNvmeThread, type NvmeRoleData, type ToNvmeThread } from './messages.js';

/** MSI-X vectors a function may have: the main thread checks the real count when it raises one. */
const MAX_VECTORS = 2048;

export class ThreadQueues implements QueueCore, IoContext {
  readonly sqs = new Map<number, SubmissionQueue>();
  readonly cqs = new Map<number, CompletionQueue>();
  /** Submission queues whose Delete waits for their commands (a reset wakes them). */
  private readonly deleting = new Set<SubmissionQueue>();
  readonly stats: ControllerStats;
  readonly health: Pick<HealthCounters, 'unitsRead' | 'unitsWritten' | 'readCommands' | 'writeCommands'>;
  readonly shadow: ShadowDoorbells;
  readonly config: { pollMicroseconds: number };
  readonly host: QueueCore['host'];
  /** INTx is the main thread's: the mask is never read here. */
  readonly regs = { intms: 0 };
  private readonly logMapping = new LogMapping();
  readonly maxTransfer: number;
  epoch = 0;
  readonly fetcher: SqFetcher;
  /** Resets taken: what this thread says carries it (see FromNvmeThread). */
  private gen: number;
  private readonly gate: Int32Array;
  private readonly poster: CqPoster;
  private running = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly rt: ThreadRuntime,
    data: NvmeRoleData,
    private readonly namespaces: readonly Namespace[],
  ) {
    this.gen = data.gen;
    this.gate = new Int32Array(data.gate);
    ({ stats: this.stats, health: this.health } = sharedCounters(data.counters));
    this.shadow = new ShadowDoorbells(rt.memory, data.ioQueues);
    this.config = { pollMicroseconds: data.pollMicroseconds };
    this.maxTransfer = PAGE_SIZE << data.mdts;
    this.host = {
      msixEnabled: () => true,
      msixVectors: () => MAX_VECTORS,
      raiseMsix: (vector) => rt.signal(vector, { t: 'irq', vector, gen: this.gen } satisfies FromNvmeThread),
      raiseIntx: () => undefined,
    };
    this.poster = new CqPoster(this, { recordError: (sqid, cid, status, nsid, why) => this.post({ t: 'error', sqid, cid, status, nsid, why, gen: this.gen }) });
    this.fetcher = new SqFetcher(this, this.poster, { hold: () => undefined }, this, undefined);
    if (data.log) this.logMapping.attach(data.log);
  }

  /** This thread's part of the in-flight log, under --isolate. */
  get log(): InflightLog | undefined {
    return this.logMapping.log;
  }

  get memory(): ThreadRuntime['memory'] {
    return this.rt.memory;
  }

  get accepting(): boolean {
    return Atomics.load(this.gate, Gate.ACCEPTING) === 1;
  }

  get ready(): boolean {
    return this.accepting && Atomics.load(this.gate, Gate.PAUSED) === 0;
  }

  get writeCacheEnabled(): boolean {
    return Atomics.load(this.gate, Gate.WRITE_CACHE) === 1;
  }

  namespace(nsid: number): Namespace | undefined {
    return nsid >= 1 ? this.namespaces[nsid - 1] : undefined;
  }

  account(write: boolean, bytes: number): void {
    countIo(this.health, write, bytes);
  }

  /** Stops this thread's queues at once, and has the main thread set CSTS.CFS (which resets them here). */
  fatal(reason: string): void {
    this.stop();
    this.post({ t: 'fatal', reason, gen: this.gen });
  }

  drain(sq: SubmissionQueue, fromDoorbell = false): void {
    this.fetcher.drain(sq, fromDoorbell);
  }

  complete(sq: SubmissionQueue, cid: number, nsid: number, status: number, dw0: number, slot: number, why?: string): void {
    this.poster.complete(sq, cid, nsid, status, dw0, slot, why);
  }

  adminCompleted(): void {
    // No admin queue here.
  }

  flushCq(cq: CompletionQueue): void {
    this.poster.flush(cq);
  }

  asyncEvent(type: number, info: number, log: number): void {
    this.post({ t: 'event', type, info, log, gen: this.gen });
  }

  track<T>(work: Promise<T>): Promise<T> {
    this.running++;
    return work.finally(() => {
      if (--this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  whenIdle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** A doorbell's ioeventfd counted (`slot` is the doorbell's index). */
  kick(index: number): void {
    this.fetcher.kick(index);
  }

  message(m: ToNvmeThread): void {
    switch (m.t) {
      case 'cq':
        this.addCq(m.cq);
        return;
      case 'sq':
        return this.addSq(m.sq);
      case 'delete-cq':
        this.cqs.delete(m.qid);
        return;
      case 'doorbell':
        return this.fetcher.doorbell(m.index, m.value, m.mapped);
      case 'resume':
        for (const cq of this.cqs.values()) this.poster.flush(cq);
        for (const sq of this.sqs.values()) if (!sq.empty || sq.shadow) this.drain(sq);
        return;
      case 'restore':
        return this.restore(m.state, m.buffers);
      case 'log':
        this.logMapping.attach(m.place);
        return;
      case 'restart':
        return this.restart(m.slots);
    }
  }

  async ask(m: AskNvmeThread): Promise<unknown> {
    switch (m.t) {
      case 'delete-sq': {
        const sq = this.sqs.get(m.qid);
        if (!sq) return true;
        this.sqs.delete(m.qid);
        this.deleting.add(sq);
        try {
          await retireSq(sq, () => this.epoch);
        } finally {
          this.deleting.delete(sq);
        }
        sq.cq.sqs.delete(sq);
        return true;
      }
      case 'dbbuf':
        this.shadow.buffers = m.buffers;
        await shadowQueues(this.shadow, this.memory, this.sqs.values(), this.cqs.values());
        return true;
      case 'reset':
        this.stop();
        this.gen++;
        this.sqs.clear();
        this.cqs.clear();
        this.shadow.buffers = undefined;
        // What this thread had in flight is abandoned: a successor must not start it again.
        this.log?.clearPart();
        // Answered once the commands abandoned settled: none of them can write guest memory after the reset's reply.
        await this.whenIdle();
        return true;
      case 'idle':
        return this.idle();
    }
  }

  // ---- internals ----

  private post(m: FromNvmeThread): void {
    this.rt.post(m);
  }

  /** Fetches nothing more and drops what waits; late completions are dropped by the new epoch. */
  private stop(): void {
    this.epoch++;
    for (const sq of [...this.sqs.values(), ...this.deleting]) {
      sq.dead = true;
      sq.wakeIdle();
    }
    for (const cq of this.cqs.values()) cq.pending.length = 0;
  }

  private addCq(s: SavedCq): CompletionQueue {
    const cq = new CompletionQueue(s.id, s.base, s.size, s.interruptsEnabled, s.vector);
    cq.head = s.head;
    cq.tail = s.tail;
    cq.phase = s.phase;
    cq.shadow = this.shadow.slots(s.id, true);
    this.cqs.set(s.id, cq);
    return cq;
  }

  private addSq(s: SavedSq): void {
    const cq = this.cqs.get(s.cqid);
    // The main thread checked that the CQ exists and is served here.
    if (!cq) return this.fatal(`SQ ${s.id}: its completion queue ${s.cqid} is not served by this thread`);
    const sq = new SubmissionQueue(s.id, s.base, s.size, cq);
    sq.head = s.head;
    sq.tail = s.tail;
    sq.outstanding = s.outstanding;
    sq.shadow = this.shadow.slots(s.id, false);
    cq.sqs.add(sq);
    this.sqs.set(s.id, sq);
  }

  private restore(state: RemoteQueueState, buffers: ShadowBuffers | undefined): void {
    this.shadow.buffers = buffers;
    for (const cq of state.cqs) this.addCq(cq);
    for (const sq of state.sqs) {
      this.addSq(sq);
      // Numbered by this thread from now on: what it logged so far for the queue counts as taken.
      this.log?.sqFetchedAt(sq.id, sq.head);
    }
    for (const p of state.pending) {
      const sq = this.sqs.get(p.sqid);
      if (sq) sq.cq.pending.push({ sq, cid: p.cid, status: p.status, dw0: p.dw0, slot: -1 });
    }
  }

  /**
   * Recovery (the queues just restored): starts again the logged commands
   * of `slots` that are this thread's queues', oldest first, then drains
   * every queue and raises every completion queue's interrupt once (the
   * dead process may have posted without raising it).
   */
  private restart(slots: readonly number[]): void {
    const log = this.log;
    if (log) {
      // Slots recovery dropped are free again.
      log.refresh();
      for (const slot of slots) {
        const sq = this.sqs.get(log.sqidOf(slot));
        if (!sq || log.seqOf(slot) === 0) continue;
        sq.outstanding++;
        this.fetcher.start(sq, log.entry(slot), 0, slot);
      }
    }
    for (const sq of this.sqs.values()) this.drain(sq);
    for (const cq of this.cqs.values()) {
      this.poster.flush(cq);
      if (cq.interruptsEnabled) this.poster.interrupt(cq.vector);
    }
  }

  /** Waits until nothing is in flight or being posted; the queues' state, for migration. */
  private async idle(): Promise<RemoteQueueState> {
    await this.whenIdle();
    const busy = (): boolean => [...this.sqs.values()].some((q) => q.draining) || [...this.cqs.values()].some((q) => q.flushing || q.scheduled);
    while (busy()) await new Promise((r) => setImmediate(r));
    this.rt.flushDirty();
    return { cqs: [...this.cqs.values()].map(savedCq), sqs: [...this.sqs.values()].map(savedSq), pending: savedPending(this.cqs.values()) };
  }
}
