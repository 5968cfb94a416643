/**
 * Virtio queues on device worker threads, as the transport sees them: a
 * RemoteQueue per queue, forwarding the queue's controls to its thread
 * (device/threads does memory, interrupts and doorbells), and the threads'
 * events back to the transport. A thread that dies sets
 * DEVICE_NEEDS_RESET; the next reset starts it again.
 */
import type { Device } from '../../device/device.js';
import { DeviceThreads } from '../../device/threads/pool.js';
import type { QueueMemory } from '../../device/queue-memory.js';
import type { RingFeatures, RingState, VirtqueueState } from '../ring.js';
import type { QueueWorkerSpec } from './handler.js';
import type { AskQueues, FromQueues, QueueRoleData, ToQueues } from './messages.js';
import { RemoteQueue, type QueueLink } from './remote-queue.js';

/** What the pool needs from the transport. */
export interface PoolHost {
  /** Raise queue `q`'s interrupt the ordinary way (masks, pending bits, INTx + ISR). */
  interrupt(q: number): void;
  needsReset(reason: string): void;
  warnDriver(message: string): void;
  /** Negotiated features. */
  features(): bigint;
  /** How long an idle queue polls its avail ring, in microseconds (0: it asks for kicks at once). */
  pollMicroseconds(): number;
  log(message: string): void;
}

/** How long a reset waits for a thread's abandoned requests to settle, by default. */
const RESET_SETTLE_MS = 30_000;
const ROLE_URL = new URL('./queues-role.js', import.meta.url);

export class QueueThreads implements QueueLink {
  readonly queues: RemoteQueue[] = [];
  readonly threads: DeviceThreads;
  private readonly threadOf = new Map<number, number>();
  /** Per thread: how long a reset waits for it before restarting it. */
  private readonly resetTimeout = new Map<number, number>();
  /** Requests served, an Int32 per queue index, counted by the threads. */
  private readonly served: Int32Array;
  /** Resets sent and not yet answered, by queue: the thread's events until the answer are of the old generation. */
  private readonly resetting = new Map<number, number>();

  constructor(
    specs: readonly { index: number; maxSize: number; worker: QueueWorkerSpec }[],
    memory: QueueMemory,
    private readonly host: PoolHost,
  ) {
    this.served = new Int32Array(new SharedArrayBuffer(4 * Math.max(1, ...specs.map((s) => s.index + 1))));
    const byThread = new Map<number, { spec: QueueWorkerSpec; queues: { index: number; maxSize: number }[] }>();
    for (const s of specs) {
      const id = s.worker.thread ?? s.index;
      const entry = byThread.get(id) ?? { spec: s.worker, queues: [] };
      entry.queues.push({ index: s.index, maxSize: s.maxSize });
      byThread.set(id, entry);
      this.threadOf.set(s.index, id);
      this.resetTimeout.set(id, Math.min(this.resetTimeout.get(id) ?? Infinity, s.worker.resetTimeoutMs ?? RESET_SETTLE_MS));
      this.queues[s.index] = new RemoteQueue(s.index, s.maxSize, memory, this);
    }
    this.threads = new DeviceThreads(
      [...byThread].map(([id, e]) => ({
        id,
        role: ROLE_URL,
        data: (): QueueRoleData => ({
          module: String(e.spec.module),
          data: typeof e.spec.data === 'function' ? (e.spec.data as () => unknown)() : e.spec.data,
          queues: e.queues,
          served: this.served.buffer as SharedArrayBuffer,
        }),
      })),
      {
        onEvent: (_id, m) => this.onEvent(m as FromQueues),
        onFailure: (_id, reason) => {
          this.host.log(reason);
          this.host.needsReset(reason);
        },
      },
    );
  }

