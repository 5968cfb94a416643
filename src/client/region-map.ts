/**
 * What a client does with the fds a device hands out (GET_REGION_INFO,
 * GET_REGION_IO_FDS): map a region's memory, or close an fd it does not need.
 */
import { check, native } from '../native/index.js';

/** A mapping of device memory; `bytes` reads length 0 after `unmap()`. */
export interface RegionMapping {
  readonly bytes: Uint8Array;
  unmap(): void;
}

/** Maps `size` bytes of a region fd at `offset` (shared, writable). Throws on failure. */
export function mapRegion(fd: number, offset: number, size: number): RegionMapping {
  const m = native.mmap(fd, offset, size, true);
  if (typeof m === 'number') throw new Error(`mmap of region fd at 0x${offset.toString(16)}+0x${size.toString(16)} failed: errno ${-m}`);
  const [buffer, handle] = m;
  return { bytes: new Uint8Array(buffer), unmap: () => check('munmap', native.munmap(handle, buffer)) };
}

/** Closes an fd a device handed out. */
export function closeFd(fd: number): void {
  check('close', native.close(fd));
}
