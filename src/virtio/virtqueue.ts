/**
 * A split virtqueue (virtio 1.2, 2.7) served from guest memory: walks
 * descriptor chains (with INDIRECT_DESC), hands them out as requests,
 * publishes completions in the used ring in whatever order they finish,
 * and honours EVENT_IDX / flag-based notification suppression both ways.
 *
 * Everything in guest memory is untrusted. A broken ring (avail index
 * jumping by more than the queue size, a head or next index out of range,
 * a loop or a chain longer than allowed, a bad indirect table, rings in
 * unmapped memory, a head reused while in flight) stops the queue and
 * reports through `onBroken`: the transport then sets DEVICE_NEEDS_RESET.
 * Buffer-level faults (unmapped data, wrong direction, wrapping lengths)
 * are the request handler's to report (for example as an I/O error).
 *
 * Depends only on {@link QueueMemory} and callbacks, so it can run off the
 * main thread.
 */
import { DescFlag, MAX_QUEUE_SIZE, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY } from './constants.js';
import type { QueueMemory } from '../device/queue-memory.js';
import { BounceBudget, VirtqueueRequest, type Descriptor } from './request.js';

/** What a virtqueue needs from its transport. */
export interface VirtqueueHost {
  readonly memory: QueueMemory;
  /** Bounce-buffer bytes shared by the device's queues. */
  readonly bounce: BounceBudget;
  /** Raise this queue's used-buffer interrupt. */
  interrupt(queue: Virtqueue): void;
  /** The driver broke the ring: stop and ask for a reset. */
  onBroken(queue: Virtqueue, reason: string): void;
  /** Serve one request; complete it with request.complete(bytesWritten). */
  dispatch(request: VirtqueueRequest): void;
}

/** Ring features negotiated for the queue. */
export interface RingFeatures {
  eventIdx: boolean;
  indirect: boolean;
}

/** The migratable part of a queue. */
export interface VirtqueueState {
  size: number;
  enabled: boolean;
  desc: number;
  driver: number;
  device: number;
  msixVector: number;
  lastAvail: number;
  usedIdx: number;
}

/** Thrown inside the queue when the driver broke the ring. */
class RingError extends Error {}

const DESC_SIZE = 16;
/** Descriptors in one indirect table, at most (the spec's largest queue). */
const MAX_INDIRECT = MAX_QUEUE_SIZE;
/** Rounds of "take everything, look again" per wakeup before yielding to the event loop. */
const MAX_PASSES = 4;

