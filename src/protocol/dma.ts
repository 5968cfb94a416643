/**
 * VFIO_USER_DMA_MAP (2) and VFIO_USER_DMA_UNMAP (3).
 *
 * DMA_MAP request (32 bytes): u32 argsz @0, u32 flags @4, u64 offset @8,
 * u64 address @16, u64 size @24. The fd (if mappable) travels as SCM_RIGHTS.
 * Reply: empty.
 *
 * DMA_UNMAP request (24 bytes): u32 argsz @0, u32 flags @4, u64 address @8,
 * u64 size @16. Reply: the request struct echoed (spec); QEMU accepts an
 * echo or an empty payload, so the reply decoder returns `null` for empty.
 *
 * argsz below the struct size is EINVAL; unknown flag bits are EINVAL.
 * Bytes past the fixed struct are ignored.
 */
import { DmaMapFlag, DmaUnmapFlag } from './constants.js';
import { invalid } from './errors.js';
import { EMPTY, alloc, checkArgsz, decodeEmpty, need, readU64, writeU64 } from './wire.js';

/** Size of the DMA_MAP struct. */
export const DMA_MAP_SIZE = 32;
/** Size of the DMA_UNMAP struct. */
export const DMA_UNMAP_SIZE = 24;

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

const MAP_FLAGS = DmaMapFlag.READ | DmaMapFlag.WRITE;
const UNMAP_FLAGS: number = DmaUnmapFlag.ALL;

/** Encodes a DMA_MAP request payload. */
export function encodeDmaMapRequest(m: DmaMap): Buffer {
  const b = alloc(DMA_MAP_SIZE);
  b.writeUInt32LE(m.argsz, 0);
  b.writeUInt32LE(m.flags, 4);
  writeU64(b, 8, m.offset);
  writeU64(b, 16, m.address);
  writeU64(b, 24, m.size);
  return b;
}

/** Decodes a DMA_MAP request payload. */
export function decodeDmaMapRequest(payload: Buffer): DmaMap {
  need(payload, DMA_MAP_SIZE, 'DMA_MAP');
  const m: DmaMap = {
    argsz: payload.readUInt32LE(0),
    flags: payload.readUInt32LE(4),
    offset: readU64(payload, 8),
    address: readU64(payload, 16),
    size: readU64(payload, 24),
  };
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
  const b = alloc(DMA_UNMAP_SIZE);
  b.writeUInt32LE(m.argsz, 0);
  b.writeUInt32LE(m.flags, 4);
  writeU64(b, 8, m.address);
  writeU64(b, 16, m.size);
  return b;
}

/** Decodes a DMA_UNMAP request payload. */
export function decodeDmaUnmapRequest(payload: Buffer): DmaUnmap {
  const m = readUnmap(payload, 'DMA_UNMAP');
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
  return readUnmap(payload, 'DMA_UNMAP reply');
}

function readUnmap(payload: Buffer, what: string): DmaUnmap {
  need(payload, DMA_UNMAP_SIZE, what);
  return {
    argsz: payload.readUInt32LE(0),
    flags: payload.readUInt32LE(4),
    address: readU64(payload, 8),
    size: readU64(payload, 16),
  };
}
