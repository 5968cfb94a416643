/**
 * VFIO_USER_DEVICE_RESET (13): no payload either way.
 */
import { EMPTY, decodeEmpty } from './wire.js';

/** Encodes the (empty) DEVICE_RESET request payload. */
export function encodeDeviceResetRequest(): Buffer {
  return EMPTY;
}

/** Decodes the DEVICE_RESET request payload: must be empty (EINVAL). */
export function decodeDeviceResetRequest(payload: Buffer): void {
  decodeEmpty(payload, 'DEVICE_RESET');
}

/** Encodes the (empty) DEVICE_RESET reply payload. */
export function encodeDeviceResetReply(): Buffer {
  return EMPTY;
}

/** Decodes the DEVICE_RESET reply payload: must be empty (EINVAL). */
export function decodeDeviceResetReply(payload: Buffer): void {
  decodeEmpty(payload, 'DEVICE_RESET reply');
}
