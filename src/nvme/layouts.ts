/**
 * The NVMe structures muser reads and writes in guest memory, each declared
 * once (layout/struct.ts): the submission and completion queue entries
 * (NVMe 1.4, 4.2 and 4.6), the Identify data it fills (5.15.2) and an
 * Error Information log entry (5.14.1.1). Offsets follow from the field
 * order; the comments give the specification's byte offsets, and the
 * golden-bytes tests hold each layout to them. Fields muser never reads or
 * fills are reserved runs (`_name`).
 */
import { defineStruct } from '../layout/struct.js';

/** A submission queue entry's fields (NVMe 1.4, figure 105). */
export interface SqeFields {
  opcode: number;
  /** CDW0 bits 15:8: FUSE in bits 1:0, PSDT in bits 7:6. */
  flags: number;
  cid: number;
  nsid: number;
  /** PRP entries as read: 64-bit values. */
  prp1: bigint;
  prp2: bigint;
  cdw10: number;
  cdw11: number;
  cdw12: number;
  cdw13: number;
  cdw14: number;
  cdw15: number;
}

/** The SQE's `flags` byte (CDW0 bits 15:8): FUSE in bits 1:0, PSDT in bits 7:6. */
export const SqeFlags = { FUSE_MASK: 3, PSDT_SHIFT: 6, PSDT_MASK: 3 } as const;

/** Submission queue entry, 64 bytes. */
export const SQE = defineStruct<SqeFields>('NVMe SQE', {
  opcode: 'u8', // 0
  flags: 'u8', // 1
  cid: 'u16', // 2
  nsid: 'u32', // 4
  _cdw2_3: 8, // 8: command specific, unused by the commands muser serves
  _mptr: 8, // 16: metadata pointer (no metadata)
  prp1: 'u64big', // 24
  prp2: 'u64big', // 32
  cdw10: 'u32', // 40
  cdw11: 'u32', // 44
  cdw12: 'u32', // 48
  cdw13: 'u32', // 52
  cdw14: 'u32', // 56
  cdw15: 'u32', // 60
});

/** A completion queue entry's fields (NVMe 1.4, figure 121). */
export interface CqeFields {
  /** Dwords 0 and 1: command specific (dword 1 reserved in NVMe 1.4; muser writes 0). */
  dw0: number;
  dw1: number;
  sqHead: number;
  sqId: number;
  cid: number;
  /** Bit 0 the phase tag, bits 15:1 the status field. */
  status: number;
}

/** Completion queue entry, 16 bytes. Dword 3 (cid, status and phase) is the one a driver polls. */
export const CQE = defineStruct<CqeFields>('NVMe CQE', {
  dw0: 'u32', // 0
  dw1: 'u32', // 4
  sqHead: 'u16', // 8
  sqId: 'u16', // 10
  cid: 'u16', // 12
  status: 'u16', // 14
});

/** The Identify Controller fields muser fills (NVMe 1.4, figure 247). */
export interface IdentifyControllerFields {
  vid: number;
  ssvid: number;
  /** Serial number, model number and firmware revision: ASCII, space padded. */
  sn: Uint8Array;
  mn: Uint8Array;
  fr: Uint8Array;
  /** Recommended arbitration burst. */
  rab: number;
  mdts: number;
  cntlid: number;
  ver: number;
  cntrltype: number;
  oacs: number;
  /** Abort command limit, 0-based. */
  acl: number;
  aerl: number;
  /** Firmware updates. */
  frmw: number;
  /** Log page attributes. */
  lpa: number;
  elpe: number;
  /** Number of power states, 0-based. */
  npss: number;
  /** Warning and critical composite temperature thresholds, kelvin. */
  wctemp: number;
  cctemp: number;
  /** Required and maximum entry sizes, log2: SQ in bits 3:0 and 7:4, likewise CQ. */
  sqes: number;
  cqes: number;
  maxcmd: number;
  nn: number;
  oncs: number;
  /** Volatile write cache. */
  vwc: number;
  /** NVM subsystem NQN, NUL padded. */
  subnqn: Uint8Array;
  /** Power state 0's maximum power, centiwatts. */
  psd0Mp: number;
}

