/**
 * PCI configuration space register offsets, bits and capability layouts.
 * Values follow the PCI Local Bus 3.0 / PCI Express Base specifications
 * (the same facts as Linux `include/uapi/linux/pci_regs.h`).
 */

/** Size of a conventional PCI config space. */
export const PCI_CONFIG_SIZE = 256;

/** Size of a PCI Express (extended) config space. */
export const PCIE_CONFIG_SIZE = 4096;

/** Where the standard capability chain starts (end of the type 0 header). */
export const PCI_CAP_START = 0x40;

/** Where the extended capability chain starts. */
export const PCI_EXT_CAP_START = 0x100;

/** Offsets of the type 0 configuration header registers. */
export const PciHeader = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION_ID: 0x08,
  /** Programming interface (low byte of the 24-bit class code). */
  CLASS_PROG: 0x09,
  /** Sub-class (middle byte of the class code). */
  CLASS_DEVICE: 0x0a,
  /** Base class (high byte of the class code). */
  CLASS_BASE: 0x0b,
  CACHE_LINE_SIZE: 0x0c,
  LATENCY_TIMER: 0x0d,
  HEADER_TYPE: 0x0e,
  BIST: 0x0f,
  BAR0: 0x10,
  BAR5: 0x24,
  CARDBUS_CIS: 0x28,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  ROM_ADDRESS: 0x30,
  CAPABILITY_LIST: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
  MIN_GNT: 0x3e,
  MAX_LAT: 0x3f,
} as const;

/** Number of base address registers in a type 0 header. */
export const PCI_NUM_BARS = 6;

/** Config space offset of BAR `index` (0..5). */
export function barOffset(index: number): number {
  return PciHeader.BAR0 + 4 * index;
}

/** Bits of the command register (0x04). */
export const PciCommand = {
  IO: 0x0001,
  MEMORY: 0x0002,
  MASTER: 0x0004,
  SPECIAL: 0x0008,
  INVALIDATE: 0x0010,
  VGA_PALETTE: 0x0020,
  PARITY: 0x0040,
  WAIT: 0x0080,
  SERR: 0x0100,
  FAST_BACK: 0x0200,
  INTX_DISABLE: 0x0400,
  /** The bits this model lets software change. */
  WRITABLE: 0x0547,
} as const;

/** Bits of the status register (0x06). */
export const PciStatus = {
  /** INTx asserted (read-only, mirrors the model's pending INTx). */
  INTERRUPT: 0x0008,
  /** A capability list is present at 0x34. */
  CAP_LIST: 0x0010,
  MHZ66: 0x0020,
  UDF: 0x0040,
  FAST_BACK: 0x0080,
  /** Master data parity error. */
  PARITY: 0x0100,
  DEVSEL_MASK: 0x0600,
  SIG_TARGET_ABORT: 0x0800,
  REC_TARGET_ABORT: 0x1000,
  REC_MASTER_ABORT: 0x2000,
  SIG_SYSTEM_ERROR: 0x4000,
  DETECTED_PARITY: 0x8000,
  /** Error bits that are write-one-to-clear. */
  RW1C: 0xf900,
} as const;

/** Bits of a base address register. */
export const PciBar = {
  /** Bit 0: 1 for an I/O BAR. */
  SPACE_IO: 0x01,
  /** Memory type field (bits 1-2). */
  MEM_TYPE_MASK: 0x06,
  MEM_TYPE_32: 0x00,
  MEM_TYPE_64: 0x04,
  MEM_PREFETCH: 0x08,
  /** Address bits of a memory BAR's low dword. */
  MEM_MASK: 0xfffffff0,
  /** Address bits of an I/O BAR. */
  IO_MASK: 0xfffffffc,
} as const;

/** Header type register values. */
export const PciHeaderType = {
  NORMAL: 0x00,
  MULTI_FUNCTION: 0x80,
} as const;

/** Standard capability ids (byte 0 of each capability). */
export const PciCapId = {
  PM: 0x01,
  MSI: 0x05,
  VENDOR: 0x09,
  PCIE: 0x10,
  MSIX: 0x11,
} as const;

/** Extended capability ids (bits 0-15 of each extended header). */
export const PciExtCapId = {
  DSN: 0x0003,
  VENDOR: 0x000b,
} as const;

/** Generic standard capability header layout. */
export const CapHeader = {
  ID: 0,
  NEXT: 1,
} as const;

/** Power Management capability layout and bits. */
export const PmCap = {
  PMC: 2,
  /** PMC version field: 3 = PCI PM 1.2. */
  PMC_VERSION_1_2: 0x0003,
  PMCSR: 4,
  PMCSR_STATE_MASK: 0x0003,
  PMCSR_NO_SOFT_RESET: 0x0008,
  PMCSR_PME_ENABLE: 0x0100,
  PMCSR_PME_STATUS: 0x8000,
  BRIDGE: 6,
  DATA: 7,
  SIZE: 8,
} as const;

