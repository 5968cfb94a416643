/**
 * The entry of a device worker thread: maps guest memory as the main
 * thread says, keeps interrupt routes and doorbells, and runs the role
 * module it was started with (virtio queues, doorbell handlers). An unmap
 * is confirmed only once this thread's I/O on that memory ended.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DeviceError, Errno } from '../errors.js';
import { dmaQueueMemory } from '../queue-memory.js';
import { native, PollEvent, PollMode, type PollHandle } from '../../native/index.js';
import { WorkerDmaAccess, WorkerDmaTable } from './memory.js';
import { Flag, type FromThread, type ThreadStart, type ToThread } from './messages.js';
import type { RoleHandlers, StartRole, ThreadRuntime } from './runtime.js';

const port = parentPort;
if (!port) throw new Error('muser device thread: not a worker thread');
const start = workerData as ThreadStart;
const flags = new Int32Array(start.flags);
const send = (m: FromThread): void => port.postMessage(m);

// ---- guest memory ----

let nextDmaId = 1;
const dmaWaiting = new Map<number, { resolve: (d: Uint8Array | undefined) => void; reject: (e: Error) => void }>();
const dmaCall = (m: { t: 'dma-read'; iova: number; length: number } | { t: 'dma-write'; iova: number; data: Uint8Array }): Promise<Uint8Array | undefined> =>
  new Promise((resolve, reject) => {
    const id = nextDmaId++;
    dmaWaiting.set(id, { resolve, reject });
    send({ ...m, id });
  });
const table = new WorkerDmaTable((ranges) => send({ t: 'dirty', ranges }), start.group);
const dma = new WorkerDmaAccess(
  table,
  {
    maxChunk: 1 << 30, // the main thread splits to the client's limit
    read: async (iova, length) => Buffer.from((await dmaCall({ t: 'dma-read', iova, length }))!),
    write: async (iova, data) => void (await dmaCall({ t: 'dma-write', iova, data: Uint8Array.from(data) })),
  },
  () => Atomics.load(flags, Flag.ACCESSIBLE) === 1,
);

// ---- interrupts and doorbells ----

const routes = new Map<number, { fd: number; gen: number }>();
const doorbells = new Map<number, { fd: number; poll: PollHandle }>();

const runtime: ThreadRuntime = {
  dma,
  memory: dmaQueueMemory(() => dma),
  signal(vector, fallback) {
    const r = routes.get(vector);
    if (r && r.fd >= 0 && Atomics.load(flags, Flag.ROUTE + vector) === r.gen && native.eventfdWrite(r.fd, 1) >= 0) return;
    send({ t: 'role', m: fallback });
  },
  post: (m) => send({ t: 'role', m }),
  onDoorbell: () => {},
  flushDirty: () => table.flushDirty(),
};

function closeDoorbell(slot: number): void {
  const d = doorbells.get(slot);
  if (!d) return;
  doorbells.delete(slot);
  native.pollStop(d.poll);
  native.close(d.fd);
}

let role: RoleHandlers | undefined;

function handle(m: ToThread): void {
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
    case 'route': {
      const old = routes.get(m.vector);
      if (old && old.fd >= 0) native.close(old.fd);
      routes.set(m.vector, { fd: m.fd, gen: m.gen });
      return;
    }
    case 'doorbell': {
      closeDoorbell(m.slot);
      const slot = m.slot;
      const poll = native.pollStart(m.fd, PollMode.EventFd, (kind, count) => {
        if (kind === PollEvent.Count) runtime.onDoorbell(slot, count as number);
      });
      if (m.spinNs > 0) native.pollSpin(poll, m.spinNs);
      doorbells.set(slot, { fd: m.fd, poll });
      return;
    }
    case 'doorbell-close':
      closeDoorbell(m.slot);
      return;
    case 'signal':
      runtime.onDoorbell(m.slot, 1);
      return;
    case 'dma-done': {
      const w = dmaWaiting.get(m.id);
      if (!w) return;
      dmaWaiting.delete(m.id);
      if (m.errno !== undefined) w.reject(new DeviceError(m.errno, m.message ?? 'DMA failed'));
      else w.resolve(m.data);
      return;
    }
    case 'flush':
      table.flushDirty();
      send({ t: 'answer', id: m.id, value: true });
      return;
    case 'role':
      role!.message(m.m);
      return;
    case 'ask': {
      const id = m.id;
      role!.ask(m.m).then(
        (value) => send({ t: 'answer', id, value }),
        () => send({ t: 'answer', id, value: undefined }),
      );
      return;
    }
  }
}

// Messages wait (in order) until the role is ready.
const backlog: ToThread[] = [];
port.on('message', (m: ToThread) => {
  if (role) handle(m);
  else backlog.push(m);
});

async function load(): Promise<RoleHandlers> {
  const mod = (await import(start.role)) as { startRole?: StartRole };
  if (typeof mod.startRole !== 'function') throw new DeviceError(Errno.EINVAL, `${start.role} does not export startRole`);
  return mod.startRole(runtime, start.data);
}

load().then(
  (r) => {
    role = r;
    send({ t: 'ready' });
    for (const m of backlog.splice(0)) handle(m);
  },
  (e: unknown) => send({ t: 'failed', message: e instanceof Error ? e.message : String(e) }),
);
