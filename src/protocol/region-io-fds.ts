/**
 * VFIO_USER_DEVICE_GET_REGION_IO_FDS (6).
 *
 * Request: the 16-byte head below (flags must be 0). argsz below 16 or
 * non-zero flags is EINVAL.
 * Reply: the same head, then `count` sub-regions (struct below; for
 * ioregionfd the datamatch bytes are `user_data`). The fds travel as
 * SCM_RIGHTS; fd_index points into them.
 *
 * argsz convention as for region info: argsz is the full size needed; if
 * the client's argsz is smaller the reply carries the 16-byte head only
 * (count still says how many sub-regions exist). The decoder accepts that
 * form (head only, argsz > 16) as a truncated reply with no sub-regions;
 * otherwise all `count` entries must be present (EINVAL).
 */
import { IoFdType } from './constants.js';
import { invalid } from './errors.js';
import { alloc, checkArgsz, defineMessage, need } from './wire.js';

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

const HEAD = defineMessage<RegionIoFdsRequest>('REGION_IO_FDS', { argsz: 'u32', flags: 'u32', index: 'u32', count: 'u32' });
const HEAD_SIZE = HEAD.size;
const SUB_REGION = defineMessage<SubRegionIoFd>('sub-region', {
  offset: 'u64',
  size: 'u64',
  fdIndex: 'u32',
  type: 'u32',
  flags: 'u32',
  _padding: 4,
  datamatch: 'u64big',
});

/** Size of one sub-region entry. */
export const SUB_REGION_SIZE = SUB_REGION.size;

/** Encodes a request payload. */
export function encodeRegionIoFdsRequest(m: RegionIoFdsRequest): Buffer {
  return HEAD.encode(m);
}

/** Decodes a request payload. */
export function decodeRegionIoFdsRequest(payload: Buffer): RegionIoFdsRequest {
  const m = HEAD.decode(payload, 'DEVICE_GET_REGION_IO_FDS');
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
  HEAD.write(b, 0, { argsz: full, flags: 0, index, count: subRegions.length });
  if (fits) SUB_REGION.writeArray(b, HEAD_SIZE, subRegions);
  return b;
}

/** Decodes a reply payload (see the module note on truncation). */
export function decodeRegionIoFdsReply(payload: Buffer): RegionIoFdsReply {
  const head = HEAD.decode(payload, 'DEVICE_GET_REGION_IO_FDS reply');
  if (payload.length === HEAD_SIZE && head.argsz > HEAD_SIZE) {
    return { ...head, subRegions: [] };
  }
  need(payload, HEAD_SIZE + SUB_REGION_SIZE * head.count, 'DEVICE_GET_REGION_IO_FDS sub-regions');
  const subRegions = SUB_REGION.readArray(payload, HEAD_SIZE, head.count);
  for (const { type } of subRegions) {
    if (type !== IoFdType.IOEVENTFD && type !== IoFdType.IOREGIONFD) invalid(`sub-region type ${type} unknown`);
  }
  return { ...head, subRegions };
}
