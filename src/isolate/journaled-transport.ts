/**
 * The child's end of a client connection: frames like Channel, and keeps
 * the journal (journal.ts) true at every point a crash could hit:
 *
 *  - every byte read from the client goes into the rx log before it is
 *    consumed from the socket (it is peeked first: rx-socket.ts), so no
 *    instant exists where a byte is in neither; it leaves the rx log only
 *    once the request it belongs to is answered
 *    (its reply is in the kernel, or in the tx log): a half-read request
 *    and a taken-but-unanswered one are both still there for a successor;
 *  - a reply the kernel did not take whole goes into the tx log: a
 *    successor sends the rest before anything else, so the client never
 *    sees half a reply followed by something else; queuing it and noting
 *    its request answered is one step (Journal.queueTx), so a successor
 *    never both sends it and serves its request again.
 *
 * On the hot path (the kernel takes each reply whole) the cost is a copy
 * of the received bytes into shared memory, a few stores, and a second
 * system call per read (the consume after the peek).
 */
import { native } from '../native/index.js';
import { Channel, closeAll, type ChannelHandlers, type StreamTap } from '../transport/channel.js';
import type { Frame } from '../transport/framer.js';
import type { Transport } from '../transport/transport.js';
import { crashPoint, crashPointsArmed } from './crash-point.js';
import type { Journal } from './journal.js';
import { journalPeeked, resyncSocket } from './rx-socket.js';

/** What the child does around an answer (checkpoint, records) and with fds it must not lose. */
export interface JournalHooks {
  /** Frame `tag` came with fds: hand copies to the parent before it is served. */
  held(tag: number, fds: readonly number[]): void;
  /** Frame `tag` is answered with `reply` (undefined: no reply due) and `fds`, which go out right after. */
  beforeAnswer(tag: number, command: number, reply: Buffer | undefined, fds: readonly number[] | undefined): void;
}

/** How a replayed frame is handled: served again, answered from a record, or already done. */
export type ReplayDecision = { serve: true } | { serve: false; reply?: Buffer };

/** While a successor frames its predecessor's unanswered bytes: how to treat each whole frame. */
interface Replay {
  decide(tag: number, bytes: Buffer): ReplayDecision;
  held: Map<number, number[]>;
}

/** A Transport over a client fd that journals the stream: a Channel with the journal as its tap. */
export class JournaledTransport implements Transport, StreamTap {
  readonly peeks = true;
  private channel: Channel | undefined;
  /** Messages sent before start(): they follow the predecessor's unsent bytes. */
  private early: { data: Buffer; fds: number[] | undefined }[] = [];
  private closed = false;
  private readingPaused = false;
  private frozen = false;
  private busyIdleMs = 0;
  private replay: Replay | undefined;
  /** Stream offset just past the last whole frame (the start of a message in progress). */
  private frameEnd: number;
  /** Start offset and command of each frame not answered yet, by tag (= end offset), in stream order. */
  private readonly unanswered = new Map<number, [start: number, command: number]>();
  /** Bytes of the reply stream the kernel took. */
  private txSent: number;
  /** Bytes of the reply stream waiting in the channel's queue (what the tx log holds). */
  private txQueued = 0;
  /** While a reply is handed to the channel: where the rx log starts once it is (the answer's note in the tx log). */
  private answering: number | undefined;
  /** While the predecessor's unsent bytes are handed to the channel: they are in the tx log already. */
  private resending = false;

  constructor(
    private readonly fd: number,
    private readonly handlers: ChannelHandlers,
    private maxMessageSize: number,
    private readonly journal: Journal,
    private readonly hooks: JournalHooks,
  ) {
    // A reply the predecessor queued answered its request, though it died before dropping it from the rx log.
    journal.settleQueuedReply();
    this.frameEnd = journal.rx.start;
    this.txSent = journal.tx.start;
  }

