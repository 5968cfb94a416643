/**
 * The fetch loop's decode of an I/O submission queue entry (NVMe 1.4,
 * 4.2): the fields the I/O path reads, into one scratch object that every
 * command reuses, read as dwords of the queue's view. Nothing is allocated
 * per command.
 */
import type { IoCommand } from './io.js';
import { SQE, SqeFlags } from './layouts.js';

/** The scratch decode of an I/O submission queue entry (one at a time, read only while the command starts). */
export interface ScratchCommand extends IoCommand {
  opcode: number;
  fuse: number;
  psdt: number;
  cid: number;
  nsid: number;
  prp1: number;
  prp2: number;
  cdw10: number;
  cdw11: number;
  cdw12: number;
}

/** A scratch decode, for one fetcher. */
export function scratchCommand(): ScratchCommand {
  return { opcode: 0, fuse: 0, psdt: 0, cid: 0, nsid: 0, prp1: 0, prp2: 0, cdw10: 0, cdw11: 0, cdw12: 0 };
}

/** Where the fields the I/O path reads are in an SQE. */
const { opcode: OPCODE, flags: FLAGS, cid: CID, nsid: NSID, prp1: PRP1, prp2: PRP2, cdw10: CDW10, cdw11: CDW11, cdw12: CDW12 } = SQE.offsets;

/**
 * Decodes the fields the I/O path reads of the entry at `at` of `words`
 * into `out`. A PRP beyond 2^53 rounds, and the PRP checks then refuse it.
 */
export function decodeInto(out: ScratchCommand, words: DataView, at: number): ScratchCommand {
  const flags = words.getUint8(at + FLAGS);
  out.opcode = words.getUint8(at + OPCODE);
  out.fuse = flags & SqeFlags.FUSE_MASK;
  out.psdt = (flags >> SqeFlags.PSDT_SHIFT) & SqeFlags.PSDT_MASK;
  out.cid = words.getUint16(at + CID, true);
  out.nsid = words.getUint32(at + NSID, true);
  out.prp1 = words.getUint32(at + PRP1 + 4, true) * 0x1_0000_0000 + words.getUint32(at + PRP1, true);
  out.prp2 = words.getUint32(at + PRP2 + 4, true) * 0x1_0000_0000 + words.getUint32(at + PRP2, true);
  out.cdw10 = words.getUint32(at + CDW10, true);
  out.cdw11 = words.getUint32(at + CDW11, true);
  out.cdw12 = words.getUint32(at + CDW12, true);
  return out;
}

/** `bytes` as words: the queue's own (cached with its view) when `bytes` is that view. */
export function wordsOf(bytes: Uint8Array, ring: Uint8Array | undefined, ringWords: DataView | undefined): DataView {
  return bytes === ring && ringWords ? ringWords : new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