  /** Worker threads running now (for tests and tools). */
  get threadCount(): number {
    return this.threads.running;
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

  revive(): void {
    this.threads.revive();
  }

  /** A queue's doorbell eventfd, watched by its thread from now on; returns the release function. */
  claimDoorbell(q: number, fd: number, pollIdleMs: number): () => void {
    return this.threads.claimDoorbell(this.thread(q), q, fd, pollIdleMs);
  }

  /**
   * Waits until every thread finished its last reset. A thread that does
   * not within its reset timeout (a handler stuck in a loop, a backend that
   * never answers) is ended and started afresh: the reset then completes,
   * and the thread's queues start from their reset state.
   */
  async settled(): Promise<void> {
    const byThread = new Map<number, Promise<void>[]>();
    for (const q of this.queues) if (q) byThread.set(this.thread(q.index), [...(byThread.get(this.thread(q.index)) ?? []), q.settled]);
    await Promise.all(
      [...byThread].map(async ([id, waits]) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), this.resetTimeout.get(id))));
        const stuck = await Promise.race([Promise.all(waits).then(() => false), late]);
        clearTimeout(timer);
        if (stuck) {
          this.host.log(`worker thread ${id} did not finish its requests within ${this.resetTimeout.get(id)} ms of a reset: restarting it`);
          this.threads.restart(id);
        }
      }),
    );
  }

  /** Requests each queue's thread served so far (counted in shared memory: also after the thread ended), by queue. */
  requestCounts(): Map<number, { thread: number; requests: number }> {
    const out = new Map<number, { thread: number; requests: number }>();
    for (const [q, thread] of this.threadOf) out.set(q, { thread, requests: Atomics.load(this.served, q) });
    return out;
  }

  // ---- QueueLink ----

  enable(q: number, state: RingState, ring: RingFeatures): void {
    this.threads.refreshFlags();
    this.tell(q, { t: 'enable', q, size: state.size, desc: state.desc, driver: state.driver, device: state.device, ring, features: this.host.features().toString(), vector: state.msixVector, pollMicroseconds: this.host.pollMicroseconds() });
  }

  restore(q: number, state: VirtqueueState, ring: RingFeatures): void {
    this.tell(q, { t: 'restore', q, state, ring, features: this.host.features().toString(), pollMicroseconds: this.host.pollMicroseconds() });
  }

  control(q: number, op: 'pause' | 'resume' | 'kick'): void {
    if (op !== 'pause') this.threads.refreshFlags();
    this.tell(q, { t: op, q });
  }

  async reset(q: number): Promise<void> {
    this.resetting.set(q, (this.resetting.get(q) ?? 0) + 1);
    try {
      await this.ask(q, { t: 'reset', q });
    } finally {
      this.resetting.set(q, this.resetting.get(q)! - 1);
    }
  }

  async idle(q: number): Promise<VirtqueueState | undefined> {
    return (await this.ask(q, { t: 'idle', q })) as VirtqueueState | undefined;
  }

  attachLog(q: number, log: { fd: number; offset: number; maxSize: number } | undefined): void {
    this.tell(q, { t: 'log', q, ...log });
  }

  async recover(q: number): Promise<number> {
    return (await this.ask(q, { t: 'recover', q })) as number;
  }

  vectorChanged(q: number): void {
    this.tell(q, { t: 'vector', q, vector: this.queues[q].state.msixVector });
  }

  // ---- internals ----

  private thread(q: number): number {
    return this.threadOf.get(q)!;
  }

  private tell(q: number, m: ToQueues): void {
    this.threads.tell(this.thread(q), m);
  }

  private ask(q: number, m: AskQueues): Promise<unknown> {
    return this.threads.ask(this.thread(q), m);
  }

  private onEvent(m: FromQueues): void {
    // Reported before the thread took a reset still unanswered: about requests or rings the reset discarded.
    if ((this.resetting.get(m.q) ?? 0) > 0) return;
    if (m.t === 'irq') this.host.interrupt(m.q);
    else if (m.t === 'warn') this.host.warnDriver(m.message);
    else this.host.needsReset(m.reason);
  }
}
