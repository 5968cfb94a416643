/**
 * The main thread's side of queues served on worker threads: starts the
 * threads, and keeps each one's view of the device in step with the
 * connection:
 *
 * - guest memory: every DMA_MAP goes to each thread with a dup of the
 *   client's fd (the thread maps it itself). The region stays pinned here
 *   for each thread that holds it, so a DMA_UNMAP is answered only once
 *   every thread confirmed it dropped the memory (after its I/O on it);
 * - interrupts: a queue's vector is routed straight to the MSI-X eventfd
 *   (a dup, owned by the thread) while raising it means exactly that; a
 *   generation in shared memory withdraws the route at once when masks,
 *   modes or eventfds change, and the thread then asks by message;
 * - Bus Master Enable (and migration's hold) as a shared flag;
 * - doorbells: kicks by message, or the queue's ioeventfd, watched by the
 *   thread;
 * - dirty-page logging, DMA by message, broken rings, reset and quiesce.
 *
 * A thread that dies sets DEVICE_NEEDS_RESET; the next reset starts it again.
 */
import { Worker } from 'node:worker_threads';
import type { Device } from '../../device/device.js';
import type { DmaRegion, DmaTableObserver } from '../../device/dma.js';
import { DeviceError, Errno } from '../../device/errors.js';
import { IrqIndex } from '../../device/irqs.js';
import { native } from '../../native/index.js';
import type { RingFeatures, Virtqueue, VirtqueueHost, VirtqueueState } from '../virtqueue.js';
import type { QueueWorkerSpec } from './handler.js';
import { Flag, type FromWorker, type ToWorker, type WorkerStart } from './messages.js';
import { RemoteQueue, type QueueLink } from './remote-queue.js';

/** What the pool needs from the transport. */
export interface PoolHost {
  /** Raise queue `q`'s interrupt the ordinary way (masks, pending bits, INTx + ISR). */
  interrupt(q: number): void;
  needsReset(reason: string): void;
  /** Negotiated features. */
  features(): bigint;
  log(message: string): void;
}

/** How long a reset waits for a worker's abandoned requests to settle. */
const RESET_SETTLE_MS = 30_000;
const THREAD_URL = new URL('./thread.js', import.meta.url);

class QueueThread {
  worker: Worker | undefined;
  /** A region of the connection is pinned here for each thread that mapped it. */
  readonly pins = new Map<DmaRegion, () => void>();
  readonly waiting = new Map<number, (state?: VirtqueueState) => void>();
  dead = false;

  constructor(
    readonly id: number,
    readonly spec: QueueWorkerSpec,
    readonly queues: { index: number; maxSize: number }[],
  ) {}

  post(m: ToWorker): void {
    if (!this.worker || this.dead) {
      // Nobody will own the fd a message carries.
      if ((m.t === 'map' || m.t === 'route' || m.t === 'ioeventfd') && m.fd !== undefined && m.fd >= 0) native.close(m.fd);
      return;
    }
    this.worker.postMessage(m);
  }
}

export class QueueThreads implements QueueLink {
  readonly queues: RemoteQueue[] = [];
  private readonly threads = new Map<number, QueueThread>();
  private readonly byQueue = new Map<number, QueueThread>();
  private readonly flags = new Int32Array(new SharedArrayBuffer(4 * (Flag.ROUTE + 1024 + 1)));
  private device: Device | undefined;
  private unsubscribe: (() => void)[] = [];
  private nextId = 1;
  /** Last route sent per queue: `${fd}/${fdVersion}`. */
  private readonly routeKeys = new Map<number, string>();
  /** Doorbell eventfds claimed for each queue (our dup), to give restarted threads. */
  private readonly doorbells = new Map<number, { fd: number; spinNs: number }>();
  private closed = false;

  constructor(
    specs: readonly { index: number; maxSize: number; worker: QueueWorkerSpec }[],
    shadowHost: VirtqueueHost,
    private readonly host: PoolHost,
  ) {
    for (const s of specs) {
      const threadId = s.worker.thread ?? s.index;
      let t = this.threads.get(threadId);
      if (!t) {
        t = new QueueThread(threadId, s.worker, []);
        this.threads.set(threadId, t);
      }
      t.queues.push({ index: s.index, maxSize: s.maxSize });
      this.byQueue.set(s.index, t);
      this.queues[s.index] = new RemoteQueue(s.index, s.maxSize, shadowHost, this);
    }
  }

  /** Worker threads running now (for tests and tools). */
  get threadCount(): number {
    return [...this.threads.values()].filter((t) => t.worker && !t.dead).length;
  }

