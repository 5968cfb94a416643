/**
 * The transmission phase on the wire: request headers out, and a parser for
 * simple and structured replies that places read data straight into the
 * caller's buffers as it is taken off the socket.
 */
import { sliceScatter } from '../scatter.js';
import { CursorReader, CursorWriter, type ByteQueue } from './cursor.js';
import {
  Chunk,
  CHUNK_ERROR_BIT,
  NbdErrno,
  REPLY_FLAG_DONE,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

/** A request header (the payload of a write follows it on the wire). */
export function encodeRequest(type: number, flags: number, cookie: bigint, offset: number, length: number): Buffer {
  return new CursorWriter(REQUEST_HEADER_SIZE).u32(REQUEST_MAGIC).u16(flags).u16(type).u64(cookie).u64(offset).u32(length).bytes();
}

/** The peer broke the protocol; the connection cannot go on. */
export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolError';
  }
}

/** Where a read's data goes. */
export interface ReadTarget {
  readonly offset: number;
  readonly length: number;
  readonly buffers: readonly Uint8Array[];
}

/** What the parser needs from the connection. */
export interface ReplySink {
  /**
   * The request with this cookie: its read target for a read, null for other
   * commands, undefined when no such request is outstanding.
   */
  lookup(cookie: bigint): ReadTarget | null | undefined;
  /** The request is done: `error` is 0 or an NBD errno value. */
  finish(cookie: bigint, error: number, message?: string): void;
}

type State =
  | { kind: 'magic' }
  | { kind: 'simple-data'; cookie: bigint; target: ReadTarget }
  | { kind: 'chunk'; flags: number; type: number; cookie: bigint; length: number };

/** Per-request progress across structured chunks. */
interface Progress {
  error: number;
  message?: string;
  covered: number;
}

/**
 * Parses replies out of a byte queue. Call `pump()` after every push; it
 * consumes whole messages and leaves partial ones in the queue.
 */
export class ReplyParser {
  private state: State = { kind: 'magic' };
  private readonly progress = new Map<bigint, Progress>();

  constructor(
    private readonly queue: ByteQueue,
    private readonly structured: boolean,
    private readonly sink: ReplySink,
  ) {}

  /** @throws NbdProtocolError on bytes that are not a valid reply. */
  pump(): void {
    for (;;) {
      const s = this.state;
      if (s.kind === 'magic') {
        if (this.queue.length < 4) return;
        const magic = this.queue.take(4).readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) this.state = { kind: 'chunk', flags: -1, type: -1, cookie: 0n, length: -1 };
        else if (magic === STRUCTURED_REPLY_MAGIC && this.structured) this.state = { kind: 'chunk', flags: -2, type: -1, cookie: 0n, length: -1 };
        else throw new NbdProtocolError(`bad reply magic 0x${magic.toString(16)}`);
        continue;
      }
      if (s.kind === 'simple-data') {
        if (this.queue.length < s.target.length) return;
        this.queue.takeInto(s.target.buffers, 0, s.target.length);
        this.state = { kind: 'magic' };
        this.sink.finish(s.cookie, 0);
        continue;
      }
      if (s.length === -1) {
        // Header not read yet: flags -1 marks a simple reply, -2 a structured one.
        const need = s.flags === -1 ? SIMPLE_REPLY_SIZE - 4 : STRUCTURED_HEADER_SIZE - 4;
        if (this.queue.length < need) return;
        const h = new CursorReader(this.queue.take(need));
        if (s.flags === -1) {
          const error = h.u32();
          const cookie = h.u64();
          this.simple(cookie, error);
        } else {
          const flags = h.u16();
          const type = h.u16();
          const cookie = h.u64();
          const length = h.u32();
          this.state = { kind: 'chunk', flags, type, cookie, length };
        }
        continue;
      }
      if (this.queue.length < s.length) return;
      this.state = { kind: 'magic' };
      this.chunk(s.flags, s.type, s.cookie, s.length);
    }
  }

  private simple(cookie: bigint, error: number): void {
    const target = this.sink.lookup(cookie);
    if (target === undefined) throw new NbdProtocolError(`reply for unknown cookie ${cookie}`);
    if (target !== null && error === 0) {
      if (this.structured) throw new NbdProtocolError('simple reply with data to a read after structured replies were agreed');
      this.state = { kind: 'simple-data', cookie, target };
      return;
    }
    this.state = { kind: 'magic' };
    this.sink.finish(cookie, error);
  }

  private chunk(flags: number, type: number, cookie: bigint, length: number): void {
    const target = this.sink.lookup(cookie);
    if (target === undefined) throw new NbdProtocolError(`structured reply for unknown cookie ${cookie}`);
    let p = this.progress.get(cookie);
    if (p === undefined) {
      p = { error: 0, covered: 0 };
      this.progress.set(cookie, p);
    }
    if (type === Chunk.OffsetData || type === Chunk.OffsetHole) {
      if (target === null) throw new NbdProtocolError('data chunk in the reply to a command that is not a read');
      if (length < (type === Chunk.OffsetData ? 8 : 12)) throw new NbdProtocolError('short data chunk');
      const at = Number(this.queue.take(8).readBigUInt64BE(0));
      const n = type === Chunk.OffsetData ? length - 8 : this.queue.take(4).readUInt32BE(0);
      const skip = at - target.offset;
      if (skip < 0 || skip + n > target.length) throw new NbdProtocolError(`chunk ${at}+${n} lies outside the read ${target.offset}+${target.length}`);
      if (type === Chunk.OffsetData) this.queue.takeInto(target.buffers, skip, n);
      else for (const v of sliceScatter(target.buffers, skip, n)) v.fill(0);
      p.covered += n;
    } else if (type & CHUNK_ERROR_BIT) {
      const body = new CursorReader(this.queue.take(length));
      const error = body.remaining >= 4 ? body.u32() : NbdErrno.EIO;
      const msgLen = body.remaining >= 2 ? body.u16() : 0;
      const message = body.remaining >= msgLen ? body.raw(msgLen).toString('utf8') : undefined;
      if (p.error === 0) {
        p.error = error === 0 ? NbdErrno.EIO : error;
        p.message = message;
      }
    } else {
      // NBD_REPLY_TYPE_NONE, or a chunk type we did not ask for (block status).
      this.queue.discard(length);
    }
    if (flags & REPLY_FLAG_DONE) {
      this.progress.delete(cookie);
      if (p.error === 0 && target !== null && p.covered !== target.length) {
        this.sink.finish(cookie, NbdErrno.EIO, `the server's reply covered ${p.covered} of ${target.length} bytes`);
      } else {
        this.sink.finish(cookie, p.error, p.message);
      }
    }
  }
}

