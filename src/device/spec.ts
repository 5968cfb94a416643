/**
 * What a device author writes: a declarative description of a PCI device
 * plus callbacks. `new Device(spec)` turns it into a servable device.
 */
import type {
  CapabilityDescription,
  ConfigHooks,
  ExtendedCapabilityDescription,
  PciIdentity,
} from '../pci/index.js';
import type { Device } from './device.js';
import type { MigrationSpec } from './migration-spec.js';
import type { RegisterMap } from './registers.js';
import type { DeviceTimer } from './timer.js';

/** A value a read callback may return: bytes, or a little-endian integer. */
export type ReadResult = Uint8Array | number | bigint;

/** Something sync or async. */
export type MaybePromise<T> = T | Promise<T>;

/** A doorbell served by an ioeventfd: writes never reach the socket. */
export interface IoEventFdSpec {
  /** Offset of the doorbell in its region. */
  offset: number;
  /** Access width the client must use: 1, 2, 4 or 8. */
  size: 1 | 2 | 4 | 8;
  /** Only writes of this value signal the eventfd (any value when omitted). */
  datamatch?: number;
  /**
   * Called with how many writes arrived since the last call. Give this or
   * `worker`.
   */
  onSignal?(count: number, device: Device): void;
  /**
   * Serves the doorbell on a worker thread instead: the thread watches the
   * eventfd itself (a REGION_WRITE to the doorbell is forwarded to it),
   * maps guest memory itself and raises MSI-X vectors by writing their
   * eventfds directly.
   */
  worker?: DoorbellWorkerSpec;
  /**
   * Takes the doorbell's eventfd to watch elsewhere (a worker thread):
   * return a release function and the server does not watch it (onSignal
   * is not called); release runs when the connection ends, before the
   * server closes its own fd (dup it to keep it). Return undefined to
   * leave it to the server. `pollIdleMs` is the server's busy-poll window
   * (0: sleep in epoll), for the watcher to do the same.
   */
  claim?(fd: number, device: Device, pollIdleMs: number): (() => void) | undefined;
}

/**
 * Where a doorbell is served off the main thread. The module exports
 * `createDoorbellHandler(data): DoorbellHandler | Promise<DoorbellHandler>`,
 * called once per thread start.
 */
export interface DoorbellWorkerSpec {
  /** The module, as a file URL (or an absolute path). */
  module: string | URL;
  /** Structured-cloneable data for createDoorbellHandler; a function is called for each thread start. */
  data?: unknown;
  /** Doorbells with the same thread number share one worker thread (default: one thread per doorbell). */
  thread?: number;
}

/** Behaviour shared by BARs and device-specific regions. */
export interface RegionSpec {
  /** Size in bytes. For BARs, a power of two. */
  size: number;
  /**
   * Back the region with shared memory (a memfd) that the device reads
   * through `device.regionMemory(index)`. Message accesses read and write
   * it unless `read`/`write` are given. `mmap` lists the areas the client
   * may map (default: the whole region); [] makes none mappable.
   */
  memory?: boolean | { mmap?: readonly { offset: number; size: number }[] };
  /** Serves a read of `length` bytes at `offset` (already range-checked). */
  read?(offset: number, length: number, device: Device): MaybePromise<ReadResult>;
  /**
   * Serves a write (already range-checked). `data` may be a view of the
   * receive buffer (no copy is made): it stays valid until the call returns,
   * or, when it returns a Promise (any thenable), until that settles. Copy
   * what you keep longer.
   */
  write?(offset: number, data: Buffer, device: Device): MaybePromise<void>;
  /** Doorbells the client may bind to eventfds (DEVICE_GET_REGION_IO_FDS). */
  ioeventfds?: readonly IoEventFdSpec[];
  /** Reads allowed (default true). */
  readable?: boolean;
  /** Writes allowed (default true). */
  writable?: boolean;
}

/** A Base Address Register and what serves it. */
export interface BarSpec extends RegionSpec {
  /** Memory (default) or I/O space. */
  kind?: 'memory' | 'io';
  /** 64-bit memory BAR (takes the next BAR slot too). */
  is64?: boolean;
  prefetchable?: boolean;
}