  /** A client connected to `device`: follow its memory and interrupt routing. */
  connect(device: Device): void {
    this.disconnect();
    this.device = device;
    for (const t of this.threads.values()) if (!t.worker || t.dead) this.spawn(t);
    const observer: DmaTableObserver = {
      added: (region, fd) => {
        for (const t of this.threads.values()) this.mapInto(t, region, fd);
      },
      removed: (region) => {
        for (const t of this.threads.values()) this.unmapFrom(t, region);
      },
      logging: (pageSize) => {
        for (const t of this.threads.values()) t.post({ t: 'logging', pageSize });
      },
    };
    this.unsubscribe.push(device.dma.observe(observer), device.onInterruptRouting(() => this.refresh()));
    this.refresh();
  }

  /** The client left (its maps are already gone): stop following it. */
  disconnect(): void {
    for (const u of this.unsubscribe) u();
    this.unsubscribe = [];
    this.device = undefined;
    this.refresh();
  }

  /** Ends every thread (the device is no longer served). */
  close(): void {
    this.closed = true;
    this.disconnect();
    for (const t of this.threads.values()) this.bury(t, undefined);
    for (const d of this.doorbells.values()) native.close(d.fd);
    this.doorbells.clear();
  }

  /**
   * A doorbell's eventfd for queue `q`, watched by its thread from now on.
   * Returns the release function (the connection ended).
   */
  claimDoorbell(q: number, fd: number, pollIdleMs: number): () => void {
    this.releaseDoorbell(q);
    const d = { fd: native.dup(fd), spinNs: Math.round(pollIdleMs * 1e6) };
    if (d.fd < 0) throw new DeviceError(-d.fd, 'cannot dup a doorbell eventfd');
    this.doorbells.set(q, d);
    this.sendDoorbell(q);
    return () => this.releaseDoorbell(q);
  }

