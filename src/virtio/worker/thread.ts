/**
 * The entry of a queue worker thread: serves the virtqueues it was given
 * with a handler from the device's worker module. Kicks arrive by message
 * or on the queue's ioeventfd (watched here); interrupts go straight to the
 * MSI-X eventfd while the main thread says that is what raising the
 * vector means, by message otherwise. Guest memory is mapped here (see
 * memory.ts); an unmap is confirmed only once this thread's I/O on that
 * memory ended.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { DeviceError, Errno } from '../../device/errors.js';
import { dmaQueueMemory } from '../../device/queue-memory.js';
import { native, PollEvent, PollMode, type PollHandle } from '../../native/index.js';
import { hasFeature } from '../constants.js';
import { BounceBudget, type VirtqueueRequest } from '../request.js';
import { Virtqueue, type VirtqueueHost } from '../virtqueue.js';
import type { WorkerQueueContext, WorkerQueueHandler } from './handler.js';
import { WorkerDmaAccess, WorkerDmaTable } from './memory.js';
import { Flag, type FromWorker, type ToWorker, type WorkerStart } from './messages.js';

const port = parentPort;
if (!port) throw new Error('virtio queue worker: not a worker thread');
const start = workerData as WorkerStart;
const flags = new Int32Array(start.flags);
const send = (m: FromWorker): void => port.postMessage(m);

// ---- guest memory ----

let nextDmaId = 1;
const dmaWaiting = new Map<number, { resolve: (d: Uint8Array | undefined) => void; reject: (e: Error) => void }>();
const dmaCall = (m: { t: 'dma-read'; iova: number; length: number } | { t: 'dma-write'; iova: number; data: Uint8Array }): Promise<Uint8Array | undefined> =>
  new Promise((resolve, reject) => {
    const id = nextDmaId++;
    dmaWaiting.set(id, { resolve, reject });
    send({ ...m, id });
  });
const table = new WorkerDmaTable((ranges) => send({ t: 'dirty', ranges }));
const dma = new WorkerDmaAccess(
  table,
  {
    maxChunk: 1 << 30, // the main thread splits to the client's limit
    read: async (iova, length) => Buffer.from((await dmaCall({ t: 'dma-read', iova, length }))!),
    write: async (iova, data) => void (await dmaCall({ t: 'dma-write', iova, data: Uint8Array.from(data) })),
  },
  () => Atomics.load(flags, Flag.ACCESSIBLE) === 1,
);
const memory = dmaQueueMemory(() => dma);

// ---- queues ----

let features = 0n;
const ctx: WorkerQueueContext = {
  get features() {
    return features;
  },
  hasFeature: (n) => hasFeature(features, n),
  needsReset: (reason) => send({ t: 'needs-reset', reason }),
};

let handler: WorkerQueueHandler | undefined;
/** Handler calls not yet settled, by queue (a reset waits for them). */
const running = new Map<number, number>();
const settledWaiters = new Map<number, (() => void)[]>();
const routes = new Map<number, { fd: number; gen: number }>();
const doorbells = new Map<number, { fd: number; poll: PollHandle }>();

function settle(q: number): void {
  const n = (running.get(q) ?? 1) - 1;
  running.set(q, n);
  if (n > 0) return;
  const ws = settledWaiters.get(q) ?? [];
  settledWaiters.delete(q);
  for (const w of ws) w();
}

const host: VirtqueueHost = {
  memory,
  bounce: new BounceBudget(),
  interrupt(queue) {
    const r = routes.get(queue.index);
    if (r && r.fd >= 0 && Atomics.load(flags, Flag.ROUTE + queue.index) === r.gen && native.eventfdWrite(r.fd, 1) >= 0) return;
    send({ t: 'irq', q: queue.index });
  },
  onBroken(queue, reason) {
    send({ t: 'broken', q: queue.index, reason });
  },
  dispatch(request: VirtqueueRequest) {
    const q = request.queue;
    running.set(q, (running.get(q) ?? 0) + 1);
    let result: number | Promise<number>;
    try {
      result = handler!(request, ctx);
    } catch {
      request.complete(0);
      settle(q);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (n) => request.complete(n),
        () => request.complete(0),
      ).finally(() => settle(q));
    } else {
      request.complete(result);
      settle(q);
    }
  },
};

const queues = new Map<number, Virtqueue>();
for (const q of start.queues) queues.set(q.index, new Virtqueue(q.index, q.maxSize, host));

function queue(q: number): Virtqueue {
  const vq = queues.get(q);
  if (!vq) throw new Error(`queue ${q} is not served by this thread`);
  return vq;
}

