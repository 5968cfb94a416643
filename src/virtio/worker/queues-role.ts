/**
 * The virtio queue role of a device worker thread: serves the virtqueues
 * it was given with a handler from the device's worker module. Kicks come
 * by message or on the queue's ioeventfd (slot = queue index), and, under
 * `--poll`, an idle queue polls its avail ring here with kicks off, as on
 * the main thread; a queue's interrupt is its MSI-X vector, raised straight
 * from here while routed.
 */
import { DeviceError, Errno } from '../../device/errors.js';
import type { RoleHandlers, StartRole } from '../../device/threads/runtime.js';
import { hasFeature, VIRTIO_MSI_NO_VECTOR } from '../constants.js';
import type { VirtqueueRequest } from '../request.js';
import { BounceBudget } from '../bounce-budget.js';
import { Virtqueue, type VirtqueueHost } from '../virtqueue.js';
import { HandlerCalls } from '../handler-calls.js';
import type { WorkerQueueContext, WorkerQueueHandler } from './handler.js';
import type { AskQueues, FromQueues, QueueRoleData, ToQueues } from './messages.js';
import { LogMappings } from './log-mappings.js';

export const startRole: StartRole = async (rt, raw) => {
  const data = raw as QueueRoleData;
  const post = (m: FromQueues): void => rt.post(m);
  const mod = (await import(data.module)) as { createQueueHandler?: (data: unknown) => WorkerQueueHandler | Promise<WorkerQueueHandler> };
  if (typeof mod.createQueueHandler !== 'function') throw new DeviceError(Errno.EINVAL, `${data.module} does not export createQueueHandler(data)`);
  const handler = await mod.createQueueHandler(data.data);
  if (typeof handler !== 'function') throw new DeviceError(Errno.EINVAL, `createQueueHandler of ${data.module} did not return a function`);

  let features = 0n;
  const contexts = new Map<number, WorkerQueueContext>();
  const ctxOf = (q: number): WorkerQueueContext => {
    let c = contexts.get(q);
    if (!c) {
      c = {
        get features() {
          return features;
        },
        hasFeature: (n) => hasFeature(features, n),
        needsReset: (reason) => post({ t: 'needs-reset', q, reason }),
        warnDriver: (message) => post({ t: 'warn', q, message }),
      };
      contexts.set(q, c);
    }
    return c;
  };

  /** Handler calls, counted while they run (a reset waits for those it abandons). */
  const calls = new HandlerCalls();
  /** Requests handed to the handler, by queue index. */
  const served = new Int32Array(data.served);
  const vectors = new Map<number, number>();
  /** The polling window the main thread had when it last enabled or restored a queue here (the server's `--poll`). */
  let pollMicroseconds = 0;

  const host: VirtqueueHost = {
    memory: rt.memory,
    bounce: new BounceBudget(),
    get pollMicroseconds() {
      return pollMicroseconds;
    },
    interrupt(queue) {
      const vector = vectors.get(queue.index) ?? VIRTIO_MSI_NO_VECTOR;
      rt.signal(vector, { t: 'irq', q: queue.index } satisfies FromQueues);
    },
    onBroken(queue, reason) {
      post({ t: 'broken', q: queue.index, reason });
    },
    dispatch(request: VirtqueueRequest) {
      Atomics.add(served, request.queue, 1);
      calls.run(request, handler, ctxOf(request.queue));
    },
  };

  const queues = new Map<number, Virtqueue>();
  for (const q of data.queues) queues.set(q.index, new Virtqueue(q.index, q.maxSize, host));
  const queue = (q: number): Virtqueue => {
    const vq = queues.get(q);
    if (!vq) throw new Error(`queue ${q} is not served by this thread`);
    return vq;
  };
  rt.onDoorbell = (slot) => queues.get(slot)?.kick();
  const logs = new LogMappings();

  const handlers: RoleHandlers = {
    message(raw) {
      const m = raw as ToQueues;
      switch (m.t) {
        case 'enable': {
          features = BigInt(m.features);
          pollMicroseconds = m.pollMicroseconds;
          vectors.set(m.q, m.vector);
          const vq = queue(m.q);
          vq.state.size = m.size;
          vq.state.desc = m.desc;
          vq.state.driver = m.driver;
          vq.state.device = m.device;
          // The main thread checked the rings; start paused, a resume follows when the driver is ready.
          vq.pause();
          const err = vq.enable(m.ring, false);
          if (err) post({ t: 'broken', q: m.q, reason: err });
          return;
        }
        case 'restore': {
          features = BigInt(m.features);
          pollMicroseconds = m.pollMicroseconds;
          vectors.set(m.q, m.state.msixVector);
          const vq = queue(m.q);
          const err = vq.restore(m.state, m.ring);
          vq.pause();
          if (err) post({ t: 'broken', q: m.q, reason: err });
          return;
        }
        case 'vector':
          vectors.set(m.q, m.vector);
          return;
        case 'pause':
          queue(m.q).pause();
          return;
        case 'resume':
          queue(m.q).resume();
          return;
        case 'kick':
          queue(m.q).kick();
          return;
        case 'log':
          return logs.attach(queue(m.q), m);
      }
    },
    async ask(raw) {
      const m = raw as AskQueues;
      const vq = queue(m.q);
      if (m.t === 'recover') return vq.recover();
      if (m.t === 'reset') {
        vq.reset();
        calls.abandon(m.q);
        await calls.settled(m.q);
        return true;
      }
      await vq.idle();
      rt.flushDirty();
      return vq.save();
    },
  };
  return handlers;
};
