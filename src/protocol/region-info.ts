/**
 * VFIO_USER_DEVICE_GET_REGION_INFO (5): `struct vfio_region_info` plus an
 * optional capability chain, laid out as in Linux vfio.h.
 *
 * The structs are declared below. Each capability starts with a header
 * (id, version, next); `cap_offset` and `next` are measured from the start
 * of the struct; next 0 ends the chain.
 * - SPARSE_MMAP (id 1, v1): header, nr_areas (+ reserved), then nr_areas
 *   areas.
 * - TYPE (id 2, v1): header, type, subtype.
 *
 * argsz convention: the reply's argsz is the size of the full reply. If the
 * client's argsz (its buffer) is smaller, the reply carries the 32-byte
 * struct only, with argsz set to the size needed, so the client can retry
 * with a larger buffer. Unlike the kernel, such a truncated reply leaves
 * FLAG_CAPS clear and cap_offset 0: QEMU's vfio-user client rejects a reply
 * that has FLAG_CAPS with cap_offset below 32, before it retries.
 */
import { REGION_CAP_SPARSE_MMAP_VERSION, REGION_CAP_TYPE_VERSION, RegionCapId, RegionInfoFlag } from './constants.js';
import { invalid } from './errors.js';
import { alloc, checkArgsz, defineMessage, need } from './wire.js';

/** `struct vfio_region_info`, used by both the request and the reply. */
export interface RegionInfo {
  argsz: number;
  /** {@link RegionInfoFlag} bits. */
  flags: number;
  index: number;
  capOffset: number;
  size: number;
  offset: number;
}

/** A mappable window of a region (relative to the region's mmap offset). */
export interface SparseMmapArea {
  offset: number;
  size: number;
}

/** SPARSE_MMAP capability. */
export interface SparseMmapCap {
  id: RegionCapId.SPARSE_MMAP;
  areas: SparseMmapArea[];
}

/** TYPE capability (device-specific regions). */
export interface RegionTypeCap {
  id: RegionCapId.TYPE;
  type: number;
  subtype: number;
}

/** A region capability; unknown capability ids are skipped when decoding. */
export type RegionCap = SparseMmapCap | RegionTypeCap;

/** What a server supplies to describe a region; argsz and cap_offset are computed. */
export interface RegionDescription {
  /** {@link RegionInfoFlag} bits (CAPS is added when caps are included). */
  flags: number;
  index: number;
  size: number;
  offset: number;
}

/** A decoded DEVICE_GET_REGION_INFO reply. */
export interface RegionInfoReply {
  info: RegionInfo;
  /** Capabilities found through the chain; empty when absent or truncated. */
  caps: RegionCap[];
}

/** `struct vfio_region_info`. */
const INFO = defineMessage<RegionInfo>('REGION_INFO', {
  argsz: 'u32',
  flags: 'u32',
  index: 'u32',
  capOffset: 'u32',
  size: 'u64',
  offset: 'u64',
});

/** `struct vfio_info_cap_header`. */
interface CapHeader {
  id: number;
  version: number;
  next: number;
}
const CAP_HEADER = defineMessage<CapHeader>('region cap header', { id: 'u16', version: 'u16', next: 'u32' });
/** SPARSE_MMAP after the header; the areas follow. */
const SPARSE_MMAP = defineMessage<{ nrAreas: number }>('sparse mmap cap', { nrAreas: 'u32', _reserved: 4 });
const AREA = defineMessage<SparseMmapArea>('sparse mmap area', { offset: 'u64', size: 'u64' });
/** TYPE after the header. */
const TYPE = defineMessage<Omit<RegionTypeCap, 'id'>>('region type cap', { type: 'u32', subtype: 'u32' });

/** Size of `struct vfio_region_info`. */
export const REGION_INFO_SIZE = INFO.size;

/** Encodes a DEVICE_GET_REGION_INFO request payload (32 bytes). */
export function encodeRegionInfoRequest(m: RegionInfo): Buffer {
  return INFO.encode(m);
}

