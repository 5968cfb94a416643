/**
 * The client's DMA regions as seen by one connection: a sorted, non-overlapping
 * table of IOVA ranges. Fd-backed ones that cannot shrink are mapped
 * zero-copy into this process; those that could (a truncated file would
 * SIGBUS the process on access) keep their fd for pread/pwrite.
 */
import { check, FileSeal, native, type MapHandle } from '../native/index.js';
import { DmaMapFlag } from '../protocol/constants.js';
import { DeviceError, Errno } from './errors.js';

/** One region of client memory. */
export interface DmaRegion {
  readonly iova: number;
  readonly size: number;
  /** Offset of the region in the client's fd (0 when fd-less). */
  readonly offset: number;
  /** DmaMapFlag.READ | WRITE as granted by the client. */
  readonly prot: number;
  /**
   * Whole-region zero-copy view when the client sent an fd that cannot
   * shrink (sealed with F_SEAL_SHRINK); undefined otherwise. Replaced (with
   * `mapping`) when the region is revoked (see DmaTable.revokePinned).
   */
  memory: Uint8Array | undefined;
  /**
   * The client's fd, kept unmapped, when it may shrink under a mapping
   * (truncation would SIGBUS the whole process): reached by pread/pwrite.
   */
  readonly fd: number | undefined;
  /** Dirty bitmap (one bit per page of `dirtyPageSize`) while logging. */
  dirty: Uint8Array | undefined;
  mapping: { buffer: ArrayBuffer; handle: MapHandle } | undefined;
  /** Pins held by asynchronous I/O on views of this region (see DmaTable.pin). */
  pins: number;
  /** Set once removed while pinned: the unmap waits for the last unpin. */
  unmapped: Promise<void> | undefined;
  /** Resolves `unmapped` (runs the deferred unmap). */
  finishUnmap: (() => void) | undefined;
}

/** A contiguous piece of a translated range. */
export interface DmaSegment {
  readonly iova: number;
  readonly length: number;
  readonly region: DmaRegion;
  /** Offset of the piece inside its region. */
  readonly regionOffset: number;
}

/** Limits negotiated with the client. */
export interface DmaLimits {
  /** Page size DMA regions must be aligned to. */
  pageSize: number;
  /** Most regions the client may have mapped at once. */
  maxMaps: number;
}

const MAX_IOVA = Number.MAX_SAFE_INTEGER;

/** Throws EINVAL for a range no DMA can cover (not integers, negative, past the largest IOVA). */
function checkDmaRange(iova: number, length: number): void {
  if (!Number.isSafeInteger(iova) || !Number.isSafeInteger(length) || length < 0 || iova + length > MAX_IOVA) {
    throw new DeviceError(Errno.EINVAL, `bad DMA range 0x${iova.toString(16)}+${length}`);
  }
}
/**
 * Most unmapped (shrinkable) fds one connection may make us keep open: fds
 * are a process-wide resource, and other clients need them too.
 */
export const MAX_KEPT_DMA_FDS = 1024;

/**
 * Told of every change to a DMA table, synchronously: how memory shared
 * with worker threads follows the connection's maps.
 */
export interface DmaTableObserver {
  /**
   * A region was added. `fd` is the client's fd (or undefined when it sent
   * none), open only for the duration of the call: dup it to keep it.
   */
  added(region: DmaRegion, fd: number | undefined): void;
  /**
   * A region was taken out of the table. Pins taken on it (DmaAccess.pin,
   * DmaAccess.pinRegion) defer its unmap, and the DMA_UNMAP reply, until
   * released.
   */
  removed(region: DmaRegion): void;
  /** Dirty-page logging started with `pageSize`, or stopped (0). */
  logging?(pageSize: number): void;
  /**
   * A dirty-page report is about to be made: resolve once writes made
   * elsewhere (worker threads) so far are recorded in this table.
   */
  sync?(): Promise<void>;
}

/** The DMA map table of one connection. */
export class DmaTable {
  private regions: DmaRegion[] = [];
  private readonly observers = new Set<DmaTableObserver>();
  /** Page size for dirty bitmaps while logging is on; 0 when off. */
  dirtyPageSize = 0;
  /** Regions holding an unmapped fd (see MAX_KEPT_DMA_FDS). */
  private keptFds = 0;
  /** Regions taken out of the table whose unmap waits for their last pin. */
  private readonly lingering = new Set<DmaRegion>();

  constructor(
    private readonly limits: DmaLimits,
    /** Non-zero: the group its mappings are made in (native.mmapRevokeGroup revokes them from any thread). */
    private readonly mappingGroup = 0,
  ) {}

  /** Sets the page size regions must be aligned to (after negotiation). */
  setPageSize(pageSize: number): void {
    this.limits.pageSize = pageSize;
  }

