/**
 * One request taken from a virtqueue: a descriptor chain seen as two byte
 * areas, what the device may read (the driver's "out" buffers) and what it
 * may write ("in"), each made of guest-memory pieces. Helpers copy bytes in
 * and out, or lend zero-copy views for asynchronous I/O.
 */
import type { QueueMemory } from '../device/queue-memory.js';

/** One buffer of a descriptor chain. `addr` is NaN when beyond 2^53. */
export interface Descriptor {
  readonly addr: number;
  readonly len: number;
}

/** Which area of a request. */
export type Area = 'readable' | 'writable';

/** Buffers for I/O on part of an area: zero-copy views, or a bounce copy. */
export interface IoBuffers {
  /** The buffers, in order; their lengths add up to the length asked for. */
  readonly buffers: Uint8Array[];
  /** True when `buffers` are views of guest memory. */
  readonly direct: boolean;
  /**
   * Ends the I/O: for a bounce copy of the writable area, copies it into
   * guest memory; always drops the pins. Call exactly once, also on failure
   * (then with `commit` false).
   */
  finish(commit: boolean): Promise<void>;
}

/**
 * Bytes of bounce buffers (copies of guest memory without views) a device
 * may hold at once, so requests over fd-less memory cannot make the
 * process allocate without bound: over the limit, they wait their turn.
 */
export class BounceBudget {
  private used = 0;
  private waiting: { bytes: number; go: () => void }[] = [];

  constructor(readonly limit = 64 * 1024 * 1024) {}

  /**
   * Waits until `bytes` fit (a request larger than the limit waits for all),
   * then holds them. `now` takes them at once: for a request that already
   * holds some, so that requests never wait on each other in a circle.
   */
  async acquire(bytes: number, now = false): Promise<() => void> {
    const take = Math.min(bytes, this.limit);
    if (!now && (this.used + take > this.limit || this.waiting.length > 0)) {
      await new Promise<void>((go) => this.waiting.push({ bytes: take, go }));
    } else {
      this.used += take;
    }
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.used -= take;
      this.admit();
    };
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.used + this.waiting[0].bytes <= this.limit) {
      const w = this.waiting.shift()!;
      this.used += w.bytes;
      w.go();
    }
  }
}

/** A request error the device reports to the driver (e.g. as IOERR). */
export class RequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RequestError';
  }
}

/** @internal Where a request reports its completion (its queue). */
export interface RequestSink {
  requestDone(generation: number, head: number, written: number): void;
  /** False once the queue was reset after handing out a request of `generation`. */
  isCurrent(generation: number): boolean;
}

/** A descriptor chain handed to a queue handler. */
export class VirtqueueRequest {
  /** Bytes the device may read. */
  readonly readableLength: number;
  /** Bytes the device may write. */
  readonly writableLength: number;
  private done = false;
  /** Bounce buffers this request holds. */
  private bouncing = 0;

  /** @internal Built by the virtqueue; handlers receive requests, they do not make them. */
  constructor(
    /** Queue index. */
    readonly queue: number,
    /** Head descriptor index (the id in the used ring). */
    readonly head: number,
    readonly readable: readonly Descriptor[],
    readonly writable: readonly Descriptor[],
    private readonly memory: QueueMemory,
    private readonly sink: RequestSink,
    /** The queue's generation when it handed the request out: a reset since makes the completion moot. */
    private readonly generation: number,
    private readonly bounce: BounceBudget = new BounceBudget(),
  ) {
    this.readableLength = total(readable);
    this.writableLength = total(writable);
  }

  /** True once completed. */
  get completed(): boolean {
    return this.done;
  }

  /**
   * True when the queue was reset since it handed the request out: its
   * completion will be dropped, and so is anything it would still write
   * into its writable area (write() and writeNow() do nothing, buffers()
   * throws RequestError, viewsNow() lends none); what goes wrong with it
   * (say, its memory is gone) is no longer the device's concern.
   */
  get abandoned(): boolean {
    return !this.sink.isCurrent(this.generation);
  }

  /** Returns the chain to the driver with `written` bytes written. Later calls do nothing. */
  complete(written: number): void {
    if (this.done) return;
    this.done = true;
    this.sink.requestDone(this.generation, this.head, Math.max(0, Math.min(written, this.writableLength)));
  }

  /**
   * The guest-memory pieces of [offset, offset+length) of an area.
   * Throws RequestError when the range is outside the area.
   */
  pieces(area: Area, offset: number, length: number): Descriptor[] {
    const list = this.area(area, offset, length);
    const out: Descriptor[] = [];
    let skip = offset;
    let left = length;
    for (const d of list) {
      if (left === 0) break;
      if (skip >= d.len) {
        skip -= d.len;
        continue;
      }
      const take = Math.min(d.len - skip, left);
      out.push({ addr: d.addr + skip, len: take });
      left -= take;
      skip = 0;
    }
    return out;
  }

