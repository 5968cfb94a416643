/**
 * Memory a client lends the device for DMA: a sealed memfd mapped into the
 * client (passed with DMA_MAP so the device maps it too), or plain memory
 * that the device can only reach through DMA_READ / DMA_WRITE messages.
 */
import { FileSeal, native } from '../native/index.js';

/** A piece of client memory. */
export interface GuestMemory {
  readonly bytes: Uint8Array;
  /** memfd backing it; undefined for fd-less memory. */
  readonly fd: number | undefined;
  /** Releases it (closes the memfd). */
  close(): void;
}

/**
 * Allocates `size` bytes of shareable memory: a memfd sealed against
 * shrinking and growing, as QEMU's memory-backend-memfd does by default.
 * The seal is what lets the device map it zero-copy: memory a client could
 * truncate is reached through slower, fault-safe copies instead.
 */
export function sharedMemory(size: number, name = 'muser-guest'): GuestMemory {
  const fd = native.memfd(name, size, true);
  const sealed = native.addSeals(fd, FileSeal.SHRINK | FileSeal.GROW | FileSeal.SEAL);
  if (sealed < 0) {
    native.close(fd);
    throw new Error(`sealing guest memory failed: errno ${-sealed}`);
  }
  const m = native.mmap(fd, 0, size, true);
  if (typeof m === 'number') {
    native.close(fd);
    throw new Error(`mmap of guest memory failed: errno ${-m}`);
  }
  let open = true;
  return {
    bytes: new Uint8Array(m[0]),
    fd,
    close() {
      if (!open) return;
      open = false;
      native.munmap(m[1], m[0]);
      native.close(fd);
    },
  };
}

/** Allocates `size` bytes of private memory the device cannot map. */
export function privateMemory(size: number): GuestMemory {
  return { bytes: new Uint8Array(size), fd: undefined, close() {} };
}
