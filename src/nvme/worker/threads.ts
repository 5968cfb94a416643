/**
 * NVMe I/O queues on device worker threads, as the controller sees them
 * ({@link RemoteQueues}): I/O queue y is served by thread (y - 1) mod N,
 * which maps guest memory itself, watches the queue's doorbell
 * ioeventfds, and raises its MSI-X vector directly (device/threads does
 * memory, interrupts and doorbells). This side forwards queue creation
 * and deletion, doorbell messages, the gate, resets and migration's
 * pauses, and takes the threads' events back to the controller.
 */
import type { Device } from '../../device/device.js';
import { DeviceThreads } from '../../device/threads/pool.js';
import type { HealthCounters } from '../identify.js';
import type { LogPlace, RemoteQueues, RemoteQueueState } from '../remote.js';
import type { ShadowBuffers } from '../shadow.js';
import type { SavedCq, SavedSq } from '../queues.js';
import type { ControllerStats } from '../types.js';
import { addCounters, COUNTER_BYTES } from './counters.js';
import { Gate, type AskNvmeThread, type FromNvmeThread, type NvmeRoleData, type ToNvmeThread } from './messages.js';

const ROLE_URL = new URL('./queues-role.js', import.meta.url);

/** What the threads report to the controller. */
export interface NvmeThreadsHost {
  /** Raise `vector` the ordinary way (masks, pending bits, INTx and INTMS); the thread already counted it. */
  interrupt(vector: number): void;
  asyncEvent(type: number, info: number, log: number): void;
  recordError(sqid: number, cid: number, status: number, nsid: number, why?: string): void;
  fatal(reason: string): void;
  log(message: string): void;
}

/** What every thread starts with besides what this side adds. */
export type NvmeThreadData = Omit<NvmeRoleData, 'gate' | 'counters' | 'gen' | 'log'>;

export class NvmeQueueThreads implements RemoteQueues {
  readonly threads: DeviceThreads;
  private readonly gateWords = new Int32Array(new SharedArrayBuffer(4 * Gate.WORDS));
  private readonly counters: SharedArrayBuffer[] = [];
  /** Resets sent to each thread: its events carry the count it had taken. */
  private readonly resets: number[] = [];
  /** The connection's in-flight log (an isolated child), which a thread (re)started maps too. */
  private logPlace: LogPlace | undefined;

  constructor(
    /** Worker threads. */
    readonly count: number,
    /** Called at each thread start (to hand each start its own fds). */
    data: () => NvmeThreadData,
    private readonly resetTimeoutMs: number,
    private readonly host: NvmeThreadsHost,
  ) {
    for (let i = 0; i < count; i++) {
      this.counters.push(new SharedArrayBuffer(COUNTER_BYTES));
      this.resets.push(0);
    }
    this.threads = new DeviceThreads(
      this.counters.map((counters, id) => ({
        id,
        role: ROLE_URL,
        data: (): NvmeRoleData => ({
          ...data(),
          gate: this.gateWords.buffer as SharedArrayBuffer,
          counters,
          gen: this.resets[id],
          // A thread (re)started holds no command: what its part holds was abandoned with the one it replaces.
          log: this.logPlace && { ...this.logPlace, part: id + 1, fresh: true },
        }),
      })),
      {
        onEvent: (id, m) => this.onEvent(id, m as FromNvmeThread),
        // A thread that died left its queues unserved: the controller reports a fatal status, the host resets it.
        onFailure: (_id, reason) => {
          this.host.log(reason);
          this.host.fatal(reason);
        },
      },
    );
  }

  connect(device: Device): void {
    this.threads.connect(device);
  }

  disconnect(): void {
    this.threads.disconnect();
  }

  close(): void {
    this.threads.close();
  }

  /** Doorbell `index`'s eventfd, watched by its queue's thread from now on; returns the release function. */
  claimDoorbell(index: number, fd: number, pollIdleMs: number): () => void {
    return this.threads.claimDoorbell(this.threadOf(index >> 1), index, fd, pollIdleMs);
  }

  // ---- RemoteQueues ----

  threadOf(qid: number): number {
    return (qid - 1) % this.count;
  }

  attachLog(place: LogPlace, fresh: boolean): void {
    this.logPlace = place;
    this.all((id) => this.tell(id, { t: 'log', place: { ...place, part: id + 1, fresh } }));
  }

