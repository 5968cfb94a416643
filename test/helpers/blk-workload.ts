/**
 * A verified virtio-blk workload, fio-like: random writes of known
 * contents and reads checked against a model of the disk, several
 * requests in flight at once (never two on the same blocks, so each
 * result is exact), doorbells by message, posted message or ioeventfd.
 * Every completion is checked: a head published that is not in flight
 * (published twice, or never posted) fails, a request never completed
 * times out, a wrong status, length or content fails.
 */
import { randomFillSync } from 'node:crypto';
import type { KickMode, VirtioDriver } from './virtio-driver.js';
import { T_IN, T_OUT } from './virtio-blk-driver.js';

const SECTOR = 512;

/** One request the workload posted. */
interface Posted {
  id: number;
  slot: number;
  type: number;
  block: number;
  blocks: number;
  /** For a read: where the data lands. */
  dataAt: number;
  statusAt: number;
}

export interface WorkloadOptions {
  /** Blocks of the disk the workload uses (from block 0). */
  blocks: number;
  blockSize?: number;
  /** Requests in flight at most. */
  depth: number;
  /** Largest request, in blocks (1 MiB with 4 KiB blocks: 256). */
  maxBlocks: number;
  /** One request in this many is of maxBlocks (default never). */
  bigEvery?: number;
  /** Data segment size (the device's size_max: 64 KiB). */
  segment?: number;
  queue?: number;
  kicks?: readonly KickMode[];
  seed?: number;
}

/** The workload over a started driver whose queue `queue` is set up. */
export class BlkWorkload {
  /** What the disk holds, as far as completed writes say. */
  readonly model: Buffer;
  /** Completions seen per request id (each must be 1). */
  readonly completions = new Map<number, number>();
  readonly inFlight = new Map<number, Posted>();
  /** Called with each completion (after it was checked). */
  onComplete: ((p: Posted, at: number) => void) | undefined;
  private readonly bs: number;
  private readonly busy: Uint8Array;
  private readonly freeSlots: number[];
  private readonly slots: { header: number; data: number; status: number }[];
  private nextId = 1;
  private rand: () => number;
  private q: number;

