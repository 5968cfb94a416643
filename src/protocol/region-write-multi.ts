/**
 * VFIO_USER_REGION_WRITE_MULTI (15): posted small writes coalesced by QEMU.
 *
 * LAYOUT SETTLED AGAINST QEMU (`protocol.h` VFIOUserWRMulti/VFIOUserWROne,
 * `proxy.c` vfio_user_create_multi/add_multi/flush_multi), matching the spec:
 * request payload = u64 wr_cnt @0, then wr_cnt entries of 24 bytes each:
 * u64 offset, u32 region, u32 count (1..8), u8 data[8] (unused tail bytes
 * are zero: QEMU allocates with g_malloc0). QEMU allocates room for 200
 * entries but flush_multi shrinks the header size to the wr_cnt entries
 * actually filled, and always sets NO_REPLY. It sends such a message only
 * when the server announced `write_multiple: true`.
 *
 * The decoder accepts both forms: it requires 8 + 24 * wr_cnt bytes and
 * ignores any bytes after the last entry (a full 200-slot array). wr_cnt
 * that would overrun, or an entry count outside 1..8, is EINVAL.
 * Reply (only if NO_REPLY was clear): u64 wr_cnt, the writes completed.
 *
 * Decoded `data` is a zero-copy subarray (count bytes) of the payload.
 */
import { WRITE_MULTI_DATA } from './constants.js';
import { invalid } from './errors.js';
import { EMPTY, alloc, defineMessage, need } from './wire.js';

/** One coalesced write. */
export interface RegionWriteOne {
  offset: number;
  region: number;
  /** 1..8 */
  count: number;
  /** Exactly `count` bytes; decoded data is a subarray of the payload. */
  data: Uint8Array;
}

/** A REGION_WRITE_MULTI request. */
export interface RegionWriteMulti {
  writes: RegionWriteOne[];
}

/** A REGION_WRITE_MULTI reply. */
export interface RegionWriteMultiReply {
  /** Number of writes completed. */
  wrCnt: number;
}

/** wr_cnt: the request's head and the whole reply. */
const COUNT = defineMessage<RegionWriteMultiReply>('REGION_WRITE_MULTI count', { wrCnt: 'u64' });
/** An entry: this head, then WRITE_MULTI_DATA bytes of which `count` are data. */
const ENTRY = defineMessage<Omit<RegionWriteOne, 'data'>>('REGION_WRITE_MULTI entry', {
  offset: 'u64',
  region: 'u32',
  count: 'u32',
}).withData();

/** Size of one entry. */
export const WRITE_MULTI_ENTRY_SIZE = ENTRY.size + WRITE_MULTI_DATA;

/** Encodes a request with exactly `writes.length` entries (QEMU's flushed form). */
export function encodeRegionWriteMultiRequest(m: RegionWriteMulti): Buffer {
  const b = alloc(COUNT.size + WRITE_MULTI_ENTRY_SIZE * m.writes.length);
  COUNT.write(b, 0, { wrCnt: m.writes.length });
  m.writes.forEach((w, i) => writeEntry(b, COUNT.size + WRITE_MULTI_ENTRY_SIZE * i, w));
  return b;
}

/** Decodes a request (see the module note for what is accepted). */
export function decodeRegionWriteMultiRequest(payload: Buffer): RegionWriteMulti {
  const { wrCnt } = COUNT.decode(payload, 'REGION_WRITE_MULTI');
  need(payload, COUNT.size + WRITE_MULTI_ENTRY_SIZE * wrCnt, 'REGION_WRITE_MULTI entries');
  const writes: RegionWriteOne[] = [];
  for (let i = 0; i < wrCnt; i++) writes.push(readEntry(payload, COUNT.size + WRITE_MULTI_ENTRY_SIZE * i));
  return { writes };
}

/** Encodes a reply payload. */
export function encodeRegionWriteMultiReply(m: RegionWriteMultiReply): Buffer {
  return COUNT.encode(m);
}

/** Decodes a reply payload. */
export function decodeRegionWriteMultiReply(payload: Buffer): RegionWriteMultiReply {
  return COUNT.decode(payload, 'REGION_WRITE_MULTI reply');
}

function writeEntry(b: Buffer, off: number, w: RegionWriteOne): void {
  if (w.count < 1 || w.count > WRITE_MULTI_DATA || w.data.length !== w.count) {
    throw new RangeError(`REGION_WRITE_MULTI entry: count ${w.count}, data ${w.data.length} bytes`);
  }
  ENTRY.write(b, off, w);
}

function readEntry(b: Buffer, off: number): RegionWriteOne {
  const w = ENTRY.read(b, off, EMPTY);
  if (w.count < 1 || w.count > WRITE_MULTI_DATA) {
    invalid(`REGION_WRITE_MULTI entry count ${w.count} outside 1..${WRITE_MULTI_DATA}`);
  }
  w.data = b.subarray(off + ENTRY.size, off + ENTRY.size + w.count);
  return w;
}
