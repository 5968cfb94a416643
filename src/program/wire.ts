/**
 * The wire protocol between muser and a device program (docs/device-programs.md):
 * vfio-user's 16-byte header, with its `command` field naming the kind of
 * message, and small binary or JSON payloads. Pure encoding and decoding;
 * every decoder checks lengths and throws {@link ProgramProtocolError}.
 */
import { HEADER_SIZE, HeaderFlag } from '../protocol/constants.js';
import { encodeMessage } from '../protocol/header.js';

/** Version of the protocol this muser speaks (HELLO's `version`). */
export const PROGRAM_PROTOCOL_VERSION = 1;

/** Most payload bytes of one DMA_READ / DMA_WRITE (HELLO reply's `maxData`). */
export const MAX_DATA = 1024 * 1024;

/** Largest message either side may send, header included (a HELLO or a state may be large). */
export const MAX_MESSAGE = 16 * 1024 * 1024 + HEADER_SIZE;

/** Message kinds (the header's `command` field). */
export const enum Kind {
  // Program to muser.
  HELLO = 1,
  LOG = 2,
  TRIGGER = 3,
  DMA_READ = 4,
  DMA_WRITE = 5,
  DIRTY = 6,
  SET_REGISTER = 7,
  GET_REGISTER = 8,
  // muser to program.
  READ = 32,
  WRITE = 33,
  CONFIG_WRITE = 34,
  RESET = 35,
  CONNECT = 36,
  DISCONNECT = 37,
  MAP = 38,
  UNMAP = 39,
  DMA_ALLOWED = 40,
  SYNC = 41,
  QUIESCE = 42,
  RESUME = 43,
  LOAD_STATE = 44,
}

/** Kinds a program may send as requests, as events; anything else from it is malformed. */
export const PROGRAM_REQUESTS: ReadonlySet<number> = new Set([Kind.HELLO, Kind.DMA_READ, Kind.DMA_WRITE, Kind.GET_REGISTER]);
export const PROGRAM_EVENTS: ReadonlySet<number> = new Set([Kind.LOG, Kind.TRIGGER, Kind.DIRTY, Kind.SET_REGISTER]);

/** Flags of an event: a command that wants no reply. */
export const EVENT_FLAGS = HeaderFlag.COMMAND | HeaderFlag.NO_REPLY;

/** A message from the program that breaks the protocol: the program is stopped. */
export class ProgramProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProgramProtocolError';
  }
}

function malformed(message: string): never {
  throw new ProgramProtocolError(message);
}

/** A request (flags 0). */
export function request(id: number, kind: Kind, payload?: Uint8Array): Buffer {
  return encodeMessage({ msgId: id, command: kind }, payload);
}

/** An event (no reply wanted). */
export function event(kind: Kind, payload?: Uint8Array): Buffer {
  return encodeMessage({ msgId: 0, command: kind, flags: EVENT_FLAGS }, payload);
}

/** A successful reply to request `id` of `kind`. */
export function reply(id: number, kind: number, payload?: Uint8Array): Buffer {
  return encodeMessage({ msgId: id, command: kind, flags: HeaderFlag.REPLY }, payload);
}

/** An error reply with `errno` and a message for the program's logs. */
export function errorReply(id: number, kind: number, errno: number, message: string): Buffer {
  return encodeMessage({ msgId: id, command: kind, flags: HeaderFlag.REPLY | HeaderFlag.ERROR, errno }, Buffer.from(message, 'utf8'));
}

