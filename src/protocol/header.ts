/**
 * The 16-byte header of every message, and whole-message helpers.
 */
import { HEADER_SIZE, HeaderFlag } from './constants.js';
import { invalid } from './errors.js';
import { defineMessage } from './wire.js';

/** A decoded message header. */
export interface Header {
  /** Sender-chosen id, echoed in the reply (u16). */
  msgId: number;
  /** A {@link Command} value (u16); unknown values are passed through. */
  command: number;
  /** Whole message size in bytes, header included (u32). */
  size: number;
  /** {@link HeaderFlag} bits (u32). */
  flags: number;
  /** errno of an error reply; 0 otherwise (u32). */
  errno: number;
}

/** `size` counts the header too. */
const HEADER = defineMessage<Header>('header', { msgId: 'u16', command: 'u16', size: 'u32', flags: 'u32', errno: 'u32' });

/** Header fields the caller chooses when building a message; size is computed. */
export interface HeaderInit {
  msgId: number;
  command: number;
  /** Defaults to 0 (a command). */
  flags?: number;
  /** Defaults to 0. */
  errno?: number;
}

/** Writes `h` as 16 bytes into `target` at `offset`. RangeError on out-of-range fields. */
export function encodeHeader(h: Header, target: Buffer, offset = 0): void {
  HEADER.write(target, offset, h);
}

/**
 * Reads a header at `offset`. Throws ProtocolError(EINVAL) when fewer than 16
 * bytes are present, when `size` is below 16, or when the type nibble is
 * neither COMMAND nor REPLY: such a header cannot be trusted and the
 * connection should end. Unknown commands are returned as-is.
 */
export function decodeHeader(buf: Buffer, offset = 0): Header {
  if (!Number.isInteger(offset) || offset < 0 || buf.length - offset < HEADER_SIZE) {
    invalid(`header: need ${HEADER_SIZE} bytes at offset ${offset}, buffer has ${buf.length}`);
  }
  const h = HEADER.read(buf, offset);
  if (h.size < HEADER_SIZE) {
    invalid(`header size ${h.size} below ${HEADER_SIZE}`);
  }
  const type = h.flags & HeaderFlag.TYPE_MASK;
  if (type !== HeaderFlag.COMMAND && type !== HeaderFlag.REPLY) {
    invalid(`unknown message type ${type}`);
  }
  return h;
}

/** True if the flags mark a reply. */
export function isReply(flags: number): boolean {
  return (flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY;
}

/** True if the flags ask for no reply. */
export function noReply(flags: number): boolean {
  return (flags & HeaderFlag.NO_REPLY) !== 0;
}

/** True if the flags mark an error reply. */
export function isError(flags: number): boolean {
  return (flags & HeaderFlag.ERROR) !== 0;
}

/**
 * Builds header + payload in one allocation; `size` is computed. The payload
 * is copied.
 */
export function encodeMessage(h: HeaderInit, payload?: Uint8Array): Buffer {
  const len = payload === undefined ? 0 : payload.length;
  const msg = Buffer.allocUnsafe(HEADER_SIZE + len);
  writeHeaderInit(h, msg, HEADER_SIZE + len);
  if (payload !== undefined && len > 0) {
    msg.set(payload, HEADER_SIZE);
  }
  return msg;
}

/**
 * Allocates a whole message of `payloadSize` payload bytes, writes the header
 * and returns it; the caller fills the payload from offset 16. For hot paths
 * that want one allocation and no copy. The payload bytes are NOT zeroed.
 */
export function allocMessage(h: HeaderInit, payloadSize: number): Buffer {
  const msg = Buffer.allocUnsafe(HEADER_SIZE + payloadSize);
  writeHeaderInit(h, msg, HEADER_SIZE + payloadSize);
  return msg;
}

/** Builds a payload-less reply with the ERROR flag and `errno` set. */
export function encodeErrorReply(msgId: number, command: number, errno: number): Buffer {
  const flags = HeaderFlag.REPLY | HeaderFlag.ERROR;
  return encodeMessage({ msgId, command, flags, errno });
}

/** Builds a successful reply message around `payload`. */
export function encodeReply(msgId: number, command: number, payload?: Uint8Array): Buffer {
  return encodeMessage({ msgId, command, flags: HeaderFlag.REPLY }, payload);
}

function writeHeaderInit(h: HeaderInit, msg: Buffer, size: number): void {
  HEADER.write(msg, 0, { msgId: h.msgId, command: h.command, size, flags: h.flags ?? 0, errno: h.errno ?? 0 });
}
