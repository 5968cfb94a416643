/**
 * Shadow doorbells with EventIdx (NVMe 1.4, 5.8, Doorbell Buffer Config):
 * where the two buffers are, which slot each queue has, and cached
 * zero-copy views of them (retaken when missing or unmapped).
 */
import type { QueueMemory } from '../device/queue-memory.js';
import { u32 } from '../layout/u64.js';
import type { CompletionQueue, ShadowSlots, SubmissionQueue } from './queues.js';

const DSTRD = 0;
/** Bytes between doorbells (CAP.DSTRD). */
export const DOORBELL_STRIDE = 4 << DSTRD;
/** CAP.DSTRD as the controller reports it. */
export const DOORBELL_STRIDE_FIELD = DSTRD;

/** Guest addresses of the shadow doorbell and EventIdx buffers. */
export interface ShadowBuffers {
  doorbells: number;
  eventIdx: number;
}

/** Views of both buffers. */
export interface ShadowViews {
  doorbells: Uint8Array;
  eventIdx: Uint8Array;
}

/** The shadow doorbell buffers of one controller, once the driver gave them. */
export class ShadowDoorbells {
  /** Where the driver put the buffers (undefined until Doorbell Buffer Config, and after a reset). */
  buffers: ShadowBuffers | undefined;
  private cache: { of: ShadowBuffers } & ShadowViews | undefined;

  constructor(
    private readonly memory: QueueMemory,
    private readonly ioQueues: number,
  ) {}

  /** Bytes of one buffer covering every queue id the controller offers. */
  get bytes(): number {
    return (this.ioQueues + 1) * 2 * DOORBELL_STRIDE;
  }

  /** The slots of queue `qid` (I/O queues only: Linux never shadows the admin queue). */
  slots(qid: number, cq: boolean): ShadowSlots | undefined {
    if (!this.buffers || qid === 0) return undefined;
    const at = (2 * qid + (cq ? 1 : 0)) * DOORBELL_STRIDE;
    return { doorbell: this.buffers.doorbells + at, eventIdx: this.buffers.eventIdx + at };
  }

  /** Views of both buffers, or undefined (no buffers, no views there, not mapped). */
  views(): ShadowViews | undefined {
    const buffers = this.buffers;
    if (!buffers) return undefined;
    const length = this.bytes;
    const c = this.cache;
    if (c && c.of === buffers && c.doorbells.length === length && c.eventIdx.length === length) return c;
    const doorbells = viewOf(this.memory, buffers.doorbells, length, false);
    const eventIdx = viewOf(this.memory, buffers.eventIdx, length, true);
    this.cache = doorbells && eventIdx ? { of: buffers, doorbells, eventIdx } : undefined;
    return this.cache;
  }

  /**
   * The shadow doorbell of `slots`: read through the buffer's view when it
   * has one now, else copied out (a Promise).
   */
  readDoorbell(slots: ShadowSlots): number | Promise<number> {
    const db = this.memory.accessible() ? this.views() : undefined;
    if (!db) return readU32(this.memory, slots.doorbell);
    return u32(db.doorbells, slots.doorbell - this.buffers!.doorbells);
  }

  /**
   * Sets the EventIdx of `slots` to `v`: through the buffer's view when it
   * has one now (recorded for migration's dirty log), else copied in (a Promise).
   */
  writeEventIdx(slots: ShadowSlots, v: number): Promise<void> | undefined {
    const db = this.memory.accessible() ? this.views() : undefined;
    if (!db) return writeU32(this.memory, slots.eventIdx, v);
    const view = db.eventIdx;
    const at = slots.eventIdx - this.buffers!.eventIdx;
    view[at] = v & 0xff;
    view[at + 1] = (v >>> 8) & 0xff;
    view[at + 2] = (v >>> 16) & 0xff;
    view[at + 3] = v >>> 24;
    this.memory.markDirty(slots.eventIdx, 4);
    return undefined;
  }
}

/**
 * Doorbell Buffer Config for queues that already exist: each takes its
 * slots and starts from its current tail or head, in both buffers.
 */
export async function shadowQueues(shadow: ShadowDoorbells, memory: QueueMemory, sqs: Iterable<SubmissionQueue>, cqs: Iterable<CompletionQueue>): Promise<void> {
  for (const sq of sqs) {
    sq.shadow = shadow.slots(sq.id, false);
    if (sq.shadow) {
      await writeU32(memory, sq.shadow.doorbell, sq.tail);
      await writeU32(memory, sq.shadow.eventIdx, sq.tail);
    }
  }
  for (const cq of cqs) {
    cq.shadow = shadow.slots(cq.id, true);
    if (cq.shadow) {
      await writeU32(memory, cq.shadow.doorbell, cq.head);
      await writeU32(memory, cq.shadow.eventIdx, cq.head);
    }
  }
}

/** One zero-copy view of [addr, addr+length), or undefined (no views there, not mapped, not accessible now). */
export function viewOf(memory: QueueMemory, addr: number, length: number, write: boolean): Uint8Array | undefined {
  try {
    const v = memory.views(addr, length, write);
    return v && v.length === 1 && v[0].length === length ? v[0] : undefined;
  } catch {
    return undefined;
  }
}

/** Copies a little-endian dword out of guest memory. */
async function readU32(memory: QueueMemory, addr: number): Promise<number> {
  return u32(await memory.read(addr, 4), 0);
}

/** Copies a little-endian dword into guest memory. */
export async function writeU32(memory: QueueMemory, addr: number, v: number): Promise<void> {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  await memory.write(addr, b);
}
