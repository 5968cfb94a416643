/**
 * Guest memory as a device worker thread sees it: its own map table,
 * following the main thread's (every DMA_MAP arrives with a dup of the
 * client's fd, mapped here by this thread's addon instance), with the
 * same rules as on the main thread: zero-copy views of sealed memfds,
 * pread/pwrite for memory that may shrink, and DMA messages (sent by the
 * main thread) for memory without an fd.
 */
import { DmaAccess, type DmaMessenger } from '../dma-access.js';
import { DmaTable, type DmaRegion } from '../dma.js';
import { DeviceError, Errno } from '../errors.js';
import type { DmaSegment } from '../dma.js';

/** A map table that reports device writes to the main thread's dirty log. */
export class WorkerDmaTable extends DmaTable {
  /** (iova, length) pairs written since the last report. */
  private written: number[] = [];
  private reporting = false;

  constructor(
    private readonly report: (ranges: number[]) => void,
    /** This thread's mapping group: the main thread revokes its mappings before ending it. */
    group: number,
  ) {
    // The main thread validated every map against the negotiated limits.
    super({ pageSize: 1, maxMaps: Number.MAX_SAFE_INTEGER }, group);
  }

  /** Logging on (the main thread's page size) or off (0): only the flag matters here. */
  setLogging(pageSize: number): void {
    this.dirtyPageSize = pageSize;
  }

  override logsWrites(): boolean {
    return this.dirtyPageSize !== 0;
  }

  override markDirty(r: DmaRegion, regionOffset: number, length: number): void {
    if (this.dirtyPageSize === 0 || length === 0) return;
    this.written.push(r.iova + regionOffset, length);
    if (!this.reporting) {
      this.reporting = true;
      // One report per turn of this thread's loop.
      setImmediate(() => this.flushDirty());
    }
  }

  /** Sends what was written so far (also before answering "idle", so the main thread's log is complete). */
  flushDirty(): void {
    this.reporting = false;
    if (this.written.length === 0) return;
    const ranges = this.written;
    this.written = [];
    this.report(ranges);
  }
}

/** DMA of a worker thread, gated by the main thread's Bus Master Enable / migration hold flag. */
export class WorkerDmaAccess extends DmaAccess {
  /** The main thread may clear the flag while this thread runs: a region cache asks it again before each answer. */
  protected override readonly recheck: () => boolean;

  constructor(
    table: WorkerDmaTable,
    messenger: DmaMessenger,
    private readonly allowed: () => boolean,
  ) {
    super(table, messenger);
    this.recheck = allowed;
  }

  override accessible(): boolean {
    return this.allowed();
  }

  override sgl(iova: number, length: number, write = false): DmaSegment[] {
    this.checkAccess();
    return super.sgl(iova, length, write);
  }

  protected override checkAccess(): void {
    if (!this.allowed()) throw new DeviceError(Errno.EPERM, 'DMA is not allowed now (Bus Master Enable clear, or held for migration)');
  }
}
