/**
 * What a device uses to reach client memory: zero-copy views where the
 * client shared an fd that cannot shrink, pread/pwrite through the fd where
 * it could, DMA_READ / DMA_WRITE messages where it shared none.
 */
import type { DmaRegion, DmaSegment, DmaTable, DmaTableObserver } from './dma.js';
import { DeviceError, Errno } from './errors.js';
import { DmaMapFlag } from '../protocol/constants.js';
import { native } from '../native/index.js';

/** Sends DMA_READ / DMA_WRITE requests to the client. */
export interface DmaMessenger {
  /** Largest data payload per message (the client's max_data_xfer_size). */
  readonly maxChunk: number;
  read(iova: number, length: number): Promise<Buffer>;
  write(iova: number, data: Uint8Array): Promise<void>;
}

/** Where a range of guest memory lies in a zero-copy mapping (see {@link DmaAccess.locate}); reused by its caller. */
export interface GuestSpan {
  /** The whole mapping of the region holding the range. */
  memory: Uint8Array;
  /** Where the range starts in `memory`. */
  offset: number;
  /** The IOVA of memory[0]: other ranges of the same region lie at their IOVA minus this. */
  start: number;
  /**
   * What other ranges of the region may be reached through `memory` without
   * asking again while nothing can change the DMA state (see the
   * SpanCache in span-cache.ts): DmaMapFlag.READ, and DmaMapFlag.WRITE unless the
   * region's writes are being logged for migration (each must be recorded).
   */
  rights: number;
  /**
   * For memory whose DMA permission can change in the middle of a turn (a
   * worker thread's, gated by a flag the main thread sets): what a cache
   * asks again before each answer it gives. Undefined on the main thread,
   * where the permission changes only between turns.
   */
  recheck: (() => boolean) | undefined;
}

/** A span no range lies in (rights 0): what a cache of spans starts as. */
export function emptySpan(): GuestSpan {
  return { memory: new Uint8Array(0), offset: 0, start: 0, rights: 0, recheck: undefined };
}

/** DMA into the memory of the connected client. */
export class DmaAccess {
  /** directView()'s span, reused. */
  private readonly span: GuestSpan = emptySpan();

  constructor(
    protected readonly table: DmaTable,
    protected readonly messenger: DmaMessenger,
  ) {}

  /**
   * Splits a range into segments, one per DMA region it touches. Throws
   * EFAULT for unmapped bytes, EPERM for a missing right.
   */
  sgl(iova: number, length: number, write = false): DmaSegment[] {
    return this.table.translate(iova, length, write);
  }

  /**
   * Zero-copy views of [iova, iova+length), one per region. Views of
   * writable memory mark it dirty while dirty logging is on. After the client
   * unmaps the region, every view reads length 0. Throws EFAULT when part of
   * the range has no fd (use read/write for that memory).
   */
  views(iova: number, length: number, write = false): Uint8Array[] {
    return this.sgl(iova, length, write).map((s) => this.viewOf(s, write));
  }

  /**
   * Zero-copy views of the range when all of it is mapped zero-copy, else
   * undefined (memory reached by fd or messages). One translation, for hot
   * paths that would otherwise ask isDirect() and then views(). Throws as
   * sgl() does for unmapped or forbidden ranges.
   */
  directViews(iova: number, length: number, write = false): Uint8Array[] | undefined {
    const segs = this.sgl(iova, length, write);
    for (const s of segs) if (!s.region.memory) return undefined;
    return segs.map((s) => this.viewOf(s, write));
  }

