/**
 * Virtio devices without PCI details: a device author gives the virtio
 * device type, its feature bits, its config layout and a handler per
 * queue; {@link virtioDevice} turns that into a {@link DeviceSpec} with the
 * modern virtio-pci transport, MSI-X (a vector per queue plus config),
 * INTx with the ISR as fallback, doorbells by message, by ioeventfd and
 * (`mmapDoorbells`) in a notify page the client maps and muser watches,
 * and live migration of the transport and queue state.
 *
 * @example
 * ```ts
 * import { randomFillSync } from 'node:crypto';
 * import { serve, virtioDevice } from 'muser';
 * serve(virtioDevice({
 *   type: 4, // entropy source
 *   queues: [{ async handle(req) {
 *     const io = await req.buffers('writable', 0, req.writableLength);
 *     for (const b of io.buffers) randomFillSync(b);
 *     await io.finish(true);
 *     return req.writableLength;
 *   } }],
 * }), '/tmp/rng.sock');
 * ```
 */
import type { Device } from '../device/device.js';
import { DeviceError, Errno } from '../device/errors.js';
import { MigrationState } from '../device/migration-spec.js';
import type { DeviceSpec, IoEventFdSpec } from '../device/spec.js';
import { memoryWatch, type MemoryWatch } from '../device/memory-watch.js';
import { VIRTIO_PCI_DEVICE_BASE, VIRTIO_PCI_VENDOR } from './constants.js';
import { VirtioConfig, type ConfigField, type ConfigValues } from './config.js';
import { pciCfgWindow, virtioCapabilities, type VirtioBarLayout } from './pci-caps.js';
import { transportFeatures, VirtioPciTransport, type QueueHandler, type TransportState, type VirtioContext } from './transport.js';
import type { QueueWorkerSpec } from './worker/handler.js';

/** One virtqueue of a device. */
export interface VirtioQueueSpec {
  /** Largest queue size the driver may choose: a power of two up to 32768 (default 256). */
  size?: number;
  /**
   * Serves one request (a descriptor chain) on the main thread. Resolve
   * with how many bytes were written into the request's writable area.
   * Requests complete in whatever order their handlers finish. A handler
   * that throws completes the request with 0 bytes. Give this or `worker`.
   */
  handle?: QueueHandler;
  /**
   * Serves the queue on a worker thread instead: the thread maps guest
   * memory itself, takes the queue's doorbell and signals its MSI-X
   * eventfd directly, so requests never pass through the main thread.
   * `data` may be a function: it is called for each thread started
   * (to hand each its own fds).
   */
  worker?: QueueWorkerSpec;
}

