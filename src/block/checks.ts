/**
 * Argument checks every block backend and device applies the same way, so a
 * bad request from any guest ends in the same typed error.
 */
import { BlockError } from './backend.js';

/** The sector size every capacity is a multiple of. */
export const SECTOR_SIZE = 512;

/**
 * Total byte length of a scatter list. (A Uint8Array's length is its byte
 * length; Node 20's V8 calls out of optimized code for byteLength, not for
 * length, and this runs for every request.)
 */
export function byteLength(buffers: readonly Uint8Array[]): number {
  let n = 0;
  for (let i = 0; i < buffers.length; i++) n += buffers[i].length;
  return n;
}

/**
 * Throws BlockError('ERANGE') unless [offset, offset + length) lies inside
 * [0, size). Offsets and lengths must be non-negative safe integers; a
 * zero-length range is allowed anywhere up to and including `size`.
 */
export function checkRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new BlockError('ERANGE', `bad range: offset ${offset}, length ${length}`);
  }
  if (offset > size || length > size - offset) {
    throw new BlockError('ERANGE', `range ${offset}+${length} is past the end (${size} bytes)`);
  }
}

/** Throws BlockError('ERANGE') unless offset and length are multiples of `blockSize`. */
export function checkAligned(blockSize: number, offset: number, length: number): void {
  if (offset % blockSize !== 0 || length % blockSize !== 0) {
    throw new BlockError('ERANGE', `range ${offset}+${length} is not aligned to ${blockSize} bytes`);
  }
}

/** Throws BlockError('EROFS') for a modifying request to a read-only backend. */
export function checkWritable(readOnly: boolean, what: string): void {
  if (readOnly) throw new BlockError('EROFS', `${what}: the disk is read-only`);
}

/** Throws a TypeError unless `size` is a usable capacity: a positive multiple of 512. */
export function checkCapacity(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE !== 0) {
    throw new TypeError(`block capacity must be a positive multiple of ${SECTOR_SIZE} bytes, got ${size}`);
  }
}