  /**
   * Where [iova, iova+length) lies in a zero-copy mapping, without making a
   * view: when the whole range is in one region mapped zero-copy, sets
   * `out.memory` to that region's whole mapping and `out.offset` to where
   * the range starts in it, and returns true (for `write`, the range is
   * recorded dirty as a writable view would be). False when the range is
   * empty, spans regions or its memory has no zero-copy mapping. Throws as
   * sgl() does for unmapped or forbidden ranges (all of the range checked).
   */
  locate(iova: number, length: number, write: boolean, out: GuestSpan): boolean {
    this.checkAccess();
    const r = this.table.regionWithin(iova, length, write);
    const mem = r?.memory;
    if (!mem) return false;
    const at = iova - r.iova;
    if (write) this.table.markDirty(r, at, length);
    out.memory = mem;
    out.offset = at;
    out.start = r.iova;
    out.rights = this.table.logsWrites(r) ? r.prot & DmaMapFlag.READ : r.prot;
    out.recheck = this.recheck;
    return true;
  }

  /**
   * One zero-copy view of [iova, iova+length): {@link locate} as a view,
   * else undefined (use directViews()). For per-command hot paths: it
   * allocates nothing beyond the view.
   */
  directView(iova: number, length: number, write = false): Uint8Array | undefined {
    const span = this.span;
    return this.locate(iova, length, write, span) ? span.memory.subarray(span.offset, span.offset + length) : undefined;
  }

  /** See {@link GuestSpan.recheck}: set by subclasses whose permission can change mid-turn. */
  protected readonly recheck: (() => boolean) | undefined = undefined;

  /** Throws when DMA is not allowed now (subclasses gate it; their sgl() asks this first). */
  protected checkAccess(): void {}

  /** One zero-copy view; throws EFAULT when the range spans regions. */
  view(iova: number, length: number, write = false): Uint8Array {
    const segs = this.sgl(iova, length, write);
    if (segs.length !== 1) throw new DeviceError(Errno.EFAULT, `DMA range 0x${iova.toString(16)}+${length} spans ${segs.length} regions`);
    return this.viewOf(segs[0], write);
  }

  /**
   * Follows the client's DMA map table (see {@link DmaTableObserver}); for
   * code that shares the client's memory with worker threads. Returns an
   * unsubscribe function.
   */
  observe(observer: DmaTableObserver): () => void {
    return this.table.observe(observer);
  }

  /** Regions mapped now, in IOVA order (read only). */
  mappedRegions(): readonly DmaRegion[] {
    return this.table.list();
  }

  /** Records that something (a worker thread) wrote [iova, iova+length), for the dirty-page log. */
  markDirty(iova: number, length: number): void {
    this.table.markDirtyRange(iova, length);
  }

  /** Pins a whole region (see {@link pin}), whatever its rights; for a region a worker thread mapped too. */
  pinRegion(region: DmaRegion): () => void {
    return this.table.pinRegion(region);
  }

  /**
   * Revokes the pinned writable regions' memory from under the views handed
   * out so far: each gets a new mapping of the same pages, the old views
   * cover scratch memory (for I/O a reset abandoned that does not end in
   * time). Returns the regions revoked, those that could not be, and the
   * function that frees the scratch once that I/O has ended.
   */
  revokePinned(): ReturnType<DmaTable['revokePinned']> {
    return this.table.revokePinned();
  }

  /** True when accesses are allowed now (subclasses gate them); never throws. */
  accessible(): boolean {
    return true;
  }

  /** True while migration's dirty-page logging is on (writes through views are then recorded). */
  get dirtyLogging(): boolean {
    return this.table.dirtyPageSize > 0;
  }

  /** The dirty-page log's page size, 0 while logging is off. */
  get dirtyPageSize(): number {
    return this.table.dirtyPageSize;
  }

  /** True when the whole range is mapped zero-copy (views() will succeed). */
  isDirect(iova: number, length: number): boolean {
    try {
      return this.table.translate(iova, length, false).every((s) => s.region.memory !== undefined);
    } catch {
      return false;
    }
  }

  /**
   * Keeps the memory under [iova, iova+length) mapped until the returned
   * function is called: a DMA_UNMAP meanwhile is answered only after it.
   * Pin views that asynchronous I/O writes or reads; release when it ends.
   */
  pin(iova: number, length: number): () => void {
    return this.table.pin(iova, length);
  }

