/**
 * The regions of a device as the protocol sees them (VFIO PCI indexes:
 * 0-5 BARs, 6 ROM, 7 config, 8 VGA, 9+ device specific), resolved from the
 * spec: sizes, flags, shared memory, mmappable areas, doorbells.
 */
import { FileSeal, native, type MapHandle } from '../native/index.js';
import { RegionIndex, RegionInfoFlag } from '../protocol/constants.js';
import type { MemoryWatch } from './memory-watch.js';
import type { IoEventFdSpec, RegionSpec } from './region-spec.js';

export const CONFIG_REGION: number = RegionIndex.CONFIG;
/** Indexes below this are the VFIO PCI regions; device-specific ones follow. */
export const PCI_REGION_COUNT: number = RegionIndex.NUM_PCI_REGIONS;

/** An area of a region the client may mmap. */
export interface MmapArea {
  offset: number;
  size: number;
}

/** Shared memory behind a region: a memfd mapped into this process. */
export interface RegionMemory {
  /** The memfd (another one after {@link adoptMemory}; `bytes` stay the same views). */
  readonly fd: number;
  readonly bytes: Uint8Array;
  /** The mapping behind `bytes` (watched memory reads it natively). */
  readonly map: MapHandle;
  readonly buffer: ArrayBuffer;
}

/** One region, resolved. */
export interface Region {
  readonly index: number;
  readonly size: number;
  readonly flags: number;
  readonly spec: RegionSpec | undefined;
  readonly memory: RegionMemory | undefined;
  /** Mappable areas; empty when the region cannot be mmapped. */
  readonly mmapAreas: readonly MmapArea[];
  /** True when the areas do not cover the whole region (sparse mmap cap). */
  readonly sparse: boolean;
  readonly type: { type: number; subtype: number } | undefined;
  readonly ioeventfds: readonly IoEventFdSpec[];
  /** Words of the memory the client maps that muser polls for writes. */
  readonly watches: readonly MemoryWatch[];
}

/** Builds a region from its spec; allocates its memfd when asked. */
export function makeRegion(index: number, spec: RegionSpec, type?: { type: number; subtype: number }): Region {
  for (const io of spec.ioeventfds ?? []) {
    if ((io.onSignal === undefined) === (io.worker === undefined)) {
      throw new TypeError(`region ${index}: the doorbell at 0x${io.offset.toString(16)} needs exactly one of onSignal and worker`);
    }
  }
  const memory = spec.memory ? allocateMemory(`muser-region${index}`, spec.size) : undefined;
  const areas = memory ? mmapAreasOf(spec, index) : [];
  const flags =
    (spec.readable === false ? 0 : RegionInfoFlag.READ) |
    (spec.writable === false ? 0 : RegionInfoFlag.WRITE) |
    (areas.length > 0 ? RegionInfoFlag.MMAP : 0);
  const sparse = areas.length > 0 && !(areas.length === 1 && areas[0].offset === 0 && areas[0].size === spec.size);
  return { index, size: spec.size, flags, spec, memory, mmapAreas: areas, sparse, type, ioeventfds: spec.ioeventfds ?? [], watches: spec.watches ?? [] };
}

/** A region with only a size and flags (config space, MSI-X BAR). */
export function plainRegion(index: number, size: number, flags = RegionInfoFlag.READ | RegionInfoFlag.WRITE): Region {
  return { index, size, flags, spec: undefined, memory: undefined, mmapAreas: [], sparse: false, type: undefined, ioeventfds: [], watches: [] };
}

function mmapAreasOf(spec: RegionSpec, index: number): MmapArea[] {
  // Regions smaller than a page cannot be mapped on their own.
  const whole = spec.size % 4096 === 0 ? [{ offset: 0, size: spec.size }] : [];
  const requested = typeof spec.memory === 'object' && spec.memory.mmap ? spec.memory.mmap : whole;
  for (const a of requested) {
    if (a.offset % 4096 !== 0 || a.size % 4096 !== 0 || a.size === 0 || a.offset + a.size > spec.size) {
      throw new RangeError(`region ${index}: mmap area ${a.offset}+${a.size} must be page aligned and inside the region`);
    }
  }
  return requested.map((a) => ({ offset: a.offset, size: a.size }));
}

/**
 * Creates a memfd of `size` bytes and maps it shared. It is sealed against
 * resizing: the client gets this fd to mmap the region, and a client that
 * could truncate it would make the device's own accesses SIGBUS.
 */
export function allocateMemory(name: string, size: number): RegionMemory {
  const fd = native.memfd(name, size, true);
  const sealed = native.addSeals(fd, FileSeal.SHRINK | FileSeal.GROW | FileSeal.SEAL);
  if (sealed < 0) {
    native.close(fd);
    throw new Error(`cannot seal ${name}: errno ${-sealed}`);
  }
  const m = native.mmap(fd, 0, size, true);
  if (typeof m === 'number') {
    native.close(fd);
    throw new Error(`cannot map ${name}: errno ${-m}`);
  }
  return { fd, bytes: new Uint8Array(m[0]), map: m[1], buffer: m[0] };
}

/**
 * Serves `fd` (a memfd of the region's size: the one a process before
 * this one served, which the client still maps) instead of the region's
 * own memory: it is mapped over the same addresses, so `bytes`, `buffer`
 * and every view taken of them reach it from now on, and the region's
 * own memfd is closed. Takes `fd`.
 * @throws RangeError when the region has no memory or `fd` is not of its size
 */
export function adoptMemory(region: Region, fd: number): void {
  const m = region.memory;
  if (!m) throw new RangeError(`region ${region.index} has no memory to adopt a memfd for`);
  const size = native.fdSize(fd);
  if (size !== region.size) throw new RangeError(`region ${region.index}: the memfd to adopt is ${size < 0 ? `unreadable (errno ${-size})` : `${size} bytes`}, the region ${region.size}`);
  const rc = native.mmapReplace(m.map, fd);
  if (rc < 0) throw new Error(`region ${region.index}: cannot map the adopted memfd: errno ${-rc}`);
  native.close(m.fd);
  // Only the fd changes: the mapping (and every view of it) stays where it is.
  (m as { fd: number }).fd = fd;
}
