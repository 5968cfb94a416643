/**
 * A submission queue entry as the controller reads it (NVMe 1.4, 4.2), and
 * the typed failure a command handler throws to complete a command with a
 * status other than success.
 */
import { SQE_SIZE } from './constants.js';

/** The fields of a 64-byte submission queue entry. */
export interface NvmeCommand {
  readonly opcode: number;
  /** Fused operation (bits 9:8 of CDW0). */
  readonly fuse: number;
  /** PRP or SGL (bits 15:14 of CDW0): only 0 (PRPs) is supported. */
  readonly psdt: number;
  readonly cid: number;
  readonly nsid: number;
  /** PRP entries as read: 64-bit values. */
  readonly prp1: bigint;
  readonly prp2: bigint;
  readonly cdw10: number;
  readonly cdw11: number;
  readonly cdw12: number;
  readonly cdw13: number;
  readonly cdw14: number;
  readonly cdw15: number;
}

/** Decodes a submission queue entry (at least 64 bytes). */
export function parseCommand(b: Uint8Array): NvmeCommand {
  if (b.length < SQE_SIZE) throw new RangeError(`a submission queue entry is ${SQE_SIZE} bytes, got ${b.length}`);
  const v = new DataView(b.buffer, b.byteOffset, SQE_SIZE);
  return {
    opcode: v.getUint8(0),
    fuse: v.getUint8(1) & 3,
    psdt: (v.getUint8(1) >> 6) & 3,
    cid: v.getUint16(2, true),
    nsid: v.getUint32(4, true),
    prp1: v.getBigUint64(24, true),
    prp2: v.getBigUint64(32, true),
    cdw10: v.getUint32(40, true),
    cdw11: v.getUint32(44, true),
    cdw12: v.getUint32(48, true),
    cdw13: v.getUint32(52, true),
    cdw14: v.getUint32(56, true),
    cdw15: v.getUint32(60, true),
  };
}

/** Completes the command with `status` (see {@link Status}) instead of success. */
export class CommandError extends Error {
  constructor(
    /** 15-bit status field: SC, SCT, DNR. */
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

/** What a command handler returns: Dword 0 of its completion (default 0). */
export interface CommandResult {
  dw0?: number;
}