  /** Copies [offset, offset+length) of the readable area out of guest memory. */
  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    let at = 0;
    for (const p of this.pieces('readable', offset, length)) {
      const views = this.memory.views(p.addr, p.len, false);
      if (views) {
        for (const v of views) {
          out.set(v, at);
          at += v.length;
        }
        if (views.reduce((n, v) => n + v.length, 0) !== p.len) throw new RequestError('guest memory went away');
      } else {
        out.set(await this.memory.read(p.addr, p.len), at);
        at += p.len;
      }
    }
    return out;
  }

  /** Copies `data` into the writable area at `offset` (nothing once {@link abandoned}). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.abandoned) return;
    let at = 0;
    for (const p of this.pieces('writable', offset, data.length)) {
      const views = this.memory.views(p.addr, p.len, true);
      if (views) {
        let from = at;
        for (const v of views) {
          if (v.length === 0) throw new RequestError('guest memory went away');
          v.set(data.subarray(from, from + v.length));
          from += v.length;
        }
      } else {
        await this.memory.write(p.addr, data.subarray(at, at + p.len));
      }
      at += p.len;
    }
  }

  /**
   * Copies [offset, offset + target.length) of the readable area into
   * `target` at once, through views of guest memory. False when part of
   * that memory has no views (use read()); `target` may then hold part of
   * the bytes. Throws as read() rejects.
   */
  readNow(offset: number, target: Uint8Array): boolean {
    const list = this.area('readable', offset, target.length);
    let skip = offset;
    let at = 0;
    for (let i = 0; i < list.length && at < target.length; i++) {
      const d = list[i];
      if (skip >= d.len) {
        skip -= d.len;
        continue;
      }
      const take = Math.min(d.len - skip, target.length - at);
      const views = this.memory.views(d.addr + skip, take, false);
      if (!views) return false;
      for (const v of views) {
        // A view of memory unmapped meanwhile reads as empty: a fault, not zeros.
        if (v.length === 0) throw new RequestError('guest memory went away');
        target.set(v, at);
        at += v.length;
      }
      skip = 0;
    }
    return true;
  }

  /**
   * Copies `data` into the writable area at `offset` at once, through views
   * of guest memory. False when part of that memory has no views (use
   * write()); part of `data` may then be written. Throws as write() rejects.
   */
  writeNow(offset: number, data: Uint8Array): boolean {
    const list = this.area('writable', offset, data.length);
    if (this.abandoned) return true;
    let skip = offset;
    let at = 0;
    for (let i = 0; i < list.length && at < data.length; i++) {
      const d = list[i];
      if (skip >= d.len) {
        skip -= d.len;
        continue;
      }
      const take = Math.min(d.len - skip, data.length - at);
      const views = this.memory.views(d.addr + skip, take, true);
      if (!views) return false;
      for (const v of views) {
        if (v.length === 0) throw new RequestError('guest memory went away');
        v.set(at === 0 && v.length === data.length ? data : data.subarray(at, at + v.length));
        at += v.length;
      }
      skip = 0;
    }
    return true;
  }

  /**
   * Zero-copy views of [offset, offset+length) of an area for I/O that ends
   * before the caller returns: they are not pinned, so they must not be
   * kept (use buffers() for asynchronous I/O). Views of the writable area
   * are recorded dirty for migration. Undefined when part of the range has
   * no views; throws as buffers() rejects for ranges that are outside the
   * area or not mapped with the right access.
   */
  viewsNow(area: Area, offset: number, length: number): Uint8Array[] | undefined {
    const write = area === 'writable';
    const list = this.area(area, offset, length);
    if (write && this.abandoned) return undefined;
    const out: Uint8Array[] = [];
    let skip = offset;
    let left = length;
    for (let i = 0; i < list.length && left > 0; i++) {
      const d = list[i];
      if (skip >= d.len) {
        skip -= d.len;
        continue;
      }
      const take = Math.min(d.len - skip, left);
      const views = this.memory.views(d.addr + skip, take, write);
      if (!views) return undefined;
      for (const v of views) {
        if (v.length === 0) throw new RequestError('guest memory went away');
        out.push(v);
      }
      left -= take;
      skip = 0;
    }
    return out;
  }

  /** The descriptors of an area, once [offset, offset+length) is checked to lie inside it. */
  private area(area: Area, offset: number, length: number): readonly Descriptor[] {
    const size = area === 'readable' ? this.readableLength : this.writableLength;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      throw new RequestError(`${area} bytes ${offset}+${length} are outside the ${size} the driver gave`);
    }
    return area === 'readable' ? this.readable : this.writable;
  }

  /**
   * Buffers for [offset, offset+length) of an area, for asynchronous I/O:
   * pinned zero-copy views where guest memory allows, else a bounce buffer
   * (filled from guest memory first for the readable area). Throws when
   * the range is not in mapped memory with the right access.
   */
  async buffers(area: Area, offset: number, length: number): Promise<IoBuffers> {
    const write = area === 'writable';
    const pieces = this.pieces(area, offset, length);
    if (write && this.abandoned) throw new RequestError('the request was reset away');
    const views = this.directViews(pieces, write);
    if (views) return views;
    const budget = await this.bounce.acquire(length, this.bouncing > 0);
    this.bouncing++;
    let held = true;
    const release = (): void => {
      if (!held) return;
      held = false;
      budget();
      this.bouncing--;
    };
    let bounce: Buffer;
    try {
      bounce = write ? Buffer.alloc(length) : await this.read(offset, length);
    } catch (e) {
      release();
      throw e;
    }
    return {
      buffers: [bounce],
      direct: false,
      finish: async (commit) => {
        try {
          if (commit && write) await this.write(offset, bounce);
        } finally {
          release();
        }
      },
    };
  }

  private directViews(pieces: Descriptor[], write: boolean): IoBuffers | undefined {
    const views: Uint8Array[] = [];
    const releases: (() => void)[] = [];
    const release = (): void => {
      for (const r of releases) r();
    };
    try {
      for (const p of pieces) {
        if (p.len === 0) continue;
        const v = this.memory.views(p.addr, p.len, write);
        if (!v) {
          release();
          return undefined;
        }
        releases.push(this.memory.pin(p.addr, p.len));
        views.push(...v);
      }
    } catch (e) {
      release();
      throw e;
    }
    return {
      buffers: views,
      direct: true,
      finish: async () => {
        if (write) for (const p of pieces) if (p.len > 0) this.memory.markDirty(p.addr, p.len);
        release();
      },
    };
  }
}

function total(list: readonly Descriptor[]): number {
  let n = 0;
  for (const d of list) n += d.len;
  return n;
}
