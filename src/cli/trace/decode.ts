/**
 * What `muser trace` knows about one message: direction, header, and the
 * payload decoded by the protocol codec (src/protocol), flattened into
 * printable fields. Never throws: a payload the codec rejects is reported
 * as such (and still forwarded by the proxy).
 */
import { Command, Errno, HEADER_SIZE, HeaderFlag } from '../../protocol/constants.js';
import { replyDecoders, requestDecoders, isKnownCommand } from '../../protocol/codecs.js';

/** Client to server (`c>s`) or server to client (`s>c`). */
export type Direction = 'c>s' | 's>c';

/** A field value as printed: numbers, strings, booleans. */
export type FieldValue = number | string | boolean;

/** One traced message. */
export interface TraceEvent {
  /** Seconds since the proxy started. */
  t: number;
  dir: Direction;
  /** Which proxied connection (1, 2, ... in the order clients connected). */
  conn?: number;
  type: 'request' | 'reply';
  msgId: number;
  /** Lower-case command name (`region_read`), or `cmd_<n>` for unknown ones. */
  command: string;
  /** Header flags. */
  flags: number;
  /** Error reply: the errno and its name. */
  errno?: number;
  errnoName?: string;
  /** Posted command (NO_REPLY flag). */
  noReply?: boolean;
  /** Fds that came with it. */
  fds: number;
  /** Whole message size. */
  size: number;
  /** Replies: microseconds since the request went through the proxy. */
  latencyUs?: number;
  /** Decoded payload, flattened (`region`, `offset`, `count`, `data`, `dataLength`, ...). */
  fields: Record<string, FieldValue>;
  /** Why the payload (or header) could not be decoded. */
  undecodable?: string;
}

const ERRNO_NAMES = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** `region_read` for Command.REGION_READ; `cmd_99` for an unknown number. */
export function commandName(command: number): string {
  return isKnownCommand(command) ? Command[command].toLowerCase() : `cmd_${command}`;
}

/** Every command name `--filter` accepts. */
export const COMMAND_NAMES: readonly string[] = Object.values(Command)
  .filter((v): v is number => typeof v === 'number')
  .map(commandName);

/** Fields printed in hex. */
const HEX_FIELDS = /(^|\.)(address|offset|iova|flags|capOffset|pgsize|pgsizes|page_size|pageSize)$/i;

/**
 * Decodes one message. `dataBytes` caps how many bytes of a data field are
 * kept (as hex); `dataLength` always tells the full length.
 */
export function decodeMessage(bytes: Buffer, fds: number, dir: Direction, t: number, dataBytes: number): TraceEvent {
  const size = bytes.length;
  if (size < HEADER_SIZE) {
    return { t, dir, type: 'request', msgId: 0, command: '?', flags: 0, fds, size, fields: {}, undecodable: `${size} bytes, shorter than a header` };
  }
  const msgId = bytes.readUInt16LE(0);
  const command = bytes.readUInt16LE(2);
  const flags = bytes.readUInt32LE(8);
  const errno = bytes.readUInt32LE(12);
  const type = (flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY ? 'reply' : 'request';
  const event: TraceEvent = { t, dir, type, msgId, command: commandName(command), flags, fds, size, fields: {} };
  if (flags & HeaderFlag.NO_REPLY) event.noReply = true;
  if (type === 'reply' && flags & HeaderFlag.ERROR) {
    event.errno = errno;
    event.errnoName = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
    return event;
  }
  if ((flags & HeaderFlag.TYPE_MASK) > HeaderFlag.REPLY) event.undecodable = `message type ${flags & HeaderFlag.TYPE_MASK}`;
  if (!isKnownCommand(command) || event.undecodable) return event;
  const payload = bytes.subarray(HEADER_SIZE);
  try {
    const decoded = (type === 'reply' ? replyDecoders : requestDecoders)[command](payload);
    flatten(decoded, '', event.fields, dataBytes);
  } catch (e) {
    event.undecodable = (e as Error).message;
  }
  return event;
}

function flatten(value: unknown, prefix: string, out: Record<string, FieldValue>, dataBytes: number): void {
  if (value instanceof Uint8Array) {
    out[prefix || 'data'] = Buffer.from(value.buffer, value.byteOffset, Math.min(value.length, dataBytes)).toString('hex');
    out[`${prefix || 'data'}Length`] = value.length;
    return;
  }
  if (Array.isArray(value)) {
    out[`${prefix}Count`] = value.length;
    value.slice(0, 8).forEach((v, i) => flatten(v, `${prefix}[${i}]`, out, dataBytes));
    return;
  }
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (v === undefined) continue;
      // A region info reply nests its fields under `info`: print them plainly.
      const key = prefix === '' && k === 'info' ? '' : prefix ? `${prefix}.${k}` : k;
      if (key === '') flatten(v, '', out, dataBytes);
      else flatten(v, key, out, dataBytes);
    }
    return;
  }
  if (typeof value === 'bigint') out[prefix] = `0x${value.toString(16)}`;
  else if (typeof value === 'number') out[prefix] = HEX_FIELDS.test(prefix) ? `0x${value.toString(16)}` : value;
  else if (typeof value === 'string' || typeof value === 'boolean') out[prefix] = value;
}

/** The region a message is about, if any (region accesses, region info and io fds). */
export function regionOf(e: TraceEvent): number | undefined {
  if (typeof e.fields.region === 'number') return e.fields.region;
  if ((e.command === 'device_get_region_info' || e.command === 'device_get_region_io_fds') && typeof e.fields.index === 'number') return e.fields.index;
  return undefined;
}
