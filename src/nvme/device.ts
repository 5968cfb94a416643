/**
 * An NVMe controller as a muser PCI function: class 0x010802 (NVM Express),
 * a 64-bit BAR0 holding the controller registers and doorbells, MSI-X with
 * one vector per queue (INTx when the guest does not enable MSI-X), the
 * controller's state machine behind it, and live migration of that state.
 * Linux's stock `nvme` driver binds it by class code.
 *
 * @example
 * ```ts
 * import { nvmeController, ramBackend, serve } from 'muser';
 * serve(nvmeController({ namespaces: [ramBackend(64 * 1024 * 1024)], serial: 'demo' }), '/tmp/nvme.sock');
 * ```
 */
import type { BlockBackend } from '../block/backend.js';
import { isShareable, type ShareableBackend } from '../block/shared.js';
import { NvmeQueueThreads } from './worker/threads.js';
import type { Device } from '../device/device.js';
import { IrqIndex } from '../device/irqs.js';
import { MigrationState } from '../device/migration-spec.js';
import type { DeviceSpec } from '../device/spec.js';
import { dmaQueueMemory } from '../device/queue-memory.js';
import { resetTimeout, settleAbandoned } from '../device/abandoned.js';
import { memoryWatch, type MemoryWatch } from '../device/memory-watch.js';
import type { BarSpec, IoEventFdSpec } from '../device/region-spec.js';
import { describeValue } from '../values/describe.js';
import { NvmeReg } from './constants.js';
import { NvmeController } from './controller.js';
import type { RecoveryReport } from './recovery.js';
import type { ControllerHost, ControllerStats, DoorbellPage } from './types.js';
import { Namespace } from './namespace.js';

/** Options of {@link nvmeController}. */
export interface NvmeOptions {
  /** One backend per namespace (NSID 1, 2, ...). */
  namespaces: readonly BlockBackend[];
  /** Refuse writes to every namespace. */
  readOnly?: boolean;
  /** I/O queue pairs offered (default 4, at most 64). */
  queues?: number;
  /** Largest queue in entries (default 1024, 2 to 4096). */
  queueEntries?: number;
  /** Logical block size: 512 (default) or 4096. */
  lbaSize?: 512 | 4096;
  /** Largest transfer as 4 KiB << mdts (default 5: 128 KiB). */
  mdts?: number;
  /** Identify: serial number (20 ASCII characters at most; default "muser-nvme"). */
  serial?: string;
  /** Identify: model number (40 characters at most; default "muser NVMe controller"). */
  model?: string;
  /** Identify: firmware revision (8 characters at most; default "1.0"). */
  firmware?: string;
  /** Offer Doorbell Buffer Config: shadow doorbells with EventIdx (default true). */
  shadowDoorbells?: boolean;
  /**
   * Poll an idle submission queue's shadow doorbell for this many
   * microseconds before asking the driver to ring again (default 0: no
   * polling). Trades CPU for doorbell messages.
   */
  pollMicroseconds?: number;
  /**
   * Put the doorbells (BAR0 0x1000-0x1fff) in a page the client maps (a
   * sparse mmap area of BAR0) that muser watches (`memoryWatch`): a guest's
   * doorbell write is a store, with no VM exit and no message, as SPDK's
   * vfio-user NVMe does. Meant for `--poll` (`serve(..., { poll })`): then
   * a busy controller sees a doorbell within microseconds and keeps a CPU
   * busy-polling; without it the page is looked at every millisecond.
   * Doorbell writes by message (REGION_WRITE) are served as before.
   * Default false.
   */
  mmapDoorbells?: boolean;
  /**
   * Offer the I/O queues' doorbells (SQ tails and CQ heads of queues 1 to
   * `queues`) as ioeventfds (DEVICE_GET_REGION_IO_FDS): a client that binds
   * them turns a doorbell write into an eventfd count, with no message.
   * An eventfd carries no value, so each count is a kick whose tail or
   * head the controller reads from the shadow doorbell buffer, as QEMU's
   * own NVMe does once shadow doorbells are on: the driver must configure
   * Doorbell Buffer Config before ringing an I/O queue (Linux does; a
   * firmware driver does not). A kick on a queue without shadow doorbells
   * is lost and raises an Invalid Doorbell Write Value event. Needs
   * `shadowDoorbells`. The admin queue's doorbells stay messages. Default false.
   */
  ioeventfdDoorbells?: boolean;
  /**
   * Serve the I/O queues on this many device worker threads (I/O queue y
   * on thread (y - 1) mod workers; an SQ must use a CQ of its own thread,
   * as Linux's queue pairs do); the admin queue stays on the main thread.
   * Each thread opens its own backend over each namespace's storage (the
   * backends must be shareable: openFileBackend, memfdBackend), maps guest
   * memory itself, takes its queues' doorbell ioeventfds
   * (`ioeventfdDoorbells`) and raises their MSI-X vectors directly.
   * Doorbells by message or in the mapped page are forwarded to it. Under
   * `--isolate` each thread logs its queues into its part of the in-flight
   * log (inflight-log.ts). Default 0: every queue on the main thread.
   */
  workers?: number;
  /** Called with the controller's counters when a client disconnects (for logs and measurements). */
  onDisconnectStats?(stats: Readonly<ControllerStats>): void;
  /** Device name for logs. */
  name?: string;
  /**
   * How long a reset (CC.EN cleared, FLR, DEVICE_RESET, disconnect) waits
   * for the commands it abandons before it revokes the guest memory they
   * hold and completes (default 30000 ms).
   */
  resetTimeoutMs?: number;
}

