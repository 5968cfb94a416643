/** Bounds checks shared by every region the PCI model serves. */

import { check } from './errors.js';

/**
 * Throws a PciConfigError (errno EINVAL) unless [offset, offset+length) is a
 * valid range of integers within a region of `size` bytes.
 */
export function checkAccess(offset: number, length: number, size: number, what: string): void {
  const ok = Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= size;
  check(ok, `${what} access out of range: offset ${offset}, length ${length}, size ${size}`);
}