  restart(slots: readonly number[]): void {
    this.all((id) => this.tell(id, { t: 'restart', slots }));
  }

  createCq(cq: SavedCq): void {
    this.tell(this.threadOf(cq.id), { t: 'cq', cq });
  }

  createSq(sq: SavedSq): void {
    this.tell(this.threadOf(sq.id), { t: 'sq', sq });
  }

  async deleteSq(qid: number): Promise<void> {
    await this.ask(this.threadOf(qid), { t: 'delete-sq', qid });
  }

  deleteCq(qid: number): void {
    this.tell(this.threadOf(qid), { t: 'delete-cq', qid });
  }

  doorbell(index: number, value: number, mapped: boolean): void {
    this.tell(this.threadOf(index >> 1), { t: 'doorbell', index, value, mapped });
  }

  async shadowBuffers(buffers: ShadowBuffers): Promise<void> {
    await Promise.all(this.all((id) => this.ask(id, { t: 'dbbuf', buffers })));
  }

  gate(accepting: boolean, paused: boolean, writeCache: boolean): void {
    Atomics.store(this.gateWords, Gate.ACCEPTING, accepting ? 1 : 0);
    Atomics.store(this.gateWords, Gate.PAUSED, paused ? 1 : 0);
    Atomics.store(this.gateWords, Gate.WRITE_CACHE, writeCache ? 1 : 0);
  }

  /**
   * Every thread drops its queues and answers once their commands settled.
   * One that does not within the reset timeout (a backend that never
   * answers) is ended, its guest memory mappings revoked first, and
   * started again: the reset then completes.
   */
  async abandon(): Promise<void> {
    await Promise.all(
      this.all(async (id) => {
        this.resets[id]++;
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), this.resetTimeoutMs)));
        const stuck = await Promise.race([this.ask(id, { t: 'reset' }).then(() => false), late]);
        clearTimeout(timer);
        if (stuck) {
          this.host.log(`worker thread ${id} did not finish its commands within ${this.resetTimeoutMs} ms of a reset: restarting it`);
          this.threads.restart(id);
        }
      }),
    );
    // A thread that died meanwhile starts again with the connection's memory.
    this.threads.revive();
  }

  async idle(): Promise<RemoteQueueState> {
    const states = await Promise.all(this.all((id) => this.ask(id, { t: 'idle' }) as Promise<RemoteQueueState | undefined>));
    const out: RemoteQueueState = { cqs: [], sqs: [], pending: [] };
    for (const s of states) {
      if (!s) continue;
      out.cqs.push(...s.cqs);
      out.sqs.push(...s.sqs);
      out.pending.push(...s.pending);
    }
    return out;
  }

  resume(): void {
    this.all((id) => this.tell(id, { t: 'resume' }));
  }

  restore(state: RemoteQueueState, buffers: ShadowBuffers | undefined): void {
    this.all((id) =>
      this.tell(id, {
        t: 'restore',
        state: {
          cqs: state.cqs.filter((q) => this.threadOf(q.id) === id),
          sqs: state.sqs.filter((q) => this.threadOf(q.id) === id),
          pending: state.pending.filter((p) => this.threadOf(p.sqid) === id),
        },
        buffers,
      }),
    );
  }

  addCounters(stats: ControllerStats, health: HealthCounters): void {
    for (const c of this.counters) addCounters(c, stats, health);
  }

  // ---- internals ----

  private all<T>(f: (id: number) => T): T[] {
    return Array.from({ length: this.count }, (_, id) => f(id));
  }

  private tell(id: number, m: ToNvmeThread): void {
    // Bus Master Enable as the thread sees it, before work is handed over.
    this.threads.refreshFlags();
    this.threads.tell(id, m);
  }

  private ask(id: number, m: AskNvmeThread): Promise<unknown> {
    this.threads.refreshFlags();
    return this.threads.ask(id, m);
  }

  private onEvent(id: number, m: FromNvmeThread): void {
    // Said before the thread took the latest reset: about queues that reset discarded.
    if (m.gen !== this.resets[id]) return;
    switch (m.t) {
      case 'irq':
        return this.host.interrupt(m.vector);
      case 'event':
        return this.host.asyncEvent(m.type, m.info, m.log);
      case 'error':
        return this.host.recordError(m.sqid, m.cid, m.status, m.nsid, m.why);
      case 'fatal':
        return this.host.fatal(m.reason);
    }
  }
}
