/**
 * VFIO_USER_DEVICE_GET_REGION_INFO (5): `struct vfio_region_info` plus an
 * optional capability chain, laid out as in Linux vfio.h.
 *
 * Struct (32 bytes): u32 argsz @0, u32 flags @4, u32 index @8,
 * u32 cap_offset @12, u64 size @16, u64 offset @24.
 * Capability header (8 bytes): u16 id, u16 version, u32 next; `cap_offset`
 * and `next` are measured from the start of the struct; next 0 ends it.
 * - SPARSE_MMAP (id 1, v1): header, u32 nr_areas, u32 reserved, then
 *   nr_areas x {u64 offset, u64 size}.
 * - TYPE (id 2, v1): header, u32 type, u32 subtype.
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
import { alloc, checkArgsz, need, readU64, writeU64 } from './wire.js';

/** Size of `struct vfio_region_info`. */
export const REGION_INFO_SIZE = 32;
const CAP_HEADER_SIZE = 8;

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

/** Encodes a DEVICE_GET_REGION_INFO request payload (32 bytes). */
export function encodeRegionInfoRequest(m: RegionInfo): Buffer {
  const b = alloc(REGION_INFO_SIZE);
  writeInfo(b, m);
  return b;
}

/** Decodes a DEVICE_GET_REGION_INFO request payload; argsz below 32 is EINVAL. */
export function decodeRegionInfoRequest(payload: Buffer): RegionInfo {
  const info = readInfo(payload, 'DEVICE_GET_REGION_INFO');
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
  writeInfo(b, {
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
  const info = readInfo(payload, 'DEVICE_GET_REGION_INFO reply');
  checkArgsz(info.argsz, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO reply');
  const hasChain = (info.flags & RegionInfoFlag.CAPS) !== 0 && info.capOffset !== 0;
  return { info, caps: hasChain ? readCaps(payload, info.capOffset) : [] };
}

function writeInfo(b: Buffer, m: RegionInfo): void {
  b.writeUInt32LE(m.argsz, 0);
  b.writeUInt32LE(m.flags, 4);
  b.writeUInt32LE(m.index, 8);
  b.writeUInt32LE(m.capOffset, 12);
  writeU64(b, 16, m.size);
  writeU64(b, 24, m.offset);
}

function readInfo(payload: Buffer, what: string): RegionInfo {
  need(payload, REGION_INFO_SIZE, what);
  return {
    argsz: payload.readUInt32LE(0),
    flags: payload.readUInt32LE(4),
    index: payload.readUInt32LE(8),
    capOffset: payload.readUInt32LE(12),
    size: readU64(payload, 16),
    offset: readU64(payload, 24),
  };
}

function capSize(c: RegionCap): number {
  return c.id === RegionCapId.SPARSE_MMAP ? 16 + 16 * c.areas.length : 16;
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
  b.writeUInt16LE(c.id, off);
  b.writeUInt32LE(next, off + 4);
  if (c.id === RegionCapId.SPARSE_MMAP) {
    b.writeUInt16LE(REGION_CAP_SPARSE_MMAP_VERSION, off + 2);
    b.writeUInt32LE(c.areas.length, off + 8);
    c.areas.forEach((a, i) => {
      writeU64(b, off + 16 + 16 * i, a.offset);
      writeU64(b, off + 24 + 16 * i, a.size);
    });
  } else {
    b.writeUInt16LE(REGION_CAP_TYPE_VERSION, off + 2);
    b.writeUInt32LE(c.type, off + 8);
    b.writeUInt32LE(c.subtype, off + 12);
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
    need(payload, off + CAP_HEADER_SIZE, 'region cap header');
    const cap = readCap(payload, off);
    if (cap !== null) caps.push(cap);
    floor = off + (cap === null ? CAP_HEADER_SIZE : capSize(cap));
    off = payload.readUInt32LE(off + 4);
  }
  return caps;
}

function readCap(payload: Buffer, off: number): RegionCap | null {
  const id = payload.readUInt16LE(off);
  if (id === RegionCapId.SPARSE_MMAP) {
    need(payload, off + 16, 'sparse mmap cap');
    const n = payload.readUInt32LE(off + 8);
    need(payload, off + 16 + 16 * n, 'sparse mmap areas');
    const areas: SparseMmapArea[] = [];
    for (let i = 0; i < n; i++) {
      areas.push({ offset: readU64(payload, off + 16 + 16 * i), size: readU64(payload, off + 24 + 16 * i) });
    }
    return { id, areas };
  }
  if (id === RegionCapId.TYPE) {
    need(payload, off + 16, 'region type cap');
    return { id, type: payload.readUInt32LE(off + 8), subtype: payload.readUInt32LE(off + 12) };
  }
  return null;
}