  constructor(
    private readonly d: VirtioDriver,
    private readonly o: WorkloadOptions,
    initial?: Buffer,
  ) {
    this.bs = o.blockSize ?? 4096;
    this.q = o.queue ?? 0;
    this.model = initial ? Buffer.from(initial.subarray(0, o.blocks * this.bs)) : Buffer.alloc(o.blocks * this.bs);
    this.busy = new Uint8Array(o.blocks);
    this.slots = Array.from({ length: o.depth }, () => ({ header: d.alloc(16, 16), data: d.alloc(o.maxBlocks * this.bs, 4096), status: d.alloc(1) }));
    this.freeSlots = this.slots.map((_, i) => i);
    let s = o.seed ?? 1;
    this.rand = () => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return s / 0x1_0000_0000;
    };
  }

  /** Requests in flight of at least `blocks` blocks. */
  bigInFlight(blocks: number): boolean {
    for (const p of this.inFlight.values()) if (p.blocks >= blocks) return true;
    return false;
  }

  /** Posts requests until `depth` are in flight (or no free range is found), then rings the doorbell once. */
  async fill(kick: KickMode = this.pickKick()): Promise<number> {
    let posted = 0;
    while (this.freeSlots.length > 0) {
      const big = this.o.bigEvery !== undefined && this.nextId % this.o.bigEvery === 0;
      const blocks = big ? this.o.maxBlocks : 1 + Math.floor(this.rand() * Math.min(16, this.o.maxBlocks));
      const block = this.findFree(blocks);
      if (block < 0) break;
      this.post(this.rand() < 0.6 ? T_OUT : T_IN, block, blocks);
      posted++;
    }
    if (posted > 0) await this.d.kick(this.q, kick);
    return posted;
  }

  /** Posts one request on `blocks` blocks at `block` (they must be free). */
  post(type: number, block: number, blocks: number): Posted {
    if (blocks > this.o.maxBlocks) throw new RangeError(`${blocks} blocks exceed maxBlocks ${this.o.maxBlocks}`);
    const slot = this.freeSlots.pop();
    if (slot === undefined) throw new Error('no free slot');
    const s = this.slots[slot];
    const bytes = blocks * this.bs;
    const header = this.d.bytes(s.header, 16);
    Buffer.from(header.buffer, header.byteOffset, 16).fill(0).writeUInt32LE(type, 0);
    Buffer.from(header.buffer, header.byteOffset, 16).writeBigUInt64LE(BigInt((block * this.bs) / SECTOR), 8);
    const data = this.d.bytes(s.data, bytes);
    if (type === T_OUT) {
      randomFillSync(data);
      this.model.set(data, block * this.bs);
    } else data.fill(0xee);
    this.d.bytes(s.status, 1)[0] = 0xff;
    const seg = this.o.segment ?? 64 * 1024;
    const bufs = [{ addr: s.header, len: 16 }];
    for (let at = 0; at < bytes; at += seg) bufs.push({ addr: s.data + at, len: Math.min(seg, bytes - at), write: type === T_IN } as never);
    bufs.push({ addr: s.status, len: 1, write: true } as never);
    this.busy.fill(1, block, block + blocks);
    const head = this.d.post(this.q, bufs, { indirect: this.rand() < 0.3 });
    const p: Posted = { id: this.nextId++, slot, type, block, blocks, dataAt: s.data, statusAt: s.status };
    this.inFlight.set(head, p);
    return p;
  }

  /** Takes what the device published; checks each. Returns how many completed. */
  reap(): number {
    const used = this.d.reap(this.q);
    const now = performance.now();
    for (const u of used) {
      const p = this.inFlight.get(u.id);
      if (!p) throw new Error(`head ${u.id} published but not in flight (published twice?)`);
      this.inFlight.delete(u.id);
      this.completions.set(p.id, (this.completions.get(p.id) ?? 0) + 1);
      const status = this.d.bytes(p.statusAt, 1)[0];
      if (status !== 0) throw new Error(`request ${p.id} (type ${p.type}, block ${p.block}) completed with status ${status}`);
      const bytes = p.blocks * this.bs;
      const expectLen = p.type === T_IN ? bytes + 1 : 1;
      if (u.len !== expectLen) throw new Error(`request ${p.id}: used.len ${u.len}, expected ${expectLen}`);
      if (p.type === T_IN) {
        const got = this.d.bytes(p.dataAt, bytes);
        const want = this.model.subarray(p.block * this.bs, p.block * this.bs + bytes);
        if (!Buffer.from(got.buffer, got.byteOffset, got.length).equals(want)) throw new Error(`request ${p.id}: read of blocks ${p.block}+${p.blocks} does not match what was written`);
      }
      this.busy.fill(0, p.block, p.block + p.blocks);
      this.freeSlots.push(p.slot);
      this.onComplete?.(p, now);
    }
    return used.length;
  }

  /** Waits until something completes (on the queue's vector), then reaps; throws after `timeoutMs` with nothing. */
  async next(timeoutMs = 5000): Promise<number> {
    const vector = this.d.vectors[this.q + 1];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = vector.total;
      const n = this.reap();
      if (n > 0 || this.inFlight.size === 0) return n;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.inFlight.size} request(s) in flight, none completed in ${timeoutMs} ms: ${[...this.inFlight.values()].map((p) => p.id).join(', ')}`);
      await vector.waitFor(seen + 1, Math.min(left, 50)).catch(() => undefined);
    }
  }

  /** Waits for everything in flight. */
  async drain(timeoutMs = 5000): Promise<void> {
    while (this.inFlight.size > 0) await this.next(timeoutMs);
  }

  /** Every request completed exactly once (throws naming the first that did not). */
  checkExactlyOnce(): void {
    for (let id = 1; id < this.nextId; id++) {
      const n = this.completions.get(id) ?? 0;
      if (n !== 1) throw new Error(`request ${id} completed ${n} times`);
    }
  }

  /** Requests posted so far. */
  get posted(): number {
    return this.nextId - 1;
  }

  private pickKick(): KickMode {
    const k = this.o.kicks ?? ['message'];
    return k[Math.floor(this.rand() * k.length)];
  }

  private findFree(blocks: number): number {
    for (let tries = 0; tries < 8; tries++) {
      const b = Math.floor(this.rand() * (this.o.blocks - blocks + 1));
      if (this.busy.subarray(b, b + blocks).every((x) => x === 0)) return b;
    }
    return -1;
  }
}