  /** Frames the journal's unanswered bytes, then reads the client: a successor's start (or a fresh one's, with an empty journal). */
  start(decide: (tag: number, bytes: Buffer) => ReplayDecision, held: Map<number, number[]>): void {
    if (this.closed) return;
    // The socket and the rx log back in step (the predecessor may have died inside a read).
    const broken = resyncSocket(this.fd, this.journal);
    if (broken) return this.onClose(new Error(broken));
    const tx = this.journal.tx.read();
    const channel = new Channel(this.fd, { onFrame: (f) => this.onFrame(f), onClose: (e) => this.onClose(e), onDrain: () => this.handlers.onDrain?.() }, this.maxMessageSize, false, this);
    this.channel = channel;
    channel.holdWriting(this.frozen);
    // The rest of a half-written reply (and replies queued behind it) go out first.
    // They stay in the tx log until the kernel takes them (sent()), for this process's successor.
    if (tx.length > 0) {
      if (crashPointsArmed) crashPoint('resending');
      this.txQueued = tx.length;
      this.resending = true;
      channel.send(tx);
      this.resending = false;
    }
    for (const m of this.early.splice(0)) {
      channel.send(m.data, m.fds);
      closeAll(m.fds);
    }
    this.replay = { decide, held };
    try {
      channel.inject(this.journal.rx.read());
    } finally {
      this.replay = undefined;
    }
    if (this.closed) return;
    channel.pauseReading(this.readingPaused || this.frozen);
    if (this.busyIdleMs > 0) channel.busyPoll(this.busyIdleMs);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get pendingBytes(): number {
    return this.channel?.pendingBytes ?? 0;
  }

  /** Requests taken and not answered yet. */
  get inFlight(): number {
    return this.unanswered.size;
  }

  pauseReading(paused: boolean): void {
    this.readingPaused = paused;
    this.channel?.pauseReading(paused || this.frozen);
  }

  /**
   * Stops reading and sending for good (a hand-over), or again (it failed).
   * What is not sent yet stays in the tx log, for the successor to send:
   * this process sending it too would send it twice.
   */
  freeze(frozen: boolean): void {
    this.frozen = frozen;
    this.channel?.pauseReading(frozen || this.readingPaused);
    this.channel?.holdWriting(frozen);
  }

  busyPoll(idleMs: number): void {
    this.busyIdleMs = idleMs;
    this.channel?.busyPoll(idleMs);
  }

  setMaxMessageSize(size: number): void {
    this.maxMessageSize = size;
    this.channel?.setMaxMessageSize(size);
  }

  answer(tag: number | undefined, reply: Buffer | undefined, fds?: readonly number[]): void {
    if (tag === undefined) {
      if (reply) this.send(reply, fds);
      return;
    }
    const frame = this.unanswered.get(tag);
    if (frame) this.hooks.beforeAnswer(tag, frame[1], reply, fds);
    this.unanswered.delete(tag);
    const first = this.unanswered.values().next();
    const answeredTo = first.done ? this.frameEnd : first.value[0];
    if (reply) {
      // A reply the kernel does not take whole is queued with this note (queued()): one step in the journal.
      this.answering = answeredTo;
      const queuedBefore = this.txQueued;
      this.send(reply, fds);
      this.answering = undefined;
      if (crashPointsArmed && this.txQueued > queuedBefore) crashPoint('reply-queued');
    }
    this.journal.rx.advance(answeredTo);
  }

  send(data: Buffer, fds?: readonly number[]): boolean {
    if (this.closed) return false;
    if (this.channel) return this.channel.send(data, fds);
    this.early.push({ data, fds: fds?.map((fd) => native.dup(fd)) });
    return true;
  }

  close(error?: Error): void {
    if (this.closed) return;
    if (this.channel) return this.channel.close(error);
    this.onClose(error);
  }

  /** Leaves the connection to a successor: stops watching the fd and closes this process's copy, telling nobody. */
  abandon(): void {
    this.closed = true;
    if (this.channel) this.channel.detach();
    else native.close(this.fd);
  }

  // StreamTap: the journal follows both streams.

  received(chunk: Buffer): void {
    const broken = journalPeeked(this.fd, this.journal, chunk);
    if (broken) this.channel?.close(new Error(broken));
  }

  sent(n: number): void {
    this.txSent += n;
    if (this.txQueued === 0) return;
    this.txQueued = Math.max(0, this.txQueued - n);
    this.journal.tx.advance(this.txSent);
  }

  queued(data: Buffer): void {
    if (this.resending) return;
    if (this.txQueued === 0) this.journal.tx.reset(this.txSent);
    this.txQueued += data.length;
    this.journal.queueTx(data, this.answering);
  }

  private onFrame(frame: Frame): void {
    const tag = this.frameEnd + frame.bytes.length;
    this.unanswered.set(tag, [this.frameEnd, frame.bytes.readUInt16LE(2)]);
    this.frameEnd = tag;
    const replay = this.replay;
    if (replay) {
      const fds = replay.held.get(tag) ?? [];
      const d = replay.decide(tag, frame.bytes);
      if (d.serve) return this.handlers.onFrame({ bytes: frame.bytes, fds, tag } as never);
      closeAll(fds);
      return this.answer(tag, d.reply);
    }
    if (frame.fds.length > 0) this.hooks.held(tag, frame.fds);
    this.handlers.onFrame({ ...frame, tag } as never);
  }

  private onClose(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.early.splice(0)) closeAll(m.fds);
    if (this.channel === undefined) native.close(this.fd);
    this.handlers.onClose(error);
  }
}