  /** Copies client memory out; uses DMA_READ messages where there is no fd. */
  async read(iova: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    let at = 0;
    for (const s of this.sgl(iova, length, false)) {
      const mem = s.region.memory;
      if (mem) out.set(mem.subarray(s.regionOffset, s.regionOffset + s.length), at);
      else if (s.region.fd !== undefined) readByFd(s, out.subarray(at, at + s.length));
      else await this.readByMessage(s.iova, s.length, out, at);
      at += s.length;
    }
    return out;
  }

  /** Copies into client memory; uses DMA_WRITE messages where there is no fd. */
  async write(iova: number, data: Uint8Array): Promise<void> {
    let at = 0;
    for (const s of this.sgl(iova, data.length, true)) {
      const piece = data.subarray(at, at + s.length);
      if (s.region.memory) {
        s.region.memory.set(piece, s.regionOffset);
        this.table.markDirty(s.region, s.regionOffset, s.length);
      } else if (s.region.fd !== undefined) {
        writeByFd(s, piece);
        this.table.markDirty(s.region, s.regionOffset, s.length);
      } else {
        await this.writeByMessage(s.iova, piece);
      }
      at += s.length;
    }
  }

  private viewOf(s: DmaSegment, write: boolean): Uint8Array {
    const mem = s.region.memory;
    if (!mem) {
      const why = s.region.fd !== undefined ? 'its fd may shrink (no F_SEAL_SHRINK), so it is not mapped' : 'has no fd';
      throw new DeviceError(Errno.EFAULT, `DMA region at 0x${s.region.iova.toString(16)} ${why}: use read()/write()`);
    }
    if (write) this.table.markDirty(s.region, s.regionOffset, s.length);
    return mem.subarray(s.regionOffset, s.regionOffset + s.length);
  }

  /** Reads [iova, iova+length) into `out` at `at` with DMA_READ messages of at most maxChunk bytes. */
  protected async readByMessage(iova: number, length: number, out: Buffer, at: number): Promise<void> {
    const chunk = this.messenger.maxChunk;
    for (let done = 0; done < length; done += chunk) {
      const n = Math.min(chunk, length - done);
      const data = await this.messenger.read(iova + done, n);
      if (data.length !== n) throw new DeviceError(Errno.EIO, `DMA_READ returned ${data.length} bytes, wanted ${n}`);
      out.set(data, at + done);
    }
  }

  /** Writes `data` at `iova` with DMA_WRITE messages of at most maxChunk bytes. */
  protected async writeByMessage(iova: number, data: Uint8Array): Promise<void> {
    const chunk = this.messenger.maxChunk;
    for (let done = 0; done < data.length; done += chunk) {
      await this.messenger.write(iova + done, data.subarray(done, done + chunk));
    }
  }
}

/**
 * Reads a segment of memory that may shrink through its fd: where the file
 * got shorter than the region, EFAULT instead of the SIGBUS a mapping gives.
 */
function readByFd(s: DmaSegment, out: Uint8Array): void {
  const n = native.pread(s.region.fd!, out, s.region.offset + s.regionOffset);
  if (n !== out.length) throw shrunk(s, n);
}

/** Writes a segment through its fd; never past the end of the file (that would grow it). */
function writeByFd(s: DmaSegment, data: Uint8Array): void {
  const at = s.region.offset + s.regionOffset;
  const size = native.fdSize(s.region.fd!);
  if (size < at + data.length) throw shrunk(s, size);
  const n = native.pwrite(s.region.fd!, data, at);
  if (n !== data.length) throw shrunk(s, n);
}

function shrunk(s: DmaSegment, rc: number): DeviceError {
  const what = rc < 0 ? `errno ${-rc}` : 'the client shrank its file';
  return new DeviceError(Errno.EFAULT, `DMA at 0x${s.iova.toString(16)}+${s.length} failed: ${what}`);
}
