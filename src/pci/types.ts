/**
 * The declarative description a device author writes, and the events and
 * state the config space model reports back.
 */

/** Identity registers of the function. */
export interface PciIdentity {
  /** Vendor id, 0..0xfffe (0xffff means "no device" and is rejected). */
  vendorId: number;
  /** Device id, 0..0xffff. */
  deviceId: number;
  /** Subsystem vendor id, 0..0xffff (default 0). */
  subsystemVendorId?: number;
  /** Subsystem id, 0..0xffff (default 0). */
  subsystemId?: number;
  /** 24-bit class code: base class, sub-class, programming interface (default 0). */
  classCode?: number;
  /** Revision id, 0..0xff (default 0). */
  revision?: number;
}

/** One base address register. */
export interface BarDescription {
  /**
   * Size in bytes: a power of two, at least 16 for memory (at most 2^31
   * for a 32-bit BAR, 2^52 for a 64-bit one) and 4..65536 for I/O.
   */
  size: number;
  /** Memory or I/O space. */
  kind: 'memory' | 'io';
  /** A 64-bit memory BAR; it also uses the next BAR slot, which must be empty. */
  is64?: boolean;
  /** Prefetchable memory. */
  prefetchable?: boolean;
}

/** Power Management capability (PCI PM 1.2, D0 and D3hot only). */
export interface PmCapabilityDescription {
  id: 'pm';
}

/** MSI capability. */
export interface MsiCapabilityDescription {
  id: 'msi';
  /** Number of vectors the function can request. */
  vectors: 1 | 2 | 4 | 8 | 16 | 32;
  /** 64-bit message address (default false). */
  is64?: boolean;
  /** Per-vector mask and pending registers (default false). */
  perVectorMask?: boolean;
}

/** MSI-X capability; table and PBA live in memory BARs. */
export interface MsixCapabilityDescription {
  id: 'msix';
  /** Number of vectors, 1..2048. */
  vectors: number;
  /** BAR holding the table. */
  tableBar: number;
  /** Offset of the table within its BAR (8-byte aligned). */
  tableOffset: number;
  /** BAR holding the pending bit array. */
  pbaBar: number;
  /** Offset of the PBA within its BAR (8-byte aligned). */
  pbaOffset: number;
}

/** PCI Express capability (version 2). */
export interface PcieCapabilityDescription {
  id: 'pcie';
  /** Device/port type (default 'endpoint'). */
  type?: 'endpoint' | 'rc-endpoint' | 'legacy-endpoint';
  /** Advertise Function Level Reset; a write of Initiate FLR emits an `flr` event. */
  flr?: boolean;
}

/** Vendor-specific capability: read-only data after id, next and length. */
export interface VendorCapabilityDescription {
  id: 'vendor';
  /** Payload, at most 252 bytes. */
  data: Uint8Array;
}

/** A standard capability, placed in the chain starting at 0x40. */
export type CapabilityDescription =
  | PmCapabilityDescription
  | MsiCapabilityDescription
  | MsixCapabilityDescription
  | PcieCapabilityDescription
  | VendorCapabilityDescription;

/** Device Serial Number extended capability. */
export interface DsnCapabilityDescription {
  id: 'dsn';
  /** 64-bit serial number. */
  serial: bigint;
}

/** Vendor-Specific Extended Capability; data is read-only. */
export interface VsecCapabilityDescription {
  id: 'vendor';
  /** VSEC id, 0..0xffff. */
  vsecId: number;
  /** VSEC revision, 0..15. */
  revision: number;
  /** Payload (the whole capability is at most 4095 bytes). */
  data: Uint8Array;
}

/** An extended capability, placed in the chain starting at 0x100 (PCIe only). */
export type ExtendedCapabilityDescription = DsnCapabilityDescription | VsecCapabilityDescription;

/** Custom config space behaviour a device may add on top of the model. */
export interface ConfigHooks {
  /**
   * Called on every read after the standard value is computed; return a
   * Buffer of exactly `length` bytes to override it, or undefined.
   */
  read?(offset: number, length: number): Buffer | undefined;
  /** Called before standard handling; return true when the write was consumed. */
  write?(offset: number, data: Buffer): boolean;
}

/** Everything needed to build a ConfigSpace. */
export interface ConfigSpaceDescription {
  identity: PciIdentity;
  /** Up to six BARs; `undefined` for an unused slot. */
  bars?: readonly (BarDescription | undefined)[];
  capabilities?: readonly CapabilityDescription[];
  extendedCapabilities?: readonly ExtendedCapabilityDescription[];
  /** 0 = no INTx, 1..4 = INTA..INTD (default 0). */
  interruptPin?: number;
  hooks?: ConfigHooks;
}

/** Where a capability was placed. */
export interface CapabilityInfo {
  /** Which chain holds it. */
  chain: 'standard' | 'extended';
  /** Description id ('pm', 'msi', 'dsn', 'vendor', ...). */
  id: CapabilityDescription['id'] | ExtendedCapabilityDescription['id'];
  /** Numeric capability id as found in config space. */
  capId: number;
  /** Offset of the capability header. */
  offset: number;
  /** Size in bytes. */
  length: number;
}

/** Where the MSI-X table and PBA live. */
export interface MsixLayout {
  vectors: number;
  tableBar: number;
  tableOffset: number;
  /** Table size in bytes (16 per vector). */
  tableSize: number;
  pbaBar: number;
  pbaOffset: number;
  /** PBA size in bytes (one qword per 64 vectors). */
  pbaSize: number;
}

/** Current MSI state. */
export interface MsiState {
  enabled: boolean;
  /** Vectors the function supports. */
  capableVectors: number;
  /** Vectors software enabled (Multiple Message Enable, clamped to capable). */
  vectors: number;
  address: bigint;
  data: number;
  is64: boolean;
  perVectorMask: boolean;
  /** Mask bits (0 without per-vector masking). */
  mask: number;
  /** Pending bits (0 without per-vector masking). */
  pending: number;
}

/** A change the server may need to act on, reported synchronously. */
export type ConfigEvent =
  /** The command register changed. */
  | { type: 'command'; value: number; previous: number }
  /** BAR `index` now holds `address` (also during sizing: all-ones masks). */
  | { type: 'bar'; index: number; address: bigint }
  /** MSI enable or enabled vector count changed; `vectors` is 0 while disabled. */
  | { type: 'msi'; enabled: boolean; vectors: number }
  /** The MSI per-vector mask register changed: pending vectors may now be sent. */
  | { type: 'msi-mask'; mask: number }
  /** MSI-X enable or function mask changed. */
  | { type: 'msix'; enabled: boolean; functionMask: boolean }
  /** PM power state changed (0 = D0, 3 = D3hot). */
  | { type: 'power'; state: number }
  /** Function Level Reset: config space was reset; the device must reset too. */
  | { type: 'flr' };

/** Receives config space events. */
export type ConfigListener = (event: ConfigEvent) => void;
