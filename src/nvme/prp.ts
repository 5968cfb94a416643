/**
 * Physical Region Page transfers (NVMe 1.4, 4.3): PRP1 and PRP2, PRP lists
 * chained across pages. Every address is checked against the client's DMA
 * maps before any data moves; offsets must follow the spec's alignment
 * rules; a list that returns to a page it already used is refused, so no
 * driver can make the walk loop. Data then moves through zero-copy views
 * (pinned while the backend uses them) or through copies where the memory
 * offers no views.
 */
import type { QueueMemory } from '../device/queue-memory.js';
import { CommandError } from './command.js';
import { PAGE_SIZE, Status } from './constants.js';

/** One contiguous piece of guest memory. */
export interface GuestRange {
  addr: number;
  len: number;
}

const MAX_ADDR = BigInt(Number.MAX_SAFE_INTEGER);

function address(v: bigint, what: string): number {
  if (v > MAX_ADDR) throw new CommandError(Status.DATA_TRANSFER_ERROR, `${what} 0x${v.toString(16)} is beyond any mapping`);
  return Number(v);
}

/**
 * The guest ranges a transfer of `length` bytes described by PRP1/PRP2
 * covers. `write`: the controller writes guest memory (a Read command).
 */
export async function walkPrps(mem: QueueMemory, prp1: bigint, prp2: bigint, length: number, write: boolean): Promise<GuestRange[]> {
  if (length === 0) return [];
  const first = address(prp1, 'PRP1');
  if (first % 4 !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP1 is not dword aligned');
  const ranges: GuestRange[] = [];
  const add = (addr: number, len: number): void => {
    if (!mem.mapped(addr, len, write)) throw new CommandError(Status.DATA_TRANSFER_ERROR, `data at 0x${addr.toString(16)}+${len} is not mapped ${write ? 'writable' : 'readable'}`);
    const last = ranges[ranges.length - 1];
    if (last && last.addr + last.len === addr) last.len += len;
    else ranges.push({ addr, len });
  };
  const firstLen = Math.min(length, PAGE_SIZE - (first % PAGE_SIZE));
  add(first, firstLen);
  let left = length - firstLen;
  if (left === 0) return ranges;
  const second = address(prp2, 'PRP2');
  if (left <= PAGE_SIZE) {
    if (second % PAGE_SIZE !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP2 data pointer is not page aligned');
    add(second, left);
    return ranges;
  }
  // PRP2 points to a list; each list page's last entry chains to the next page while more entries remain.
  if (second % 8 !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP list pointer is not qword aligned');
  let list = second;
  const visited = new Set<number>();
  while (left > 0) {
    const page = Math.floor(list / PAGE_SIZE);
    if (visited.has(page)) throw new CommandError(Status.INVALID_FIELD, `PRP list returns to page 0x${(page * PAGE_SIZE).toString(16)}`);
    visited.add(page);
    const slots = (PAGE_SIZE - (list % PAGE_SIZE)) / 8;
    const needed = Math.ceil(left / PAGE_SIZE);
    const take = needed <= slots ? needed : slots; // the last slot chains when more are needed
    if (!mem.mapped(list, take * 8, false)) throw new CommandError(Status.DATA_TRANSFER_ERROR, `PRP list at 0x${list.toString(16)} is not mapped`);
    let bytes: Uint8Array;
    try {
      bytes = await mem.read(list, take * 8);
    } catch (e) {
      throw new CommandError(Status.DATA_TRANSFER_ERROR, `cannot read the PRP list: ${(e as Error).message}`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const dataEntries = needed <= slots ? take : take - 1;
    for (let i = 0; i < dataEntries; i++) {
      const entry = address(view.getBigUint64(i * 8, true), 'PRP entry');
      if (entry % PAGE_SIZE !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, `PRP entry ${i} is not page aligned`);
      const len = Math.min(left, PAGE_SIZE);
      add(entry, len);
      left -= len;
    }
    if (left > 0) {
      list = address(view.getBigUint64((take - 1) * 8, true), 'PRP list chain');
      if (list % PAGE_SIZE !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP list chain pointer is not page aligned');
    }
  }
  return ranges;
}

function transferError(e: unknown): CommandError {
  if (e instanceof CommandError) return e;
  return new CommandError(Status.DATA_TRANSFER_ERROR, `guest memory: ${(e as Error).message}`);
}

/**
 * Lends the ranges to `io` as buffers: views of guest memory when every
 * range offers them (pinned until `io` settles), otherwise one bounce
 * buffer copied in before (`write` false) or out after (`write` true).
 * Guest memory failures become Data Transfer Error.
 */
export async function withGuestBuffers(mem: QueueMemory, ranges: readonly GuestRange[], write: boolean, io: (buffers: Uint8Array[]) => Promise<void>): Promise<void> {
  const views: Uint8Array[] = [];
  let direct = true;
  try {
    for (const r of ranges) {
      const v = mem.views(r.addr, r.len, write);
      if (!v) {
        direct = false;
        break;
      }
      views.push(...v);
    }
  } catch (e) {
    throw transferError(e);
  }
  if (direct) {
    const unpins = ranges.map((r) => mem.pin(r.addr, r.len));
    try {
      await io(views);
    } finally {
      for (const u of unpins) u();
    }
    return;
  }
  const bounce = write ? new Uint8Array(ranges.reduce((n, r) => n + r.len, 0)) : await copyFromGuest(mem, ranges);
  await io([bounce]);
  if (write) await copyToGuest(mem, ranges, bounce);
}

/** Copies `data` into the ranges (for controller-generated data such as Identify). */
export async function copyToGuest(mem: QueueMemory, ranges: readonly GuestRange[], data: Uint8Array): Promise<void> {
  let at = 0;
  try {
    for (const r of ranges) {
      if (at >= data.length) break;
      const n = Math.min(r.len, data.length - at);
      await mem.write(r.addr, data.subarray(at, at + n));
      at += n;
    }
  } catch (e) {
    throw transferError(e);
  }
}

/** Copies the ranges out of guest memory. */
export async function copyFromGuest(mem: QueueMemory, ranges: readonly GuestRange[]): Promise<Uint8Array> {
  const total = ranges.reduce((n, r) => n + r.len, 0);
  const out = new Uint8Array(total);
  let at = 0;
  try {
    for (const r of ranges) {
      out.set(await mem.read(r.addr, r.len), at);
      at += r.len;
    }
  } catch (e) {
    throw transferError(e);
  }
  return out;
}
