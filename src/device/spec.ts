/**
 * What a device author writes: a declarative description of a PCI device
 * plus callbacks. `new Device(spec)` turns it into a servable device. The
 * spec's parts (regions, register tables, migration hooks) have modules of
 * their own; this one also hands on their types, as the spec's vocabulary.
 */
import type {
  CapabilityDescription,
  ConfigHooks,
  ExtendedCapabilityDescription,
  PciIdentity,
} from '../pci/index.js';
import type { MigrationSpec } from './migration-spec.js';
import type { BarSpec, ExtraRegionSpec } from './region-spec.js';
import type { RegisterMap } from './registers.js';
import type { DeviceTimer } from './timer.js';
import type { Device, MaybePromise } from './types.js';

export type { MaybePromise, ReadResult } from './types.js';
export type { BarSpec, DoorbellWorkerSpec, ExtraRegionSpec, IoEventFdSpec, RegionSpec } from './region-spec.js';

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
  /**
   * Under `--isolate`, in a successor child that took the connection over
   * (after a crash, a hang or a reload): the connection is rebuilt and the
   * checkpoint loaded; finish from `device.persistent` what the predecessor
   * took and did not complete. Runs before the successor reads the client.
   */
  onRecover?(device: Device, reason: 'crash' | 'reload'): MaybePromise<void>;
  /**
   * Under `--isolate`: ranges of a region whose writes change nothing a
   * checkpoint must hold (doorbells whose effect the device records in
   * `device.persistent` itself). A REGION_WRITE wholly inside one is not
   * followed by a checkpoint, which spares a migration save per doorbell.
   * A successor that finds such a write unanswered serves it again: writing
   * it twice must do no harm (a doorbell rung twice with the same value).
   */
  checkpointFreeWrites?: readonly { region: number; offset: number; length: number }[];
  /**
   * Under `--isolate`, right before each checkpoint (the device's migration
   * save, taken after every request that may change the device and before
   * its reply): store in `state` what the device keeps elsewhere and a
   * successor needs. Synchronous: it runs on the request's way out.
   */
  onCheckpoint?(device: Device): void;
  /**
   * Under `--isolate`, before a reload hands the device to new code (the
   * old child stopped reading the client and finished its messages): stop
   * taking work that does not come in messages (rings in guest memory) and
   * resolve once what is in flight finished. Throwing fails the reload;
   * the old code then serves on ({@link onResume}).
   */
  onQuiesce?(device: Device): MaybePromise<void>;
  /** Under `--isolate`, after {@link onQuiesce}, when the reload failed: take work again. */
  onResume?(device: Device): void;
}
