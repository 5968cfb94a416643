/**
 * Bounds-checked little-endian primitives over a Buffer. Plain functions, no
 * per-field allocation: decoders call {@link need} once per fixed block and
 * then read with the Buffer methods, which cannot fail after that check.
 *
 * Messages' fixed layouts are declared with {@link defineMessage}. Their
 * u64 fields are JS numbers: one above Number.MAX_SAFE_INTEGER is refused
 * with EINVAL (layout/u64.ts); the only u64 fields allowed the full range
 * are `u64big`, typed `bigint` (the ioeventfd `datamatch`).
 */
import { defineStruct, type Layout, type Struct } from '../layout/struct.js';
import { invalid } from './errors.js';

/**
 * The little-endian u16 at `at`, unchecked (the caller checked the length),
 * for per-message hot paths: a Buffer method (`readUInt16LE`) costs a
 * load-IC call per use in optimized code (V8 does not inline the method's
 * lookup on Buffer's prototype chain); element loads are inlined.
 */
export function loadU16(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}

/** The little-endian u32 at `at`, unchecked (see {@link loadU16}). */
export function loadU32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16)) + b[at + 3] * 0x100_0000;
}

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

/**
 * Declares a message's fixed layout (see layout/struct.ts): malformed input
 * (too short, a u64 past 2^53-1) is EINVAL.
 */
export function defineMessage<T>(name: string, layout: Layout<T>): Struct<T> {
  return defineStruct(name, layout, invalid);
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