/** A virtio device, as its author describes it. */
export interface VirtioDeviceSpec {
  /** Name for logs. */
  name?: string;
  /** Virtio device type (1 net, 2 block, 4 entropy, ...): the PCI device id is 0x1040 + type. */
  type: number;
  /** PCI class code (default 0xff0000, "unclassified"). */
  classCode?: number;
  /** Device-specific feature bits offered (VERSION_1 and the ring features are added). */
  features?: bigint;
  /** Offer VIRTIO_F_INDIRECT_DESC (default true). */
  indirectDesc?: boolean;
  /** Offer VIRTIO_F_EVENT_IDX (default true). */
  eventIdx?: boolean;
  /** The queues, in index order. */
  queues: readonly VirtioQueueSpec[];
  /** Layout of the device config (declared once; offsets follow from the order). */
  config?: readonly ConfigField[];
  /** Initial values of config fields, by name. */
  configValues?: ConfigValues;
  /** Called when the driver sets FEATURES_OK: return false to refuse its choice. */
  acceptFeatures?(features: bigint, ctx: VirtioContext): boolean;
  /** The driver set DRIVER_OK. */
  onReady?(ctx: VirtioContext): void;
  /** The device was reset (by the driver, a client reset or a disconnect). */
  onReset?(ctx: VirtioContext): void;
  /** Called with the device config after the driver wrote a writable field. */
  onConfigWrite?(name: string, value: number | bigint, ctx: VirtioContext): void;
  /** Live migration (default true). */
  migration?: boolean;
  /**
   * Put the notify area (BAR0 0x3000, a page of its own) in memory the
   * client maps (a sparse mmap area) that muser watches (`memoryWatch`):
   * a guest's kick is a store, with no VM exit and no message. Meant for
   * `--poll`; without it the page is looked at every millisecond. Kicks
   * by message and by ioeventfd are served as before. Default false.
   */
  mmapDoorbells?: boolean;
  /**
   * After a queue drained, keep reading its avail index for this many
   * microseconds with the driver's notifications off (VIRTQ_USED_F_NO_NOTIFY,
   * or avail_event left behind with EVENT_IDX), then ask for them again
   * and look once more. Default: the server's busy-poll window (`--poll`:
   * the loop spins then anyway, so the guest need not kick); 0 never.
   * Queues on worker threads do not poll.
   */
  pollMicroseconds?: number;
  /**
   * How long a reset waits for the requests it abandons (handlers on the
   * main thread still running) before it revokes the guest memory they
   * hold and completes (default 30000 ms). Queues on worker threads have
   * their own `worker.resetTimeoutMs`.
   */
  resetTimeoutMs?: number;
}

/** The BAR holding the virtio structures; MSI-X goes into the next free one. */
const VIRTIO_BAR = 0;
const BAR_SIZE = 0x4000;
const NOTIFY_MULTIPLIER = 4;
const NOTIFY_OFFSET = 0x3000;
const PAGE = 0x1000;
/** What a watched notify word is set back to after each kick: no 16-bit queue index writes it. */
const NOTIFY_REARM = 0xffffffff;
/** GET_REGION_IO_FDS sends every doorbell fd in one message: keep to the fds a client takes. */
const MAX_IOEVENTFD_QUEUES = 16;

const transports = new WeakMap<DeviceSpec, VirtioPciTransport>();

/** The transport behind a spec made by {@link virtioDevice} (for tests and tools). */
export function virtioTransportOf(spec: DeviceSpec): VirtioPciTransport | undefined {
  return transports.get(spec);
}

/** How many requests one queue's handler was given, and where it runs. */
export interface VirtioQueueStats {
  queue: number;
  /** 'main', or the number of the worker thread serving the queue. */
  thread: 'main' | number;
  /** Requests handed to the handler since the device was made. */
  requests: number;
}

/**
 * Requests each queue of a device made by {@link virtioDevice} served so
 * far, and on which thread (counted in shared memory, so a thread that
 * ended still counts). Throws TypeError for any other spec.
 */
export function virtioQueueStats(spec: DeviceSpec): VirtioQueueStats[] {
  const t = transports.get(spec);
  if (!t) throw new TypeError('not a device made by virtioDevice()');
  return t.requestCounts();
}

