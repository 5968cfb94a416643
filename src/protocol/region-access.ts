/**
 * VFIO_USER_REGION_READ (9) and VFIO_USER_REGION_WRITE (10): the hot path.
 *
 * Access head: u64 offset, u32 region, u32 count (16 bytes).
 * - READ request: head. Reply: head + `count` data bytes.
 * - WRITE request: head + `count` data bytes. Reply: head.
 * Payloads carrying data must be exactly 16 + count bytes (EINVAL).
 *
 * Decoded `data` is a zero-copy subarray of the input payload: copy it if
 * it must outlive the receive buffer. Encoders accept an optional
 * {@link HeaderInit}; with it they return the whole message (header
 * included, size computed) in a single allocation.
 */
import { HEADER_SIZE } from './constants.js';
import { type HeaderInit, allocMessage } from './header.js';
import { defineMessage, exact, need } from './wire.js';

/** Where an access goes: REGION_READ request and REGION_WRITE reply. */
export interface RegionAccess {
  offset: number;
  region: number;
  count: number;
}

/** An access with its bytes: REGION_READ reply and REGION_WRITE request. */
export interface RegionAccessData extends RegionAccess {
  /** Exactly `count` bytes. Decoded data is a subarray of the payload (zero-copy). */
  data: Uint8Array;
}

const HEAD = defineMessage<RegionAccess>('REGION_ACCESS', { offset: 'u64', region: 'u32', count: 'u32' });
const WITH_DATA = HEAD.withData();

/** Size of the access head. */
export const REGION_ACCESS_SIZE = HEAD.size;

/** Encodes a REGION_READ request (or, with `header`, the whole message). */
export function encodeRegionReadRequest(m: RegionAccess, header?: HeaderInit): Buffer {
  return encodeAccess(m, undefined, header);
}

/** Decodes a REGION_READ request payload. */
export function decodeRegionReadRequest(payload: Buffer): RegionAccess {
  return readHead(payload, 'REGION_READ');
}

/** Encodes a REGION_READ reply (or, with `header`, the whole message). */
export function encodeRegionReadReply(m: RegionAccessData, header?: HeaderInit): Buffer {
  return encodeAccess(m, m.data, header);
}

/** Decodes a REGION_READ reply payload; `data` is zero-copy. */
export function decodeRegionReadReply(payload: Buffer): RegionAccessData {
  return readWithData(payload, 'REGION_READ reply');
}

/** Encodes a REGION_WRITE request (or, with `header`, the whole message). */
export function encodeRegionWriteRequest(m: RegionAccessData, header?: HeaderInit): Buffer {
  return encodeAccess(m, m.data, header);
}

/** Decodes a REGION_WRITE request payload; `data` is zero-copy. */
export function decodeRegionWriteRequest(payload: Buffer): RegionAccessData {
  return readWithData(payload, 'REGION_WRITE');
}

/** Encodes a REGION_WRITE reply (or, with `header`, the whole message). */
export function encodeRegionWriteReply(m: RegionAccess, header?: HeaderInit): Buffer {
  return encodeAccess(m, undefined, header);
}

/** Decodes a REGION_WRITE reply payload. */
export function decodeRegionWriteReply(payload: Buffer): RegionAccess {
  return readHead(payload, 'REGION_WRITE reply');
}

function encodeAccess(m: RegionAccess, data: Uint8Array | undefined, header?: HeaderInit): Buffer {
  const dataLen = data === undefined ? 0 : data.length;
  if (data !== undefined && dataLen !== m.count) {
    throw new RangeError(`data length ${dataLen} differs from count ${m.count}`);
  }
  const size = REGION_ACCESS_SIZE + dataLen;
  const base = header === undefined ? 0 : HEADER_SIZE;
  const b = header === undefined ? Buffer.allocUnsafe(size) : allocMessage(header, size);
  HEAD.write(b, base, m);
  if (data !== undefined) b.set(data, base + REGION_ACCESS_SIZE);
  return b;
}

function readHead(payload: Buffer, what: string): RegionAccess {
  exact(payload, REGION_ACCESS_SIZE, what);
  return HEAD.read(payload, 0);
}

function readWithData(payload: Buffer, what: string): RegionAccessData {
  need(payload, REGION_ACCESS_SIZE, what);
  const m = WITH_DATA.read(payload, 0, payload.subarray(REGION_ACCESS_SIZE));
  exact(payload, REGION_ACCESS_SIZE + m.count, what);
  return m;
}
