/**
 * BAR0 of the controller (NVMe 1.4, 3.1) as a register table: CAP, VS,
 * INTMS / INTMC, CC, CSTS, AQA, ASQ, ACQ, CMBLOC and CMBSZ hold stored
 * values that reads return as they are; what a write to CC or a doorbell
 * means is the controller's (the hooks). Accesses follow the register DSL's
 * rules (device/registers.ts): naturally aligned, 1 to 8 bytes, no wider
 * than the register; others are refused with EINVAL.
 *
 * The doorbells (from 0x1000, a dword each) are served beside the table,
 * not as one of its windows: a doorbell write is the hottest access of the
 * BAR, and the controller decodes it with one subtraction and one shift.
 */
import { defineRegisters, type RegisterMap } from '../device/registers.js';
import { Cc, NvmeReg } from './constants.js';
import { DOORBELL_STRIDE, DOORBELL_STRIDE_FIELD } from './shadow.js';

const NVME_VERSION = 0x00010400;
const TIMEOUT_UNITS = 20; // CAP.TO: 10 s in 500 ms units
/** CC bits the host may set (EN, CSS, MPS, AMS, SHN, IOSQES, IOCQES). */
export const CC_WRITABLE = 0x00fffff1;
/** AQA bits: ASQS and ACQS. */
export const AQA_WRITABLE = 0x0fff0fff;

/** What writes to BAR0 set in motion. */
export interface Bar0Hooks {
  /** CC was written: `value` now stored, `before` the value it replaced. */
  cc(value: number, before: number): void;
  /** Doorbell `index` (2y: SQ y tail, 2y+1: CQ y head) was written. */
  doorbell(index: number, value: number): void;
  /** CSTS was stored (whether doorbells count may have changed). */
  csts(): void;
}

/** CAP: MQES, CQR, TO, DSTRD, CSS (NVM), MPSMIN = MPSMAX = 4 KiB. */
export function capability(maxQueueEntries: number): bigint {
  const mqes = BigInt(maxQueueEntries - 1);
  return mqes | (1n << 16n) | (BigInt(TIMEOUT_UNITS) << 24n) | (BigInt(DOORBELL_STRIDE_FIELD) << 32n) | (1n << 37n);
}

/** The registers of BAR0 and its doorbells. */
export class Bar0 {
  private readonly map: RegisterMap<undefined>;

  constructor(maxQueueEntries: number, hooks: Bar0Hooks) {
    const map = defineRegisters<undefined>([
      { name: 'CAP', offset: NvmeReg.CAP, width: 8, access: 'ro', reset: capability(maxQueueEntries) },
      { name: 'VS', offset: NvmeReg.VS, width: 4, access: 'ro', reset: NVME_VERSION },
      // INTMS and INTMC both read the interrupt mask; writing 1s sets (INTMS) or clears (INTMC) its bits.
      { name: 'INTMS', offset: NvmeReg.INTMS, width: 4, access: 'ro' },
      { name: 'INTMS.set', offset: NvmeReg.INTMS, width: 4, access: 'wo', write: (v) => this.setMask((this.intms | v) >>> 0) },
      { name: 'INTMC', offset: NvmeReg.INTMC, width: 4, access: 'ro' },
      { name: 'INTMC.clear', offset: NvmeReg.INTMC, width: 4, access: 'wo', write: (v) => this.setMask((this.intms & ~v) >>> 0) },
      // The CC/CSTS machine acts on the change from the CC it saw last.
      { name: 'CC', offset: NvmeReg.CC, width: 4, writable: CC_WRITABLE, write: (v) => this.ccWritten(v) },
      { name: 'CSTS', offset: NvmeReg.CSTS, width: 4, access: 'ro' },
      { name: 'AQA', offset: NvmeReg.AQA, width: 4, writable: AQA_WRITABLE },
      { name: 'ASQ', offset: NvmeReg.ASQ, width: 8 },
      { name: 'ACQ', offset: NvmeReg.ACQ, width: 8 },
      { name: 'CMBLOC', offset: NvmeReg.CMBLOC, width: 4, access: 'ro' },
      { name: 'CMBSZ', offset: NvmeReg.CMBSZ, width: 4, access: 'ro' },
    ]);
    this.map = map;
    this.hooks = hooks;
  }

  private readonly hooks: Bar0Hooks;
  /** CC as the CC/CSTS machine last saw it (what a write changes from). */
  private ccSeen = 0;

  private ccWritten(v: number): void {
    const before = this.ccSeen;
    this.ccSeen = v;
    this.hooks.cc(v, before);
  }

  get cap(): bigint {
    return this.map.get64('CAP');
  }

  get cc(): number {
    return this.map.get('CC');
  }

  set cc(v: number) {
    this.ccSeen = (v & CC_WRITABLE) >>> 0;
    this.map.set('CC', this.ccSeen);
  }

  get csts(): number {
    return this.map.get('CSTS');
  }

  set csts(v: number) {
    this.map.set('CSTS', v);
    this.hooks.csts();
  }

  get aqa(): number {
    return this.map.get('AQA');
  }

  set aqa(v: number) {
    this.map.set('AQA', v & AQA_WRITABLE);
  }

  get asq(): bigint {
    return this.map.get64('ASQ');
  }

  set asq(v: bigint) {
    this.map.set('ASQ', v);
  }

  get acq(): bigint {
    return this.map.get64('ACQ');
  }

  set acq(v: bigint) {
    this.map.set('ACQ', v);
  }

  /** The interrupt mask (INTMS / INTMC). */
  get intms(): number {
    return this.map.get('INTMS');
  }

  set intms(v: number) {
    this.setMask(v >>> 0);
  }

  private setMask(v: number): void {
    this.map.set('INTMS', v);
    this.map.set('INTMC', v);
  }

  /** Back to the reset values. */
  reset(): void {
    this.map.reset();
    this.ccSeen = 0;
    this.hooks.csts();
  }

  /** Reads `length` bytes of BAR0 at `offset`; doorbells and reserved space read as zero. */
  read(offset: number, length: number): Uint8Array {
    if (offset >= NvmeReg.DOORBELLS) return new Uint8Array(length);
    return this.map.read(offset, length, undefined) as Uint8Array; // no hook here waits
  }

  /** A host write to BAR0. */
  write(offset: number, data: Uint8Array): void {
    if (offset >= NvmeReg.DOORBELLS) {
      if (data.length !== 4 || (offset - NvmeReg.DOORBELLS) % DOORBELL_STRIDE !== 0) return;
      const value = data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24);
      this.hooks.doorbell((offset - NvmeReg.DOORBELLS) / DOORBELL_STRIDE, value >>> 0);
      return;
    }
    // The admin queue's registers are read-only while the controller is enabled.
    if (this.cc & Cc.EN && offset < NvmeReg.CMBLOC && offset + data.length > NvmeReg.AQA) return;
    void this.map.write(offset, data, undefined);
  }
}