  /** Waits (bounded) until every thread finished its last reset. */
  async settled(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, RESET_SETTLE_MS)));
    await Promise.race([Promise.all(this.queues.filter((q) => q).map((q) => q.settled)), late]);
    clearTimeout(timer);
  }

  /** Starts threads that died (on device reset). */
  revive(): void {
    if (this.closed || !this.device) return;
    for (const t of this.threads.values()) {
      if (!t.dead) continue;
      this.spawn(t);
      for (const r of this.device.dma.mappedRegions()) this.mapInto(t, r, undefined, true);
    }
  }

  // ---- QueueLink ----

  enable(q: number, shadow: Virtqueue, ring: RingFeatures): void {
    this.refreshFlags();
    const m: ToWorker = { t: 'enable', q, size: shadow.size, desc: shadow.desc, driver: shadow.driver, device: shadow.device, ring, features: this.host.features().toString() };
    this.byQueue.get(q)!.post(m);
    this.routeKeys.delete(q);
    this.refresh();
  }

  restore(q: number, state: VirtqueueState, ring: RingFeatures): void {
    this.byQueue.get(q)!.post({ t: 'restore', q, state, ring, features: this.host.features().toString() });
  }

  control(q: number, op: 'pause' | 'resume' | 'kick'): void {
    if (op !== 'pause') this.refreshFlags();
    this.byQueue.get(q)!.post({ t: op, q });
  }

  reset(q: number): Promise<void> {
    return this.ask(q, (id) => ({ t: 'reset', q, id })).then(() => undefined);
  }

  idle(q: number): Promise<VirtqueueState | undefined> {
    return this.ask(q, (id) => ({ t: 'idle', q, id }));
  }

  vectorChanged(q: number): void {
    this.routeKeys.delete(q);
    this.refresh();
  }

  // ---- internals ----

  private ask(q: number, make: (id: number) => ToWorker): Promise<VirtqueueState | undefined> {
    const t = this.byQueue.get(q)!;
    if (!t.worker || t.dead) return Promise.resolve(undefined);
    const id = this.nextId++;
    return new Promise((resolve) => {
      t.waiting.set(id, resolve);
      t.post(make(id));
    });
  }

  private spawn(t: QueueThread): void {
    t.dead = false;
    t.pins.clear();
    const data = typeof t.spec.data === 'function' ? (t.spec.data as () => unknown)() : t.spec.data;
    const start: WorkerStart = { module: String(t.spec.module), data, queues: t.queues, flags: this.flags.buffer as SharedArrayBuffer };
    const w = new Worker(THREAD_URL, { workerData: start });
    t.worker = w;
    w.unref();
    // Events of a thread already replaced (a late 'exit' after terminate) concern nobody.
    w.on('message', (m: FromWorker) => t.worker === w && this.onMessage(t, m));
    w.on('error', (e) => t.worker === w && this.bury(t, `worker thread ${t.id} failed: ${e.message}`));
    w.on('exit', (code) => t.worker === w && this.bury(t, `worker thread ${t.id} exited (code ${code})`));
    for (const q of t.queues) {
      this.routeKeys.delete(q.index);
      if (this.doorbells.has(q.index)) this.sendDoorbell(q.index);
    }
    this.refresh();
  }

  /** The thread is gone: what waits on it is released, and the device asks for a reset. */
  private bury(t: QueueThread, reason: string | undefined): void {
    if (t.dead) return;
    t.dead = true;
    const w = t.worker;
    t.worker = undefined;
    for (const release of t.pins.values()) release();
    t.pins.clear();
    for (const resolve of t.waiting.values()) resolve(undefined);
    t.waiting.clear();
    if (w) void w.terminate();
    if (reason && !this.closed) {
      this.host.log(reason);
      this.host.needsReset(reason);
    }
  }

  private onMessage(t: QueueThread, m: FromWorker): void {
    switch (m.t) {
      case 'ready':
        return;
      case 'failed':
        this.bury(t, `worker thread ${t.id} could not start its handler: ${m.message}`);
        return;
      case 'irq':
        this.host.interrupt(m.q);
        return;
      case 'broken':
      case 'needs-reset':
        this.host.needsReset(m.reason);
        return;
      case 'dirty':
        if (this.device?.link) for (let i = 0; i < m.ranges.length; i += 2) this.device.dma.markDirty(m.ranges[i], m.ranges[i + 1]);
        return;
      case 'dma-read':
      case 'dma-write':
        void this.dmaByMessage(t, m);
        return;
      case 'unmapped':
      case 'reset-done':
        t.waiting.get(m.id)?.();
        t.waiting.delete(m.id);
        return;
      case 'idle':
        t.waiting.get(m.id)?.(m.state);
        t.waiting.delete(m.id);
        return;
    }
  }

  private async dmaByMessage(t: QueueThread, m: Extract<FromWorker, { t: 'dma-read' | 'dma-write' }>): Promise<void> {
    try {
      if (!this.device) throw new DeviceError(Errno.ENOTCONN, 'no client');
      if (m.t === 'dma-read') t.post({ t: 'dma-done', id: m.id, data: await this.device.dma.read(m.iova, m.length) });
      else {
        await this.device.dma.write(m.iova, m.data);
        t.post({ t: 'dma-done', id: m.id });
      }
    } catch (e) {
      t.post({ t: 'dma-done', id: m.id, errno: e instanceof DeviceError ? e.errno : Errno.EIO, message: e instanceof Error ? e.message : String(e) });
    }
  }

  private mapInto(t: QueueThread, region: DmaRegion, fd: number | undefined, replay = false): void {
    if (!t.worker || t.dead || !this.device) return;
    // A restarted thread gets the kept fd of memory that may shrink; a mapped
    // region's fd was closed after mapping, so that thread reaches it by message.
    const source = fd ?? (replay ? region.fd : undefined);
    const dup = source !== undefined ? native.dup(source) : undefined;
    t.post({ t: 'map', iova: region.iova, size: region.size, offset: region.offset, prot: region.prot, fd: dup !== undefined && dup >= 0 ? dup : undefined });
    t.pins.set(region, this.device.dma.pinRegion(region));
  }

  private unmapFrom(t: QueueThread, region: DmaRegion): void {
    const release = t.pins.get(region);
    if (!release) return;
    t.pins.delete(region);
    if (!t.worker || t.dead) return release();
    const id = this.nextId++;
    t.waiting.set(id, () => release());
    t.post({ t: 'unmap', iova: region.iova, size: region.size, id });
  }

  private sendDoorbell(q: number): void {
    const d = this.doorbells.get(q);
    const t = this.byQueue.get(q);
    if (!d || !t) return;
    const fd = native.dup(d.fd);
    if (fd >= 0) t.post({ t: 'ioeventfd', q, fd, spinNs: d.spinNs });
  }

  private releaseDoorbell(q: number): void {
    const d = this.doorbells.get(q);
    if (!d) return;
    this.doorbells.delete(q);
    native.close(d.fd);
    this.byQueue.get(q)?.post({ t: 'ioeventfd-close', q });
  }

  private refreshFlags(): void {
    let ok = false;
    try {
      ok = this.device?.link !== undefined && this.device.dma.accessible();
    } catch {
      ok = false;
    }
    Atomics.store(this.flags, Flag.ACCESSIBLE, ok ? 1 : 0);
  }

  /** Re-derives the shared flag and every queue's interrupt route; sends routes that changed. */
  private refresh(): void {
    this.refreshFlags();
    for (const q of this.queues) {
      if (!q) continue;
      const d = this.device;
      const fd = d ? d.directEventfd(IrqIndex.MSIX, q.msixVector) : -1;
      const key = `${fd}/${d?.irqs.fdVersion ?? 0}`;
      if (this.routeKeys.get(q.index) === key) continue;
      this.routeKeys.set(q.index, key);
      // Withdraw first: from here the thread asks by message until the new route arrives.
      const gen = Atomics.add(this.flags, Flag.ROUTE + q.index, 1) + 1;
      const t = this.byQueue.get(q.index)!;
      const dup = fd >= 0 ? native.dup(fd) : -1;
      t.post({ t: 'route', q: q.index, fd: dup, gen });
    }
  }
}
