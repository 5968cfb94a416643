/**
 * The child's end of a client connection: frames like Channel, and keeps
 * the journal (journal.ts) true at every point a crash could hit:
 *
 *  - every byte read from the client goes into the rx log before it is
 *    framed, and leaves it only once the request it belongs to is answered
 *    (its reply is in the kernel, or in the tx log): a half-read request
 *    and a taken-but-unanswered one are both still there for a successor;
 *  - a reply the kernel did not take whole goes into the tx log: a
 *    successor sends the rest before anything else, so the client never
 *    sees half a reply followed by something else.
 *
 * On the hot path (the kernel takes each reply whole) the cost is a copy
 * of the received bytes into shared memory and a few stores.
 */
import { native, PollEvent, PollMode, type PollHandle } from '../native/index.js';
import { closeAll, type ChannelHandlers } from '../transport/channel.js';
import { Framer, FramingError } from '../transport/framer.js';
import type { Transport } from '../transport/transport.js';
import type { Journal } from './journal.js';

/** What the child does around an answer (checkpoint, records) and with fds it must not lose. */
export interface JournalHooks {
  /** Frame `tag` came with fds: hand copies to the parent before it is served. */
  held(tag: number, fds: readonly number[]): void;
  /** Frame `tag` is answered with `reply` (undefined: no reply due) and `fds`, which go out right after. */
  beforeAnswer(tag: number, command: number, reply: Buffer | undefined, fds: readonly number[] | undefined): void;
}

/** How a replayed frame is handled: served again, answered from a record, or already done. */
export type ReplayDecision = { serve: true } | { serve: false; reply?: Buffer };

interface QueuedWrite {
  data: Buffer;
  fds: number[] | undefined;
}

/** A Transport over a client fd that journals the stream. */
export class JournaledTransport implements Transport {
  private readonly framer: Framer;
  private poll: PollHandle | undefined;
  private closed = false;
  private queue: QueuedWrite[] = [];
  private queuedBytes = 0;
  private readingPaused = false;
  private frozen = false;
  /** Stream offset just past the last whole frame (the start of a message in progress). */
  private frameEnd: number;
  /** Start offset and command of each frame not answered yet, by tag (= end offset), in stream order. */
  private readonly unanswered = new Map<number, [start: number, command: number]>();
  /** Bytes of the reply stream the kernel took. */
  private txSent: number;

  constructor(
    private readonly fd: number,
    private readonly handlers: ChannelHandlers,
    maxMessageSize: number,
    private readonly journal: Journal,
    private readonly hooks: JournalHooks,
  ) {
    this.framer = new Framer(maxMessageSize);
    this.frameEnd = journal.rx.start;
    this.txSent = journal.tx.start;
  }

