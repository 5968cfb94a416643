/** Types shared by the `lspci` collector, decoder and formatter. */

/** Everything read from the device; decoding and formatting are pure functions of it. */
export interface LspciSnapshot {
  /** The whole config space (region 7): 256 or 4096 bytes. */
  config: Buffer;
  /** DEVICE_GET_INFO counts. */
  numRegions: number;
  numIrqs: number;
  /** Sizes from DEVICE_GET_REGION_INFO for regions 0-5. */
  regionSizes: number[];
  /**
   * What each BAR dword read back after all-ones was written to it (0 for
   * dwords not probed, e.g. on a header type other than 0).
   */
  barMasks: number[];
}

/** One implemented base address register. */
export interface LspciBar {
  /** BAR index 0-5 (the low half for a 64-bit BAR). */
  index: number;
  kind: 'memory' | 'io';
  is64: boolean;
  prefetchable: boolean;
  /** Size from sizing the BAR. */
  size: number;
  /** Currently programmed address (0 when unassigned). */
  address: bigint;
  /** Size the VFIO region of the same index reports. */
  regionSize: number;
}

/** One capability found in a chain. */
export interface LspciCapability {
  /** Config space offset of its header. */
  offset: number;
  /** Capability id (8-bit standard, 16-bit extended). */
  id: number;
  /** Human-readable name. */
  name: string;
  /** Extended capabilities only: the header's version field. */
  version?: number;
}

/** Machine-readable form of `muser lspci`. */
export interface LspciData {
  vendorId: number;
  deviceId: number;
  subsystemVendorId: number;
  subsystemId: number;
  /** 24-bit class code: base class, sub-class, programming interface. */
  classCode: number;
  revision: number;
  headerType: number;
  command: number;
  status: number;
  /** 0 = none, 1-4 = INTA-INTD. */
  interruptPin: number;
  interruptLine: number;
  /** Size of config space read: 256 or 4096. */
  configSize: number;
  numRegions: number;
  numIrqs: number;
  bars: LspciBar[];
  capabilities: LspciCapability[];
  extendedCapabilities: LspciCapability[];
  /** Problems found: malformed chains, BAR/region disagreements. */
  notes: string[];
}