/** Identify Controller data (CNS 01h), 4096 bytes. */
export const IDENTIFY_CONTROLLER = defineStruct<IdentifyControllerFields>('Identify Controller', {
  vid: 'u16', // 0
  ssvid: 'u16', // 2
  sn: { bytes: 20 }, // 4
  mn: { bytes: 40 }, // 24
  fr: { bytes: 8 }, // 64
  rab: 'u8', // 72
  _ieee_cmic: 4, // 73
  mdts: 'u8', // 77
  cntlid: 'u16', // 78
  ver: 'u32', // 80
  _r84: 27, // 84: RTD3R .. reserved
  cntrltype: 'u8', // 111
  _r112: 144, // 112: FGUID, CRDT, reserved, NVMe-MI
  oacs: 'u16', // 256
  acl: 'u8', // 258
  aerl: 'u8', // 259
  frmw: 'u8', // 260
  lpa: 'u8', // 261
  elpe: 'u8', // 262
  npss: 'u8', // 263
  _r264: 2, // 264: AVSCC, APSTA
  wctemp: 'u16', // 266
  cctemp: 'u16', // 268
  _r270: 242, // 270: MTFA .. reserved
  sqes: 'u8', // 512
  cqes: 'u8', // 513
  maxcmd: 'u16', // 514
  nn: 'u32', // 516
  oncs: 'u16', // 520
  _r522: 3, // 522: FUSES, FNA
  vwc: 'u8', // 525
  _r526: 242, // 526: AWUN .. reserved
  subnqn: { bytes: 256 }, // 768
  _r1024: 1024, // 1024: reserved, NVMe over Fabrics
  psd0Mp: 'u16', // 2048: power state descriptor 0, MP
  _r2050: 2046, // 2050: the rest of PSD0, PSD1-31, vendor specific
});

/** The Identify Namespace fields muser fills (NVMe 1.4, figure 249). */
export interface IdentifyNamespaceFields {
  /** Size, capacity and utilization, in logical blocks. */
  nsze: number;
  ncap: number;
  nuse: number;
  nsfeat: number;
  /** Number of LBA formats, 0-based. */
  nlbaf: number;
  /** Formatted LBA size: the format in use. */
  flbas: number;
  /** Deallocate logical block features. */
  dlfeat: number;
  nsattr: number;
  nguid: Uint8Array;
  eui64: Uint8Array;
  /** LBA format 0: metadata size, LBA data size (log2), relative performance. */
  lbaf0Ms: number;
  lbaf0Lbads: number;
  lbaf0Rp: number;
}

/** Identify Namespace data (CNS 00h), 4096 bytes. */
export const IDENTIFY_NAMESPACE = defineStruct<IdentifyNamespaceFields>('Identify Namespace', {
  nsze: 'u64', // 0
  ncap: 'u64', // 8
  nuse: 'u64', // 16
  nsfeat: 'u8', // 24
  nlbaf: 'u8', // 25
  flbas: 'u8', // 26
  _r27: 6, // 27: MC, DPC, DPS, NMIC, RESCAP, FPI
  dlfeat: 'u8', // 33
  _r34: 65, // 34: NAWUN .. reserved
  nsattr: 'u8', // 99
  _r100: 4, // 100: NVMSETID, ENDGID
  nguid: { bytes: 16 }, // 104
  eui64: { bytes: 8 }, // 120
  lbaf0Ms: 'u16', // 128
  lbaf0Lbads: 'u8', // 130
  lbaf0Rp: 'u8', // 131: bits 1:0
  _r132: 3964, // 132: LBAF1-15, reserved, vendor specific
});

/** The I/O Command Set Independent Identify Namespace fields muser fills (NVMe 2.0). */
export interface IdentifyNamespaceIndependentFields {
  nsfeat: number;
  nsattr: number;
  /** Namespace status: bit 0, ready. */
  nstat: number;
}

/** I/O Command Set Independent Identify Namespace data (CNS 08h), 4096 bytes. */
export const IDENTIFY_NAMESPACE_INDEPENDENT = defineStruct<IdentifyNamespaceIndependentFields>('Identify Namespace (independent)', {
  nsfeat: 'u8', // 0
  _r1: 7, // 1: NMIC, RESCAP, FPI, ANAGRPID
  nsattr: 'u8', // 8
  _r9: 5, // 9: reserved, NVMSETID, ENDGID
  nstat: 'u8', // 14
  _r15: 4081, // 15
});

/** An Error Information log entry's fields (NVMe 1.4, figure 194). */
export interface ErrorLogEntryFields {
  errorCount: number;
  sqid: number;
  cid: number;
  /** Bits 15:1 the status field, bit 0 the phase tag (0 here). */
  status: number;
  /** 0xffff: not given. */
  parameterErrorLocation: number;
  lba: number;
  nsid: number;
}

/** Error Information log entry, 64 bytes. */
export const ERROR_LOG_ENTRY = defineStruct<ErrorLogEntryFields>('Error Information log entry', {
  errorCount: 'u64', // 0
  sqid: 'u16', // 8
  cid: 'u16', // 10
  status: 'u16', // 12
  parameterErrorLocation: 'u16', // 14
  lba: 'u64', // 16
  nsid: 'u32', // 24
  _r28: 36, // 28: vendor specific, transport type, command specific, reserved
});