  /** Number of mapped regions. */
  get count(): number {
    return this.regions.length;
  }

  /** All regions in IOVA order (read-only use). */
  list(): readonly DmaRegion[] {
    return this.regions;
  }

  /**
   * Adds a region. Takes ownership of `fd` (closed after mapping, kept
   * unmapped when its file may shrink, closed when the request is refused). Throws DeviceError with the errno to reply.
   */
  add(iova: number, size: number, offset: number, prot: number, fd: number | undefined): DmaRegion {
    let region: DmaRegion | undefined;
    try {
      this.validate(iova, size, offset, prot, fd);
      if (fd !== undefined && this.keptFds >= MAX_KEPT_DMA_FDS && !cannotShrink(fd)) {
        throw new DeviceError(Errno.ENOSPC, `at most ${MAX_KEPT_DMA_FDS} DMA regions whose fd may shrink (seal them with F_SEAL_SHRINK)`);
      }
      region = makeRegion(iova, size, offset, prot, fd, this.dirtyPageSize, this.mappingGroup);
      this.regions.splice(this.insertionIndex(iova), 0, region);
      if (region.fd !== undefined) this.keptFds++;
      for (const o of this.observers) o.added(region, fd);
      return region;
    } finally {
      if (fd !== undefined && region?.fd !== fd) native.close(fd);
    }
  }

  /**
   * Removes the region that exactly matches [iova, iova+size). Returns it;
   * its memory is unmapped (every view of it reads length 0 afterwards).
   */
  remove(iova: number, size: number): DmaRegion {
    const i = this.indexOf(iova);
    const r = i >= 0 ? this.regions[i] : undefined;
    if (!r || r.size !== size) throw new DeviceError(Errno.ENOENT, `no DMA region at 0x${iova.toString(16)}+0x${size.toString(16)}`);
    this.regions.splice(i, 1);
    if (r.fd !== undefined) this.keptFds--;
    for (const o of this.observers) o.removed(r);
    this.retire(r);
    return r;
  }

  /**
   * Before a dirty-page report: resolves once every observer recorded the
   * writes it knows of; undefined (nothing to wait for) when none has any.
   */
  syncWriters(): Promise<void> | undefined {
    const waits: Promise<void>[] = [];
    for (const o of this.observers) if (o.sync) waits.push(o.sync());
    return waits.length === 0 ? undefined : Promise.all(waits).then(() => undefined);
  }

  /**
   * Subscribes to additions and removals; returns an unsubscribe function.
   * The observer is not told of regions already in the table (see list()).
   */
  observe(observer: DmaTableObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
  }

  /** Removes every region; returns them (pinned ones unmap later, see {@link whenUnmapped}). */
  clear(): DmaRegion[] {
    const removed = this.regions;
    for (const r of removed) {
      for (const o of this.observers) o.removed(r);
      this.retire(r);
    }
    this.regions = [];
    this.keptFds = 0;
    return removed;
  }

