/**
 * NVMe 1.4 numbers the controller uses: register offsets, opcodes, status
 * codes, feature and log page identifiers (NVM Express Base Specification
 * 1.4, sections 3.1, 4.6, 5 and 6).
 */

/** Controller register offsets in BAR0. */
export const NvmeReg = {
  CAP: 0x00,
  VS: 0x08,
  INTMS: 0x0c,
  INTMC: 0x10,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
  AQA: 0x24,
  ASQ: 0x28,
  ACQ: 0x30,
  /** Controller Memory Buffer location and size (no CMB: both read 0). */
  CMBLOC: 0x38,
  CMBSZ: 0x3c,
  /** First doorbell: SQ 0 tail. */
  DOORBELLS: 0x1000,
} as const;

/** CC fields. */
export const Cc = {
  EN: 1 << 0,
  CSS_SHIFT: 4,
  MPS_SHIFT: 7,
  AMS_SHIFT: 11,
  SHN_SHIFT: 14,
  IOSQES_SHIFT: 16,
  IOCQES_SHIFT: 20,
} as const;

/** CSTS fields. */
export const Csts = {
  RDY: 1 << 0,
  CFS: 1 << 1,
  SHST_SHIFT: 2,
  SHST_MASK: 3 << 2,
} as const;

/** CC.SHN / CSTS.SHST values. */
export const Shutdown = { NONE: 0, NORMAL: 1, ABRUPT: 2, OCCURRING: 1, COMPLETE: 2 } as const;

/** Admin command opcodes. */
export const AdminOpcode = {
  DELETE_IO_SQ: 0x00,
  CREATE_IO_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_IO_CQ: 0x04,
  CREATE_IO_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT_REQUEST: 0x0c,
  KEEP_ALIVE: 0x18,
  DOORBELL_BUFFER_CONFIG: 0x7c,
} as const;

/** NVM command set opcodes. */
export const IoOpcode = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  WRITE_ZEROES: 0x08,
  DATASET_MANAGEMENT: 0x09,
} as const;

/** Identify CNS values. */
export const Cns = {
  NAMESPACE: 0x00,
  CONTROLLER: 0x01,
  ACTIVE_NS_LIST: 0x02,
  NS_ID_DESCRIPTORS: 0x03,
  /** I/O command set specific namespace (NVMe 2.0; zeros for NVM). */
  CS_NAMESPACE: 0x05,
  /** I/O command set specific controller (NVMe 2.0; Linux asks for it at VS >= 1.2). */
  CS_CONTROLLER: 0x06,
  /** I/O command set independent namespace (NVMe 2.0). */
  CS_INDEPENDENT_NAMESPACE: 0x08,
} as const;

/** Status code types (SCT). */
export const StatusType = { GENERIC: 0, COMMAND_SPECIFIC: 1, MEDIA: 2 } as const;

/** Builds a 15-bit status field: SC in bits 7:0, SCT in 10:8, DNR in 14. */
export function status(type: number, code: number, dnr = true): number {
  return (dnr ? 1 << 14 : 0) | ((type & 7) << 8) | (code & 0xff);
}

/** The statuses the controller returns. */
export const Status = {
  SUCCESS: 0,
  INVALID_OPCODE: status(StatusType.GENERIC, 0x01),
  INVALID_FIELD: status(StatusType.GENERIC, 0x02),
  DATA_TRANSFER_ERROR: status(StatusType.GENERIC, 0x04),
  INTERNAL_ERROR: status(StatusType.GENERIC, 0x06),
  ABORTED_BY_REQUEST: status(StatusType.GENERIC, 0x07),
  ABORTED_SQ_DELETION: status(StatusType.GENERIC, 0x08, false),
  INVALID_NAMESPACE: status(StatusType.GENERIC, 0x0b),
  COMMAND_SEQUENCE_ERROR: status(StatusType.GENERIC, 0x0c),
  PRP_OFFSET_INVALID: status(StatusType.GENERIC, 0x13),
  NAMESPACE_WRITE_PROTECTED: status(StatusType.GENERIC, 0x20),
  LBA_OUT_OF_RANGE: status(StatusType.GENERIC, 0x80),
  CAPACITY_EXCEEDED: status(StatusType.GENERIC, 0x81),
  COMPLETION_QUEUE_INVALID: status(StatusType.COMMAND_SPECIFIC, 0x00),
  INVALID_QUEUE_IDENTIFIER: status(StatusType.COMMAND_SPECIFIC, 0x01),
  INVALID_QUEUE_SIZE: status(StatusType.COMMAND_SPECIFIC, 0x02),
  ASYNC_EVENT_LIMIT_EXCEEDED: status(StatusType.COMMAND_SPECIFIC, 0x05),
  INVALID_INTERRUPT_VECTOR: status(StatusType.COMMAND_SPECIFIC, 0x08),
  INVALID_LOG_PAGE: status(StatusType.COMMAND_SPECIFIC, 0x09),
  INVALID_QUEUE_DELETION: status(StatusType.COMMAND_SPECIFIC, 0x0c),
  FEATURE_NOT_SAVEABLE: status(StatusType.COMMAND_SPECIFIC, 0x0d),
  ATTEMPTED_WRITE_TO_READ_ONLY_RANGE: status(StatusType.COMMAND_SPECIFIC, 0x82),
  WRITE_FAULT: status(StatusType.MEDIA, 0x80),
  UNRECOVERED_READ_ERROR: status(StatusType.MEDIA, 0x81),
} as const;

const STATUS_NAMES = new Map<number, string>(Object.entries(Status).map(([name, value]) => [value, name]));

/** A status field's name (`LBA_OUT_OF_RANGE`), or its SCT/SC in hex. */
export function statusName(status: number): string {
  return STATUS_NAMES.get(status) ?? `SCT 0x${((status >> 8) & 7).toString(16)} SC 0x${(status & 0xff).toString(16)}`;
}

/** Feature identifiers. */
export const FeatureId = {
  ARBITRATION: 0x01,
  POWER_MANAGEMENT: 0x02,
  TEMPERATURE_THRESHOLD: 0x04,
  ERROR_RECOVERY: 0x05,
  VOLATILE_WRITE_CACHE: 0x06,
  NUMBER_OF_QUEUES: 0x07,
  INTERRUPT_COALESCING: 0x08,
  INTERRUPT_VECTOR_CONFIG: 0x09,
  WRITE_ATOMICITY: 0x0a,
  ASYNC_EVENT_CONFIG: 0x0b,
  KEEP_ALIVE_TIMER: 0x0f,
} as const;

/** Log page identifiers. */
export const LogPageId = { ERROR: 0x01, SMART: 0x02, FIRMWARE_SLOT: 0x03 } as const;

/** Asynchronous event types and the error-status infos the controller raises. */
export const AsyncEvent = {
  TYPE_ERROR: 0,
  TYPE_SMART: 1,
  TYPE_NOTICE: 2,
  INFO_INVALID_DOORBELL_REGISTER: 0x00,
  INFO_INVALID_DOORBELL_VALUE: 0x01,
} as const;

/** The memory page the controller supports (MPS 0). */
export const PAGE_SIZE = 4096;