/** A JSON payload. */
export function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** Parses a JSON object payload; malformed when it is not one. */
export function parseJsonObject(payload: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString('utf8'));
  } catch (e) {
    return malformed(`${what}: payload is not JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) malformed(`${what}: payload is not a JSON object`);
  return v as Record<string, unknown>;
}

/** READ's payload: which register of which BAR, at what width. */
export function encodeRead(bar: number, width: number, offset: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(bar, 0);
  b.writeUInt8(width, 1);
  b.writeUInt32LE(offset, 4);
  return b;
}

/** WRITE's payload: READ's, then the u64 value. */
export function encodeWrite(bar: number, width: number, offset: number, value: bigint): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(bar, 0);
  b.writeUInt8(width, 1);
  b.writeUInt32LE(offset, 4);
  b.writeBigUInt64LE(value, 8);
  return b;
}

/** The reply of a request that answers with nothing (WRITE, RESET, UNMAP, SYNC, LOAD_STATE). */
export function decodeEmpty(kind: string): (payload: Uint8Array) => void {
  return (payload) => {
    if (payload.length !== 0) malformed(`${kind} reply has ${payload.length} payload bytes, none expected`);
  };
}

/** QUIESCE's reply: the state as JSON text (kept as the program wrote it). */
export function decodeState(payload: Uint8Array): string {
  const text = Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString('utf8');
  try {
    JSON.parse(text);
  } catch {
    malformed('QUIESCE reply is not JSON');
  }
  return text;
}

/** A READ reply: exactly a u64. */
export function decodeValue(payload: Uint8Array): bigint {
  if (payload.length !== 8) malformed(`READ reply has ${payload.length} payload bytes, 8 expected`);
  return Buffer.from(payload.buffer, payload.byteOffset, 8).readBigUInt64LE(0);
}

/** A u32 payload (TRIGGER's vector, DMA_ALLOWED's flag). */
export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value, 0);
  return b;
}

export function decodeU32(payload: Uint8Array, what: string): number {
  if (payload.length !== 4) malformed(`${what} has ${payload.length} payload bytes, 4 expected`);
  return Buffer.from(payload.buffer, payload.byteOffset, 4).readUInt32LE(0);
}

/** LOG: a level (0-3) and the text. */
export function decodeLog(payload: Uint8Array): { level: number; text: string } {
  if (payload.length < 4) malformed(`LOG has ${payload.length} payload bytes, at least 4 expected`);
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const level = b.readUInt32LE(0);
  if (level > 3) malformed(`LOG level ${level} is not 0-3`);
  return { level, text: b.toString('utf8', 4) };
}

/** DMA_READ: address and length. */
export function decodeDmaRead(payload: Uint8Array): { iova: number; length: number } {
  if (payload.length !== 16) malformed(`DMA_READ has ${payload.length} payload bytes, 16 expected`);
  const b = Buffer.from(payload.buffer, payload.byteOffset, 16);
  const iova = b.readBigUInt64LE(0);
  const length = b.readBigUInt64LE(8);
  if (length > BigInt(MAX_DATA)) malformed(`DMA_READ of ${length} bytes, more than ${MAX_DATA}`);
  return { iova: safe(iova), length: Number(length) };
}

/** DMA_WRITE: address, then the data (a view of `payload`). */
export function decodeDmaWrite(payload: Uint8Array): { iova: number; data: Uint8Array } {
  if (payload.length < 8) malformed(`DMA_WRITE has ${payload.length} payload bytes, at least 8 expected`);
  const iova = Buffer.from(payload.buffer, payload.byteOffset, 8).readBigUInt64LE(0);
  return { iova: safe(iova), data: payload.subarray(8) };
}

/** DIRTY: (address, length) pairs. */
export function decodeDirty(payload: Uint8Array): number[] {
  if (payload.length % 16 !== 0) malformed(`DIRTY has ${payload.length} payload bytes, not a multiple of 16`);
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const out: number[] = [];
  for (let at = 0; at < b.length; at += 16) {
    out.push(safe(b.readBigUInt64LE(at)), safe(b.readBigUInt64LE(at + 8)));
  }
  return out;
}

/**
 * An address or length as a number. Values beyond 2^53 (a guest-chosen
 * address is untrusted, not malformed) become unsafe integers, which the
 * DMA table refuses with EINVAL and the dirty log skips.
 */
function safe(v: bigint): number {
  return Number(v);
}

/** A register value as JSON: a number up to 2^53 - 1, a "0x..." string above. */
export function valueToJson(v: number | bigint): number | string {
  const big = BigInt(v);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : `0x${big.toString(16)}`;
}

/** A register value from JSON (see {@link valueToJson}); undefined when it is neither form. */
export function valueFromJson(v: unknown): bigint | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^0x[0-9a-f]{1,16}$/i.test(v)) return BigInt(v);
  return undefined;
}
