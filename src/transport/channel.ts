/**
 * One vfio-user connection: framed messages in, whole messages out, with
 * fds passed over the socket. Owns the socket fd. Writes never block: what
 * the kernel does not take is queued and flushed when the socket is writable.
 */
import { native, PollEvent, PollMode, type PollHandle } from '../native/index.js';
import { Framer, FramingError, type Frame } from './framer.js';
import type { ChannelHandlers, Transport } from './transport.js';

export type { ChannelHandlers } from './transport.js';

/**
 * An observer of a channel's byte streams (the isolated child's journal):
 * what was read before it is framed, and how the outgoing stream advances.
 */
export interface StreamTap {
  /** Bytes read from the peer, before they are framed (not called for {@link Channel.inject}ed bytes). */
  received(chunk: Buffer): void;
  /**
   * True: the channel only peeks at the socket ({@link PollMode.StreamPeek}),
   * and `received` consumes the chunk from it (native recvDiscard) before it
   * returns, or closes the channel.
   */
  readonly peeks?: boolean;
  /** `n` more bytes of the outgoing stream went to the kernel. */
  sent(n: number): void;
  /** `data` waits in the send queue (the kernel did not take it at once). */
  queued(data: Buffer): void;
}

interface QueuedWrite {
  data: Buffer;
  fds: readonly number[] | undefined;
}

const DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024;
const RECV_BUFFER_SIZE = 256 * 1024;
/** Buffers kept for reuse once callbacks let go of them. */
const MAX_SPARE_BUFFERS = 4;
/** Reads up to this long get a cached view (a register access is 32-40 bytes). */
const CACHED_VIEW_LENGTH = 128;

/**
 * The receive buffer shared by every channel that opts in: JS runs one
 * callback at a time, so frames may be views of it, valid until the next
 * read. A receiver that needs a view to outlive that (a device callback
 * whose Promise is pending) retains it: later reads then go to another
 * buffer, and the retained one is reused only once released.
 */
class SharedRecvBuffers {
  current: Buffer = Buffer.allocUnsafeSlow(RECV_BUFFER_SIZE);
  /** Views of `current` from its start, by length, for small reads: made once per length and buffer, not per message. */
  private views: Buffer[] = new Array<Buffer>(CACHED_VIEW_LENGTH + 1);
  /** Retain counts of retained buffers, and the buffers themselves (to recycle them). */
  private readonly holds = new Map<ArrayBufferLike, number>();
  private readonly kept = new Map<ArrayBufferLike, Buffer>();
  private readonly spare: Buffer[] = [];
  private readonly pollers = new Set<PollHandle>();

  register(poll: PollHandle): void {
    this.pollers.add(poll);
  }

  unregister(poll: PollHandle): void {
    this.pollers.delete(poll);
  }

  /** The first `length` bytes of the current buffer: what one read put there. */
  read(length: number): Buffer {
    if (length > CACHED_VIEW_LENGTH) return this.current.subarray(0, length);
    return (this.views[length] ??= this.current.subarray(0, length));
  }

  /** True when `bytes` lies in a shared receive buffer (the current one or a retained one). */
  owns(bytes: Uint8Array): boolean {
    return bytes.buffer === this.current.buffer || this.holds.has(bytes.buffer);
  }

  /** Keeps the buffer under `bytes` intact until the returned function is called. */
  retain(bytes: Uint8Array): (() => void) | undefined {
    const ab = bytes.buffer;
    if (!this.owns(bytes)) return undefined;
    this.holds.set(ab, (this.holds.get(ab) ?? 0) + 1);
    if (ab === this.current.buffer) {
      const held = this.current;
      this.current = this.spare.pop() ?? Buffer.allocUnsafeSlow(RECV_BUFFER_SIZE);
      this.views = new Array<Buffer>(CACHED_VIEW_LENGTH + 1);
      for (const p of this.pollers) native.pollSetBuffer(p, this.current);
      this.kept.set(ab, held);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.holds.get(ab)! - 1;
      if (n > 0) return void this.holds.set(ab, n);
      this.holds.delete(ab);
      const buf = this.kept.get(ab);
      this.kept.delete(ab);
      if (buf && this.spare.length < MAX_SPARE_BUFFERS) this.spare.push(buf);
    };
  }
}