/** A device-specific region (index 9 and up). */
export interface ExtraRegionSpec extends RegionSpec {
  /** VFIO region type/subtype capability, when the region has one. */
  type?: { type: number; subtype: number };
}

/** Interrupts the device raises. */
export interface InterruptSpec {
  /** Legacy INTx (pin INTA). */
  intx?: boolean;
  /** MSI vectors (1, 2, 4, 8, 16 or 32); adds an MSI capability. */
  msi?: number;
  /** MSI-X: vector count and where table and PBA live (default: a new BAR). */
  msix?: number | { vectors: number; bar?: number; tableOffset?: number; pbaOffset?: number };
  /** Error IRQ (index 3). */
  err?: boolean;
  /** Request IRQ (index 4). */
  req?: boolean;
}

/**
 * Why the device is being reset: the client asked (DEVICE_RESET), the
 * client left, migration, or the guest started a Function Level Reset
 * (PCIe Device Control bit 15 written through config space).
 */
export type ResetReason = 'client' | 'disconnect' | 'migration' | 'flr';

/** A complete device description. */
export interface DeviceSpec {
  /** Name for logs. */
  name?: string;
  identity: PciIdentity;
  /** BARs by index 0-5. */
  bars?: Partial<Record<0 | 1 | 2 | 3 | 4 | 5, BarSpec>>;
  /** Device-specific regions by index (9 and up). */
  regions?: Record<number, ExtraRegionSpec>;
  /** Standard capabilities besides MSI/MSI-X (which `interrupts` adds). */
  capabilities?: CapabilityDescription[];
  extendedCapabilities?: ExtendedCapabilityDescription[];
  interrupts?: InterruptSpec;
  /**
   * Device registers in config space beyond the standard header, as a
   * register table (`defineRegisters`) whose offsets are absolute
   * config-space offsets (0x40 and up). Registers may not overlap the
   * header or a capability: the device is refused at construction, naming
   * both. Hooks get the Device and may be async; the table is reset with
   * config space (device reset, FLR). Config bytes that nothing claims
   * read as zero and ignore writes.
   */
  configRegisters?: RegisterMap<Device>;
  /** Raw config-space hooks (no Device, synchronous, every access); prefer `configRegisters`. */
  config?: ConfigHooks;
  /** Accept DMA_MAP from the client (default true). */
  dma?: boolean;
  /**
   * DMA needs Bus Master Enable (PCI command register bit 2), as on real
   * PCI: while it is clear every access fails with EPERM. Default true;
   * keep it for anything a guest drives, whose driver sets the bit before
   * DMA and clears it to stop the device. `false` lets the device DMA
   * whenever a client has mapped memory: for devices whose clients are
   * test programs that never write the command register (the `timer`
   * sample, for libvfio-user's sample client).
   */
  requireBusMaster?: boolean;
  /**
   * Live migration. Without save/load, the default migrates region memory,
   * `state`, config space and pending interrupts. Migration must be
   * explicit when muser cannot see all of the state: a device with
   * callbacks (region read/write, doorbells, config hooks) and no `state`
   * object is offered for migration only if it gives `migration` (custom
   * `save`/`load`, or `{}` to opt into the default). Otherwise, like with
   * `false`, the client is told migration is not supported.
   */
  migration?: MigrationSpec | false;
  /**
   * Device state object (plain data), migrated as JSON by the default
   * migration; on the destination the loaded values replace its contents
   * in place, so callbacks may keep a reference to it. Declaring it tells
   * muser where a device with callbacks keeps its state.
   */
  state?: Record<string, unknown>;
  /**
   * The device's timers (`deviceTimer`): each is cancelled on reset and
   * paused while migration stops the device. A timer serves one device.
   */
  timers?: readonly DeviceTimer[];
  /** Back to power-on state (client request, disconnect, FLR). */
  onReset?(reason: ResetReason, device: Device): MaybePromise<void>;
  /** A client connected (after VERSION negotiation). */
  onConnect?(device: Device): void;
  /** The client went away; per-connection state is already dropped. */
  onDisconnect?(device: Device): void;
  /** The server stopped serving the device for good: release threads and other resources. */
  onDispose?(device: Device): void;
}