/** Builds the DeviceSpec of a virtio device over the modern virtio-pci transport. */
export function virtioDevice(spec: VirtioDeviceSpec): DeviceSpec {
  if (!Number.isInteger(spec.type) || spec.type < 1 || spec.type > 0xbf) throw new RangeError(`virtio device type ${spec.type} is out of range`);
  if (spec.queues.length === 0 || spec.queues.length > 1024) throw new RangeError('a virtio device has 1 to 1024 queues');
  spec.queues.forEach((q, i) => {
    if ((q.handle === undefined) === (q.worker === undefined)) throw new TypeError(`virtio queue ${i}: give exactly one of handle and worker`);
  });
  const pollMicroseconds = spec.pollMicroseconds;
  if (pollMicroseconds !== undefined && (!Number.isInteger(pollMicroseconds) || pollMicroseconds < 0 || pollMicroseconds > 10_000_000)) {
    throw new RangeError(`pollMicroseconds must be 0..10000000, got ${String(pollMicroseconds)}`);
  }
  const config = new VirtioConfig(spec.config ?? [], spec.configValues);
  if (config.size > 0x1000) throw new RangeError('virtio device config is larger than 4096 bytes');
  const layout: VirtioBarLayout = {
    bar: VIRTIO_BAR,
    common: { offset: 0x0000, length: 0x1000 },
    isr: { offset: 0x1000, length: 0x1000 },
    device: config.size > 0 ? { offset: 0x2000, length: config.size } : undefined,
    notify: { offset: NOTIFY_OFFSET, length: spec.queues.length * NOTIFY_MULTIPLIER, multiplier: NOTIFY_MULTIPLIER },
  };
  const transport = new VirtioPciTransport({
    features: (spec.features ?? 0n) | transportFeatures({ indirectDesc: spec.indirectDesc ?? true, eventIdx: spec.eventIdx ?? true }),
    queues: spec.queues.map((q) => ({ size: q.size ?? 256, handle: q.handle, worker: q.worker })),
    log: (m) => process.stderr.write(`[${spec.name ?? `virtio-${spec.type}`}] error: ${m}\n`),
    config,
    layout,
    acceptFeatures: spec.acceptFeatures,
    onReady: spec.onReady,
    onReset: spec.onReset,
    resetTimeoutMs: spec.resetTimeoutMs,
    pollMicroseconds,
  });
  config.onDriverWrite = (name, value) => spec.onConfigWrite?.(name, value, transport);

  const attach = (device: Device): VirtioPciTransport => {
    transport.attach(device);
    return transport;
  };
  const registers = transport.registers;

  let pciCfgOffset: number | undefined;
  let device: Device | undefined;
  const hooks = pciCfgWindow(
    () => pciCfgOffset,
    {
      read: (bar, offset, length) => {
        if (bar !== VIRTIO_BAR || offset + length > BAR_SIZE || !device) return Buffer.alloc(length);
        const bytes = registers.read(offset, length, device);
        // Every read hook of the table is synchronous.
        return bytes instanceof Promise ? Buffer.alloc(length) : Buffer.from(bytes);
      },
      write: (bar, offset, data) => {
        if (bar !== VIRTIO_BAR || offset + data.length > BAR_SIZE || !device) return;
        // A reset through the window: the config write's reply waits for it as a BAR write's would.
        const done = registers.write(offset, data, device);
        if (done) device.delayConfigReply(done);
      },
    },
    (offset, length) => device?.config.read(offset, length),
  );

  const ioeventfds: IoEventFdSpec[] =
    spec.queues.length <= MAX_IOEVENTFD_QUEUES
      ? spec.queues.map((q, i) => ({
          offset: NOTIFY_OFFSET + i * NOTIFY_MULTIPLIER,
          size: 2 as const,
          onSignal: (_count: number, d: Device) => attach(d).kick(i),
          // A queue on a worker thread takes its doorbell there.
          claim: q.worker ? (fd: number, _d: Device, pollIdleMs: number) => transport.threads!.claimDoorbell(i, fd, pollIdleMs) : undefined,
        }))
      : [];

  const connect = (d: Device): void => {
    device = d;
    attach(d);
    transport.threads?.connect(d);
    // The PCI config access capability is the last vendor capability.
    pciCfgOffset = d.config.capabilities.filter((c) => c.id === 'vendor').at(-1)?.offset;
  };

  const result: DeviceSpec = {
    name: spec.name ?? `virtio-${spec.type}`,
    identity: {
      vendorId: VIRTIO_PCI_VENDOR,
      deviceId: VIRTIO_PCI_DEVICE_BASE + spec.type,
      subsystemVendorId: VIRTIO_PCI_VENDOR,
      subsystemId: 0x40,
      classCode: spec.classCode ?? 0xff0000,
      revision: 1,
    },
    bars: {
      // A reset by the driver (status 0) is answered once its abandoned requests cannot write guest memory.
      [VIRTIO_BAR]: { ...registers.bar({ size: BAR_SIZE, ioeventfds }), ...(spec.mmapDoorbells ? mappedNotify(layout, (i, d) => attach(d).kick(i)) : {}) },
    },
    capabilities: virtioCapabilities(layout),
    interrupts: { intx: true, msix: spec.queues.length + 1 },
    config: hooks,
    onConnect: connect,
    onDisconnect: () => transport.threads?.disconnect(),
    onDispose: () => transport.threads?.close(),
    onReset: () => transport.resetDevice(),
    // Under --isolate: the queues' state goes into each checkpoint, a successor finishes the requests in flight
    // from the inflight logs, and a reload waits for them (as a migration's stop does).
    onCheckpoint: (d) => transport.checkpoint(d),
    onRecover: async (d) => {
      await transport.recover(d);
    },
    onQuiesce: async () => {
      if (!(await transport.quiesce(QUIESCE_MS))) throw new DeviceError(Errno.EBUSY, `virtio: requests in flight did not finish within ${QUIESCE_MS} ms`);
    },
    onResume: () => transport.resume(),
    // A kick changes only what the inflight logs hold: no checkpoint per kick (QEMU kicks by REGION_WRITE).
    checkpointFreeWrites: [{ region: layout.bar, offset: layout.notify.offset, length: layout.notify.length }],
    migration: spec.migration === false ? false : migrationOf(transport),
    state: {},
  };
  transports.set(result, transport);
  return result;
}