  /**
   * Pins the regions under [iova, iova+length): until the returned function
   * is called, removing them takes them out of the table at once but defers
   * their unmap, so views handed to asynchronous I/O (the libuv threadpool)
   * never point at unmapped memory. Release is idempotent.
   */
  pin(iova: number, length: number): () => void {
    const segs = this.translate(iova, length, false);
    // Nearly always one region: spare the Set.
    const regions = segs.length === 1 ? [segs[0].region] : [...new Set(segs.map((s) => s.region))];
    for (const r of regions) r.pins++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const r of regions) if (--r.pins === 0) r.finishUnmap?.();
    };
  }

  /** Pins one whole region, whatever its rights (see {@link pin}). */
  pinRegion(r: DmaRegion): () => void {
    r.pins++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--r.pins === 0) r.finishUnmap?.();
    };
  }

  /** Resolves once a removed region is really unmapped; undefined when it already is. */
  whenUnmapped(r: DmaRegion): Promise<void> | undefined {
    return r.unmapped;
  }

  /**
   * Takes the memory of every pinned writable region (in the table, or
   * taken out and waiting for its last unpin) out from under the views
   * handed out so far: the region gets a new mapping of the same pages, and
   * the old views now cover scratch memory, so I/O still writing through
   * them (a read on the thread pool that a reset abandoned) never reaches
   * guest memory. For when such I/O does not end in time. Views taken
   * afterwards are of the new mapping. Returns the regions revoked, errors for those that could not be (their
   * memory does not allow it), and a function that frees the scratch
   * memory: call it once the I/O holding the old views has ended.
   */
  revokePinned(): { revoked: number; failed: string[]; release: () => void } {
    const old: { buffer: ArrayBuffer; handle: MapHandle }[] = [];
    const failed: string[] = [];
    for (const r of [...this.regions, ...this.lingering]) {
      if (r.pins === 0 || !r.mapping || !(r.prot & DmaMapFlag.WRITE)) continue;
      const m = native.mmapRevoke(r.mapping.handle);
      if (typeof m === 'number') {
        failed.push(`DMA region at 0x${r.iova.toString(16)}: errno ${-m}`);
        continue;
      }
      old.push(r.mapping);
      r.mapping = { buffer: m[0], handle: m[1] };
      r.memory = new Uint8Array(m[0]);
    }
    let released = false;
    return {
      revoked: old.length,
      failed,
      release: () => {
        if (released) return;
        released = true;
        // Views of the scratch read length 0 from here on.
        for (const m of old) native.munmap(m.handle, m.buffer);
      },
    };
  }

  /**
   * Splits [iova, iova+length) into per-region segments. Throws EFAULT when
   * any byte is not mapped, EPERM when the access needs a right not granted.
   */
  translate(iova: number, length: number, write: boolean): DmaSegment[] {
    checkDmaRange(iova, length);
    const out: DmaSegment[] = [];
    let at = iova;
    const end = iova + length;
    while (at < end) {
      const r = this.allowedRegionAt(at, write);
      const take = Math.min(end, r.iova + r.size) - at;
      out.push({ iova: at, length: take, region: r, regionOffset: at - r.iova });
      at += take;
    }
    return out;
  }

  /**
   * The region holding all of [iova, iova+length), checked as
   * {@link translate} checks it (the same errors), without allocating: for
   * per-command hot paths. Undefined when the range is empty or goes on
   * into another region (all of it checked: use translate() for its pieces).
   */
  regionWithin(iova: number, length: number, write: boolean): DmaRegion | undefined {
    checkDmaRange(iova, length);
    if (length === 0) return undefined;
    const r = this.allowedRegionAt(iova, write);
    if (iova + length <= r.iova + r.size) return r;
    this.translate(iova, length, write);
    return undefined;
  }

  /** The region at `at`, which must be mapped with the right asked for (EFAULT, EPERM). */
  private allowedRegionAt(at: number, write: boolean): DmaRegion {
    const r = this.regionAt(at);
    if (!r) throw new DeviceError(Errno.EFAULT, `DMA address 0x${at.toString(16)} is not mapped`);
    if (!(r.prot & (write ? DmaMapFlag.WRITE : DmaMapFlag.READ))) {
      throw new DeviceError(Errno.EPERM, `DMA region at 0x${r.iova.toString(16)} is not ${write ? 'writable' : 'readable'}`);
    }
    return r;
  }

  /** Whether device writes to `r` are being logged now (each must then be recorded with markDirty). */
  logsWrites(r: DmaRegion): boolean {
    return r.dirty !== undefined;
  }

  /** Records a device write to [regionOffset, +length) of `r` while logging. */
  markDirty(r: DmaRegion, regionOffset: number, length: number): void {
    if (!r.dirty || length === 0) return;
    const first = Math.floor(regionOffset / this.dirtyPageSize);
    const last = Math.floor((regionOffset + length - 1) / this.dirtyPageSize);
    for (let p = first; p <= last; p++) r.dirty[p >> 3] |= 1 << (p & 7);
  }

  /** Starts dirty logging with `pageSize` on every current and future region. */
  startLogging(pageSize: number): void {
    this.dirtyPageSize = pageSize;
    for (const r of this.regions) r.dirty = dirtyBitmap(r.size, pageSize);
    for (const o of this.observers) o.logging?.(pageSize);
  }

  /** Stops dirty logging. */
  stopLogging(): void {
    this.dirtyPageSize = 0;
    for (const r of this.regions) r.dirty = undefined;
    for (const o of this.observers) o.logging?.(0);
  }

  /** Records a write to [iova, iova+length) while logging; unmapped parts are skipped. */
  markDirtyRange(iova: number, length: number): void {
    if (this.dirtyPageSize === 0 || !Number.isSafeInteger(iova) || !Number.isSafeInteger(length)) return;
    const end = iova + length;
    let at = iova;
    while (at < end) {
      const r = this.regionAt(at);
      if (!r) {
        // Skip to the next region (or stop): the range may straddle a hole.
        const next = this.regions.find((x) => x.iova > at);
        if (!next) return;
        at = next.iova;
        continue;
      }
      const take = Math.min(end, r.iova + r.size) - at;
      this.markDirty(r, at - r.iova, take);
      at += take;
    }
  }

  /** Region containing `iova`, if any. */
  regionAt(iova: number): DmaRegion | undefined {
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid];
      if (iova < r.iova) hi = mid - 1;
      else if (iova >= r.iova + r.size) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  /** Unmaps a region taken out of the table now, or when its last pin drops. */
  private retire(r: DmaRegion): void {
    if (r.pins === 0) return unmapRegion(r);
    this.lingering.add(r);
    r.unmapped = new Promise((resolve) => {
      r.finishUnmap = () => {
        r.finishUnmap = undefined;
        this.lingering.delete(r);
        unmapRegion(r);
        resolve();
      };
    });
  }

  private validate(iova: number, size: number, offset: number, prot: number, fd: number | undefined): void {
    const page = this.limits.pageSize;
    if (size === 0) throw new DeviceError(Errno.EINVAL, 'DMA region of size 0');
    if (iova % page !== 0 || size % page !== 0 || (fd !== undefined && offset % page !== 0)) {
      throw new DeviceError(Errno.EINVAL, `DMA region 0x${iova.toString(16)}+0x${size.toString(16)} is not aligned to ${page}`);
    }
    if (iova + size > MAX_IOVA || offset + size > MAX_IOVA) throw new DeviceError(Errno.EINVAL, 'DMA region wraps the address space');
    if ((prot & ~(DmaMapFlag.READ | DmaMapFlag.WRITE)) !== 0) throw new DeviceError(Errno.EINVAL, `bad DMA_MAP flags 0x${prot.toString(16)}`);
    if (this.regions.length >= this.limits.maxMaps) throw new DeviceError(Errno.ENOSPC, `at most ${this.limits.maxMaps} DMA regions`);
    if (this.overlaps(iova, size)) throw new DeviceError(Errno.EEXIST, `DMA region 0x${iova.toString(16)}+0x${size.toString(16)} overlaps a mapped region`);
    if (fd !== undefined) {
      const fileSize = native.fdSize(fd);
      // A regular file or memfd shorter than the range would SIGBUS on access.
      if (fileSize > 0 && fileSize < offset + size) {
        throw new DeviceError(Errno.EINVAL, `DMA fd is ${fileSize} bytes, region needs ${offset + size}`);
      }
    }
  }

  private overlaps(iova: number, size: number): boolean {
    const i = this.insertionIndex(iova);
    const prev = this.regions[i - 1];
    const next = this.regions[i];
    return (prev !== undefined && prev.iova + prev.size > iova) || (next !== undefined && next.iova < iova + size);
  }

  private insertionIndex(iova: number): number {
    let lo = 0;
    let hi = this.regions.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.regions[mid].iova < iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private indexOf(iova: number): number {
    const i = this.insertionIndex(iova);
    return this.regions[i]?.iova === iova ? i : -1;
  }
}

