/**
 * The main thread's side of device worker threads: starts them, and keeps
 * each one's view of the device in step with the connection:
 *
 * - guest memory: every DMA_MAP goes to each thread with a dup of the
 *   client's fd (the thread maps it itself). The region stays pinned here
 *   for each thread that holds it, so a DMA_UNMAP is answered only once
 *   every thread confirmed it dropped the memory (after its I/O on it);
 * - interrupts: each MSI-X vector is routed straight to its eventfd (a
 *   dup, owned by the thread) while raising it means exactly that; a
 *   generation in shared memory withdraws the route at once when masks,
 *   modes or eventfds change, and the thread then asks by message;
 * - Bus Master Enable (and migration's hold) as a shared flag;
 * - doorbells: eventfds the thread watches, and doorbell messages forwarded;
 * - dirty-page logging, and DMA by message for memory without an fd.
 *
 * What a thread does besides is its role's business: role messages pass
 * through. A thread that dies is reported (`onFailure`); revive() starts it
 * again.
 */
import { Worker } from 'node:worker_threads';
import type { DmaRegion, DmaTableObserver } from '../dma.js';
import { DeviceError, Errno } from '../errors.js';
import { IrqIndex } from '../irqs.js';
import { native } from '../../native/index.js';
import type { Device } from '../types.js';
import { Flag, MAX_VECTORS, type FromThread, type ThreadStart, type ToThread } from './messages.js';

/** One thread to start: its role module and the role's data. */
export interface ThreadSpec {
  id: number;
  /** The role module (file URL). */
  role: URL | string;
  /** Structured-cloneable; a function is called for every start (to hand each start its own fds). */
  data: unknown;
}

/** What the pool reports to its owner. */
export interface ThreadHost {
  /** A role event from thread `id`. */
  onEvent(id: number, m: unknown): void;
  /** Thread `id` died or could not start. */
  onFailure(id: number, reason: string): void;
}

const THREAD_URL = new URL('./thread.js', import.meta.url);
/** The last mapping group handed to a thread (unique in the process: threads of every device share the addon's list). */
let lastGroup = 0;

class DeviceThread {
  worker: Worker | undefined;
  /** A region of the connection is pinned here while this thread maps it. */
  readonly pins = new Map<DmaRegion, () => void>();
  readonly waiting = new Map<number, (value: unknown) => void>();
  dead = true;
  /** The mapping group of the thread running now (see ThreadStart.group). */
  group = 0;

  constructor(readonly spec: ThreadSpec) {}

  get alive(): boolean {
    return this.worker !== undefined && !this.dead;
  }

  post(m: ToThread): void {
    if (!this.alive) {
      // Nobody will own the fd a message carries.
      if ((m.t === 'map' || m.t === 'route' || m.t === 'doorbell') && m.fd !== undefined && m.fd >= 0) native.close(m.fd);
      return;
    }
    this.worker!.postMessage(m);
  }
}

export class DeviceThreads {
  private readonly threads = new Map<number, DeviceThread>();
  private readonly flags = new Int32Array(new SharedArrayBuffer(4 * (Flag.ROUTE + MAX_VECTORS)));
  private device: Device | undefined;
  private unsubscribe: (() => void)[] = [];
  private nextId = 1;
  /** Last route sent per vector: `${fd}/${fdVersion}`. */
  private readonly routeKeys = new Map<number, string>();
  /** A dup of each region's fd, so that a thread started later maps it zero-copy too. */
  private readonly regionFds = new Map<DmaRegion, number>();
  /** Claimed doorbell eventfds (our dup) by thread and slot, to give restarted threads. */
  private readonly doorbells = new Map<string, { thread: number; slot: number; fd: number; spinNs: number }>();
  private closed = false;

  constructor(
    specs: readonly ThreadSpec[],
    private readonly host: ThreadHost,
  ) {
    for (const s of specs) this.threads.set(s.id, new DeviceThread(s));
  }

  /** Threads running now (for tests and tools). */
  get running(): number {
    return [...this.threads.values()].filter((t) => t.alive).length;
  }

  /** A client connected to `device`: start the threads, follow its memory and interrupt routing. */
  connect(device: Device): void {
    this.disconnect();
    this.device = device;
    for (const t of this.threads.values()) if (!t.alive) this.spawn(t);
    const observer: DmaTableObserver = {
      added: (region, fd) => {
        if (fd !== undefined) {
          const kept = native.dup(fd);
          if (kept >= 0) this.regionFds.set(region, kept);
        }
        for (const t of this.threads.values()) this.mapInto(t, region);
      },
      removed: (region) => {
        const kept = this.regionFds.get(region);
        if (kept !== undefined) native.close(kept);
        this.regionFds.delete(region);
        for (const t of this.threads.values()) this.unmapFrom(t, region);
      },
      logging: (pageSize) => {
        for (const t of this.threads.values()) t.post({ t: 'logging', pageSize });
      },
      sync: async () => {
        await Promise.all([...this.threads.values()].map((t) => this.request(t, (id) => ({ t: 'flush', id }))));
      },
    };
    this.unsubscribe.push(device.dma.observe(observer), device.onInterruptRouting(() => this.refresh()));
    this.refresh();
  }