/** PCI ids: muser's vendor id and the NVM Express class. */
export const NVME_PCI_IDS = { vendorId: 0x4d55, deviceId: 0x0002, classCode: 0x010802 } as const;

const BAR_SIZE = 0x4000;
/** The doorbells' page (BAR0 0x1000-0x1fff): 1024 doorbells, far more than the 65 queue pairs at most. */
const DOORBELL_PAGE = 0x1000;
/**
 * What a watched doorbell word is set back to once its write was seen: no
 * valid doorbell value (queues hold at most 4096 entries). A guest storing
 * it is not seen (by message it would raise an Invalid Doorbell Write Value
 * event); nothing but its own queues suffers.
 */
const DOORBELL_REARM = 0xffffffff;
const RUNNING_STATES = new Set<MigrationState>([MigrationState.RUNNING, MigrationState.PRE_COPY, MigrationState.RUNNING_P2P, MigrationState.PRE_COPY_P2P]);
const controllers = new WeakMap<DeviceSpec, NvmeController>();

/** The controller behind a spec made by {@link nvmeController} (for tests and tools). */
export function nvmeControllerOf(spec: DeviceSpec): NvmeController | undefined {
  return controllers.get(spec);
}

function printable(text: string, max: number, what: string): string {
  if (!/^[\x20-\x7e]*$/.test(text) || text.length > max) throw new RangeError(`${what} must be at most ${max} printable ASCII characters`);
  return text;
}

