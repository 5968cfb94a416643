/**
 * The only view of guest memory the virtqueue code has: small reads and
 * writes of ring structures, zero-copy views of data buffers where the
 * memory allows them, copies otherwise, and pins that keep a mapping alive
 * while asynchronous I/O uses its views. Keeping queue code behind this
 * interface (and not Device or Session) lets it run on a worker thread
 * later, with its own views of the same memory.
 */
import type { DmaAccess, GuestSpan } from './dma-access.js';

export type { GuestSpan } from './dma-access.js';

/** Guest memory as the queue code sees it. Every address is a guest IOVA. */
export interface QueueMemory {
  /**
   * True when [addr, addr+length) is mapped with the rights asked for.
   * Never throws.
   */
  mapped(addr: number, length: number, write: boolean): boolean;
  /**
   * Zero-copy views of the range, or undefined when it cannot be viewed
   * (no fd, or views are not offered for that memory). Never throws for
   * that reason; throws (EFAULT, EPERM, EINVAL) when the range is not mapped.
   */
  views(addr: number, length: number, write: boolean): Uint8Array[] | undefined;
  /**
   * Where the range lies in a zero-copy mapping, without making a view (hot
   * paths index the mapping themselves): true, with `out` set, when all of
   * it is in one such mapping (writable ranges are recorded dirty, as a
   * writable view is); false when it has none or spans mappings. Throws as
   * views() does.
   */
  locate(addr: number, length: number, write: boolean, out: GuestSpan): boolean;
  /**
   * One zero-copy view of the range when it lies in one region that offers
   * views, else undefined (use {@link views} then); throws as views() does
   * when the range is not mapped. Allocates nothing but the view: for
   * per-command paths.
   */
  view(addr: number, length: number, write: boolean): Uint8Array | undefined;
  /** Copies the range out (by mapping or by message). */
  read(addr: number, length: number): Promise<Uint8Array>;
  /** Copies `data` in (by mapping or by message). */
  write(addr: number, data: Uint8Array): Promise<void>;
  /**
   * Keeps the mapping behind the range alive until the returned function is
   * called: an unmap requested meanwhile waits. Use it around asynchronous
   * work that holds views.
   */
  pin(addr: number, length: number): () => void;
  /**
   * True when the device may access guest memory right now (DMA not held
   * by migration, Bus Master Enable set): what every other call checks per
   * access. Queue code that keeps views across calls asks this before
   * using them. Never throws.
   */
  accessible(): boolean;
  /**
   * Records that the device wrote the range through views (for migration's
   * dirty-page log): asynchronous I/O may write long after the views were
   * made, maybe after a dirty report already cleared their pages.
   */
  markDirty(addr: number, length: number): void;
}

/** A {@link QueueMemory} over a device's DMA access (`device.dma`). */
export function dmaQueueMemory(dma: () => DmaAccess): QueueMemory {
  return {
    mapped(addr, length, write) {
      try {
        dma().sgl(addr, length, write);
        return true;
      } catch {
        return false;
      }
    },
    views(addr, length, write) {
      // One translation: throws for unmapped or forbidden ranges (and while
      // DMA is held or Bus Master Enable is clear), undefined for memory
      // without a zero-copy mapping.
      return dma().directViews(addr, length, write);
    },
    locate: (addr, length, write, out) => dma().locate(addr, length, write, out),
    view: (addr, length, write) => dma().directView(addr, length, write),
    read: (addr, length) => dma().read(addr, length),
    write: (addr, data) => dma().write(addr, data),
    pin: (addr, length) => dma().pin(addr, length),
    accessible() {
      try {
        return dma().accessible();
      } catch {
        return false; // no client
      }
    },
    markDirty(addr, length) {
      const d = dma();
      if (!d.dirtyLogging) return;
      try {
        // A writable view marks its pages dirty while logging is on.
        d.views(addr, length, true);
      } catch {
        // Unmapped meanwhile: nothing left to log.
      }
    },
  };
}