const shared = new SharedRecvBuffers();

/**
 * Keeps the bytes of a received frame valid (the shared receive buffer is
 * not reused under them) until the returned function is called. Returns
 * undefined when `bytes` is not in a shared receive buffer (nothing to do).
 */
export function retainReceived(bytes: Uint8Array): (() => void) | undefined {
  return shared.retain(bytes);
}

/** True when `bytes` is a view of a shared receive buffer (zero-copy), for tests. */
export function isSharedReceiveView(bytes: Uint8Array): boolean {
  return shared.owns(bytes);
}

/** A framed, fd-passing stream over a UNIX socket fd. */
export class Channel implements Transport {
  private readonly framer: Framer;
  private readonly poll: PollHandle;
  private queue: QueuedWrite[] = [];
  private closed = false;
  private readonly sharedRecv: boolean;
  private queuedBytes = 0;
  private readingPaused = false;
  private writingHeld = false;
  /** The framer's callback, made once (not per chunk). */
  private readonly emitFrame = (frame: Frame): void => {
    if (this.closed) closeAll(frame.fds);
    else this.handlers.onFrame(frame);
  };

  /**
   * @param sharedRecv when true, frames handed to `onFrame` may be views of a
   *   shared receive buffer, valid only until `onFrame` returns: the receiver
   *   copies what it keeps, or retains it ({@link retainReceived}). Spares an
   *   allocation per message on the hot path.
   * @param tap sees the streams' bytes (see {@link StreamTap}).
   */
  constructor(
    private readonly fd: number,
    private readonly handlers: ChannelHandlers,
    maxMessageSize = DEFAULT_MAX_MESSAGE,
    sharedRecv = false,
    private readonly tap?: StreamTap,
  ) {
    this.framer = new Framer(maxMessageSize);
    this.sharedRecv = sharedRecv;
    const cb = (kind: PollEvent, a: unknown, b: unknown): void => this.onEvent(kind, a, b);
    const mode = tap?.peeks ? PollMode.StreamPeek : PollMode.Stream;
    this.poll = sharedRecv ? native.pollStart(fd, mode, cb, shared.current) : native.pollStart(fd, mode, cb);
    if (sharedRecv) shared.register(this.poll);
  }

  /** True once closed by either side. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes accepted by send() that the peer has not taken yet (kernel buffers aside). */
  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** True while reading is paused (see pauseReading). */
  get isReadingPaused(): boolean {
    return this.readingPaused;
  }

  /**
   * Stops (or resumes) reading from the peer: backpressure. What the peer
   * sends meanwhile waits in the kernel, and then in the peer.
   */
  pauseReading(paused: boolean): void {
    if (this.closed || paused === this.readingPaused) return;
    this.readingPaused = paused;
    native.pollPause(this.poll, paused);
  }

  /**
   * Stops (or resumes) sending: while held, what is sent waits in the
   * queue (through the tap's `queued`) and nothing goes to the socket. An
   * isolated child handing its connection over: the successor sends the
   * stream from the journal, and two senders would send bytes twice.
   */
  holdWriting(held: boolean): void {
    if (this.closed || held === this.writingHeld) return;
    this.writingHeld = held;
    native.pollWritable(this.poll, !held && this.queue.length > 0);
  }

  /**
   * Busy-polls this connection: after each message the event loop keeps
   * polling without sleeping for `idleMs` (0 turns it off): the server's
   * `poll` option.
   */
  busyPoll(idleMs: number): void {
    if (this.closed) return;
    native.pollSpin(this.poll, Math.round(idleMs * 1e6));
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
    return this.write(data, fds, false);
  }

