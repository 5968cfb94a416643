/**
 * One vfio-user connection: framed messages in, whole messages out, with
 * fds passed over the socket. Owns the socket fd. Writes never block: what
 * the kernel does not take is queued and flushed when the socket is writable.
 */
import { native, PollEvent, PollMode, type PollHandle } from '../native/index.js';
import { Framer, FramingError, type Frame } from './framer.js';

/** Callbacks of a Channel. */
export interface ChannelHandlers {
  /** A complete message; the handler owns `frame.fds`. */
  onFrame(frame: Frame): void;
  /** The connection ended: peer closed (error undefined) or failed. Called once. */
  onClose(error?: Error): void;
}

interface QueuedWrite {
  data: Buffer;
  fds: readonly number[] | undefined;
}

const DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024;

/**
 * One receive buffer shared by every channel that opts in: JS runs one
 * callback at a time, and the framer copies whatever outlives it.
 */
const SHARED_RECV_BUFFER = Buffer.alloc(256 * 1024);

/** A framed, fd-passing stream over a UNIX socket fd. */
export class Channel {
  private readonly framer: Framer;
  private readonly poll: PollHandle;
  private queue: QueuedWrite[] = [];
  private closed = false;

  /**
   * @param sharedRecv when true, frames handed to `onFrame` may be views of a
   *   shared receive buffer, valid only until `onFrame` returns: the receiver
   *   copies what it keeps. Spares an allocation per message on the hot path.
   */
  constructor(
    private readonly fd: number,
    private readonly handlers: ChannelHandlers,
    maxMessageSize = DEFAULT_MAX_MESSAGE,
    sharedRecv = false,
  ) {
    this.framer = new Framer(maxMessageSize);
    const cb = (kind: PollEvent, a: unknown, b: unknown): void => this.onEvent(kind, a, b);
    this.poll = sharedRecv ? native.pollStart(fd, PollMode.Stream, cb, SHARED_RECV_BUFFER) : native.pollStart(fd, PollMode.Stream, cb);
  }

  /** True once closed by either side. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Largest message accepted from the peer (header included). */
  setMaxMessageSize(size: number): void {
    this.framer.maxMessageSize = size;
  }

  /**
   * Sends one message (the buffers are written back to back) with optional
   * fds. The fds are only borrowed: the caller keeps ownership.
   * Returns false when the channel is closed.
   */
  send(data: Buffer, fds?: readonly number[]): boolean {
    if (this.closed) return false;
    if (this.queue.length > 0) {
      this.queue.push({ data, fds: fds ? dupAll(fds) : undefined });
      return true;
    }
    const n = native.sendmsg(this.fd, data, fds as number[] | undefined);
    if (n === data.length) return true;
    if (n < 0 && n !== -11) {
      this.fail(new Error(`sendmsg failed: errno ${-n}`));
      return false;
    }
    // Partial write: fds went with the first byte; EAGAIN: nothing went.
    const sent = Math.max(n, 0);
    this.queue.push({ data: data.subarray(sent), fds: sent === 0 && fds ? dupAll(fds) : undefined });
    native.pollWritable(this.poll, true);
    return true;
  }

  /** Closes the connection; onClose is called (once) with `error`. */
  close(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    native.pollStop(this.poll);
    for (const q of this.queue) closeAll(q.fds);
    this.queue = [];
    closeAll(this.framer.drain());
    native.close(this.fd);
    this.handlers.onClose(error);
  }

  private fail(error: Error): void {
    this.close(error);
  }

  private onEvent(kind: PollEvent, a: unknown, b: unknown): void {
    if (this.closed) {
      if (kind === PollEvent.Data) closeAll(b as number[] | undefined);
      return;
    }
    switch (kind) {
      case PollEvent.Data:
        this.onData(typeof a === 'number' ? SHARED_RECV_BUFFER.subarray(0, a) : (a as Buffer), b as number[] | undefined);
        break;
      case PollEvent.Writable:
        this.flush();
        break;
      case PollEvent.Eof:
        this.close();
        break;
      case PollEvent.Error:
        this.fail(new Error(`socket error: errno ${a as number}`));
        break;
    }
  }

  private onData(chunk: Buffer, fds: number[] | undefined): void {
    try {
      this.framer.push(chunk, fds, (frame) => {
        if (this.closed) closeAll(frame.fds);
        else this.handlers.onFrame(frame);
      });
    } catch (e) {
      // A framing error, or a bug in a handler: either way this connection
      // cannot be trusted any more, but the process must live on.
      // close() drains and closes the fds the framer still holds.
      this.fail(e instanceof FramingError ? e : new Error(`message handler failed: ${String(e)}`));
    }
    // A handler that closed the channel mid-chunk leaves the framer holding
    // fds of messages after the one it handled: they are ours to close.
    if (this.closed) closeAll(this.framer.drain());
  }

  private flush(): void {
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0];
      const n = native.sendmsg(this.fd, head.data, head.fds as number[] | undefined);
      if (n === -11) return;
      if (n < 0) {
        this.fail(new Error(`sendmsg failed: errno ${-n}`));
        return;
      }
      closeAll(head.fds);
      head.fds = undefined;
      if (n < head.data.length) {
        head.data = head.data.subarray(n);
        return;
      }
      this.queue.shift();
    }
    if (!this.closed) native.pollWritable(this.poll, false);
  }
}

/** Duplicates fds so a queued write does not depend on the caller keeping them open. */
function dupAll(fds: readonly number[]): number[] {
  return fds.map((fd) => native.dup(fd));
}

/** Closes every fd in the list (which may be undefined). */
export function closeAll(fds: readonly number[] | undefined): void {
  if (!fds) return;
  for (const fd of fds) if (fd >= 0) native.close(fd);
}
