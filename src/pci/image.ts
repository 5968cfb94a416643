/**
 * A config space image: the bytes plus, for every byte, which bits software
 * may write, which are write-one-to-clear, and which the model itself
 * changes at run time (read-only to software but not constant).
 */
export class ConfigImage {
  /** Current contents. */
  readonly data: Buffer;
  /** Bits software may write. */
  readonly wmask: Buffer;
  /** Bits cleared by writing one. */
  readonly w1c: Buffer;
  /** Read-only bits the model changes (INTx status, MSI pending, ...). */
  readonly dyn: Buffer;

  /** Creates an all-zero, all-read-only image of `size` bytes. */
  constructor(readonly size: number) {
    this.data = Buffer.alloc(size);
    this.wmask = Buffer.alloc(size);
    this.w1c = Buffer.alloc(size);
    this.dyn = Buffer.alloc(size);
  }

  /**
   * Defines a little-endian register of `width` bytes: its reset value, its
   * writable bits, its RW1C bits and its model-changed bits.
   */
  define(offset: number, width: 1 | 2 | 4, value: number, wmask = 0, w1c = 0, dyn = 0): void {
    for (let i = 0; i < width; i++) {
      const shift = 8 * i;
      this.data[offset + i] = (value >>> shift) & 0xff;
      this.wmask[offset + i] = (wmask >>> shift) & 0xff;
      this.w1c[offset + i] = (w1c >>> shift) & 0xff;
      this.dyn[offset + i] = (dyn >>> shift) & 0xff;
    }
  }

  /** Copies read-only bytes (e.g. vendor capability payload) into the image. */
  fill(offset: number, bytes: Uint8Array): void {
    this.data.set(bytes, offset);
  }

  /** Applies a software write of one byte: masked bits set, RW1C bits cleared. */
  writeByte(offset: number, value: number): void {
    const mask = this.wmask[offset]!;
    const old = this.data[offset]!;
    const merged = (old & ~mask) | (value & mask);
    this.data[offset] = merged & ~(value & this.w1c[offset]!) & 0xff;
  }

  /** Reads a little-endian u16 (byte reads, not a Buffer method: every DMA checks the command register). */
  u16(offset: number): number {
    const d = this.data;
    if (!(offset >= 0 && offset + 2 <= d.length)) throw new RangeError(`config offset ${offset} is outside the ${d.length}-byte image`);
    return d[offset] | (d[offset + 1] << 8);
  }

  /** Reads a little-endian u32. */
  u32(offset: number): number {
    const d = this.data;
    if (!(offset >= 0 && offset + 4 <= d.length)) throw new RangeError(`config offset ${offset} is outside the ${d.length}-byte image`);
    return (d[offset] | (d[offset + 1] << 8) | (d[offset + 2] << 16) | (d[offset + 3] << 24)) >>> 0;
  }

  /** Sets model-owned bits of a u16 without touching masks. */
  setU16(offset: number, value: number): void {
    this.data.writeUInt16LE(value & 0xffff, offset);
  }

  /** Sets a u32 without touching masks. */
  setU32(offset: number, value: number): void {
    this.data.writeUInt32LE(value >>> 0, offset);
  }

  /** A copy of the image, masks included. */
  clone(): ConfigImage {
    const c = new ConfigImage(this.size);
    this.data.copy(c.data);
    this.wmask.copy(c.wmask);
    this.w1c.copy(c.w1c);
    this.dyn.copy(c.dyn);
    return c;
  }
}
