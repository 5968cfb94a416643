/**
 * Big-endian cursors for building and parsing NBD messages: a writer that
 * grows as fields are appended, a reader over one received message, and a
 * byte queue that collects socket data until a whole message is there.
 */
import { sliceScatter } from '../scatter.js';

/** Appends big-endian fields; `bytes()` returns what was written. */
export class CursorWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(capacity = 64) {
    this.buf = Buffer.alloc(capacity);
  }

  u16(v: number): this {
    this.room(2).writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.room(4).writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  u64(v: number | bigint): this {
    this.room(8).writeBigUInt64BE(BigInt(v), this.pos);
    this.pos += 8;
    return this;
  }

  raw(b: Uint8Array): this {
    this.room(b.byteLength).set(b, this.pos);
    this.pos += b.byteLength;
    return this;
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  private room(n: number): Buffer {
    if (this.pos + n > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(this.buf.length * 2, this.pos + n));
      this.buf.copy(bigger, 0, 0, this.pos);
      this.buf = bigger;
    }
    return this.buf;
  }
}

/** A message too short for the fields read from it. */
export class ShortMessageError extends Error {}

/** Reads big-endian fields from one message. */
export class CursorReader {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  u16(): number {
    const v = this.need(2).readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    const v = this.need(4).readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): bigint {
    const v = this.need(8).readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  raw(n: number): Buffer {
    const v = this.need(n).subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  private need(n: number): Buffer {
    if (this.pos + n > this.buf.length) throw new ShortMessageError(`message too short: need ${n} more bytes at ${this.pos} of ${this.buf.length}`);
    return this.buf;
  }
}

/** Socket data waiting to be parsed, without copying until a message is taken. */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  private total = 0;

  /** Bytes waiting. */
  get length(): number {
    return this.total;
  }

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.total += b.length;
  }

  /** The next `n` bytes as one Buffer (a view when they sit in one chunk). Caller checks `length` first. */
  take(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out, n);
    return out;
  }

  /** Moves the next `n` bytes into `dst` (a scatter list), starting `skip` bytes into it. */
  takeInto(dst: readonly Uint8Array[], skip: number, n: number): void {
    for (const v of sliceScatter(dst, skip, n)) {
      this.copyOut(v, v.byteLength);
      n -= v.byteLength;
    }
    if (n > 0) this.discard(n);
  }

  /** Drops the next `n` bytes. */
  discard(n: number): void {
    while (n > 0) {
      const left = this.chunks[0].length - this.head;
      const k = Math.min(left, n);
      this.advance(k);
      n -= k;
    }
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }

  private copyOut(dst: Uint8Array, n: number): void {
    let done = 0;
    while (done < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length - this.head, n - done);
      dst.set(c.subarray(this.head, this.head + k), done);
      this.advance(k);
      done += k;
    }
  }

  private advance(k: number): void {
    this.head += k;
    this.total -= k;
    if (this.head === this.chunks[0].length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
