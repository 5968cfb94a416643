/**
 * Little-endian u64 fields as JavaScript numbers: the one rule for where a
 * number stops being exact. Whoever calls says how a value past 2^53-1 is
 * refused (the protocol answers EINVAL, a device its own way).
 */

const TWO_32 = 0x1_0000_0000;
/** Largest high word of a safe integer (2^53 - 1 >> 32). */
const MAX_SAFE_HIGH = 0x1f_ffff;

/** Throws for malformed input, with a message naming what is wrong. */
export type Invalid = (message: string) => never;

/** The default {@link Invalid}: a RangeError. */
export const rangeError: Invalid = (message) => {
  throw new RangeError(message);
};

/** Reads a u64 as a number; `invalid` when above Number.MAX_SAFE_INTEGER. Caller checked bounds. */
export function readU64(buf: Buffer, off: number, invalid: Invalid = rangeError): number {
  const hi = buf.readUInt32LE(off + 4);
  if (hi > MAX_SAFE_HIGH) invalid(`u64 at ${off} exceeds 2^53-1`);
  return hi * TWO_32 + buf.readUInt32LE(off);
}

/** Reads a full-range u64 as a bigint. Caller checked bounds. */
export function readU64Big(buf: Buffer, off: number): bigint {
  return buf.readBigUInt64LE(off);
}

/** Writes a number as u64; RangeError unless it is a safe non-negative integer. */
export function writeU64(buf: Buffer, off: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`u64 value out of range: ${value}`);
  }
  const lo = value % TWO_32;
  buf.writeUInt32LE(lo, off);
  buf.writeUInt32LE((value - lo) / TWO_32, off + 4);
}

/** Writes a bigint as u64 (RangeError outside 0..2^64-1). */
export function writeU64Big(buf: Buffer, off: number, value: bigint): void {
  buf.writeBigUInt64LE(value, off);
}

/** A little-endian u32 from any byte array (hot paths: no DataView, no Buffer method). Caller checked bounds. */
export function u32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/**
 * A u64 from any byte array, without a DataView or a BigInt (for the hot
 * paths that read guest memory): NaN beyond 2^53-1, so that every use of it
 * as an address or a length then fails.
 */
export function u64OrNaN(b: Uint8Array, at: number): number {
  const hi = u32(b, at + 4);
  return hi <= MAX_SAFE_HIGH ? hi * TWO_32 + u32(b, at) : NaN;
}

/** {@link u64OrNaN} through a DataView (where a hot path keeps one over the bytes). */
export function u64OrNaNAt(w: DataView, at: number): number {
  const hi = w.getUint32(at + 4, true);
  return hi <= MAX_SAFE_HIGH ? hi * TWO_32 + w.getUint32(at, true) : NaN;
}
