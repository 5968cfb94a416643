/**
 * VFIO_USER_DMA_MAP (2) and VFIO_USER_DMA_UNMAP (3).
 *
 * DMA_MAP request: the struct below; the fd (if mappable) travels as
 * SCM_RIGHTS. Reply: empty.
 *
 * DMA_UNMAP request: the struct below. Reply: the request struct echoed
 * (spec); QEMU accepts an echo or an empty payload, so the reply decoder
 * returns `null` for empty.
 *
 * argsz below the struct size is EINVAL; unknown flag bits are EINVAL.
 * Bytes past the fixed struct are ignored.
 */
import { DmaMapFlag, DmaUnmapFlag } from './constants.js';
import { invalid } from './errors.js';
import { EMPTY, checkArgsz, decodeEmpty, defineMessage } from './wire.js';

/** A DMA_MAP request. */
export interface DmaMap {
  argsz: number;
  /** {@link DmaMapFlag} bits. */
  flags: number;
  /** Offset into the accompanying fd; 0 when there is no fd. */
  offset: number;
  /** Client DMA (IOVA) base address. */
  address: number;
  size: number;
}

/** A DMA_UNMAP request, and the reply echo. */
export interface DmaUnmap {
  argsz: number;
  /** {@link DmaUnmapFlag} bits. */
  flags: number;
  address: number;
  size: number;
}

const DMA_MAP = defineMessage<DmaMap>('DMA_MAP', { argsz: 'u32', flags: 'u32', offset: 'u64', address: 'u64', size: 'u64' });
const DMA_UNMAP = defineMessage<DmaUnmap>('DMA_UNMAP', { argsz: 'u32', flags: 'u32', address: 'u64', size: 'u64' });

/** Size of the DMA_MAP struct. */
export const DMA_MAP_SIZE = DMA_MAP.size;
/** Size of the DMA_UNMAP struct. */
export const DMA_UNMAP_SIZE = DMA_UNMAP.size;

const MAP_FLAGS = DmaMapFlag.READ | DmaMapFlag.WRITE;
const UNMAP_FLAGS: number = DmaUnmapFlag.ALL;

/** Encodes a DMA_MAP request payload. */
export function encodeDmaMapRequest(m: DmaMap): Buffer {
  return DMA_MAP.encode(m);
}

/** Decodes a DMA_MAP request payload. */
export function decodeDmaMapRequest(payload: Buffer): DmaMap {
  const m = DMA_MAP.decode(payload, 'DMA_MAP');
  checkArgsz(m.argsz, DMA_MAP_SIZE, 'DMA_MAP');
  if ((m.flags & ~MAP_FLAGS) !== 0) invalid(`DMA_MAP: unknown flags 0x${m.flags.toString(16)}`);
  return m;
}

/** Encodes the (empty) DMA_MAP reply payload. */
export function encodeDmaMapReply(): Buffer {
  return EMPTY;
}

/** Decodes the DMA_MAP reply payload: must be empty. */
export function decodeDmaMapReply(payload: Buffer): void {
  decodeEmpty(payload, 'DMA_MAP reply');
}

/** Encodes a DMA_UNMAP request payload. */
export function encodeDmaUnmapRequest(m: DmaUnmap): Buffer {
  return DMA_UNMAP.encode(m);
}

/** Decodes a DMA_UNMAP request payload. */
export function decodeDmaUnmapRequest(payload: Buffer): DmaUnmap {
  const m = DMA_UNMAP.decode(payload, 'DMA_UNMAP');
  checkArgsz(m.argsz, DMA_UNMAP_SIZE, 'DMA_UNMAP');
  if ((m.flags & ~UNMAP_FLAGS) !== 0) invalid(`DMA_UNMAP: unknown flags 0x${m.flags.toString(16)}`);
  return m;
}

/** Encodes the DMA_UNMAP reply: the request echoed. */
export function encodeDmaUnmapReply(m: DmaUnmap): Buffer {
  return encodeDmaUnmapRequest(m);
}

/** Decodes a DMA_UNMAP reply: the echoed struct, or `null` for an empty payload. */
export function decodeDmaUnmapReply(payload: Buffer): DmaUnmap | null {
  if (payload.length === 0) return null;
  return DMA_UNMAP.decode(payload, 'DMA_UNMAP reply');
}
