/**
 * VFIO_USER_DMA_READ (11) and VFIO_USER_DMA_WRITE (12), server to client.
 *
 * LAYOUT SETTLED AGAINST QEMU (the real client), which disagrees with the
 * spec text and with libvfio-user:
 * - spec (vfio-user.rst) and libvfio-user `struct vfio_user_dma_region_access`
 *   (packed): u64 address @0, u64 count @8, data @16.
 * - QEMU `hw/vfio-user/protocol.h` `VFIOUserDMARW` (not packed):
 *   header, u64 offset, u32 count, char data[]. So count is u32 @8 and data
 *   starts at payload offset 12; sizeof() is 32 (16 + 16) because of 4 bytes
 *   of tail padding, and QEMU's `pci.c` uses sizeof() for its checks:
 *   - DMA_READ request: QEMU needs a payload of >= 16 bytes and reads count
 *     as u32 @8 (bytes 12-15 ignored). A spec/libvfio-user request with a u64
 *     count below 2^32 is byte-identical, so both agree here.
 *   - DMA_READ reply from QEMU: u64 address, u32 count, `count` bytes of data
 *     @12, then 4 zero bytes (payload 16 + count).
 *   - DMA_WRITE request: QEMU reads data @12 and requires payload >= 16 +
 *     count, i.e. data then 4 trailing bytes.
 *   - DMA_WRITE reply from QEMU: header only, no payload (the spec says
 *     u64 address + u32 count; libvfio-user expects u64 address + u64 count).
 * This codec follows QEMU: count is u32, data is at 12, and every encoder
 * appends the 4 trailing zero bytes QEMU's size checks need. Decoders accept
 * 12 + count .. 16 + count bytes. The DMA_READ request decoder rejects
 * non-zero bytes 12-15 (EINVAL): under the spec layout they would be the
 * high half of a count >= 4 GiB. The DMA_WRITE reply encoder writes
 * u64 address, u32 count, u32 0 (16 bytes: valid for the spec, for
 * libvfio-user and for QEMU); its decoder also accepts QEMU's empty payload
 * (returns null). A libvfio-user server talking to QEMU over DMA messages
 * cannot work: the data offsets differ (16 vs 12).
 *
 * Decoded `data` is a zero-copy subarray of the payload. Encoders accept an
 * optional {@link HeaderInit} to build the whole message in one allocation.
 */
import { HEADER_SIZE } from './constants.js';
import { invalid } from './errors.js';
import { type HeaderInit, allocMessage } from './header.js';
import { need, readU64, writeU64 } from './wire.js';

/** Offset of the data in a DMA_READ reply / DMA_WRITE request (QEMU layout). */
export const DMA_ACCESS_DATA_OFFSET = 12;
/** Size of the fixed part as QEMU measures it (sizeof VFIOUserDMARW - header). */
export const DMA_ACCESS_SIZE = 16;

/** DMA_READ request and DMA_WRITE reply. */
export interface DmaAccess {
  /** Client DMA address. */
  address: number;
  /** Byte count (u32 on the wire, as QEMU has it). */
  count: number;
}

/** DMA_READ reply and DMA_WRITE request. */
export interface DmaAccessData extends DmaAccess {
  /** Exactly `count` bytes. Decoded data is a subarray of the payload (zero-copy). */
  data: Uint8Array;
}

/** Encodes a DMA_READ request: address, count, 4 zero bytes (16 bytes). */
export function encodeDmaReadRequest(m: DmaAccess, header?: HeaderInit): Buffer {
  return encodeAccess(m, undefined, header);
}

/** Decodes a DMA_READ request payload (>= 16 bytes, bytes 12-15 zero). */
export function decodeDmaReadRequest(payload: Buffer): DmaAccess {
  need(payload, DMA_ACCESS_SIZE, 'DMA_READ');
  if (payload.readUInt32LE(12) !== 0) invalid('DMA_READ: count above 32 bits');
  return { address: readU64(payload, 0), count: payload.readUInt32LE(8) };
}

/** Encodes a DMA_READ reply: address, count, data @12, 4 zero bytes. */
export function encodeDmaReadReply(m: DmaAccessData, header?: HeaderInit): Buffer {
  return encodeAccess(m, m.data, header);
}

/** Decodes a DMA_READ reply payload; `data` is zero-copy. */
export function decodeDmaReadReply(payload: Buffer): DmaAccessData {
  return readWithData(payload, 'DMA_READ reply');
}

/** Encodes a DMA_WRITE request: address, count, data @12, 4 zero bytes. */
export function encodeDmaWriteRequest(m: DmaAccessData, header?: HeaderInit): Buffer {
  return encodeAccess(m, m.data, header);
}

/** Decodes a DMA_WRITE request payload; `data` is zero-copy. */
export function decodeDmaWriteRequest(payload: Buffer): DmaAccessData {
  return readWithData(payload, 'DMA_WRITE');
}

/** Encodes a DMA_WRITE reply: address, count, 4 zero bytes (16 bytes). */
export function encodeDmaWriteReply(m: DmaAccess, header?: HeaderInit): Buffer {
  return encodeAccess(m, undefined, header);
}

/** Decodes a DMA_WRITE reply: `null` for QEMU's empty payload, else address + count. */
export function decodeDmaWriteReply(payload: Buffer): DmaAccess | null {
  if (payload.length === 0) return null;
  need(payload, DMA_ACCESS_DATA_OFFSET, 'DMA_WRITE reply');
  return { address: readU64(payload, 0), count: payload.readUInt32LE(8) };
}

function encodeAccess(m: DmaAccess, data: Uint8Array | undefined, header?: HeaderInit): Buffer {
  const dataLen = data === undefined ? 0 : data.length;
  if (data !== undefined && dataLen !== m.count) {
    throw new RangeError(`data length ${dataLen} differs from count ${m.count}`);
  }
  const size = DMA_ACCESS_SIZE + dataLen;
  const base = header === undefined ? 0 : HEADER_SIZE;
  const b = header === undefined ? Buffer.allocUnsafe(size) : allocMessage(header, size);
  writeU64(b, base, m.address);
  b.writeUInt32LE(m.count, base + 8);
  if (data !== undefined) b.set(data, base + DMA_ACCESS_DATA_OFFSET);
  b.writeUInt32LE(0, base + DMA_ACCESS_DATA_OFFSET + dataLen);
  return b;
}

function readWithData(payload: Buffer, what: string): DmaAccessData {
  need(payload, DMA_ACCESS_DATA_OFFSET, what);
  const count = payload.readUInt32LE(8);
  const end = DMA_ACCESS_DATA_OFFSET + count;
  need(payload, end, what);
  if (payload.length > end + 4) invalid(`${what}: ${payload.length - end} bytes after data`);
  return {
    address: readU64(payload, 0),
    count,
    data: payload.subarray(DMA_ACCESS_DATA_OFFSET, end),
  };
}
