/**
 * Bounds-checked little-endian primitives over a Buffer. Plain functions, no
 * per-field allocation: decoders call {@link need} once per fixed block and
 * then read with the Buffer methods, which cannot fail after that check.
 *
 * u64 fields are JS numbers. A u64 above Number.MAX_SAFE_INTEGER is rejected
 * with EINVAL by {@link readU64}; the only u64 fields allowed the full range
 * use {@link readU64Big} and are typed `bigint` (the ioeventfd `datamatch`).
 */
import { invalid } from './errors.js';

const TWO_32 = 0x1_0000_0000;
/** Largest high word of a safe integer (2^53 - 1 >> 32). */
const MAX_SAFE_HIGH = 0x1f_ffff;

/** Throws EINVAL unless `buf` holds at least `len` bytes. */
export function need(buf: Uint8Array, len: number, what: string): void {
  if (buf.length < len) {
    invalid(`${what}: need ${len} bytes, have ${buf.length}`);
  }
}

/** Throws EINVAL unless `buf` holds exactly `len` bytes. */
export function exact(buf: Uint8Array, len: number, what: string): void {
  if (buf.length !== len) {
    invalid(`${what}: need exactly ${len} bytes, have ${buf.length}`);
  }
}

/** Reads a u64 as a number; EINVAL if above Number.MAX_SAFE_INTEGER. Caller checked bounds. */
export function readU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32LE(off + 4);
  if (hi > MAX_SAFE_HIGH) {
    invalid(`u64 at ${off} exceeds 2^53-1`);
  }
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

/** Allocates a zero-filled buffer (padding and reserved fields stay 0). */
export function alloc(size: number): Buffer {
  return Buffer.alloc(size);
}

/** An empty payload, shared (never write into it). */
export const EMPTY: Buffer = Buffer.alloc(0);

/** Decodes an empty payload: EINVAL if any byte is present. */
export function decodeEmpty(payload: Buffer, what: string): void {
  exact(payload, 0, what);
}

/** EINVAL if `argsz` is below `min`. */
export function checkArgsz(argsz: number, min: number, what: string): void {
  if (argsz < min) invalid(`${what}: argsz ${argsz} below ${min}`);
}
