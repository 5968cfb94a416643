/**
 * VFIO_USER_DEVICE_GET_INFO (4).
 *
 * Request: u32 argsz @0, then flags/num_regions/num_irqs which must be zero
 * and may be omitted (a 4-byte payload is accepted; the encoder writes all
 * 16 bytes as QEMU does). argsz below 16 is EINVAL.
 * Reply (16 bytes): u32 argsz, u32 flags ({@link DeviceInfoFlag}),
 * u32 num_regions, u32 num_irqs.
 */
import { alloc, checkArgsz, need } from './wire.js';

/** Size of `struct vfio_device_info` as used here. */
export const DEVICE_INFO_SIZE = 16;

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

/** Encodes a DEVICE_GET_INFO request payload (16 bytes, trailing fields 0). */
export function encodeDeviceInfoRequest(m: DeviceInfoRequest): Buffer {
  const b = alloc(DEVICE_INFO_SIZE);
  b.writeUInt32LE(m.argsz, 0);
  return b;
}

/** Decodes a DEVICE_GET_INFO request payload. */
export function decodeDeviceInfoRequest(payload: Buffer): DeviceInfoRequest {
  need(payload, 4, 'DEVICE_GET_INFO');
  const argsz = payload.readUInt32LE(0);
  checkArgsz(argsz, DEVICE_INFO_SIZE, 'DEVICE_GET_INFO');
  return { argsz };
}

/** Encodes a DEVICE_GET_INFO reply payload. */
export function encodeDeviceInfoReply(m: DeviceInfo): Buffer {
  const b = alloc(DEVICE_INFO_SIZE);
  b.writeUInt32LE(m.argsz, 0);
  b.writeUInt32LE(m.flags, 4);
  b.writeUInt32LE(m.numRegions, 8);
  b.writeUInt32LE(m.numIrqs, 12);
  return b;
}

/** Decodes a DEVICE_GET_INFO reply payload. */
export function decodeDeviceInfoReply(payload: Buffer): DeviceInfo {
  need(payload, DEVICE_INFO_SIZE, 'DEVICE_GET_INFO reply');
  return {
    argsz: payload.readUInt32LE(0),
    flags: payload.readUInt32LE(4),
    numRegions: payload.readUInt32LE(8),
    numIrqs: payload.readUInt32LE(12),
  };
}
