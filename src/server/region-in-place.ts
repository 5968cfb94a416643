/**
 * REGION_READ and REGION_WRITE served in place: the hot path of a guest's
 * register accesses, taken when the session is idle (nothing queued or
 * waiting, no backlog). The request is read by offset from the receive
 * buffer and the reply written into the session's reusable reply buffer,
 * which the channel sends at once (what the kernel does not take is
 * copied into its queue): no Request, header or reply object per message.
 * Every message this path does not fully vouch for before touching the
 * device (another command, a malformed or refused access, a reply too
 * big for the buffer) is left to the general path (dispatch.ts), which
 * checks it and answers with the errno, as before.
 */
import { Command, HEADER_SIZE, HeaderFlag } from '../protocol/constants.js';
import { REGION_ACCESS_SIZE } from '../protocol/region-access.js';
import { loadU16, loadU32 } from '../protocol/wire.js';
import { accessibleRegion, readRegionInto, writeRegion } from '../device/region-io.js';
import { readReply, writeReply } from './dispatch.js';
import type { SessionContext } from './context.js';

/** What {@link serveRegionInPlace} returns for a message it leaves to the general path (nothing happened). */
export const NOT_IN_PLACE = -1;

/** Largest data a reply built in place carries: a page (larger reads take the general path). */
const MAX_IN_PLACE_DATA = 4096;
/** Message sizes up to this have a view of the buffer cached (what register accesses reply). */
const CACHED_VIEW_SIZE = HEADER_SIZE + REGION_ACCESS_SIZE + 64;
/** Where the data of an access starts in its message. */
const DATA_AT = HEADER_SIZE + REGION_ACCESS_SIZE;
/** Largest offset a u64 field may carry as a JS number: the high word's limit (2^53 - 1). */
const MAX_OFFSET_HIGH = 0x1fffff;

/**
 * A session's reply buffer for in-place replies. A reply in it is valid
 * until the next one is built: it must be sent (or copied) right away.
 */
export class ReplyBuffer {
  readonly bytes: Buffer = Buffer.allocUnsafeSlow(DATA_AT + MAX_IN_PLACE_DATA);
  /** The same bytes, for the header's stores (little-endian, no per-store checks beyond the view's). */
  readonly fields = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length);
  private readonly views: Buffer[] = new Array<Buffer>(CACHED_VIEW_SIZE + 1);

  /** The first `size` bytes (a cached view for small sizes). */
  view(size: number): Buffer {
    if (size > CACHED_VIEW_SIZE) return this.bytes.subarray(0, size);
    return (this.views[size] ??= this.bytes.subarray(0, size));
  }
}

/**
 * Serves `msg` (a whole message, a view of the receive buffer) when it is
 * a well-formed REGION_READ or REGION_WRITE of an accessible range, for a
 * negotiated session without fds. Returns {@link NOT_IN_PLACE} when it
 * leaves the message to the general path (nothing done); the size of the
 * reply built in `out` (0: the message asked for none); or the Promise of
 * the reply when the device answers later. Throws what the device threw
 * (its refusal of the access): the caller answers with its errno.
 */
export function serveRegionInPlace(s: SessionContext, msg: Buffer, out: ReplyBuffer): number | Promise<Buffer> {
  const command = loadU16(msg, 2);
  if (command !== Command.REGION_READ && command !== Command.REGION_WRITE) return NOT_IN_PLACE;
  const size = loadU32(msg, 4);
  const flags = loadU32(msg, 8);
  if ((flags & HeaderFlag.TYPE_MASK) !== HeaderFlag.COMMAND || size !== msg.length || size < DATA_AT) return NOT_IN_PLACE;
  const high = loadU32(msg, HEADER_SIZE + 4);
  if (high > MAX_OFFSET_HIGH) return NOT_IN_PLACE;
  const offset = high * 0x1_0000_0000 + loadU32(msg, HEADER_SIZE);
  const region = loadU32(msg, HEADER_SIZE + 8);
  const count = loadU32(msg, HEADER_SIZE + 12);
  const write = command === Command.REGION_WRITE;
  if (size !== (write ? DATA_AT + count : DATA_AT) || count > s.limits.maxDataXferSize) return NOT_IN_PLACE;
  const replySize = write ? DATA_AT : DATA_AT + count;
  if (replySize > out.bytes.length) return NOT_IN_PLACE;
  const device = s.device;
  const r = accessibleRegion(device, region, offset, count, write);
  if (r === undefined) return NOT_IN_PLACE;
  const msgId = loadU16(msg, 0);
  const b = out.bytes;
  if (write) {
    s.spin.other();
    const done = writeRegion(device, r, offset, msg.subarray(DATA_AT, size));
    if (done instanceof Promise) return writeReply(msgId, { offset, region, count }, done);
  } else {
    const later = readRegionInto(device, r, offset, count, b, DATA_AT);
    if (later !== undefined) return readReply(s, msgId, { offset, region, count }, later);
    s.spin.readAt(region, offset, b, DATA_AT, count);
  }
  if (flags & HeaderFlag.NO_REPLY) return 0;
  const f = out.fields;
  f.setUint16(0, msgId, true);
  f.setUint16(2, command, true);
  f.setUint32(4, replySize, true);
  f.setUint32(8, HeaderFlag.REPLY, true);
  f.setUint32(12, 0, true);
  // The reply's access head repeats the request's (offset, region, count).
  f.setUint32(HEADER_SIZE, loadU32(msg, HEADER_SIZE), true);
  f.setUint32(HEADER_SIZE + 4, high, true);
  f.setUint32(HEADER_SIZE + 8, region, true);
  f.setUint32(HEADER_SIZE + 12, count, true);
  return replySize;
}
