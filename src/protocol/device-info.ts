/**
 * VFIO_USER_DEVICE_GET_INFO (4).
 *
 * Request: the struct's u32 argsz, then flags/num_regions/num_irqs which
 * must be zero and may be omitted (a 4-byte payload is accepted; the encoder
 * writes all 16 bytes as QEMU does). argsz below 16 is EINVAL.
 * Reply: the whole struct.
 */
import { alloc, checkArgsz, defineMessage } from './wire.js';

/** A DEVICE_GET_INFO request. */
export interface DeviceInfoRequest {
  /** Largest reply payload the client accepts. */
  argsz: number;
}

/** A DEVICE_GET_INFO reply. */
export interface DeviceInfo {
  argsz: number;
  /** {@link DeviceInfoFlag} bits. */
  flags: number;
  numRegions: number;
  numIrqs: number;
}

/** `struct vfio_device_info`. */
const DEVICE_INFO = defineMessage<DeviceInfo>('DEVICE_INFO', { argsz: 'u32', flags: 'u32', numRegions: 'u32', numIrqs: 'u32' });
/** The part of it a request must carry. */
const REQUEST = defineMessage<DeviceInfoRequest>('DEVICE_INFO request', { argsz: 'u32' });

/** Size of `struct vfio_device_info` as used here. */
export const DEVICE_INFO_SIZE = DEVICE_INFO.size;

/** Encodes a DEVICE_GET_INFO request payload (16 bytes, trailing fields 0). */
export function encodeDeviceInfoRequest(m: DeviceInfoRequest): Buffer {
  const b = alloc(DEVICE_INFO_SIZE);
  REQUEST.write(b, 0, m);
  return b;
}

/** Decodes a DEVICE_GET_INFO request payload. */
export function decodeDeviceInfoRequest(payload: Buffer): DeviceInfoRequest {
  const m = REQUEST.decode(payload, 'DEVICE_GET_INFO');
  checkArgsz(m.argsz, DEVICE_INFO_SIZE, 'DEVICE_GET_INFO');
  return m;
}

/** Encodes a DEVICE_GET_INFO reply payload. */
export function encodeDeviceInfoReply(m: DeviceInfo): Buffer {
  return DEVICE_INFO.encode(m);
}

/** Decodes a DEVICE_GET_INFO reply payload. */
export function decodeDeviceInfoReply(payload: Buffer): DeviceInfo {
  return DEVICE_INFO.decode(payload, 'DEVICE_GET_INFO reply');
}