function whenSettled(q: number): Promise<void> {
  if ((running.get(q) ?? 0) === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const ws = settledWaiters.get(q) ?? [];
    ws.push(resolve);
    settledWaiters.set(q, ws);
  });
}

function closeDoorbell(q: number): void {
  const d = doorbells.get(q);
  if (!d) return;
  doorbells.delete(q);
  native.pollStop(d.poll);
  native.close(d.fd);
}

function handle(m: ToWorker): void {
  switch (m.t) {
    case 'map':
      try {
        table.add(m.iova, m.size, m.offset, m.prot, m.fd);
      } catch {
        // Not mapped here: this thread's accesses to it fail with EFAULT, as for memory the client never mapped.
      }
      return;
    case 'unmap': {
      let done: Promise<void> | undefined;
      try {
        done = table.whenUnmapped(table.remove(m.iova, m.size));
      } catch {
        done = undefined; // never mapped here
      }
      void (done ?? Promise.resolve()).then(() => send({ t: 'unmapped', id: m.id }));
      return;
    }
    case 'logging':
      table.setLogging(m.pageSize);
      return;
    case 'enable': {
      features = BigInt(m.features);
      const vq = queue(m.q);
      vq.size = m.size;
      vq.desc = m.desc;
      vq.driver = m.driver;
      vq.device = m.device;
      // The main thread checked the rings; start paused, a resume follows when the driver is ready.
      vq.pause();
      const err = vq.enable(m.ring, false);
      if (err) send({ t: 'broken', q: m.q, reason: err });
      return;
    }
    case 'restore': {
      features = BigInt(m.features);
      const vq = queue(m.q);
      const err = vq.restore(m.state, m.ring);
      vq.pause();
      if (err) send({ t: 'broken', q: m.q, reason: err });
      return;
    }
    case 'pause':
      queue(m.q).pause();
      return;
    case 'resume':
      queue(m.q).resume();
      return;
    case 'kick':
      queue(m.q).kick();
      return;
    case 'reset':
      queue(m.q).reset();
      void whenSettled(m.q).then(() => send({ t: 'reset-done', id: m.id }));
      return;
    case 'idle': {
      const vq = queue(m.q);
      void vq.idle().then(() => {
        table.flushDirty();
        send({ t: 'idle', id: m.id, state: vq.save() });
      });
      return;
    }
    case 'route': {
      const old = routes.get(m.q);
      if (old && old.fd >= 0) native.close(old.fd);
      routes.set(m.q, { fd: m.fd, gen: m.gen });
      return;
    }
    case 'ioeventfd': {
      closeDoorbell(m.q);
      const vq = queue(m.q);
      const poll = native.pollStart(m.fd, PollMode.EventFd, (kind) => {
        if (kind === PollEvent.Count) vq.kick();
      });
      if (m.spinNs > 0) native.pollSpin(poll, m.spinNs);
      doorbells.set(m.q, { fd: m.fd, poll });
      return;
    }
    case 'ioeventfd-close':
      closeDoorbell(m.q);
      return;
    case 'dma-done': {
      const w = dmaWaiting.get(m.id);
      if (!w) return;
      dmaWaiting.delete(m.id);
      if (m.errno !== undefined) w.reject(new DeviceError(m.errno, m.message ?? 'DMA failed'));
      else w.resolve(m.data);
      return;
    }
  }
}

// Messages wait (in order) until the handler is ready.
const backlog: ToWorker[] = [];
port.on('message', (m: ToWorker) => {
  if (handler) handle(m);
  else backlog.push(m);
});

async function load(): Promise<WorkerQueueHandler> {
  const url = start.module.startsWith('file:') ? start.module : pathToFileURL(start.module).href;
  const mod = (await import(url)) as { createQueueHandler?: (data: unknown) => WorkerQueueHandler | Promise<WorkerQueueHandler> };
  if (typeof mod.createQueueHandler !== 'function') throw new DeviceError(Errno.EINVAL, `${start.module} does not export createQueueHandler(data)`);
  const h = await mod.createQueueHandler(start.data);
  if (typeof h !== 'function') throw new DeviceError(Errno.EINVAL, `createQueueHandler of ${start.module} did not return a function`);
  return h;
}

load().then(
  (h) => {
    handler = h;
    send({ t: 'ready' });
    for (const m of backlog.splice(0)) handle(m);
  },
  (e: unknown) => send({ t: 'failed', message: e instanceof Error ? e.message : String(e) }),
);