  /** The client left (its maps are already gone): stop following it. */
  disconnect(): void {
    for (const u of this.unsubscribe) u();
    this.unsubscribe = [];
    for (const fd of this.regionFds.values()) native.close(fd);
    this.regionFds.clear();
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

  /** Starts threads that died, with the connection's current memory (after a device reset). */
  revive(): void {
    if (this.closed || !this.device) return;
    // A reset on disconnect comes after the link is gone: nothing to hand over then.
    const connected = this.device.link !== undefined;
    for (const t of this.threads.values()) {
      if (t.alive) continue;
      this.spawn(t);
      if (!connected) continue;
      for (const r of this.device.dma.mappedRegions()) this.mapInto(t, r);
      const pageSize = this.device.dma.dirtyPageSize;
      if (pageSize > 0) t.post({ t: 'logging', pageSize });
    }
  }

  /**
   * Ends thread `id` (whatever it is doing: a loop that never yields too)
   * and starts it afresh with the connection's memory; what waited on it
   * is released. Not reported as a failure.
   */
  restart(id: number): void {
    const t = this.thread(id);
    this.bury(t, undefined);
    this.revive();
  }

  /** Sends a role message to thread `id` (dropped when it is not running). */
  tell(id: number, m: unknown): void {
    this.thread(id).post({ t: 'role', m });
  }

  /** Asks thread `id`; resolves with its answer, or undefined when it is not running or dies meanwhile. */
  ask(id: number, m: unknown): Promise<unknown> {
    return this.request(this.thread(id), (rid) => ({ t: 'ask', id: rid, m }));
  }

  /** A doorbell rang by message: thread `id` runs its handler for `slot`. */
  signal(id: number, slot: number): void {
    this.refreshFlags();
    this.thread(id).post({ t: 'signal', slot });
  }

  /**
   * A doorbell's eventfd, watched by thread `id` from now on (as `slot`).
   * Returns the release function (the connection ended).
   */
  claimDoorbell(id: number, slot: number, fd: number, pollIdleMs: number): () => void {
    const key = `${id}/${slot}`;
    this.releaseDoorbell(key);
    const dup = native.dup(fd);
    if (dup < 0) throw new DeviceError(-dup, 'cannot dup a doorbell eventfd');
    this.doorbells.set(key, { thread: id, slot, fd: dup, spinNs: Math.round(pollIdleMs * 1e6) });
    this.sendDoorbell(key);
    return () => this.releaseDoorbell(key);
  }

  /** Re-derives the shared flags (Bus Master Enable) before work is handed to a thread. */
  refreshFlags(): void {
    let ok = false;
    try {
      ok = this.device?.link !== undefined && this.device.dma.accessible();
    } catch {
      ok = false;
    }
    Atomics.store(this.flags, Flag.ACCESSIBLE, ok ? 1 : 0);
  }

  // ---- internals ----

  /** Sends a message that gets an answer (or undefined once the thread is gone). */
  private request(t: DeviceThread, make: (id: number) => ToThread): Promise<unknown> {
    if (!t.alive) return Promise.resolve(undefined);
    const id = this.nextId++;
    return new Promise((resolve) => {
      t.waiting.set(id, resolve);
      t.post(make(id));
    });
  }

  private thread(id: number): DeviceThread {
    const t = this.threads.get(id);
    if (!t) throw new RangeError(`no device thread ${id}`);
    return t;
  }

  private spawn(t: DeviceThread): void {
    t.dead = false;
    t.pins.clear();
    const data = typeof t.spec.data === 'function' ? (t.spec.data as () => unknown)() : t.spec.data;
    t.group = lastGroup = lastGroup >= 0x7fffffff ? 1 : lastGroup + 1;
    const start: ThreadStart = { role: String(t.spec.role), data, flags: this.flags.buffer as SharedArrayBuffer, group: t.group };
    const w = new Worker(THREAD_URL, { workerData: start });
    t.worker = w;
    w.unref();
    // Events of a thread already replaced (a late 'exit' after terminate) concern nobody.
    w.on('message', (m: FromThread) => t.worker === w && this.onMessage(t, m));
    w.on('error', (e) => t.worker === w && this.bury(t, `worker thread ${t.spec.id} failed: ${e.message}`));
    w.on('exit', (code) => t.worker === w && this.bury(t, `worker thread ${t.spec.id} exited (code ${code})`));
    this.routeKeys.clear(); // the new thread has no routes yet: resend them all
    for (const [key, d] of this.doorbells) if (d.thread === t.spec.id) this.sendDoorbell(key);
    this.refresh();
  }

  /** The thread is gone: what waits on it is released, and the owner hears why. */
  private bury(t: DeviceThread, reason: string | undefined): void {
    if (t.dead) return;
    t.dead = true;
    const w = t.worker;
    t.worker = undefined;
    // What the thread leaves behind (a read still on the thread pool, a handler stuck writing) must not reach
    // guest memory: its mappings get scratch memory (an mmap over our own mapping fails only without memory).
    native.mmapRevokeGroup(t.group);
    for (const release of t.pins.values()) release();
    t.pins.clear();
    for (const resolve of t.waiting.values()) resolve(undefined);
    t.waiting.clear();
    if (w) void w.terminate();
    if (reason && !this.closed) this.host.onFailure(t.spec.id, reason);
  }

  private onMessage(t: DeviceThread, m: FromThread): void {
    switch (m.t) {
      case 'ready':
        return;
      case 'failed':
        this.bury(t, `worker thread ${t.spec.id} could not start: ${m.message}`);
        return;
      case 'role':
        this.host.onEvent(t.spec.id, m.m);
        return;
      case 'dirty':
        if (this.device?.link) for (let i = 0; i < m.ranges.length; i += 2) this.device.dma.markDirty(m.ranges[i], m.ranges[i + 1]);
        return;
      case 'dma-read':
      case 'dma-write':
        void this.dmaByMessage(t, m);
        return;
      case 'unmapped':
        t.waiting.get(m.id)?.(undefined);
        t.waiting.delete(m.id);
        return;
      case 'answer':
        t.waiting.get(m.id)?.(m.value);
        t.waiting.delete(m.id);
        return;
    }
  }

  private async dmaByMessage(t: DeviceThread, m: Extract<FromThread, { t: 'dma-read' | 'dma-write' }>): Promise<void> {
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

  private mapInto(t: DeviceThread, region: DmaRegion): void {
    if (!t.alive || !this.device) return;
    // Without an fd (none sent, or no fd left to dup) the thread reaches the region by DMA messages.
    const kept = this.regionFds.get(region);
    const dup = kept !== undefined ? native.dup(kept) : -1;
    t.post({ t: 'map', iova: region.iova, size: region.size, offset: region.offset, prot: region.prot, fd: dup >= 0 ? dup : undefined });
    t.pins.set(region, this.device.dma.pinRegion(region));
  }

  private unmapFrom(t: DeviceThread, region: DmaRegion): void {
    const release = t.pins.get(region);
    if (!release) return;
    t.pins.delete(region);
    if (!t.alive) return release();
    const id = this.nextId++;
    t.waiting.set(id, () => release());
    t.post({ t: 'unmap', iova: region.iova, size: region.size, id });
  }

  private sendDoorbell(key: string): void {
    const d = this.doorbells.get(key);
    if (!d) return;
    const fd = native.dup(d.fd);
    if (fd >= 0) this.thread(d.thread).post({ t: 'doorbell', slot: d.slot, fd, spinNs: d.spinNs });
  }

  private releaseDoorbell(key: string): void {
    const d = this.doorbells.get(key);
    if (!d) return;
    this.doorbells.delete(key);
    native.close(d.fd);
    this.thread(d.thread).post({ t: 'doorbell-close', slot: d.slot });
  }

  /** Re-derives the shared flag and every vector's route; sends routes that changed. */
  private refresh(): void {
    this.refreshFlags();
    const d = this.device;
    const count = Math.min(MAX_VECTORS, d?.irqs.count(IrqIndex.MSIX) ?? 0);
    const vectors = new Set<number>([...this.routeKeys.keys()]);
    for (let v = 0; v < count; v++) vectors.add(v);
    for (const v of vectors) {
      const fd = d && v < count ? d.directEventfd(IrqIndex.MSIX, v) : -1;
      const key = `${fd}/${d?.irqs.fdVersion ?? 0}`;
      if (this.routeKeys.get(v) === key) continue;
      this.routeKeys.set(v, key);
      // Withdraw first: from here threads ask by message until the new route arrives.
      const gen = Atomics.add(this.flags, Flag.ROUTE + v, 1) + 1;
      for (const t of this.threads.values()) {
        if (!t.alive) continue;
        const dup = fd >= 0 ? native.dup(fd) : -1;
        t.post({ t: 'route', vector: v, fd: dup, gen });
      }
    }
  }
}
