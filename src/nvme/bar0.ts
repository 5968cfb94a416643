/**
 * BAR0 of the controller (NVMe 1.4, 3.1): CAP, VS, INTMS / INTMC, CC, CSTS,
 * AQA, ASQ, ACQ, and the doorbells from 0x1000. Registers are served a
 * dword at a time; what a write to CC or a doorbell means is the
 * controller's (the hooks).
 */
import { NvmeReg } from './constants.js';
import { DOORBELL_STRIDE, DOORBELL_STRIDE_FIELD } from './shadow.js';

const NVME_VERSION = 0x00010400;
const TIMEOUT_UNITS = 20; // CAP.TO: 10 s in 500 ms units

/** What writes to BAR0 set in motion. */
export interface Bar0Hooks {
  /** CC was written (the value as written). */
  cc(value: number): void;
  /** Doorbell `index` (2y: SQ y tail, 2y+1: CQ y head) was written. */
  doorbell(index: number, value: number): void;
}

/** The stored registers of BAR0. */
export class Bar0 {
  cc = 0;
  csts = 0;
  aqa = 0;
  asq = 0n;
  acq = 0n;
  intms = 0;

  constructor(
    private readonly maxQueueEntries: number,
    private readonly hooks: Bar0Hooks,
  ) {}

  /** CAP: MQES, CQR, TO, DSTRD, CSS (NVM), MPSMIN = MPSMAX = 4 KiB. */
  get cap(): bigint {
    const mqes = BigInt(this.maxQueueEntries - 1);
    return mqes | (1n << 16n) | (BigInt(TIMEOUT_UNITS) << 24n) | (BigInt(DOORBELL_STRIDE_FIELD) << 32n) | (1n << 37n);
  }

  /** Back to the reset values. */
  reset(): void {
    this.cc = this.csts = this.aqa = this.intms = 0;
    this.asq = this.acq = 0n;
  }

  /** Reads `length` bytes of BAR0 at `offset`. */
  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    if (offset >= 0x40) return out; // doorbells and reserved space read as zero
    const img = Buffer.alloc(0x48);
    img.writeBigUInt64LE(this.cap, NvmeReg.CAP);
    img.writeUInt32LE(NVME_VERSION, NvmeReg.VS);
    img.writeUInt32LE(this.intms, NvmeReg.INTMS);
    img.writeUInt32LE(this.intms, NvmeReg.INTMC);
    img.writeUInt32LE(this.cc, NvmeReg.CC);
    img.writeUInt32LE(this.csts, NvmeReg.CSTS);
    img.writeUInt32LE(this.aqa, NvmeReg.AQA);
    img.writeBigUInt64LE(this.asq, NvmeReg.ASQ);
    img.writeBigUInt64LE(this.acq, NvmeReg.ACQ);
    img.copy(out, 0, offset, Math.min(img.length, offset + length));
    return out;
  }

  /** A host write to BAR0. */
  write(offset: number, data: Uint8Array): void {
    if (offset >= NvmeReg.DOORBELLS) {
      if (data.length !== 4 || (offset - NvmeReg.DOORBELLS) % DOORBELL_STRIDE !== 0) return;
      const value = data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24);
      this.hooks.doorbell((offset - NvmeReg.DOORBELLS) / DOORBELL_STRIDE, value >>> 0);
      return;
    }
    // Registers are served a dword at a time; narrower writes merge into the current value.
    for (let at = offset & ~3; at < offset + data.length; at += 4) {
      const cur = this.read(at, 4);
      for (let i = 0; i < 4; i++) {
        const src = at + i - offset;
        if (src >= 0 && src < data.length) cur[i] = data[src];
      }
      this.writeDword(at, cur.readUInt32LE(0));
    }
  }

  private writeDword(offset: number, v: number): void {
    const enabled = (this.cc & 1) !== 0;
    switch (offset) {
      case NvmeReg.INTMS:
        this.intms = (this.intms | v) >>> 0;
        return;
      case NvmeReg.INTMC:
        this.intms = (this.intms & ~v) >>> 0;
        return;
      case NvmeReg.CC:
        this.hooks.cc(v >>> 0);
        return;
      case NvmeReg.AQA:
        if (!enabled) this.aqa = v & 0x0fff0fff;
        return;
      case NvmeReg.ASQ:
      case NvmeReg.ASQ + 4:
        if (!enabled) this.asq = setHalf(this.asq, offset - NvmeReg.ASQ, v);
        return;
      case NvmeReg.ACQ:
      case NvmeReg.ACQ + 4:
        if (!enabled) this.acq = setHalf(this.acq, offset - NvmeReg.ACQ, v);
        return;
      default:
        return; // read-only or reserved
    }
  }
}

function setHalf(v: bigint, half: number, dword: number): bigint {
  const d = BigInt(dword >>> 0);
  return half === 0 ? (v & ~0xffffffffn) | d : (v & 0xffffffffn) | (d << 32n);
}
