/** The MSI-X table and pending bit array, served from a memory BAR. */

import { checkAccess } from './access.js';
import { check } from './errors.js';
import { MSIX_MAX_VECTORS, MsixEntry } from './regs.js';
import { msixPbaSize } from './validate.js';

/** Writable bits of each byte of a table entry (address bits 0-1 and reserved control bits are read-only 0). */
const ENTRY_WMASK = Buffer.from([0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0]);

/** One decoded MSI-X table entry. */
export interface MsixEntryState {
  /** Message address (64-bit). */
  address: bigint;
  /** Message data. */
  data: number;
  /** The entry's own mask bit. */
  masked: boolean;
}

/**
 * MSI-X table of N 16-byte entries and its PBA, read-only to software. All
 * vectors are masked at reset. This is where MSI-X mask and pending bits
 * live; deciding when to send a vector is the device's job.
 */
export class MsixTable {
  /** Number of vectors. */
  readonly vectors: number;
  /** Table size in bytes. */
  readonly tableSize: number;
  /** PBA size in bytes. */
  readonly pbaSize: number;
  private readonly table: Buffer;
  private readonly pba: Buffer;
  private enabled = false;
  private functionMask = false;
  /**
   * True once the client wrote the table. QEMU keeps its own copy of the
   * table and never writes ours, so until then the entry mask bits (all set
   * at reset) say nothing about what the client wants.
   */
  touched = false;

  /** Creates a table of `vectors` (1..2048) entries, all masked. */
  constructor(vectors: number) {
    check(Number.isInteger(vectors) && vectors >= 1 && vectors <= MSIX_MAX_VECTORS, `MSI-X vectors must be 1..${MSIX_MAX_VECTORS}`);
    this.vectors = vectors;
    this.tableSize = vectors * MsixEntry.SIZE;
    this.pbaSize = msixPbaSize(vectors);
    this.table = Buffer.alloc(this.tableSize);
    this.pba = Buffer.alloc(this.pbaSize);
    this.reset();
  }

  /** Reads `length` bytes of the table at `offset` (relative to the table start). */
  read(offset: number, length: number): Buffer {
    checkAccess(offset, length, this.tableSize, 'MSI-X table');
    return Buffer.from(this.table.subarray(offset, offset + length));
  }

  /**
   * Writes table bytes at `offset`; read-only bits are ignored. Returns the
   * vectors whose entries the write covered (their masks may have changed).
   */
  write(offset: number, data: Uint8Array): { first: number; last: number } {
    checkAccess(offset, data.length, this.tableSize, 'MSI-X table');
    this.touched = true;
    data.forEach((b, i) => this.writeByte(offset + i, b));
    const first = Math.floor(offset / MsixEntry.SIZE);
    return { first, last: Math.floor((offset + Math.max(data.length, 1) - 1) / MsixEntry.SIZE) };
  }

  /** Reads `length` bytes of the PBA at `offset` (relative to the PBA start). */
  readPba(offset: number, length: number): Buffer {
    checkAccess(offset, length, this.pbaSize, 'MSI-X PBA');
    return Buffer.from(this.pba.subarray(offset, offset + length));
  }

  /** The entry's own mask bit. */
  isVectorMasked(vector: number): boolean {
    this.checkVector(vector);
    return (this.table[vector * MsixEntry.SIZE + MsixEntry.VECTOR_CTRL]! & MsixEntry.CTRL_MASKBIT) !== 0;
  }

  /** Whether the vector is masked now: by its entry or by the function mask. */
  isMasked(vector: number): boolean {
    return this.functionMask || this.isVectorMasked(vector);
  }

  /** The vector's pending bit. */
  isPending(vector: number): boolean {
    this.checkVector(vector);
    return (this.pba[vector >> 3]! & (1 << (vector & 7))) !== 0;
  }

  /** Sets or clears the vector's pending bit (no delivery happens here). */
  setPending(vector: number, pending: boolean): void {
    this.checkVector(vector);
    const bit = 1 << (vector & 7);
    const i = vector >> 3;
    this.pba[i] = pending ? this.pba[i]! | bit : this.pba[i]! & ~bit;
  }

  /** Decoded entry of `vector`. */
  entry(vector: number): MsixEntryState {
    this.checkVector(vector);
    const base = vector * MsixEntry.SIZE;
    const lo = BigInt(this.table.readUInt32LE(base + MsixEntry.ADDRESS_LO));
    const hi = BigInt(this.table.readUInt32LE(base + MsixEntry.ADDRESS_HI));
    return { address: (hi << 32n) | lo, data: this.table.readUInt32LE(base + MsixEntry.DATA), masked: this.isVectorMasked(vector) };
  }

  /** Whether MSI-X is enabled (mirrors the capability's control register). */
  get isEnabled(): boolean {
    return this.enabled;
  }

  /** Whether the function mask is set (mirrors the capability's control register). */
  get isFunctionMasked(): boolean {
    return this.functionMask;
  }

  /** Mirrors the capability's enable and function mask bits. */
  setControl(enabled: boolean, functionMask: boolean): void {
    this.enabled = enabled;
    this.functionMask = functionMask;
  }

  /** Back to power-on state: entries zero and masked, nothing pending, disabled. */
  reset(): void {
    this.table.fill(0);
    this.pba.fill(0);
    for (let v = 0; v < this.vectors; v++) this.table[v * MsixEntry.SIZE + MsixEntry.VECTOR_CTRL] = MsixEntry.CTRL_MASKBIT;
    this.enabled = false;
    this.functionMask = false;
    this.touched = false;
  }

  /** Serializes table, PBA and control bits. */
  snapshot(): Buffer {
    const flags = (this.enabled ? 1 : 0) | (this.functionMask ? 2 : 0);
    return Buffer.concat([this.table, this.pba, Buffer.from([flags])]);
  }

  /**
   * Restores a snapshot taken from a table of the same size; nothing fires.
   * @throws PciConfigError if the snapshot has the wrong length.
   */
  restore(buf: Uint8Array): void {
    check(buf.length === this.tableSize + this.pbaSize + 1, `MSI-X snapshot is ${buf.length} bytes, expected ${this.tableSize + this.pbaSize + 1}`);
    this.table.set(buf.subarray(0, this.tableSize));
    this.pba.set(buf.subarray(this.tableSize, this.tableSize + this.pbaSize));
    const flags = buf[buf.length - 1]!;
    this.enabled = (flags & 1) !== 0;
    this.functionMask = (flags & 2) !== 0;
  }

  /** Applies one byte of a table write through the entry write mask. */
  private writeByte(offset: number, value: number): void {
    const mask = ENTRY_WMASK[offset % MsixEntry.SIZE]!;
    this.table[offset] = (this.table[offset]! & ~mask) | (value & mask);
  }

  /** Throws unless `vector` is a valid index. */
  private checkVector(vector: number): void {
    check(Number.isInteger(vector) && vector >= 0 && vector < this.vectors, `MSI-X vector ${vector} out of range 0..${this.vectors - 1}`);
  }
}
