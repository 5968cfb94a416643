/**
 * One request taken from a virtqueue: a descriptor chain seen as two byte
 * areas, what the device may read (the driver's "out" buffers) and what it
 * may write ("in"), each made of guest-memory pieces. Helpers copy bytes in
 * and out, or lend zero-copy views for asynchronous I/O.
 */
import type { QueueMemory } from './memory.js';

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

/** A descriptor chain handed to a queue handler. */
export class VirtqueueRequest {
  /** Bytes the device may read. */
  readonly readableLength: number;
  /** Bytes the device may write. */
  readonly writableLength: number;
  private done = false;

  constructor(
    /** Queue index. */
    readonly queue: number,
    /** Head descriptor index (the id in the used ring). */
    readonly head: number,
    readonly readable: readonly Descriptor[],
    readonly writable: readonly Descriptor[],
    private readonly memory: QueueMemory,
    private readonly onComplete: (written: number) => void,
  ) {
    this.readableLength = total(readable);
    this.writableLength = total(writable);
  }

  /** True once completed. */
  get completed(): boolean {
    return this.done;
  }

  /** Returns the chain to the driver with `written` bytes written. Later calls do nothing. */
  complete(written: number): void {
    if (this.done) return;
    this.done = true;
    this.onComplete(Math.max(0, Math.min(written, this.writableLength)));
  }

  /**
   * The guest-memory pieces of [offset, offset+length) of an area.
   * Throws RequestError when the range is outside the area.
   */
  pieces(area: Area, offset: number, length: number): Descriptor[] {
    const list = area === 'readable' ? this.readable : this.writable;
    const size = area === 'readable' ? this.readableLength : this.writableLength;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      throw new RequestError(`${area} bytes ${offset}+${length} are outside the ${size} the driver gave`);
    }
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
      out.set(await this.memory.read(p.addr, p.len), at);
      at += p.len;
    }
    return out;
  }

  /** Copies `data` into the writable area at `offset`. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    let at = 0;
    for (const p of this.pieces('writable', offset, data.length)) {
      await this.memory.write(p.addr, data.subarray(at, at + p.len));
      at += p.len;
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
    const views = this.directViews(pieces, write);
    if (views) return views;
    const bounce = write ? Buffer.alloc(length) : await this.read(offset, length);
    return {
      buffers: [bounce],
      direct: false,
      finish: async (commit) => {
        if (commit && write) await this.write(offset, bounce);
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
      finish: async () => release(),
    };
  }
}

function total(list: readonly Descriptor[]): number {
  let n = 0;
  for (const d of list) n += d.len;
  return n;
}
