/**
 * VFIO_USER_DEVICE_GET_IRQ_INFO (7) and VFIO_USER_DEVICE_SET_IRQS (8).
 *
 * IRQ_INFO request and reply: `struct vfio_irq_info` ({@link IrqInfoFlag}
 * flags). Request argsz below 16 is EINVAL.
 *
 * SET_IRQS request: `struct vfio_irq_set` ({@link IrqSetFlag} flags), then
 * for DATA_BOOL exactly `count` bool bytes. Eventfds (DATA_EVENTFD) travel as SCM_RIGHTS, not in the payload,
 * so NONE and EVENTFD payloads are exactly 20 bytes. Exactly one DATA_* and
 * exactly one ACTION_* bit must be set and no other bit; argsz below 20 is
 * EINVAL. Reply: empty.
 */
import { IRQ_SET_ACTION_MASK, IRQ_SET_DATA_MASK, IrqSetFlag } from './constants.js';
import { invalid } from './errors.js';
import { EMPTY, alloc, checkArgsz, decodeEmpty, defineMessage, exact } from './wire.js';

/** `struct vfio_irq_info`: request and reply. */
export interface IrqInfo {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}

/** A DEVICE_SET_IRQS request. */
export interface IrqSet {
  argsz: number;
  /** One DATA_* plus one ACTION_* bit of {@link IrqSetFlag}. */
  flags: number;
  index: number;
  start: number;
  count: number;
  /**
   * DATA_BOOL only: `count` bytes, non-zero meaning "act on this vector".
   * Decoded data is a zero-copy subarray of the input payload.
   */
  data?: Uint8Array;
}

const IRQ_INFO = defineMessage<IrqInfo>('IRQ_INFO', { argsz: 'u32', flags: 'u32', index: 'u32', count: 'u32' });
const IRQ_SET = defineMessage<Omit<IrqSet, 'data'>>('IRQ_SET', {
  argsz: 'u32',
  flags: 'u32',
  index: 'u32',
  start: 'u32',
  count: 'u32',
});

/** Size of `struct vfio_irq_info`. */
export const IRQ_INFO_SIZE = IRQ_INFO.size;
/** Size of `struct vfio_irq_set` without data. */
export const IRQ_SET_SIZE = IRQ_SET.size;

/** Encodes an IRQ_INFO request payload. */
export function encodeIrqInfoRequest(m: IrqInfo): Buffer {
  return IRQ_INFO.encode(m);
}

/** Decodes an IRQ_INFO request payload. */
export function decodeIrqInfoRequest(payload: Buffer): IrqInfo {
  const m = IRQ_INFO.decode(payload, 'DEVICE_GET_IRQ_INFO');
  checkArgsz(m.argsz, IRQ_INFO_SIZE, 'DEVICE_GET_IRQ_INFO');
  return m;
}

/** Encodes an IRQ_INFO reply payload. */
export function encodeIrqInfoReply(m: IrqInfo): Buffer {
  return IRQ_INFO.encode(m);
}

/** Decodes an IRQ_INFO reply payload. */
export function decodeIrqInfoReply(payload: Buffer): IrqInfo {
  return IRQ_INFO.decode(payload, 'DEVICE_GET_IRQ_INFO reply');
}

/** Encodes a SET_IRQS request payload (bool bytes appended for DATA_BOOL). */
export function encodeSetIrqsRequest(m: IrqSet): Buffer {
  const data = m.data ?? EMPTY;
  const b = alloc(IRQ_SET_SIZE + data.length);
  IRQ_SET.write(b, 0, m);
  b.set(data, IRQ_SET_SIZE);
  return b;
}

/** Decodes and validates a SET_IRQS request payload. */
export function decodeSetIrqsRequest(payload: Buffer): IrqSet {
  const m: IrqSet = IRQ_SET.decode(payload, 'DEVICE_SET_IRQS');
  checkArgsz(m.argsz, IRQ_SET_SIZE, 'DEVICE_SET_IRQS');
  checkSetIrqsFlags(m.flags);
  if (m.flags & IrqSetFlag.DATA_BOOL) {
    exact(payload, IRQ_SET_SIZE + m.count, 'DEVICE_SET_IRQS bool data');
    m.data = payload.subarray(IRQ_SET_SIZE);
  } else {
    exact(payload, IRQ_SET_SIZE, 'DEVICE_SET_IRQS');
  }
  return m;
}

/** Encodes the (empty) SET_IRQS reply. */
export function encodeSetIrqsReply(): Buffer {
  return EMPTY;
}

/** Decodes the SET_IRQS reply: must be empty. */
export function decodeSetIrqsReply(payload: Buffer): void {
  decodeEmpty(payload, 'DEVICE_SET_IRQS reply');
}

/** EINVAL unless exactly one DATA_* and one ACTION_* bit, and nothing else, are set. */
export function checkSetIrqsFlags(flags: number): void {
  const data = flags & IRQ_SET_DATA_MASK;
  const action = flags & IRQ_SET_ACTION_MASK;
  if ((flags & ~(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_MASK)) !== 0) {
    invalid(`DEVICE_SET_IRQS: unknown flags 0x${flags.toString(16)}`);
  }
  if (!isOneBit(data) || !isOneBit(action)) {
    invalid(`DEVICE_SET_IRQS: need one DATA_* and one ACTION_* flag, got 0x${flags.toString(16)}`);
  }
}

function isOneBit(v: number): boolean {
  return v !== 0 && (v & (v - 1)) === 0;
}