  /** Frames the journal's unanswered bytes, then reads the client: a successor's start (or a fresh one's, with an empty journal). */
  start(decide: (tag: number, bytes: Buffer) => ReplayDecision, held: Map<number, number[]>): void {
    const tx = this.journal.tx.read();
    if (tx.length > 0) {
      // The rest of a half-written reply (and replies queued behind it) go out first.
      this.journal.tx.reset(this.txSent);
      this.send(tx);
    }
    const rx = this.journal.rx.read();
    if (rx.length > 0) {
      this.framer.push(rx, undefined, (frame) => {
        const tag = this.take(frame.bytes);
        const d = decide(tag, frame.bytes);
        if (d.serve) this.handlers.onFrame({ bytes: frame.bytes, fds: held.get(tag) ?? [], tag } as never);
        else {
          closeAll(held.get(tag));
          this.answer(tag, d.reply);
        }
      });
    }
    if (this.closed) return;
    this.poll = native.pollStart(this.fd, PollMode.Stream, (kind, a, b) => this.onEvent(kind, a, b));
    if (this.readingPaused || this.frozen) native.pollPause(this.poll, true);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** Requests taken and not answered yet. */
  get inFlight(): number {
    return this.unanswered.size;
  }

  pauseReading(paused: boolean): void {
    if (this.closed || paused === this.readingPaused) return;
    this.readingPaused = paused;
    if (this.poll && !this.frozen) native.pollPause(this.poll, paused);
  }

  /** Stops reading for good (a hand-over), or again (it failed). */
  freeze(frozen: boolean): void {
    this.frozen = frozen;
    if (this.poll && !this.closed) native.pollPause(this.poll, frozen || this.readingPaused);
  }

  busyPoll(idleMs: number): void {
    if (this.poll && !this.closed) native.pollSpin(this.poll, Math.round(idleMs * 1e6));
  }

  setMaxMessageSize(size: number): void {
    this.framer.maxMessageSize = size;
  }

  answer(tag: number | undefined, reply: Buffer | undefined, fds?: readonly number[]): void {
    if (tag === undefined) {
      if (reply) this.send(reply, fds);
      return;
    }
    const frame = this.unanswered.get(tag);
    if (frame) this.hooks.beforeAnswer(tag, frame[1], reply, fds);
    if (reply) this.send(reply, fds);
    this.unanswered.delete(tag);
    const first = this.unanswered.values().next();
    this.journal.rx.advance(first.done ? this.frameEnd : first.value[0]);
  }

  /** Notes a whole frame as taken; returns its tag. */
  private take(bytes: Buffer): number {
    const tag = this.frameEnd + bytes.length;
    this.unanswered.set(tag, [this.frameEnd, bytes.readUInt16LE(2)]);
    this.frameEnd = tag;
    return tag;
  }

  send(data: Buffer, fds?: readonly number[]): boolean {
    if (this.closed) return false;
    if (this.queue.length > 0) return this.enqueue(data, fds ? dupAll(fds) : undefined);
    const n = native.sendmsg(this.fd, data, fds as number[] | undefined);
    if (n === data.length) {
      this.txSent += n;
      return true;
    }
    if (n < 0 && n !== -11) {
      this.close(new Error(`sendmsg failed: errno ${-n}`));
      return false;
    }
    const sent = Math.max(n, 0);
    this.txSent += sent;
    this.journal.tx.reset(this.txSent);
    this.enqueue(data.subarray(sent), sent === 0 && fds ? dupAll(fds) : undefined);
    if (this.poll) native.pollWritable(this.poll, true);
    return true;
  }

  close(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    if (this.poll) native.pollStop(this.poll);
    for (const q of this.queue) closeAll(q.fds);
    this.queue = [];
    this.queuedBytes = 0;
    closeAll(this.framer.drain());
    native.close(this.fd);
    this.handlers.onClose(error);
  }

  /** Leaves the connection to a successor: stops watching the fd and closes this process's copy, telling nobody. */
  abandon(): void {
    this.closed = true;
    if (this.poll) native.pollStop(this.poll);
    native.close(this.fd);
  }

  private enqueue(data: Buffer, fds: number[] | undefined): boolean {
    this.queue.push({ data, fds });
    this.queuedBytes += data.length;
    this.journal.tx.append(data);
    return true;
  }

  private onEvent(kind: PollEvent, a: unknown, b: unknown): void {
    if (this.closed) {
      if (kind === PollEvent.Data) closeAll(b as number[] | undefined);
      return;
    }
    if (kind === PollEvent.Data) this.onData(a as Buffer, b as number[] | undefined);
    else if (kind === PollEvent.Writable) this.flush();
    else if (kind === PollEvent.Eof) this.close();
    else if (kind === PollEvent.Error) this.close(new Error(typeof b === 'string' ? `socket error: ${b}` : `socket error: errno ${a as number}`));
  }

  private onData(chunk: Buffer, fds: number[] | undefined): void {
    this.journal.rx.append(chunk);
    try {
      this.framer.push(chunk, fds, (frame) => {
        if (this.closed) return closeAll(frame.fds);
        const tag = this.take(frame.bytes);
        if (frame.fds.length > 0) this.hooks.held(tag, frame.fds);
        this.handlers.onFrame({ ...frame, tag } as never);
      });
    } catch (e) {
      this.close(e instanceof FramingError ? e : new Error(`message handler failed: ${String(e)}`));
    }
    if (this.closed) closeAll(this.framer.drain());
  }

  private flush(): void {
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0];
      const n = native.sendmsg(this.fd, head.data, head.fds);
      if (n === -11) return;
      if (n < 0) return this.close(new Error(`sendmsg failed: errno ${-n}`));
      closeAll(head.fds);
      head.fds = undefined;
      this.queuedBytes -= n;
      this.txSent += n;
      this.journal.tx.advance(this.txSent);
      if (n < head.data.length) {
        head.data = head.data.subarray(n);
        return;
      }
      this.queue.shift();
    }
    if (this.closed) return;
    if (this.poll) native.pollWritable(this.poll, false);
    this.handlers.onDrain?.();
  }
}

function dupAll(fds: readonly number[]): number[] {
  return fds.map((fd) => native.dup(fd));
}
