/**
 * VFIO_USER_DEVICE_GET_REGION_IO_FDS (6).
 *
 * Request (16 bytes): u32 argsz, u32 flags (must be 0), u32 index,
 * u32 count. argsz below 16 or non-zero flags is EINVAL.
 * Reply: the same 16-byte head, then `count` sub-regions of 40 bytes:
 * u64 offset, u64 size, u32 fd_index, u32 type, u32 flags, u32 padding,
 * u64 datamatch (for ioregionfd the same 8 bytes are `user_data`). The fds
 * travel as SCM_RIGHTS; fd_index points into them.
 *
 * argsz convention as for region info: argsz is the full size needed; if
 * the client's argsz is smaller the reply carries the 16-byte head only
 * (count still says how many sub-regions exist). The decoder accepts that
 * form (head only, argsz > 16) as a truncated reply with no sub-regions;
 * otherwise all `count` entries must be present (EINVAL).
 */
import { IoFdType } from './constants.js';
import { invalid } from './errors.js';
import { alloc, checkArgsz, need, readU64, readU64Big, writeU64, writeU64Big } from './wire.js';

const HEAD_SIZE = 16;
/** Size of one sub-region entry. */
export const SUB_REGION_SIZE = 40;

/** A DEVICE_GET_REGION_IO_FDS request. */
export interface RegionIoFdsRequest {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}

/** One sub-region served by an ioeventfd or ioregionfd. */
export interface SubRegionIoFd {
  offset: number;
  size: number;
  /** Index into the reply's fds. */
  fdIndex: number;
  /** {@link IoFdType}. */
  type: number;
  /** {@link IoeventfdFlag} (or ioregionfd) bits. */
  flags: number;
  /** ioeventfd datamatch, or ioregionfd user_data: full 64-bit range, hence bigint. */
  datamatch: bigint;
}

/** A decoded DEVICE_GET_REGION_IO_FDS reply. */
export interface RegionIoFdsReply {
  argsz: number;
  flags: number;
  index: number;
  /** Number of sub-regions the server has (even when truncated). */
  count: number;
  /** Sub-regions carried; empty in a truncated reply. */
  subRegions: SubRegionIoFd[];
}

/** Encodes a request payload. */
export function encodeRegionIoFdsRequest(m: RegionIoFdsRequest): Buffer {
  const b = alloc(HEAD_SIZE);
  writeHead(b, m.argsz, m.flags, m.index, m.count);
  return b;
}

/** Decodes a request payload. */
export function decodeRegionIoFdsRequest(payload: Buffer): RegionIoFdsRequest {
  need(payload, HEAD_SIZE, 'DEVICE_GET_REGION_IO_FDS');
  const m = {
    argsz: payload.readUInt32LE(0),
    flags: payload.readUInt32LE(4),
    index: payload.readUInt32LE(8),
    count: payload.readUInt32LE(12),
  };
  checkArgsz(m.argsz, HEAD_SIZE, 'DEVICE_GET_REGION_IO_FDS');
  if (m.flags !== 0) invalid('DEVICE_GET_REGION_IO_FDS: flags must be 0');
  return m;
}

/**
 * Encodes a reply for region `index`: computes argsz and count and drops the
 * entries when they do not fit `clientArgsz`.
 */
export function encodeRegionIoFdsReply(
  index: number,
  subRegions: readonly SubRegionIoFd[],
  clientArgsz = Number.POSITIVE_INFINITY,
): Buffer {
  const full = HEAD_SIZE + SUB_REGION_SIZE * subRegions.length;
  const fits = clientArgsz >= full;
  const b = alloc(fits ? full : HEAD_SIZE);
  writeHead(b, full, 0, index, subRegions.length);
  if (fits) subRegions.forEach((s, i) => writeSub(b, HEAD_SIZE + SUB_REGION_SIZE * i, s));
  return b;
}

/** Decodes a reply payload (see the module note on truncation). */
export function decodeRegionIoFdsReply(payload: Buffer): RegionIoFdsReply {
  need(payload, HEAD_SIZE, 'DEVICE_GET_REGION_IO_FDS reply');
  const argsz = payload.readUInt32LE(0);
  const count = payload.readUInt32LE(12);
  const head = { argsz, flags: payload.readUInt32LE(4), index: payload.readUInt32LE(8), count };
  if (payload.length === HEAD_SIZE && argsz > HEAD_SIZE) {
    return { ...head, subRegions: [] };
  }
  need(payload, HEAD_SIZE + SUB_REGION_SIZE * count, 'DEVICE_GET_REGION_IO_FDS sub-regions');
  const subRegions: SubRegionIoFd[] = [];
  for (let i = 0; i < count; i++) subRegions.push(readSub(payload, HEAD_SIZE + SUB_REGION_SIZE * i));
  return { ...head, subRegions };
}

function writeHead(b: Buffer, argsz: number, flags: number, index: number, count: number): void {
  b.writeUInt32LE(argsz, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(index, 8);
  b.writeUInt32LE(count, 12);
}

function writeSub(b: Buffer, off: number, s: SubRegionIoFd): void {
  writeU64(b, off, s.offset);
  writeU64(b, off + 8, s.size);
  b.writeUInt32LE(s.fdIndex, off + 16);
  b.writeUInt32LE(s.type, off + 20);
  b.writeUInt32LE(s.flags, off + 24);
  writeU64Big(b, off + 32, s.datamatch);
}

function readSub(b: Buffer, off: number): SubRegionIoFd {
  const type = b.readUInt32LE(off + 20);
  if (type !== IoFdType.IOEVENTFD && type !== IoFdType.IOREGIONFD) {
    invalid(`sub-region type ${type} unknown`);
  }
  return {
    offset: readU64(b, off),
    size: readU64(b, off + 8),
    fdIndex: b.readUInt32LE(off + 16),
    type,
    flags: b.readUInt32LE(off + 24),
    datamatch: readU64Big(b, off + 32),
  };
}
