/** MSI state on top of the config image: enable, vectors, per-vector mask and pending. */

import type { MsiLayout } from './capabilities.js';
import { check } from './errors.js';
import type { ConfigImage } from './image.js';
import { MsiCap } from './regs.js';
import type { MsiState } from './types.js';

/** An MSI message: where to write and what. */
export interface MsiMessage {
  address: bigint;
  data: number;
}

/**
 * Reads and updates the MSI capability registers of a config image. Mask
 * and pending bits exist only with per-vector masking; without it nothing
 * is ever masked. These registers are where MSI mask and pending state
 * lives; deciding when to send a vector is the device's job.
 */
export class MsiFunction {
  /** Wraps the MSI capability placed at `layout.offset` in `img`. */
  constructor(
    private readonly img: ConfigImage,
    /** Where the registers are. */
    readonly layout: MsiLayout,
  ) {}

  /** Whether MSI is enabled. */
  get enabled(): boolean {
    return (this.flags() & MsiCap.FLAGS_ENABLE) !== 0;
  }

  /** Number of vectors software enabled (Multiple Message Enable, clamped to capable). */
  get vectors(): number {
    const mme = (this.flags() & MsiCap.FLAGS_MME_MASK) >> MsiCap.FLAGS_MME_SHIFT;
    return Math.min(1 << mme, this.layout.capableVectors);
  }

  /** Full register state. */
  state(): MsiState {
    const { capableVectors, is64, perVectorMask } = this.layout;
    return {
      enabled: this.enabled,
      capableVectors,
      vectors: this.vectors,
      address: this.address(),
      data: this.img.u16(this.layout.dataOffset),
      is64,
      perVectorMask,
      mask: this.reg(this.layout.maskOffset),
      pending: this.reg(this.layout.pendingOffset),
    };
  }

  /** The message for `vector`: data carries the vector number in its low bits. */
  message(vector: number): MsiMessage {
    this.checkVector(vector);
    const data = this.img.u16(this.layout.dataOffset);
    return { address: this.address(), data: (data & ~(this.vectors - 1)) | vector };
  }

  /** Whether `vector`'s mask bit is set. */
  isMasked(vector: number): boolean {
    this.checkVector(vector);
    return ((this.reg(this.layout.maskOffset) >>> vector) & 1) !== 0;
  }

  /** Whether `vector`'s pending bit is set. */
  isPending(vector: number): boolean {
    this.checkVector(vector);
    return ((this.reg(this.layout.pendingOffset) >>> vector) & 1) !== 0;
  }

  /** Sets or clears `vector`'s pending bit (ignored without per-vector masking). */
  setPending(vector: number, pending: boolean): void {
    this.checkVector(vector);
    const off = this.layout.pendingOffset;
    if (off === undefined) return;
    const bit = (1 << vector) >>> 0;
    const v = this.img.u32(off);
    this.img.setU32(off, pending ? v | bit : v & ~bit);
  }

  /** Message control register. */
  private flags(): number {
    return this.img.u16(this.layout.offset + MsiCap.FLAGS);
  }

  /** 64-bit message address (upper half 0 in the 32-bit form). */
  private address(): bigint {
    const lo = BigInt(this.img.u32(this.layout.offset + MsiCap.ADDRESS_LO));
    const hi = this.layout.is64 ? BigInt(this.img.u32(this.layout.offset + MsiCap.ADDRESS_HI)) : 0n;
    return (hi << 32n) | lo;
  }

  /** A u32 register, or 0 when absent. */
  private reg(offset: number | undefined): number {
    return offset === undefined ? 0 : this.img.u32(offset);
  }

  /** Throws unless `vector` is below the capable count. */
  private checkVector(vector: number): void {
    const n = this.layout.capableVectors;
    check(Number.isInteger(vector) && vector >= 0 && vector < n, `MSI vector ${vector} out of range 0..${n - 1}`);
  }
}