  /**
   * Sends one message whose buffer is only lent for the call (the sender
   * reuses it for the next one): what the kernel does not take at once is
   * copied into the queue. Returns false when the channel is closed.
   */
  sendBorrowed(data: Buffer): boolean {
    return this.write(data, undefined, true);
  }

  private write(data: Buffer, fds: readonly number[] | undefined, borrowed: boolean): boolean {
    if (this.closed) return false;
    if (this.queue.length > 0 || this.writingHeld) {
      this.enqueue(borrowed ? Buffer.from(data) : data, fds ? dupAll(fds) : undefined);
      return true;
    }
    const n = native.sendmsg(this.fd, data, fds as number[] | undefined);
    if (n === data.length) {
      this.tap?.sent(n);
      return true;
    }
    if (n < 0 && n !== -11) {
      this.fail(new Error(`sendmsg failed: errno ${-n}`));
      return false;
    }
    // Partial write: fds went with the first byte; EAGAIN: nothing went.
    const sent = Math.max(n, 0);
    if (sent > 0) this.tap?.sent(sent);
    const rest = data.subarray(sent);
    this.enqueue(borrowed ? Buffer.from(rest) : rest, sent === 0 && fds ? dupAll(fds) : undefined);
    native.pollWritable(this.poll, true);
    return true;
  }

  /**
   * Frames `bytes` as if they had been read from the peer, before anything
   * read: a successor resuming a stream its predecessor had read part of.
   */
  inject(bytes: Buffer): void {
    if (bytes.length > 0) this.onData(bytes, undefined, false);
  }

  /**
   * Leaves the connection to another process: stops watching the fd and
   * closes this process's copy, telling nobody (no onClose).
   */
  detach(): void {
    if (!this.closed) this.teardown();
  }

  /** Closes the connection; onClose is called (once) with `error`. */
  close(error?: Error): void {
    if (this.closed) return;
    this.teardown();
    this.handlers.onClose(error);
  }

  /** Stops watching, drops what is queued or half-framed (closing their fds), closes the socket. */
  private teardown(): void {
    this.closed = true;
    if (this.sharedRecv) shared.unregister(this.poll);
    native.pollStop(this.poll);
    for (const q of this.queue) closeAll(q.fds);
    this.queue = [];
    this.queuedBytes = 0;
    closeAll(this.framer.drain());
    native.close(this.fd);
  }

  private fail(error: Error): void {
    this.close(error);
  }

  private enqueue(data: Buffer, fds: number[] | undefined): void {
    this.queue.push({ data, fds });
    this.queuedBytes += data.length;
    this.tap?.queued(data);
  }

  private onEvent(kind: PollEvent, a: unknown, b: unknown): void {
    if (this.closed) {
      if (kind === PollEvent.Data) closeAll(b as number[] | undefined);
      return;
    }
    switch (kind) {
      case PollEvent.Data:
        this.onData(typeof a === 'number' ? shared.read(a) : (a as Buffer), b as number[] | undefined);
        break;
      case PollEvent.Writable:
        this.flush();
        break;
      case PollEvent.Eof:
        this.close();
        break;
      case PollEvent.Error:
        this.fail(new Error(typeof b === 'string' ? `socket error: ${b}` : `socket error: errno ${a as number}`));
        break;
    }
  }

  private onData(chunk: Buffer, fds: number[] | undefined, read = true): void {
    if (read && this.tap) {
      this.tap.received(chunk);
      if (this.closed) return closeAll(fds);
    }
    try {
      this.framer.push(chunk, fds, this.emitFrame);
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
    if (this.writingHeld) return;
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
      this.queuedBytes -= n;
      this.tap?.sent(n);
      if (n < head.data.length) {
        head.data = head.data.subarray(n);
        return;
      }
      this.queue.shift();
    }
    if (this.closed) return;
    native.pollWritable(this.poll, false);
    this.handlers.onDrain?.();
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
