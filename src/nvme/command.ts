/**
 * A submission queue entry as the controller reads it (NVMe 1.4, 4.2), and
 * the typed failure a command handler throws to complete a command with a
 * status other than success.
 */
import { SQE, SqeFlags } from './layouts.js';

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
  if (b.length < SQE.size) throw new RangeError(`a submission queue entry is ${SQE.size} bytes, got ${b.length}`);
  const e = SQE.read(Buffer.from(b.buffer, b.byteOffset, SQE.size), 0);
  return {
    opcode: e.opcode,
    fuse: e.flags & SqeFlags.FUSE_MASK,
    psdt: (e.flags >> SqeFlags.PSDT_SHIFT) & SqeFlags.PSDT_MASK,
    cid: e.cid,
    nsid: e.nsid,
    prp1: e.prp1,
    prp2: e.prp2,
    cdw10: e.cdw10,
    cdw11: e.cdw11,
    cdw12: e.cdw12,
    cdw13: e.cdw13,
    cdw14: e.cdw14,
    cdw15: e.cdw15,
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