/** One split virtqueue. Configure the public fields, then enable(). */
export class Virtqueue {
  /** Size chosen by the driver (starts at the maximum). */
  size: number;
  desc = 0;
  driver = 0;
  device = 0;
  msixVector = 0xffff;
  private enabled = false;
  private lastAvail = 0;
  private usedIdx = 0;
  private ring: RingFeatures = { eventIdx: false, indirect: false };
  /** Bumped on reset: completions of an older generation are dropped. */
  private generation = 0;
  private broken = false;
  private paused = false;
  private kickedWhilePaused = false;
  private draining = false;
  private again = false;
  private inflightHeads: Uint8Array;
  private inflightCount = 0;
  private completed: number[] = [];
  private flushing = false;
  private idleWaiters: (() => void)[] = [];
  /**
   * Read views of the descriptor table and the avail ring, taken once and
   * reused: the hot path then reads ring fields without translating an
   * address per field. A view of memory unmapped since reads length 0 and
   * is taken again (or the slow path reports the fault). null: that memory
   * offers no single view; undefined: not taken yet.
   */
  private descCache: Uint8Array | null | undefined;
  private availCache: Uint8Array | null | undefined;

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly host: VirtqueueHost,
  ) {
    if (!isPowerOfTwo(maxSize) || maxSize > MAX_QUEUE_SIZE) throw new RangeError(`queue size must be a power of two up to ${MAX_QUEUE_SIZE}, got ${maxSize}`);
    this.size = maxSize;
    this.inflightHeads = new Uint8Array(maxSize);
  }

  /** True once the driver enabled the queue (and it is not broken). */
  get isEnabled(): boolean {
    return this.enabled;
  }

  /** Requests handed out and not completed. */
  get inflight(): number {
    return this.inflightCount;
  }

  /**
   * Enables the queue with the size and addresses the driver wrote.
   * Returns an error message when they are unusable (the queue stays off).
   */
  enable(ring: RingFeatures, checkMemory = true): string | undefined {
    const { size, desc, driver, device } = this;
    if (!isPowerOfTwo(size) || size > this.maxSize) return `queue ${this.index}: size ${size} is not a power of two up to ${this.maxSize}`;
    if (desc % 16 !== 0 || driver % 2 !== 0 || device % 4 !== 0) return `queue ${this.index}: misaligned ring addresses`;
    const m = this.host.memory;
    const mapped = (): boolean => m.mapped(desc, DESC_SIZE * size, false) && m.mapped(driver, 6 + 2 * size, false) && m.mapped(device, 6 + 8 * size, true);
    if (checkMemory && !mapped()) {
      return `queue ${this.index}: rings are not in mapped guest memory`;
    }
    this.ring = ring;
    this.enabled = true;
    this.descCache = this.availCache = undefined;
    return undefined;
  }

  /** Back to the reset state; requests in flight are abandoned. */
  reset(): void {
    this.generation++;
    this.enabled = false;
    this.broken = false;
    this.size = this.maxSize;
    this.desc = this.driver = this.device = 0;
    this.descCache = this.availCache = undefined;
    this.msixVector = 0xffff;
    this.lastAvail = this.usedIdx = 0;
    this.inflightHeads.fill(0);
    this.inflightCount = 0;
    this.completed = [];
    this.kickedWhilePaused = false;
    // Loops of the old generation notice the change and stop on their own.
    this.draining = this.flushing = this.again = false;
    this.wakeIdle();
  }

  /** The driver notified this queue (doorbell): process everything available. */
  kick(): void {
    if (!this.enabled || this.broken) return;
    if (this.paused) {
      this.kickedWhilePaused = true;
      return;
    }
    if (this.draining) {
      this.again = true;
      return;
    }
    void this.drain();
  }

  /** Stops taking requests (completions still publish); for migration. */
  pause(): void {
    this.paused = true;
  }

  /** Takes requests again, and catches up with kicks that came meanwhile. */
  resume(): void {
    this.paused = false;
    if (this.kickedWhilePaused || this.enabled) {
      this.kickedWhilePaused = false;
      this.kick();
    }
  }

  /** Resolves when no request is in flight and nothing waits to be published. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The state that migrates (take it while idle). */
  save(): VirtqueueState {
    return {
      size: this.size,
      enabled: this.enabled,
      desc: this.desc,
      driver: this.driver,
      device: this.device,
      msixVector: this.msixVector,
      lastAvail: this.lastAvail,
      usedIdx: this.usedIdx,
    };
  }

  /** Restores saved state. Returns an error message when it is unusable. */
  restore(s: VirtqueueState, ring: RingFeatures): string | undefined {
    this.reset();
    const ints = [s.size, s.desc, s.driver, s.device, s.msixVector, s.lastAvail, s.usedIdx];
    if (!ints.every((v) => Number.isSafeInteger(v) && v >= 0) || s.lastAvail > 0xffff || s.usedIdx > 0xffff || s.msixVector > 0xffff) {
      return `queue ${this.index}: bad saved state`;
    }
    this.size = s.size;
    this.desc = s.desc;
    this.driver = s.driver;
    this.device = s.device;
    this.msixVector = s.msixVector;
    this.lastAvail = s.lastAvail;
    this.usedIdx = s.usedIdx;
    // DMA is held while a migration loads: rings in unmapped memory show at the first access instead.
    return s.enabled ? this.enable(ring, false) : undefined;
  }

  private isIdle(): boolean {
    return this.inflightCount === 0 && this.completed.length === 0 && !this.flushing && !this.draining;
  }

  private wakeIdle(): void {
    if (!this.isIdle()) return;
    const ws = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of ws) w();
  }

  private fail(reason: string): void {
    if (this.broken) return;
    this.broken = true;
    this.host.onBroken(this, reason);
  }

  /** Takes every available chain, again while the driver keeps adding. */
  private async drain(): Promise<void> {
    this.draining = true;
    const gen = this.generation;
    let passes = 0;
    try {
      do {
        // A driver that keeps adding buffers must not starve the event loop.
        if (++passes > MAX_PASSES) {
          setImmediate(() => this.kick());
          return;
        }
        this.again = false;
        if (!this.ring.eventIdx) await this.writeU16(this.device, VIRTQ_USED_F_NO_NOTIFY);
        await this.takeAvailable(gen);
        if (gen !== this.generation || this.broken) return;
        // Publish where we are, then look once more: the driver may have
        // added buffers without notifying while we were busy.
        if (this.ring.eventIdx) await this.writeU16(this.device + 4 + 8 * this.size, this.lastAvail);
        else await this.writeU16(this.device, 0);
        if (gen !== this.generation) return;
        if ((await this.readU16(this.driver + 2)) !== this.lastAvail && !this.paused) this.again = true;
      } while (this.again && gen === this.generation && !this.broken && !this.paused);
    } catch (e) {
      if (gen === this.generation) this.fail(`queue ${this.index}: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      if (gen === this.generation) {
        this.draining = false;
        this.wakeIdle();
      }
    }
  }

  private async takeAvailable(gen: number): Promise<void> {
    const size = this.size;
    const availIdx = await this.readU16(this.driver + 2);
    if (gen !== this.generation) return;
    let pending = (availIdx - this.lastAvail) & 0xffff;
    if (pending > size) throw new RingError(`avail index ${availIdx} is ${pending} ahead of ${this.lastAvail}, more than the queue size ${size}`);
    while (pending > 0 && !this.paused) {
      const at = this.driver + 4 + 2 * (this.lastAvail % size);
      const hb = this.peek(at, 2) ?? (await this.host.memory.read(at, 2));
      const head = hb[0] | (hb[1] << 8);
      if (gen !== this.generation) return;
      if (head >= size) throw new RingError(`head index ${head} is outside the queue of ${size}`);
      if (this.inflightHeads[head]) throw new RingError(`head ${head} made available again while in flight`);
      const { readable, writable } = await this.walk(head);
      if (gen !== this.generation) return;
      this.lastAvail = (this.lastAvail + 1) & 0xffff;
      pending--;
      this.inflightHeads[head] = 1;
      this.inflightCount++;
      const req = new VirtqueueRequest(this.index, head, readable, writable, this.host.memory, (len) => this.complete(gen, head, len), this.host.bounce);
      try {
        this.host.dispatch(req);
      } catch {
        req.complete(0);
      }
    }
  }

  /** Reads the chain starting at `head` into readable and writable buffers. */
  private async walk(head: number): Promise<{ readable: Descriptor[]; writable: Descriptor[] }> {
    const readable: Descriptor[] = [];
    const writable: Descriptor[] = [];
    let table: Uint8Array | undefined; // an indirect table, read whole
    let tableSize = this.size;
    let index = head;
    let budget = this.size; // descriptors we accept in the direct part
    for (;;) {
      if (index >= tableSize) throw new RingError(`descriptor index ${index} is outside a table of ${tableSize}`);
      if (budget-- <= 0) throw new RingError(`descriptor chain from head ${head} loops or is longer than its table`);
      // Each field is read once into a local: the driver changing the memory meanwhile cannot make us use two values.
      const at = this.desc + index * DESC_SIZE;
      const d = table ? table.subarray(index * DESC_SIZE, (index + 1) * DESC_SIZE) : (this.peek(at, DESC_SIZE) ?? (await this.host.memory.read(at, DESC_SIZE)));
      // Byte reads, not a DataView and a BigInt: this runs for every descriptor.
      const addr = u64le(d, 0);
      const len = (d[8] | (d[9] << 8) | (d[10] << 16) | (d[11] << 24)) >>> 0;
      const flags = d[12] | (d[13] << 8);
      const next = d[14] | (d[15] << 8);
      if (flags & DescFlag.INDIRECT) {
        if (!this.ring.indirect) throw new RingError('indirect descriptor without INDIRECT_DESC');
        if (table) throw new RingError('indirect descriptor inside an indirect table');
        if (flags & DescFlag.NEXT) throw new RingError('indirect descriptor with NEXT');
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > MAX_INDIRECT) throw new RingError(`indirect table of ${len} bytes`);
        if (!Number.isSafeInteger(addr)) throw new RingError('indirect table address out of range');
        table = this.peek(addr, len) ?? (await this.host.memory.read(addr, len));
        tableSize = len / DESC_SIZE;
        budget = tableSize;
        index = 0;
        continue;
      }
      const write = (flags & DescFlag.WRITE) !== 0;
      if (!write && writable.length > 0) throw new RingError('device-readable descriptor after a device-writable one');
      (write ? writable : readable).push({ addr, len });
      if (!(flags & DescFlag.NEXT)) break;
      index = next;
    }
    return { readable, writable };
  }

  private complete(gen: number, head: number, len: number): void {
    if (gen !== this.generation || !this.inflightHeads[head]) return;
    this.inflightHeads[head] = 0;
    this.inflightCount--;
    this.completed.push(head, len >>> 0);
    if (!this.flushing) {
      this.flushing = true;
      // Completions from the same turn of the event loop share one used-index
      // update and one interrupt: publish once the loop's callbacks of this
      // turn (other requests' completions among them) have run, not after the
      // first one's microtasks.
      setImmediate(() => void this.flush(gen));
    }
  }

  /** Writes completed entries to the used ring, then the index, then interrupts if asked. */
  private async flush(gen: number): Promise<void> {
    try {
      while (this.completed.length > 0 && gen === this.generation && !this.broken) {
        const list = this.completed;
        this.completed = [];
        const old = this.usedIdx;
        const elem = new Uint8Array(8);
        const ev = new DataView(elem.buffer);
        for (let i = 0; i < list.length; i += 2) {
          ev.setUint32(0, list[i], true);
          ev.setUint32(4, list[i + 1], true);
          const at = this.device + 4 + 8 * (this.usedIdx % this.size);
          if (!this.poke(at, elem)) {
            await this.host.memory.write(at, elem);
            // A reset meanwhile gave the ring to a new driver setup: stop here.
            if (gen !== this.generation) return;
          }
          this.usedIdx = (this.usedIdx + 1) & 0xffff;
        }
        await this.writeU16(this.device + 2, this.usedIdx);
        if (gen !== this.generation) return;
        if (await this.wantsInterrupt(old, this.usedIdx)) this.host.interrupt(this);
      }
    } catch (e) {
      if (gen === this.generation) this.fail(`queue ${this.index}: cannot publish used buffers: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      if (gen === this.generation) {
        this.flushing = false;
        this.wakeIdle();
      }
    }
  }

  private async wantsInterrupt(old: number, now: number): Promise<boolean> {
    if (this.ring.eventIdx) {
      const usedEvent = await this.readU16(this.driver + 4 + 2 * this.size);
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return ((await this.readU16(this.driver)) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** The cached view of a ring area, (re)taken when missing or unmapped; undefined when there is none. */
  private areaView(which: 'desc' | 'avail'): Uint8Array | undefined {
    const cached = which === 'desc' ? this.descCache : this.availCache;
    if (cached === null) return undefined;
    const start = which === 'desc' ? this.desc : this.driver;
    const length = which === 'desc' ? DESC_SIZE * this.size : 6 + 2 * this.size;
    // Views skip the per-access checks: ask for them once (migration hold, Bus Master Enable).
    if (!this.host.memory.accessible()) return undefined;
    if (cached && cached.length === length) return cached;
    let view: Uint8Array | null = null;
    try {
      const v = this.host.memory.views(start, length, false);
      if (v && v.length === 1 && v[0].length === length) view = v[0];
    } catch {
      // Not mapped (now): the slow path reports it as it always did.
      return undefined;
    }
    if (which === 'desc') this.descCache = view;
    else this.availCache = view;
    return view ?? undefined;
  }

  /** Bytes of a ring area from its cached view, when [addr, addr+length) lies in one. */
  private fromCache(addr: number, length: number): Uint8Array | undefined {
    if (addr >= this.desc && addr + length <= this.desc + DESC_SIZE * this.size) {
      const v = this.areaView('desc');
      return v && v.subarray(addr - this.desc, addr - this.desc + length);
    }
    if (addr >= this.driver && addr + length <= this.driver + 6 + 2 * this.size) {
      const v = this.areaView('avail');
      return v && v.subarray(addr - this.driver, addr - this.driver + length);
    }
    return undefined;
  }

  /** A view of guest memory for reading, or undefined when it takes a copy (no fd, or two regions). */
  private peek(addr: number, length: number): Uint8Array | undefined {
    const c = this.fromCache(addr, length);
    if (c) return c;
    const v = this.host.memory.views(addr, length, false);
    if (!v || v.length !== 1) return undefined;
    // A view of memory unmapped meanwhile reads as empty: a fault, not zeros.
    if (v[0].length !== length) throw new RingError(`guest memory at 0x${addr.toString(16)} went away`);
    return v[0];
  }

  /** Writes through a view; false when the memory needs a message. */
  private poke(addr: number, data: Uint8Array): boolean {
    const v = this.host.memory.views(addr, data.length, true);
    if (!v || v.length !== 1) return false;
    if (v[0].length !== data.length) throw new RingError(`guest memory at 0x${addr.toString(16)} went away`);
    v[0].set(data);
    return true;
  }

  private async readU16(addr: number): Promise<number> {
    // The avail ring's fields, straight from its cached view: no allocation.
    if (addr >= this.driver && addr + 2 <= this.driver + 6 + 2 * this.size) {
      const v = this.areaView('avail');
      if (v) return v[addr - this.driver] | (v[addr - this.driver + 1] << 8);
    }
    const b = this.peek(addr, 2) ?? (await this.host.memory.read(addr, 2));
    return b[0] | (b[1] << 8);
  }

  private async writeBytes(addr: number, data: Uint8Array): Promise<void> {
    if (!this.poke(addr, data)) await this.host.memory.write(addr, data);
  }

  private writeU16(addr: number, value: number): Promise<void> {
    return this.writeBytes(addr, Uint8Array.of(value & 0xff, value >> 8));
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** A little-endian u64 as a number; NaN when beyond 2^53 - 1 (every access to it then fails). */
function u64le(b: Uint8Array, at: number): number {
  const lo = (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
  const hi = (b[at + 4] | (b[at + 5] << 8) | (b[at + 6] << 16) | (b[at + 7] << 24)) >>> 0;
  return hi < 0x200000 ? hi * 0x1_0000_0000 + lo : NaN;
}
