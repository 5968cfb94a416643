/**
 * Numeric facts of the vfio-user protocol and of the VFIO structures it
 * reuses. Sources: QEMU `docs/interop/vfio-user.rst` (the spec), QEMU
 * `hw/vfio-user/protocol.h` (the real client) and Linux
 * `include/uapi/linux/vfio.h` (flag bits, feature ids, migration states).
 *
 * All wire integers are little-endian.
 */

/** Size in bytes of the header that precedes every message. */
export const HEADER_SIZE = 16;

/** Message command numbers (header `command` field). 14 was the removed DIRTY_PAGES. */
export enum Command {
  VERSION = 1,
  DMA_MAP = 2,
  DMA_UNMAP = 3,
  DEVICE_GET_INFO = 4,
  DEVICE_GET_REGION_INFO = 5,
  DEVICE_GET_REGION_IO_FDS = 6,
  DEVICE_GET_IRQ_INFO = 7,
  DEVICE_SET_IRQS = 8,
  REGION_READ = 9,
  REGION_WRITE = 10,
  /** Server to client. */
  DMA_READ = 11,
  /** Server to client. */
  DMA_WRITE = 12,
  DEVICE_RESET = 13,
  REGION_WRITE_MULTI = 15,
  DEVICE_FEATURE = 16,
  MIG_DATA_READ = 17,
  MIG_DATA_WRITE = 18,
}

/** Header flag bits. The low nibble is the message type. */
export enum HeaderFlag {
  /** Mask of the message type (bits 0-3). */
  TYPE_MASK = 0xf,
  /** Type value: a command (request). */
  COMMAND = 0,
  /** Type value: a reply. */
  REPLY = 1,
  /** The sender wants no reply to this command. */
  NO_REPLY = 1 << 4,
  /** The reply reports an error; the header errno field is valid. */
  ERROR = 1 << 5,
}

/** VFIO PCI region indexes; indexes from NUM_PCI_REGIONS up are device specific. */
export enum RegionIndex {
  BAR0 = 0,
  BAR1 = 1,
  BAR2 = 2,
  BAR3 = 3,
  BAR4 = 4,
  BAR5 = 5,
  ROM = 6,
  CONFIG = 7,
  VGA = 8,
  NUM_PCI_REGIONS = 9,
}

/** VFIO PCI interrupt indexes. */
export enum IrqIndex {
  INTX = 0,
  MSI = 1,
  MSIX = 2,
  ERR = 3,
  REQ = 4,
  NUM = 5,
}

/** `VFIO_DEVICE_FLAGS_*` (DEVICE_GET_INFO reply flags). */
export enum DeviceInfoFlag {
  RESET = 1 << 0,
  PCI = 1 << 1,
}

/** `VFIO_REGION_INFO_FLAG_*`. */
export enum RegionInfoFlag {
  READ = 1 << 0,
  WRITE = 1 << 1,
  MMAP = 1 << 2,
  CAPS = 1 << 3,
}

/** `VFIO_REGION_INFO_CAP_*` capability ids in a region info chain. */
export enum RegionCapId {
  SPARSE_MMAP = 1,
  TYPE = 2,
}

/** Capability versions this codec writes (both version 1 in vfio.h). */
export const REGION_CAP_SPARSE_MMAP_VERSION = 1;
/** @see REGION_CAP_SPARSE_MMAP_VERSION */
export const REGION_CAP_TYPE_VERSION = 1;

/** Sub-region kinds in a DEVICE_GET_REGION_IO_FDS reply. */
export enum IoFdType {
  IOEVENTFD = 0,
  IOREGIONFD = 1,
}

/** `KVM_IOEVENTFD_FLAG_*` bits used in ioeventfd sub-regions. */
export enum IoeventfdFlag {
  DATAMATCH = 1 << 0,
  PIO = 1 << 1,
}

/** `VFIO_IRQ_INFO_*`. */
export enum IrqInfoFlag {
  EVENTFD = 1 << 0,
  MASKABLE = 1 << 1,
  AUTOMASKED = 1 << 2,
  NORESIZE = 1 << 3,
}

/** `VFIO_IRQ_SET_*`: exactly one DATA_* and one ACTION_* bit per request. */
export enum IrqSetFlag {
  DATA_NONE = 1 << 0,
  DATA_BOOL = 1 << 1,
  DATA_EVENTFD = 1 << 2,
  ACTION_MASK = 1 << 3,
  ACTION_UNMASK = 1 << 4,
  ACTION_TRIGGER = 1 << 5,
}

/** Mask of all DATA_* bits of {@link IrqSetFlag}. */
export const IRQ_SET_DATA_MASK = 0x7;
/** Mask of all ACTION_* bits of {@link IrqSetFlag}. */
export const IRQ_SET_ACTION_MASK = 0x38;

/** DMA_MAP flags. */
export enum DmaMapFlag {
  READ = 1 << 0,
  WRITE = 1 << 1,
}

/**
 * DMA_UNMAP flags. The spec marks `flags` unused, but QEMU sends
 * `VFIO_DMA_UNMAP_FLAG_ALL` (address and size 0) to drop every mapping.
 * GET_DIRTY_BITMAP (bit 0) belonged to the removed dirty-page scheme and is
 * rejected by the decoder.
 */
export enum DmaUnmapFlag {
  ALL = 1 << 1,
}

/** `VFIO_DEVICE_FEATURE_*` bits of the DEVICE_FEATURE `flags` field. */
export enum DeviceFeatureFlag {
  /** Low 16 bits: the feature id. */
  MASK = 0xffff,
  GET = 1 << 16,
  SET = 1 << 17,
  PROBE = 1 << 18,
}

/** Feature ids (low 16 bits of DEVICE_FEATURE flags), as in vfio.h. */
export enum FeatureId {
  MIGRATION = 1,
  MIG_DEVICE_STATE = 2,
  DMA_LOGGING_START = 6,
  DMA_LOGGING_STOP = 7,
  DMA_LOGGING_REPORT = 8,
}

/** `VFIO_MIGRATION_*` flags reported by the MIGRATION feature. */
export enum MigrationFlag {
  STOP_COPY = 1 << 0,
  P2P = 1 << 1,
  PRE_COPY = 1 << 2,
}

/** `enum vfio_device_mig_state`. */
export enum MigrationState {
  ERROR = 0,
  STOP = 1,
  RUNNING = 2,
  STOP_COPY = 3,
  RESUMING = 4,
  RUNNING_P2P = 5,
  PRE_COPY = 6,
  PRE_COPY_P2P = 7,
}

/** Linux errno values used on the wire. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ERANGE: 34,
  ENOSYS: 38,
  EPROTO: 71,
  EMSGSIZE: 90,
  ENOTSUP: 95,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
} as const;

/** Maximum length accepted for the VERSION JSON (NUL excluded). */
export const MAX_VERSION_JSON = 64 * 1024;

/** Data bytes per REGION_WRITE_MULTI entry (QEMU `VFIO_USER_MULTI_DATA`). */
export const WRITE_MULTI_DATA = 8;
/** Most entries QEMU puts in one REGION_WRITE_MULTI (`VFIO_USER_MULTI_MAX`). */
export const WRITE_MULTI_MAX = 200;
