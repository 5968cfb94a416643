/**
 * virtio-blk requests as a guest driver builds them: a 16-byte header,
 * data split into segments, a status byte last.
 */
import type { KickMode, VirtioDriver, Buf } from './virtio-driver.js';

export const T_IN = 0;
export const T_OUT = 1;
export const T_FLUSH = 4;
export const T_GET_ID = 8;
export const T_DISCARD = 11;
export const T_WRITE_ZEROES = 13;
export const S_OK = 0;
export const S_IOERR = 1;
export const S_UNSUPP = 2;

export interface BlkRequestOptions {
  /** Device-readable payload after the header (OUT data, range lists). */
  out?: Uint8Array;
  /** Device-writable bytes before the status (IN data, GET_ID). */
  inLen?: number;
  /** Segment size for data buffers (default 4096). */
  segment?: number;
  indirect?: boolean;
  kick?: KickMode;
}

export interface BlkResult {
  status: number;
  /** Bytes the device says it wrote (used.len). */
  len: number;
  /** The device-writable data after completion. */
  data: Buffer;
}

/** Builds a request's buffers in guest memory; returns them and a reader for the result. */
export function buildBlk(d: VirtioDriver, type: number, sector: bigint | number, o: BlkRequestOptions = {}): { bufs: Buf[]; result: (len: number) => BlkResult } {
  const seg = o.segment ?? 4096;
  const header = Buffer.alloc(16);
  header.writeUInt32LE(type, 0);
  header.writeBigUInt64LE(BigInt(sector), 8);
  const bufs: Buf[] = [{ addr: d.put(header, 16), len: 16 }];
  if (o.out) for (let at = 0; at < o.out.length; at += seg) {
    const piece = o.out.subarray(at, at + seg);
    bufs.push({ addr: d.put(piece, 512), len: piece.length });
  }
  const ins: Buf[] = [];
  for (let at = 0; at < (o.inLen ?? 0); at += seg) {
    const n = Math.min(seg, o.inLen! - at);
    const b = { addr: d.alloc(n, 512), len: n, write: true };
    d.bytes(b.addr, n).fill(0xee);
    ins.push(b);
  }
  const status = { addr: d.alloc(1), len: 1, write: true };
  d.bytes(status.addr, 1)[0] = 0xff;
  bufs.push(...ins, status);
  return {
    bufs,
    result: (len) => ({
      status: d.bytes(status.addr, 1)[0],
      len,
      data: Buffer.concat(ins.map((b) => Buffer.from(d.bytes(b.addr, b.len)))),
    }),
  };
}

/** Posts one request, kicks, waits for it. */
export async function blk(d: VirtioDriver, qi: number, type: number, sector: bigint | number, o: BlkRequestOptions = {}): Promise<BlkResult> {
  const { bufs, result } = buildBlk(d, type, sector, o);
  const used = await d.roundTrip(qi, bufs, { indirect: o.indirect, kick: o.kick });
  return result(used.len);
}

/** A discard / write-zeroes range list. */
export function rangeList(ranges: { sector: number; sectors: number; flags?: number }[]): Buffer {
  const b = Buffer.alloc(16 * ranges.length);
  ranges.forEach((r, i) => {
    b.writeBigUInt64LE(BigInt(r.sector), 16 * i);
    b.writeUInt32LE(r.sectors, 16 * i + 8);
    b.writeUInt32LE(r.flags ?? 0, 16 * i + 12);
  });
  return b;
}

