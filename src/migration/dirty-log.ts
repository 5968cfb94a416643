/**
 * DMA dirty-page logging for one connection (DEVICE_FEATURE
 * DMA_LOGGING_START / STOP / REPORT). The DmaTable keeps one bitmap per
 * region at the logging page size; views and copies that write client
 * memory directly mark it. Writes done with DMA_WRITE messages are the
 * client's own to track. A report converts to the page size the client
 * asks for, and clears what it reported ("read back and clear").
 */
import type { DmaLoggingRange } from '../protocol/device-feature.js';
import type { DmaTable } from '../device/dma.js';
import { DeviceError, Errno } from '../device/errors.js';

/** Page sizes accepted for logging; other powers of two are clamped to these. */
export const MIN_LOG_PAGE = 512;
export const MAX_LOG_PAGE = 1 << 30;

const MAX_IOVA = Number.MAX_SAFE_INTEGER;

function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/** The logging state of one connection. */
export class DirtyLog {
  private ranges: DmaLoggingRange[] | undefined;

  constructor(private readonly table: DmaTable) {}

  /** True while logging. */
  get active(): boolean {
    return this.ranges !== undefined;
  }

  /** The page size in use (0 when off). */
  get pageSize(): number {
    return this.table.dirtyPageSize;
  }

  /**
   * Starts logging. `pageSize` is a hint: a power of two, clamped to
   * [512, 1 GiB]. No ranges means all of IOVA space. Returns the page size
   * chosen. EBUSY if already logging, EINVAL for bad ranges.
   */
  start(pageSize: number, ranges: readonly DmaLoggingRange[]): number {
    if (this.active) throw new DeviceError(Errno.EBUSY, 'DMA logging already started');
    if (!isPow2(pageSize)) throw new DeviceError(Errno.EINVAL, `DMA logging page size ${pageSize} is not a power of two`);
    const page = Math.min(MAX_LOG_PAGE, Math.max(MIN_LOG_PAGE, pageSize));
    const sorted = [...ranges].sort((a, b) => a.iova - b.iova);
    sorted.forEach((r, i) => {
      if (r.length === 0 || r.iova + r.length > MAX_IOVA) throw new DeviceError(Errno.EINVAL, `bad DMA logging range 0x${r.iova.toString(16)}+0x${r.length.toString(16)}`);
      const prev = sorted[i - 1];
      if (prev && prev.iova + prev.length > r.iova) throw new DeviceError(Errno.EINVAL, 'DMA logging ranges overlap');
    });
    this.table.startLogging(page);
    this.ranges = sorted.map((r) => ({ iova: r.iova, length: r.length }));
    return page;
  }

  /** Stops logging; a no-op when not logging. */
  stop(): void {
    if (!this.active) return;
    this.table.stopLogging();
    this.ranges = undefined;
  }

  /** Size in bytes of the bitmap for `length` bytes at `pageSize` (whole u64 words). */
  static bitmapSize(length: number, pageSize: number): number {
    return Math.ceil(Math.ceil(length / pageSize) / 64) * 8;
  }

  /**
   * The dirty bitmap of [iova, iova+length) at `pageSize` (bit i of u64
   * word i/64, little-endian, marks page i), then clears the logged pages
   * that lie wholly inside the range. EINVAL when not logging, for a bad
   * page size, or for a range outside the logged ranges.
   */
  report(iova: number, length: number, pageSize: number): Buffer {
    if (!this.active) throw new DeviceError(Errno.EINVAL, 'DMA logging is not started');
    if (!isPow2(pageSize)) throw new DeviceError(Errno.EINVAL, `report page size ${pageSize} is not a power of two`);
    if (length === 0 || iova + length > MAX_IOVA) throw new DeviceError(Errno.EINVAL, `bad report range 0x${iova.toString(16)}+0x${length.toString(16)}`);
    if (this.ranges!.length > 0 && !this.ranges!.some((r) => iova >= r.iova && iova + length <= r.iova + r.length)) {
      throw new DeviceError(Errno.EINVAL, `report range 0x${iova.toString(16)}+0x${length.toString(16)} is not being logged`);
    }
    const out = Buffer.alloc(DirtyLog.bitmapSize(length, pageSize));
    const lp = this.table.dirtyPageSize;
    const end = iova + length;
    for (const r of this.table.list()) {
      const bits = r.dirty;
      if (!bits || r.iova >= end || r.iova + r.size <= iova) continue;
      const first = Math.floor(Math.max(0, iova - r.iova) / lp);
      const last = Math.floor((Math.min(end, r.iova + r.size) - 1 - r.iova) / lp);
      for (let p = first; p <= last; p++) {
        if ((bits[p >> 3] & (1 << (p & 7))) === 0) continue;
        const a = Math.max(iova, r.iova + p * lp);
        const b = Math.min(end, r.iova + (p + 1) * lp);
        for (let q = Math.floor((a - iova) / pageSize); q <= Math.floor((b - 1 - iova) / pageSize); q++) out[q >> 3] |= 1 << (q & 7);
        // Clear only pages wholly reported: a page straddling the range keeps its bit for the rest.
        if (r.iova + p * lp >= iova && r.iova + (p + 1) * lp <= end) bits[p >> 3] &= ~(1 << (p & 7));
      }
    }
    return out;
  }
}