/** MSI capability layout and control bits. */
export const MsiCap = {
  FLAGS: 2,
  FLAGS_ENABLE: 0x0001,
  /** Multiple Message Capable (log2 of supported vectors), read-only. */
  FLAGS_MMC_MASK: 0x000e,
  FLAGS_MMC_SHIFT: 1,
  /** Multiple Message Enable (log2 of enabled vectors), writable. */
  FLAGS_MME_MASK: 0x0070,
  FLAGS_MME_SHIFT: 4,
  FLAGS_64BIT: 0x0080,
  FLAGS_MASKBIT: 0x0100,
  ADDRESS_LO: 4,
  /** Upper address dword (64-bit form only). */
  ADDRESS_HI: 8,
  DATA_32: 8,
  DATA_64: 12,
  MASK_32: 12,
  MASK_64: 16,
  PENDING_32: 16,
  PENDING_64: 20,
} as const;

/** MSI-X capability layout and control bits. */
export const MsixCap = {
  FLAGS: 2,
  /** Table size minus one. */
  FLAGS_QSIZE: 0x07ff,
  FLAGS_MASKALL: 0x4000,
  FLAGS_ENABLE: 0x8000,
  TABLE: 4,
  PBA: 8,
  /** BAR indicator in the TABLE / PBA dwords. */
  BIR_MASK: 0x7,
  OFFSET_MASK: 0xfffffff8,
  SIZE: 12,
} as const;

/** Layout of one MSI-X table entry. */
export const MsixEntry = {
  ADDRESS_LO: 0,
  ADDRESS_HI: 4,
  DATA: 8,
  VECTOR_CTRL: 12,
  CTRL_MASKBIT: 0x1,
  SIZE: 16,
} as const;

/** Maximum number of MSI-X vectors. */
export const MSIX_MAX_VECTORS = 2048;

/** PCI Express capability layout and bits (version 2 layout). */
export const PcieCap = {
  FLAGS: 2,
  FLAGS_VERSION_2: 0x0002,
  FLAGS_TYPE_SHIFT: 4,
  TYPE_ENDPOINT: 0x0,
  TYPE_LEGACY_ENDPOINT: 0x1,
  TYPE_RC_ENDPOINT: 0x9,
  DEVCAP: 4,
  DEVCAP_RBER: 0x00008000,
  DEVCAP_FLR: 0x10000000,
  DEVCTL: 8,
  /** Bits of DEVCTL software may change (everything except phantom and FLR). */
  DEVCTL_WRITABLE: 0x7dff,
  DEVCTL_RELAX_EN: 0x0010,
  DEVCTL_NOSNOOP_EN: 0x0800,
  DEVCTL_READRQ_512B: 0x2000,
  /** Initiate Function Level Reset (always reads 0). */
  DEVCTL_BCR_FLR: 0x8000,
  DEVSTA: 10,
  /** Error-detected bits of DEVSTA, write-one-to-clear. */
  DEVSTA_RW1C: 0x000f,
  LNKCAP: 12,
  LNKCAP_SLS_2_5GB: 0x00000001,
  LNKCAP_MLW_X1: 0x00000010,
  LNKCTL: 16,
  /** ASPM control, RCB, common clock, extended synch. */
  LNKCTL_WRITABLE: 0x00cb,
  LNKSTA: 18,
  LNKSTA_CLS_2_5GB: 0x0001,
  LNKSTA_NLW_X1: 0x0010,
  DEVCAP2: 36,
  DEVCTL2: 40,
  DEVSTA2: 42,
  LNKCAP2: 44,
  /** Supported link speeds vector: 2.5 GT/s. */
  LNKCAP2_SLS_2_5GB: 0x00000002,
  LNKCTL2: 48,
  /** Target link speed 2.5 GT/s. */
  LNKCTL2_TLS_2_5GT: 0x0001,
  LNKSTA2: 50,
  SIZE: 60,
} as const;

/** Vendor-specific capability layout. */
export const VendorCap = {
  /** Length byte: the capability's size including id, next and length. */
  LENGTH: 2,
  DATA: 3,
  MAX_SIZE: 0xff,
} as const;

/** Extended capability header layout. */
export const ExtCapHeader = {
  SIZE: 4,
  ID_MASK: 0xffff,
  VERSION_SHIFT: 16,
  VERSION_MASK: 0xf,
  NEXT_SHIFT: 20,
} as const;

/** Device Serial Number extended capability layout. */
export const DsnCap = {
  SERIAL_LO: 4,
  SERIAL_HI: 8,
  SIZE: 12,
  VERSION: 1,
} as const;

/** Vendor-Specific Extended Capability layout. */
export const VsecCap = {
  /** VSEC header dword: id bits 0-15, rev bits 16-19, length bits 20-31. */
  HEADER: 4,
  REV_SHIFT: 16,
  LEN_SHIFT: 20,
  DATA: 8,
  MAX_SIZE: 0xfff,
  VERSION: 1,
} as const;