/**
 * The notify page in memory the client maps, watched: each queue's word is
 * rearmed after a kick, so the driver writing its queue index again (as it
 * always does) is seen again. Messages still reach the register table.
 */
function mappedNotify(layout: VirtioBarLayout, kick: (queue: number, device: Device) => void): { memory: { mmap: { offset: number; size: number }[] }; watches: MemoryWatch[] } {
  const watch = memoryWatch({
    name: 'virtio notify',
    offset: layout.notify.offset,
    length: layout.notify.length,
    rearm: NOTIFY_REARM,
    // The queue is the word's, whatever the driver wrote in it (a message kick is decoded the same way).
    onWrite: (offset, _value, device) => kick((offset - layout.notify.offset) / layout.notify.multiplier, device),
  });
  return { memory: { mmap: [{ offset: layout.notify.offset, size: PAGE }] }, watches: [watch] };
}

/** How long a reload waits for the requests in flight (under the parent's hand-over bound). */
const QUIESCE_MS = 8000;

const RUNNING_STATES = new Set<MigrationState>([MigrationState.RUNNING, MigrationState.PRE_COPY, MigrationState.RUNNING_P2P, MigrationState.PRE_COPY_P2P]);

/**
 * Transport and queue state travel in `device.state` with muser's default
 * migration: saved once in-flight requests finished (stopping waits for
 * them), restored when loading ends, queues restarted when running again.
 */
function migrationOf(transport: VirtioPciTransport): DeviceSpec['migration'] {
  return {
    preCopy: true,
    async onTransition(from, to, device) {
      transport.attach(device);
      if (RUNNING_STATES.has(from) && !RUNNING_STATES.has(to)) {
        // Requests in flight finish first; a backend stuck beyond the bound fails the transition (the device keeps running).
        if (!(await transport.quiesce())) throw new DeviceError(Errno.EBUSY, 'virtio: requests in flight did not finish; not stopping');
        device.state.virtio = transport.save();
      }
      if (from === MigrationState.RESUMING) {
        const saved = device.state.virtio;
        if (saved === undefined) throw new Error('migration data has no virtio state');
        transport.restore(saved as TransportState);
      }
      if (!RUNNING_STATES.has(from) && RUNNING_STATES.has(to)) transport.resume();
    },
  };
}