/**
 * True when the file behind `fd` cannot shrink, so a mapping of it can never
 * fault: a memfd sealed with F_SEAL_SHRINK (QEMU's memory-backend-memfd
 * seals by default). Anything else may be truncated by the client.
 */
export function cannotShrink(fd: number): boolean {
  const seals = native.fdSeals(fd);
  return seals >= 0 && (seals & FileSeal.SHRINK) !== 0;
}

function makeRegion(iova: number, size: number, offset: number, prot: number, fd: number | undefined, dirtyPage: number, group: number): DmaRegion {
  let mapping: DmaRegion['mapping'];
  let kept: number | undefined;
  if (fd !== undefined && !cannotShrink(fd)) {
    // Reached by pread/pwrite: it must be a file that covers the region now.
    const fileSize = native.fdSize(fd);
    if (fileSize < offset + size) throw new DeviceError(Errno.EINVAL, `DMA fd is not a file covering ${offset + size} bytes (size ${fileSize})`);
    kept = fd;
  } else if (fd !== undefined) {
    const m = native.mmap(fd, offset, size, (prot & DmaMapFlag.WRITE) !== 0, group);
    if (typeof m === 'number') throw new DeviceError(-m, `cannot map DMA region: errno ${-m}`);
    mapping = { buffer: m[0], handle: m[1] };
  }
  return {
    iova,
    size,
    offset,
    prot,
    memory: mapping ? new Uint8Array(mapping.buffer) : undefined,
    fd: kept,
    dirty: dirtyPage > 0 ? dirtyBitmap(size, dirtyPage) : undefined,
    mapping,
    pins: 0,
    unmapped: undefined,
    finishUnmap: undefined,
  };
}

/** A cleared dirty bitmap: one bit per `pageSize` page of `size` bytes. */
function dirtyBitmap(size: number, pageSize: number): Uint8Array {
  return new Uint8Array(Math.ceil(Math.ceil(size / pageSize) / 8));
}

function unmapRegion(r: DmaRegion): void {
  if (r.mapping) check('munmap', native.munmap(r.mapping.handle, r.mapping.buffer));
  if (r.fd !== undefined) native.close(r.fd);
}

