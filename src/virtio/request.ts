/**
 * One request taken from a virtqueue: a descriptor chain seen as two byte
 * areas, what the device may read (the driver's "out" buffers) and what it
 * may write ("in"), each made of guest-memory pieces.
 *
 * When the queue hands a request out, both areas' lengths are summed. A
 * range inside one buffer is then reached in place: located in its DMA
 * region's mapping (no view made for a header or a status byte, one view
 * for a data buffer); an area is translated into zero-copy views only when
 * a range spans its buffers. Either way the memory is taken for reading or
 * for writing, so the direction is checked by the translation. Every helper
 * takes one path: it finishes at once on mapped memory (no Promise), or
 * returns a Promise where memory is reached by messages. Views are lent for
 * the handler's synchronous part; later calls translate again, since
 * memory may have changed meanwhile.
 */
import { sliceScatter } from '../block/scatter.js';
import { BounceBudget } from './bounce-budget.js';
import type { MaybePromise } from '../device/spec.js';
import type { GuestSpan, QueueMemory } from '../device/queue-memory.js';
import { emptySpan } from '../device/dma-access.js';
import type { SpanCache } from '../device/span-cache.js';

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
  /**
   * The areas as views, lent while the handler runs synchronously (see
   * {@link lend}); undefined: not taken (or no longer lent), null: that
   * memory offers none (or part of it faults: the piece-by-piece path
   * reports exactly where).
   */
  private readableViews: Uint8Array[] | null | undefined;
  private writableViews: Uint8Array[] | null | undefined;
  private lent = false;
  /** While lent within a queue's synchronous drain: the drain's cache of the region last located. */
  private spans: SpanCache | undefined;

  /**
   * @internal Built by the virtqueue; handlers receive requests, they do
   * not make them. `chain` holds the buffers as [addr, len] pairs, the
   * `readableCount` device-readable ones first; the lengths are their sums.
   */
  constructor(
    /** Queue index. */
    readonly queue: number,
    /** Head descriptor index (the id in the used ring). */
    readonly head: number,
    private readonly chain: readonly number[],
    private readonly readableCount: number,
    readableLength: number,
    writableLength: number,
    private readonly memory: QueueMemory,
    private readonly sink: RequestSink,
    /** The queue's generation when it handed the request out: a reset since makes the completion moot. */
    private readonly generation: number,
    private readonly bounce: BounceBudget = new BounceBudget(),
  ) {
    this.readableLength = readableLength;
    this.writableLength = writableLength;
  }

  /** The device-readable buffers, in chain order (a new list each call). */
  get readable(): Descriptor[] {
    return this.descriptors(0, this.readableCount);
  }

  /** The device-writable buffers, in chain order (a new list each call). */
  get writable(): Descriptor[] {
    return this.descriptors(this.readableCount, this.chain.length >> 1);
  }

  /** How many buffers an area is made of. */
  bufferCount(area: Area): number {
    return area === 'readable' ? this.readableCount : (this.chain.length >> 1) - this.readableCount;
  }

  /** The length of buffer `i` of an area (0 for a buffer it does not have). */
  bufferLength(area: Area, i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.bufferCount(area)) return 0;
    return this.chain[2 * (area === 'readable' ? i : this.readableCount + i) + 1];
  }

  private descriptors(from: number, to: number): Descriptor[] {
    const out: Descriptor[] = [];
    for (let i = from; i < to; i++) out.push({ addr: this.chain[2 * i], len: this.chain[2 * i + 1] });
    return out;
  }

  /**
   * @internal Lends the areas' views until {@link unlend}: the queue does
   * this around the handler's synchronous part (no event-loop turn can
   * unmap memory meanwhile). An area is translated when first asked for;
   * `spans`, the drain's region cache, answers ranges in a region already
   * located.
   */
  lend(spans?: SpanCache): void {
    this.lent = true;
    this.spans = spans;
  }

  /** @internal The handler's synchronous part ended: later calls translate again. */
  unlend(): void {
    this.lent = false;
    this.spans = undefined;
    this.readableViews = this.writableViews = undefined;
  }

  /** True once completed. */
  get completed(): boolean {
    return this.done;
  }

  /**
   * True when the queue was reset since it handed the request out: its
   * completion will be dropped, and so is anything it would still write
   * into its writable area (write() does nothing, buffers() throws
   * RequestError, views() lends none); what goes wrong with it (say, its
   * memory is gone) is no longer the device's concern.
   */
  get abandoned(): boolean {
    return !this.sink.isCurrent(this.generation);
  }

  /**
   * Where the request completes: returns the chain to the driver with
   * `written` bytes written. Later calls do nothing.
   */
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
    const from = this.area(area, offset, length);
    const to = this.areaEnd(area);
    const chain = this.chain;
    const out: Descriptor[] = [];
    let skip = offset;
    let left = length;
    for (let i = from; i < to; i++) {
      const len = chain[2 * i + 1];
      if (left === 0) break;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const take = Math.min(len - skip, left);
      out.push({ addr: chain[2 * i] + skip, len: take });
      left -= take;
      skip = 0;
    }
    return out;
  }

  /**
   * Zero-copy views of [offset, offset+length) of an area, for I/O that
   * ends before the caller yields: they are not pinned, so they must not be
   * kept (use buffers(), or {@link hold} a request started on them).
   * Undefined when part of the range has no views, and for the writable
   * area of an {@link abandoned} request. Throws RequestError for a range
   * outside the area, or in memory that went away.
   */
  views(area: Area, offset: number, length: number): Uint8Array[] | undefined {
    const from = this.area(area, offset, length);
    const write = area === 'writable';
    if (write && !this.lent && this.abandoned) return undefined;
    // The usual case, a range inside one buffer: one view, no translation of the whole area.
    if (this.locatePiece(from, this.areaEnd(area), offset, length, write)) return [span.memory.subarray(span.offset, span.offset + length)];
    const all = this.areaViews(write);
    if (!all) return undefined;
    return offset === 0 && length === (write ? this.writableLength : this.readableLength) ? all : sliceScatter(all, offset, length);
  }

  /**
   * Keeps the views of [offset, offset+length) of an area alive (pinned)
   * until `io`, a backend request started on them by the caller in this
   * same turn, settles; views of the writable area are then recorded dirty
   * for migration. Resolves or rejects as `io` does.
   */
  async hold(area: Area, offset: number, length: number, io: Promise<void>): Promise<void> {
    const pieces = this.pieces(area, offset, length);
    const unpins = pieces.map((p) => this.memory.pin(p.addr, p.len));
    try {
      await io;
    } finally {
      if (area === 'writable') for (const p of pieces) if (p.len > 0) this.memory.markDirty(p.addr, p.len);
      for (const u of unpins) u();
    }
  }

  /**
   * Copies [offset, offset+length) of the readable area out of guest
   * memory: at once where it has views (into `scratch` when given, which
   * the caller is done with before it yields), else by message into a new
   * Buffer.
   */
  read(offset: number, length: number, scratch?: Buffer): MaybePromise<Buffer> {
    const from = this.area('readable', offset, length);
    if (length <= SMALL && this.locatePiece(from, this.readableCount, offset, length, false)) {
      // A few bytes (a request header): copied without making a view.
      const out = scratch && scratch.length === length ? scratch : Buffer.allocUnsafe(length);
      const m = span.memory;
      for (let i = 0, at = span.offset; i < length; i++) out[i] = m[at + i];
      return out;
    }
    const views = this.views('readable', offset, length);
    if (!views) return this.readByPieces(offset, length);
    const out = scratch && scratch.length === length ? scratch : Buffer.allocUnsafe(length);
    let at = 0;
    for (let i = 0; i < views.length; i++) {
      out.set(views[i], at);
      at += views[i].length;
    }
    return out;
  }

  /**
   * Where a request's data is written: copies `data` into the writable area
   * at `offset`, at once where it has views, else by message. Nothing once
   * {@link abandoned}.
   */
  write(offset: number, data: Uint8Array): MaybePromise<void> {
    const from = this.area('writable', offset, data.length);
    if (this.lent || !this.abandoned) {
      if (this.locatePiece(from, this.chain.length >> 1, offset, data.length, true)) {
        // Into the mapping at its offset: no view made; a few bytes (a status byte) one by one.
        const m = span.memory;
        if (data.length <= SMALL) for (let i = 0, at = span.offset; i < data.length; i++) m[at + i] = data[i];
        else m.set(data, span.offset);
        return;
      }
    }
    const views = this.views('writable', offset, data.length);
    if (!views) return this.abandoned ? undefined : this.writeByPieces(offset, data);
    let at = 0;
    for (let i = 0; i < views.length; i++) {
      const v = views[i];
      v.set(at === 0 && v.length === data.length ? data : data.subarray(at, at + v.length));
      at += v.length;
    }
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

  /** An area's views: the lent ones (translated when first asked for), or translated now when not lent; null when it has none. */
  private areaViews(write: boolean): Uint8Array[] | null {
    const n = this.chain.length >> 1;
    if (!this.lent) return write ? translate(this.memory, this.chain, this.readableCount, n, true) : translate(this.memory, this.chain, 0, this.readableCount, false);
    if (write) return this.writableViews === undefined ? (this.writableViews = translate(this.memory, this.chain, this.readableCount, n, true)) : this.writableViews;
    return this.readableViews === undefined ? (this.readableViews = translate(this.memory, this.chain, 0, this.readableCount, false)) : this.readableViews;
  }

  /**
   * Sets `span` to where [offset, offset+length) of an area (buffers
   * [from, to) of the chain; the range checked to lie inside it) is in a
   * zero-copy mapping, when it lies inside one buffer of the area and that
   * memory allows it; false otherwise (also for memory that faults: the
   * other paths then report exactly where).
   */
  private locatePiece(from: number, to: number, offset: number, length: number, write: boolean): boolean {
    if (length === 0) return false;
    const chain = this.chain;
    let skip = offset;
    for (let i = from; i < to; i++) {
      const len = chain[2 * i + 1];
      if (skip < len) {
        if (skip + length > len) return false;
        try {
          const spans = this.spans;
          return spans ? spans.locate(this.memory, chain[2 * i] + skip, length, write, span) : this.memory.locate(chain[2 * i] + skip, length, write, span);
        } catch {
          return false;
        }
      }
      skip -= len;
    }
    return false;
  }

  /** Where an area's buffers start in the chain, once [offset, offset+length) is checked to lie inside it. */
  private area(area: Area, offset: number, length: number): number {
    const size = area === 'readable' ? this.readableLength : this.writableLength;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      throw new RequestError(`${area} bytes ${offset}+${length} are outside the ${size} the driver gave`);
    }
    return area === 'readable' ? 0 : this.readableCount;
  }

  /** Where an area's buffers end in the chain. */
  private areaEnd(area: Area): number {
    return area === 'readable' ? this.readableCount : this.chain.length >> 1;
  }

  /** The readable bytes piece by piece, each by view or by message (memory without views, or faulting somewhere). */
  private async readByPieces(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    let at = 0;
    for (const p of this.pieces('readable', offset, length)) {
      const views = this.memory.views(p.addr, p.len, false);
      if (views) {
        for (const v of views) {
          if (v.length === 0) throw new RequestError('guest memory went away');
          out.set(v, at);
          at += v.length;
        }
      } else {
        out.set(await this.memory.read(p.addr, p.len), at);
        at += p.len;
      }
    }
    return out;
  }

  /** Writes piece by piece, each by view or by message. */
  private async writeByPieces(offset: number, data: Uint8Array): Promise<void> {
    let at = 0;
    for (const p of this.pieces('writable', offset, data.length)) {
      if (this.abandoned) return;
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

/** Ranges of at most this many bytes are copied byte by byte rather than through a view. */
const SMALL = 64;

/** Where locatePiece() found a range (module scratch: set and used synchronously). */
const span: GuestSpan = emptySpan();

/**
 * An area's descriptors as views, for reading or for writing (a writable
 * view marks its pages dirty while migration logs); null when some piece
 * has none, or faults (unmapped, wrong access, unmapped since): the
 * piece-by-piece path then reports exactly which.
 */
function translate(memory: QueueMemory, chain: readonly number[], from: number, to: number, write: boolean): Uint8Array[] | null {
  const out: Uint8Array[] = [];
  try {
    for (let i = from; i < to; i++) {
      const len = chain[2 * i + 1];
      if (len === 0) continue;
      const v = memory.views(chain[2 * i], len, write);
      if (!v) return null;
      for (let k = 0; k < v.length; k++) {
        // A view of memory unmapped meanwhile reads as empty: a fault, not zeros.
        if (v[k].length === 0) return null;
        out.push(v[k]);
      }
    }
  } catch {
    return null;
  }
  return out;
}
