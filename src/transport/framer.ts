/**
 * Splits a byte stream into vfio-user messages and attributes received fds.
 *
 * The kernel delivers SCM_RIGHTS fds with the recvmsg call that reads the
 * first byte of the sendmsg that carried them, and stops that read after
 * the carrying segment. Every sender we talk to sends one message per
 * sendmsg, so fds belong to the last message that starts in their chunk
 * (or to the message in progress when no message starts there).
 */
import { HEADER_SIZE } from '../protocol/constants.js';
import { loadU32 } from '../protocol/wire.js';

/** A whole framed message: its bytes (header included) and its fds. */
export interface Frame {
  /** The whole message, header first. Owned by the receiver. */
  readonly bytes: Buffer;
  /** Fds that arrived with it; the receiver owns and must close them. Without fds, a shared frozen empty list. */
  readonly fds: number[];
}

/** Why a stream cannot be trusted any more. */
export class FramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FramingError';
  }
}

const NO_FDS: number[] = [];
/** What a frame without fds carries: one list for all (no array per message), frozen so that nobody fills it. */
const NONE: number[] = Object.freeze([]) as unknown as number[];

/** Stateful framer for one connection. */
export class Framer {
  private pending: Buffer | null = null;
  private pendingFds: number[] = NO_FDS;

  /** @param maxMessageSize largest acceptable message, header included. */
  constructor(public maxMessageSize: number) {}

  /**
   * Feeds one received chunk; calls `emit` for each complete message.
   * Throws FramingError when a header cannot be trusted; the caller then
   * closes the connection (and `drain()` returns the fds still held).
   */
  push(chunk: Buffer, fds: number[] | undefined, emit: (frame: Frame) => void): void {
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    // No closure or copy per chunk: this runs for every message.
    let unattached = fds && fds.length > 0 ? fds : undefined;
    const ownerStart = unattached ? this.lastMessageStart(buf, buf.length - chunk.length) : -1;
    if (unattached && ownerStart < 0) unattached = this.attach(unattached);
    let pos = 0;
    try {
      while (buf.length - pos >= HEADER_SIZE) {
        const size = loadU32(buf, pos + 4);
        this.checkSize(size);
        if (unattached && pos === ownerStart) unattached = this.attach(unattached);
        if (buf.length - pos < size) break;
        const own = this.pendingFds;
        this.pendingFds = NO_FDS;
        // A chunk holding exactly one message is handed over without a copy.
        const bytes = pos === 0 && size === buf.length ? buf : buf.subarray(pos, pos + size);
        pos += size;
        emit({ bytes, fds: own === NO_FDS ? NONE : own });
      }
    } finally {
      // Whatever happens, fds not handed to a frame stay owned here, for drain().
      if (unattached) this.attach(unattached);
    }
    if (pos < buf.length) this.pending = Buffer.from(buf.subarray(pos));
  }

  /** The received `fds` go to the message in progress; returns undefined (none left unattached). */
  private attach(fds: number[]): undefined {
    this.pendingFds = this.pendingFds.concat(fds);
    return undefined;
  }

  /** Returns and forgets fds held for an incomplete message. */
  drain(): number[] {
    const fds = this.pendingFds;
    this.pendingFds = NO_FDS;
    this.pending = null;
    return fds === NO_FDS ? [] : fds;
  }

  private checkSize(size: number): void {
    if (size < HEADER_SIZE) throw new FramingError(`message size ${size} is smaller than the header`);
    if (size > this.maxMessageSize) {
      throw new FramingError(`message size ${size} exceeds the maximum ${this.maxMessageSize}`);
    }
  }

  /** Offset of the last message header starting at or after `from`, or -1. */
  private lastMessageStart(buf: Buffer, from: number): number {
    let pos = 0;
    let last = -1;
    while (pos < buf.length) {
      if (pos >= from) last = pos;
      if (buf.length - pos < HEADER_SIZE) break;
      const size = buf.readUInt32LE(pos + 4);
      if (size < HEADER_SIZE) break;
      pos += size;
    }
    return last;
  }
}