/** Builds the DeviceSpec of an NVMe controller over block backends. */
export function nvmeController(options: NvmeOptions): DeviceSpec {
  const queues = options.queues ?? 4;
  const entries = options.queueEntries ?? 1024;
  const mdts = options.mdts ?? 5;
  const pollMicroseconds = options.pollMicroseconds ?? 0;
  const resetTimeoutMs = resetTimeout(options.resetTimeoutMs);
  if (!Number.isInteger(pollMicroseconds) || pollMicroseconds < 0 || pollMicroseconds > 10_000_000) throw new RangeError(`pollMicroseconds must be 0..10000000, got ${pollMicroseconds}`);
  if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new RangeError(`queues must be 1..64, got ${queues}`);
  if (!Number.isInteger(entries) || entries < 2 || entries > 4096) throw new RangeError(`queueEntries must be 2..4096, got ${entries}`);
  if (!Number.isInteger(mdts) || mdts < 1 || mdts > 10) throw new RangeError(`mdts must be 1..10, got ${mdts}`);
  if (options.namespaces.length < 1 || options.namespaces.length > 1024) throw new RangeError('an NVMe controller has 1 to 1024 namespaces');
  const serial = printable(options.serial ?? 'muser-nvme', 20, 'serial');
  const model = printable(options.model ?? 'muser NVMe controller', 40, 'model');
  const firmware = printable(options.firmware ?? '1.0', 8, 'firmware');
  const ioeventfdDoorbells = optionalBoolean(options.ioeventfdDoorbells, 'ioeventfdDoorbells');
  const shadowDoorbells = optionalBoolean(options.shadowDoorbells, 'shadowDoorbells') ?? true;
  if (ioeventfdDoorbells && !shadowDoorbells) throw new TypeError('ioeventfdDoorbells needs shadowDoorbells: an ioeventfd carries no value, the shadow doorbell buffer holds it');
  const namespaces = options.namespaces.map((b, i) => new Namespace(i + 1, b, { readOnly: options.readOnly, lbaSize: options.lbaSize, serial }));
  const workers = workerCount(options.workers, queues);
  const shared = workers > 0 ? shareableNamespaces(options.namespaces) : undefined;

  let device: Device | undefined;
  const watch = options.mmapDoorbells
    ? memoryWatch({
        name: 'NVMe doorbells',
        offset: NvmeReg.DOORBELLS,
        length: DOORBELL_PAGE,
        // Rearmed after each write, so every write is seen: with shadow doorbells (EventIdx) the driver rings
        // only now and then, and may ring a tail equal to the last one it rang once the queue went round.
        rearm: DOORBELL_REARM,
        // Every doorbell word of the page, the controller's queues or not: a write to another one raises the same event as by message.
        onWrite: (offset, value, d) => {
          device = d;
          controller.mappedDoorbell((offset - NvmeReg.DOORBELLS) / 4, value);
        },
      })
    : undefined;
  const host: ControllerHost = {
    memory: dmaQueueMemory(() => {
      if (!device) throw new Error('nvme: no client');
      return device.dma;
    }),
    msixEnabled: () => device?.irqs.activeIndex === IrqIndex.MSIX,
    msixVectors: () => device?.irqs.count(IrqIndex.MSIX) ?? 0,
    raiseMsix: (vector) => void device?.triggerIrq(IrqIndex.MSIX, vector),
    raiseIntx: () => void device?.triggerIrq(IrqIndex.INTX, 0),
    settleAbandoned: (settled) => settleAbandoned(settled, { device, timeoutMs: resetTimeoutMs, log: (m) => process.stderr.write(`[${options.name ?? 'nvme'}] error: ${m}\n`) }),
    doorbellPage: watch && doorbellPage(watch),
    logFatal: (reason) => device?.link?.log?.error(`controller fatal status (CSTS.CFS): ${reason}`),
    warnDriver: (message) => device?.warnDriver(message),
  };
  const threads =
    shared &&
    new NvmeQueueThreads(
      workers,
      () => ({ namespaces: shared.map((b, i) => ({ backend: b.share(), readOnly: namespaces[i].readOnly, lbaSize: namespaces[i].lbaSize })), serial, ioQueues: queues, mdts, pollMicroseconds }),
      resetTimeoutMs,
      {
        interrupt: (vector) => controller.raiseThreadInterrupt(vector),
        asyncEvent: (type, info, log) => controller.asyncEvent(type, info, log),
        recordError: (sqid, cid, status, nsid, why) => controller.events.recordError(sqid, cid, status, nsid, why),
        fatal: (reason) => controller.fatal(reason),
        log: (m) => process.stderr.write(`[${options.name ?? 'nvme'}] error: ${m}\n`),
      },
    );
  const controller = new NvmeController(
    { namespaces, ioQueues: queues, maxQueueEntries: entries, mdts, serial, model, firmware, vendorId: NVME_PCI_IDS.vendorId, subsystemVendorId: NVME_PCI_IDS.vendorId, shadowDoorbells, pollMicroseconds },
    host,
    threads,
  );
  const spec: DeviceSpec = {
    name: options.name ?? 'nvme',
    identity: { ...NVME_PCI_IDS, subsystemVendorId: NVME_PCI_IDS.vendorId, subsystemId: 0x0002, revision: 0 },
    bars: { 0: bar0(controller, watch, ioeventfdDoorbells ? doorbellFds(queues, controller, threads, (d) => (device = d)) : undefined, (d) => (device = d)) },
    // A vector per queue: the admin queue and every I/O queue.
    interrupts: { intx: true, msix: queues + 1 },
    onConnect: (d) => {
      device = d;
      threads?.connect(d);
      // An isolated child serving a new connection: log what is in flight, for a successor (recovery.ts).
      if (d.persistent) controller.attachLog(d.persistent);
    },
    onRecover(d, reason) {
      device = d;
      if (!d.persistent) return;
      const name = options.name ?? 'nvme';
      const said = (found: RecoveryReport): void => {
        if (found.posted + found.restarted > 0) process.stderr.write(`[${name}] recovered: ${found.restarted} command(s) started again, ${found.posted} completion(s) found posted\n`);
      };
      let found: RecoveryReport | Promise<RecoveryReport>;
      try {
        found = controller.recover(d.persistent);
      } catch (e) {
        // A reload's new code that cannot read the log is dropped; after a crash, a reset controller beats none.
        if (reason === 'reload') throw e;
        process.stderr.write(`[${name}] error: in-flight log unreadable (${(e as Error).message}): the controller starts from reset\n`);
        return;
      }
      // Not awaited when it waits for guest memory by message: those replies come once the client is read again.
      if (found instanceof Promise) void found.then(said, (e: Error) => process.stderr.write(`[${name}] error: recovery failed: ${e.message}\n`));
      else said(found);
    },
    onDisconnect: () => {
      threads?.disconnect();
      options.onDisconnectStats?.(controller.counters());
    },
    onDispose: () => threads?.close(),
    // A reload (--isolate): the old child stops fetching and lets its commands finish, so the new one's
    // recovery from the in-flight log finds nothing half-done; a failed hand-over fetches again.
    onQuiesce: () => controller.quiesce(),
    onResume: () => controller.resume(),
    // Doorbell values are in the in-flight log, and writing one twice is harmless: no checkpoint per doorbell.
    checkpointFreeWrites: [{ region: 0, offset: NvmeReg.DOORBELLS, length: BAR_SIZE - NvmeReg.DOORBELLS }],
    onReset: (_reason, d) => {
      device = d;
      return controller.reset();
    },
    migration: {
      preCopy: true,
      // Controller state travels in device.state with muser's default migration.
      async onTransition(from, to, d) {
        device = d;
        if (RUNNING_STATES.has(from) && !RUNNING_STATES.has(to)) {
          // STOP completes only after the commands in flight finished and posted their completions.
          await controller.quiesce();
          d.state.nvme = controller.save();
        }
        if (from === MigrationState.RESUMING) {
          if (d.state.nvme === undefined) throw new Error('migration data has no NVMe controller state');
          controller.restore(d.state.nvme);
        }
        if (!RUNNING_STATES.has(from) && RUNNING_STATES.has(to)) controller.resume();
      },
    },
    state: {},
  };
  controllers.set(spec, controller);
  return spec;
}

