/**
 * VFIO_USER_MIG_DATA_READ (17) and VFIO_USER_MIG_DATA_WRITE (18).
 *
 * READ request (8 bytes): u32 argsz, u32 size. Reply: u32 argsz, u32 size,
 * then `size` data bytes (less than requested means the stream is done).
 * WRITE request: u32 argsz, u32 size, then `size` data bytes. Reply: empty.
 * argsz below 8 is EINVAL (whether argsz leaves room for `size` bytes is
 * for the server to judge); payloads carrying data must be exactly
 * 8 + size bytes. Decoded `data` is a zero-copy subarray of the payload.
 */
import { EMPTY, checkArgsz, decodeEmpty, defineMessage, exact, need } from './wire.js';

/** MIG_DATA_READ request. */
export interface MigDataRead {
  argsz: number;
  size: number;
}

/** MIG_DATA_READ reply and MIG_DATA_WRITE request. */
export interface MigData {
  argsz: number;
  size: number;
  /** Exactly `size` bytes; decoded data is a subarray of the payload. */
  data: Uint8Array;
}

const HEAD = defineMessage<MigDataRead>('MIG_DATA', { argsz: 'u32', size: 'u32' });
const HEAD_SIZE = HEAD.size;
const WITH_DATA = HEAD.withData();

/** Encodes a MIG_DATA_READ request payload. */
export function encodeMigDataReadRequest(m: MigDataRead): Buffer {
  return HEAD.encode(m);
}

/** Decodes a MIG_DATA_READ request payload. */
export function decodeMigDataReadRequest(payload: Buffer): MigDataRead {
  exact(payload, HEAD_SIZE, 'MIG_DATA_READ');
  const m = HEAD.read(payload, 0);
  checkArgsz(m.argsz, HEAD_SIZE, 'MIG_DATA_READ');
  return m;
}

/**
 * Encodes a MIG_DATA_READ reply payload, zero-padded to `padTo` data bytes
 * when given: libvfio-user's client transport refuses a reply shorter than
 * the size it asked for, so its server pads the last, short chunk; `argsz`
 * and `size` still say how much is data.
 */
export function encodeMigDataReadReply(m: MigData, padTo = 0): Buffer {
  const b = encodeWithData(m);
  return padTo > m.size ? Buffer.concat([b, Buffer.alloc(padTo - m.size)]) : b;
}

/** Decodes a MIG_DATA_READ reply payload; padding after `size` bytes is ignored. */
export function decodeMigDataReadReply(payload: Buffer): MigData {
  return decodeWithData(payload, 'MIG_DATA_READ reply', true);
}

/** Encodes a MIG_DATA_WRITE request payload. */
export function encodeMigDataWriteRequest(m: MigData): Buffer {
  return encodeWithData(m);
}

/** Decodes a MIG_DATA_WRITE request payload. */
export function decodeMigDataWriteRequest(payload: Buffer): MigData {
  return decodeWithData(payload, 'MIG_DATA_WRITE');
}

/** Encodes the (empty) MIG_DATA_WRITE reply payload. */
export function encodeMigDataWriteReply(): Buffer {
  return EMPTY;
}

/** Decodes the MIG_DATA_WRITE reply payload: must be empty. */
export function decodeMigDataWriteReply(payload: Buffer): void {
  decodeEmpty(payload, 'MIG_DATA_WRITE reply');
}

function encodeWithData(m: MigData): Buffer {
  if (m.data.length !== m.size) {
    throw new RangeError(`data length ${m.data.length} differs from size ${m.size}`);
  }
  return WITH_DATA.encode(m);
}

function decodeWithData(payload: Buffer, what: string, padded = false): MigData {
  const { argsz, size } = HEAD.decode(payload, what);
  checkArgsz(argsz, HEAD_SIZE, what);
  if (padded) need(payload, HEAD_SIZE + size, what);
  else exact(payload, HEAD_SIZE + size, what);
  return WITH_DATA.read(payload, 0, payload.subarray(HEAD_SIZE, HEAD_SIZE + size));
}
