/**
 * VFIO_USER_DMA_READ (11) and VFIO_USER_DMA_WRITE (12), server to client.
 *
 * LAYOUT SETTLED AGAINST REAL QEMU 11.1.3 (the e2e tests: a guest with
 * unshared RAM, the gpio sample's DMA engine): the spec layout, which
 * libvfio-user uses too: u64 address @0, u64 count @8, data @16.
 * - DMA_READ request: 16 bytes (address, count).
 * - DMA_READ reply from QEMU: address, count, `count` bytes of data @16
 *   (payload 16 + count; QEMU sizes it as count + sizeof(VFIOUserDMARW)).
 * - DMA_WRITE request: address, count, data @16 (QEMU rejects with E2BIG a
 *   count larger than the message holds after the 16-byte fixed part).
 * - DMA_WRITE reply from QEMU: header only, no payload (the spec and
 *   libvfio-user have u64 address + u64 count).
 * Older QEMU sources declared `uint32_t count` with data at 12; the QEMU we
 * test with no longer does: it returned data 4 bytes late and refused our
 * DMA_WRITEs (E2BIG) until this codec followed the spec.
 *
 * Decoders require exactly 16 + count bytes where data follows. The DMA_WRITE
 * reply encoder writes address + count (16 bytes); its decoder also accepts
 * QEMU's empty payload (returns null).
 *
 * Decoded `data` is a zero-copy subarray of the payload. Encoders accept an
 * optional {@link HeaderInit} to build the whole message in one allocation.
 */
import { HEADER_SIZE } from './constants.js';
import { invalid } from './errors.js';
import { type HeaderInit, allocMessage } from './header.js';
import { defineMessage, need } from './wire.js';

/** DMA_READ request and DMA_WRITE reply. */
export interface DmaAccess {
  /** Client DMA address. */
  address: number;
  /** Byte count (u64 on the wire). */
  count: number;
}

/** DMA_READ reply and DMA_WRITE request. */
export interface DmaAccessData extends DmaAccess {
  /** Exactly `count` bytes. Decoded data is a subarray of the payload (zero-copy). */
  data: Uint8Array;
}

const HEAD = defineMessage<DmaAccess>('DMA_ACCESS', { address: 'u64', count: 'u64' });
const WITH_DATA = HEAD.withData();

/** Size of the fixed part: u64 address, u64 count. */
export const DMA_ACCESS_SIZE = HEAD.size;
/** Offset of the data in a DMA_READ reply / DMA_WRITE request. */
export const DMA_ACCESS_DATA_OFFSET = HEAD.size;

/** Encodes a DMA_READ request: address, count (16 bytes). */
export function encodeDmaReadRequest(m: DmaAccess, header?: HeaderInit): Buffer {
  return encodeAccess(m, undefined, header);
}

/** Decodes a DMA_READ request payload (16 bytes). */
export function decodeDmaReadRequest(payload: Buffer): DmaAccess {
  need(payload, DMA_ACCESS_SIZE, 'DMA_READ');
  if (payload.length > DMA_ACCESS_SIZE) invalid(`DMA_READ: ${payload.length - DMA_ACCESS_SIZE} bytes after the request`);
  return HEAD.read(payload, 0);
}

/** Encodes a DMA_READ reply: address, count, data @16. */
export function encodeDmaReadReply(m: DmaAccessData, header?: HeaderInit): Buffer {
  return encodeAccess(m, m.data, header);
}

/** Decodes a DMA_READ reply payload; `data` is zero-copy. */
export function decodeDmaReadReply(payload: Buffer): DmaAccessData {
  return readWithData(payload, 'DMA_READ reply');
}

/** Encodes a DMA_WRITE request: address, count, data @16. */
export function encodeDmaWriteRequest(m: DmaAccessData, header?: HeaderInit): Buffer {
  return encodeAccess(m, m.data, header);
}

/** Decodes a DMA_WRITE request payload; `data` is zero-copy. */
export function decodeDmaWriteRequest(payload: Buffer): DmaAccessData {
  return readWithData(payload, 'DMA_WRITE');
}

/** Encodes a DMA_WRITE reply: address, count (16 bytes). */
export function encodeDmaWriteReply(m: DmaAccess, header?: HeaderInit): Buffer {
  return encodeAccess(m, undefined, header);
}

/** Decodes a DMA_WRITE reply: `null` for QEMU's empty payload, else address + count. */
export function decodeDmaWriteReply(payload: Buffer): DmaAccess | null {
  if (payload.length === 0) return null;
  return HEAD.decode(payload, 'DMA_WRITE reply');
}

function encodeAccess(m: DmaAccess, data: Uint8Array | undefined, header?: HeaderInit): Buffer {
  const dataLen = data === undefined ? 0 : data.length;
  if (data !== undefined && dataLen !== m.count) {
    throw new RangeError(`data length ${dataLen} differs from count ${m.count}`);
  }
  const size = DMA_ACCESS_SIZE + dataLen;
  const base = header === undefined ? 0 : HEADER_SIZE;
  const b = header === undefined ? Buffer.allocUnsafe(size) : allocMessage(header, size);
  HEAD.write(b, base, m);
  if (data !== undefined) b.set(data, base + DMA_ACCESS_DATA_OFFSET);
  return b;
}

function readWithData(payload: Buffer, what: string): DmaAccessData {
  need(payload, DMA_ACCESS_SIZE, what);
  const m = WITH_DATA.read(payload, 0, payload.subarray(DMA_ACCESS_DATA_OFFSET));
  const end = DMA_ACCESS_DATA_OFFSET + m.count;
  need(payload, end, what);
  if (payload.length > end) invalid(`${what}: ${payload.length - end} bytes after data`);
  return m;
}