/** Decodes a DEVICE_GET_REGION_INFO request payload; argsz below 32 is EINVAL. */
export function decodeRegionInfoRequest(payload: Buffer): RegionInfo {
  const info = INFO.decode(payload, 'DEVICE_GET_REGION_INFO');
  checkArgsz(info.argsz, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO');
  return info;
}

/**
 * Encodes a reply: computes argsz, cap_offset and the `next` links, and
 * honours `clientArgsz` (see the module note on truncation).
 */
export function encodeRegionInfoReply(
  desc: RegionDescription,
  caps: readonly RegionCap[] = [],
  clientArgsz = Number.POSITIVE_INFINITY,
): Buffer {
  const full = REGION_INFO_SIZE + caps.reduce((n, c) => n + capSize(c), 0);
  const fits = clientArgsz >= full;
  const withCaps = fits && caps.length > 0;
  const b = alloc(fits ? full : REGION_INFO_SIZE);
  INFO.write(b, 0, {
    argsz: full,
    flags: (withCaps ? desc.flags | RegionInfoFlag.CAPS : desc.flags & ~RegionInfoFlag.CAPS) >>> 0,
    index: desc.index,
    capOffset: withCaps ? REGION_INFO_SIZE : 0,
    size: desc.size,
    offset: desc.offset,
  });
  if (withCaps) writeCaps(b, caps);
  return b;
}

/** Decodes a reply and walks its capability chain (EINVAL on a bad chain). */
export function decodeRegionInfoReply(payload: Buffer): RegionInfoReply {
  const info = INFO.decode(payload, 'DEVICE_GET_REGION_INFO reply');
  checkArgsz(info.argsz, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO reply');
  const hasChain = (info.flags & RegionInfoFlag.CAPS) !== 0 && info.capOffset !== 0;
  return { info, caps: hasChain ? readCaps(payload, info.capOffset) : [] };
}

function capSize(c: RegionCap): number {
  const body = c.id === RegionCapId.SPARSE_MMAP ? SPARSE_MMAP.size + AREA.size * c.areas.length : TYPE.size;
  return CAP_HEADER.size + body;
}

function writeCaps(b: Buffer, caps: readonly RegionCap[]): void {
  let off = REGION_INFO_SIZE;
  caps.forEach((c, i) => {
    const next = i + 1 < caps.length ? off + capSize(c) : 0;
    writeCap(b, off, c, next);
    off += capSize(c);
  });
}

function writeCap(b: Buffer, off: number, c: RegionCap, next: number): void {
  const body = off + CAP_HEADER.size;
  if (c.id === RegionCapId.SPARSE_MMAP) {
    CAP_HEADER.write(b, off, { id: c.id, version: REGION_CAP_SPARSE_MMAP_VERSION, next });
    SPARSE_MMAP.write(b, body, { nrAreas: c.areas.length });
    AREA.writeArray(b, body + SPARSE_MMAP.size, c.areas);
  } else {
    CAP_HEADER.write(b, off, { id: c.id, version: REGION_CAP_TYPE_VERSION, next });
    TYPE.write(b, body, c);
  }
}

/**
 * Walks the chain from `first`. Each link must point past the previous cap
 * (so the walk ends) and every cap must lie within the payload.
 */
function readCaps(payload: Buffer, first: number): RegionCap[] {
  const caps: RegionCap[] = [];
  let off = first;
  let floor = REGION_INFO_SIZE;
  while (off !== 0) {
    if (off < floor) invalid(`region cap at ${off} overlaps earlier data`);
    const { id, next } = CAP_HEADER.decode(payload, 'region cap header', off);
    const cap = readCap(payload, id, off + CAP_HEADER.size);
    if (cap !== null) caps.push(cap);
    floor = off + (cap === null ? CAP_HEADER.size : capSize(cap));
    off = next;
  }
  return caps;
}

/** Reads the body of capability `id` at `body`; null for an unknown id. */
function readCap(payload: Buffer, id: number, body: number): RegionCap | null {
  if (id === RegionCapId.SPARSE_MMAP) {
    const n = SPARSE_MMAP.decode(payload, 'sparse mmap cap', body).nrAreas;
    const first = body + SPARSE_MMAP.size;
    need(payload, first + AREA.size * n, 'sparse mmap areas');
    return { id, areas: AREA.readArray(payload, first, n) };
  }
  if (id === RegionCapId.TYPE) {
    return { id, ...TYPE.decode(payload, 'region type cap', body) };
  }
  return null;
}