/** BAR0: the registers by callback; with a doorbell watch, the doorbell page also in memory the client maps; the I/O doorbells' ioeventfds. */
function bar0(controller: NvmeController, watch: MemoryWatch | undefined, ioeventfds: IoEventFdSpec[] | undefined, seen: (d: Device) => void): BarSpec {
  return {
    size: BAR_SIZE,
    is64: true,
    ...(ioeventfds ? { ioeventfds } : {}),
    // Messages still reach the callbacks (a doorbell by REGION_WRITE too); the memory is only the mapped page.
    ...(watch ? { memory: { mmap: [{ offset: NvmeReg.DOORBELLS, size: DOORBELL_PAGE }] }, watches: [watch] } : {}),
    read: (offset, length, d) => {
      seen(d);
      return controller.readRegister(offset, length);
    },
    write: (offset, data, d) => {
      seen(d);
      controller.writeRegister(offset, data);
    },
  };
}

/** The ioeventfds of the I/O queues' doorbells: SQ y's tail, then its CQ's head, for y = 1..queues; each count is a kick. */
function doorbellFds(queues: number, controller: NvmeController, threads: NvmeQueueThreads | undefined, seen: (d: Device) => void): IoEventFdSpec[] {
  const fds: IoEventFdSpec[] = [];
  for (let qid = 1; qid <= queues; qid++) {
    for (const index of [2 * qid, 2 * qid + 1]) {
      fds.push({
        offset: NvmeReg.DOORBELLS + index * 4,
        size: 4,
        onSignal: (_count, d) => {
          seen(d);
          controller.kick(index);
        },
        // A queue on a worker thread: the thread watches the eventfd.
        claim: threads && ((fd, _d, pollIdleMs) => threads.claimDoorbell(index, fd, pollIdleMs)),
      });
    }
  }
  return fds;
}

/** The `workers` option: an integer 0..queues. */
function workerCount(v: unknown, queues: number): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number') throw new TypeError(`nvme: workers must be a number, got ${describeValue(v)}`);
  if (!Number.isInteger(v) || v < 0 || v > queues) throw new RangeError(`nvme: workers must be 0..${queues} (the queue count), got ${v}`);
  return v;
}

/** With workers, each thread opens every namespace's storage itself. */
function shareableNamespaces(backends: readonly BlockBackend[]): ShareableBackend[] {
  return backends.map((b, i) => {
    if (!isShareable(b)) throw new TypeError(`nvme: workers need backends each thread can open (openFileBackend(), memfdBackend()); namespace ${i + 1}'s is not`);
    return b;
  });
}

/** An optional boolean option: undefined or a boolean, else a TypeError naming it. */
function optionalBoolean(v: unknown, name: string): boolean | undefined {
  if (v !== undefined && typeof v !== 'boolean') throw new TypeError(`nvme: ${name} must be a boolean, got ${describeValue(v)}`);
  return v;
}

/** The controller's view of the mapped doorbell page: doorbell i is the word at 0x1000 + 4i (CAP.DSTRD 0). */
function doorbellPage(watch: MemoryWatch): DoorbellPage {
  return {
    unseen: (index) => {
      const v = watch.read(NvmeReg.DOORBELLS + index * 4);
      return v === DOORBELL_REARM ? undefined : v;
    },
  };
}

/** Doorbell offset of submission queue `qid`'s tail (stride 4). */
export function sqDoorbell(qid: number): number {
  return NvmeReg.DOORBELLS + qid * 8;
}

/** Doorbell offset of completion queue `qid`'s head (stride 4). */
export function cqDoorbell(qid: number): number {
  return NvmeReg.DOORBELLS + qid * 8 + 4;
}
