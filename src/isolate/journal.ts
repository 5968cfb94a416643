/**
 * The connection journal: a memfd the parent creates and keeps, mapped by
 * the child that serves the connection. It outlives the child, so what the
 * child wrote there before it died is what its successor starts from:
 *
 *  - rx: the bytes read from the client and not yet answered (requests
 *    taken but unanswered, and a message half-read), and how far the
 *    socket was consumed (the child peeks, journals, then consumes:
 *    rx-socket.ts);
 *  - tx: the bytes the child meant to send but the kernel had not taken
 *    yet (a reply half-written, replies queued under backpressure), and
 *    with the last reply queued, how far the rx log is answered by it
 *    (queueTx: one step for a successor);
 *  - two checkpoint slots: the device's migration save, with the tag of
 *    the last request it includes and that request's reply;
 *  - the device's persistent memory (device/persistent.ts): what it took
 *    from rings in guest memory and has not completed.
 *
 * Nothing here is read while the child that writes it lives (the parent
 * hands the memfd to the next child only after the previous one is gone or
 * quiesced), so plain stores suffice: no locks, no syscalls on the hot path.
 * Pages are touched only as used, so the large caps cost no memory.
 */
import { native } from '../native/index.js';
import { PersistentBlock } from '../device/persistent.js';

const MAGIC = 0x4d4a524e; // "MJRN"
const HEADER = 4096;
/** Cap of the rx log: a full request queue (maxPendingBytes) plus a message in progress. */
export const RX_CAP = 8 * 1024 * 1024;
/** Cap of the tx log: what backpressure lets the child queue. */
export const TX_CAP = 8 * 1024 * 1024;
/** Cap of one checkpoint (a migration save and one reply). */
export const SLOT_CAP = 16 * 1024 * 1024;
const RX_AT = HEADER;
const TX_AT = RX_AT + RX_CAP;
const SLOTS_AT = TX_AT + TX_CAP;
/** Cap of the device's persistent memory. */
export const PERSISTENT_CAP = 16 * 1024 * 1024;
const PERSISTENT_AT = SLOTS_AT + 2 * SLOT_CAP;
/** Bytes of the whole journal file. */
export const JOURNAL_SIZE = PERSISTENT_AT + PERSISTENT_CAP;

// Header fields (byte offsets; f64 for stream offsets, which outgrow 32 bits).
const H_MAGIC = 0;
const H_ACTIVE_SLOT = 4; // 0: no checkpoint, 1 or 2
const H_LOST = 8; // 1 once a log overflowed: the stream can no longer be resumed exactly
const H_RX = 16; // ByteLog header: base, start, end (3 x f64)
const H_TX = 48;
const H_REPLAY_TAG = 80; // f64: the first frame a successor served again
const H_REPLAY_COUNT = 88; // u32: how many successors served it
const H_RX_CONSUMED = 96; // f64: stream offset up to which the socket was consumed (rx-socket.ts)
const H_RX_CONSUMING = 104; // f64: bytes being consumed now (0: none)
const H_QUEUED_TX_END = 112; // f64: the tx log's end once the last queued reply is in it
const H_QUEUED_ANSWERS_TO = 120; // f64: the rx log's start once that reply's request is answered

/** A byte log in the journal: stream bytes [start, end), stored from `base`. */
export class ByteLog {
  constructor(
    private readonly view: DataView,
    private readonly bytes: Uint8Array,
    private readonly headerAt: number,
    private readonly dataAt: number,
    private readonly cap: number,
    private readonly onOverflow: () => void,
  ) {}

  get base(): number {
    return this.view.getFloat64(this.headerAt, true);
  }
  /** Stream offset of the first byte still needed. */
  get start(): number {
    return this.view.getFloat64(this.headerAt + 8, true);
  }
  /** Stream offset just past the last byte appended. */
  get end(): number {
    return this.view.getFloat64(this.headerAt + 16, true);
  }

  /** Starts an empty log at stream offset `at`. */
  reset(at: number): void {
    this.view.setFloat64(this.headerAt, at, true);
    this.view.setFloat64(this.headerAt + 8, at, true);
    this.view.setFloat64(this.headerAt + 16, at, true);
  }

  /** Appends stream bytes; on overflow marks the journal lost (and keeps the stream offsets right). */
  append(data: Uint8Array): void {
    let base = this.base;
    const start = this.start;
    const end = this.end;
    if (end - base + data.length > this.cap) {
      // Compact: move what is still needed to the front.
      this.bytes.copyWithin(this.dataAt, this.dataAt + (start - base), this.dataAt + (end - base));
      base = start;
      this.view.setFloat64(this.headerAt, base, true);
      if (end - base + data.length > this.cap) {
        this.onOverflow();
        this.reset(end + data.length);
        return;
      }
    }
    this.bytes.set(data, this.dataAt + (end - base));
    this.view.setFloat64(this.headerAt + 16, end + data.length, true);
  }

  /** Drops the bytes before stream offset `to`. */
  advance(to: number): void {
    if (to >= this.end) return this.reset(this.end);
    if (to > this.start) this.view.setFloat64(this.headerAt + 8, to, true);
  }

  /** A copy of the needed bytes [start, end). */
  read(): Buffer {
    const base = this.base;
    return Buffer.from(this.bytes.subarray(this.dataAt + (this.start - base), this.dataAt + (this.end - base)));
  }
}

/** A checkpoint as stored: the device's save, the last request it includes, that request's reply. */
export interface Checkpoint {
  /** Tag of the last request whose effect the state includes (-1: none). */
  appliedTag: number;
  /** That request's reply, when it was recorded before being sent. */
  reply: Buffer | undefined;
  state: Buffer;
}

/** One mapping of a journal memfd. */
export class Journal {
  readonly rx: ByteLog;
  readonly tx: ByteLog;
  /** The device's persistent memory. */
  readonly persistent: PersistentBlock;
  private readonly view: DataView;
  private readonly bytes: Uint8Array;
  private readonly mapping: [ArrayBuffer, unknown];

  private constructor(readonly fd: number) {
    const m = native.mmap(fd, 0, JOURNAL_SIZE, true);
    if (typeof m === 'number') throw new Error(`journal: mmap failed: errno ${-m}`);
    this.mapping = m;
    this.view = new DataView(m[0]);
    this.bytes = new Uint8Array(m[0]);
    const lost = (): void => this.view.setUint32(H_LOST, 1, true);
    this.rx = new ByteLog(this.view, this.bytes, H_RX, RX_AT, RX_CAP, lost);
    this.tx = new ByteLog(this.view, this.bytes, H_TX, TX_AT, TX_CAP, lost);
    // Worker threads map their parts of it themselves (a virtio queue's inflight log).
    this.persistent = new PersistentBlock(this.bytes.subarray(PERSISTENT_AT, PERSISTENT_AT + PERSISTENT_CAP), undefined, { fd, offset: PERSISTENT_AT });
  }

  /** A new journal memfd (the parent's). */
  static create(name: string): Journal {
    const fd = native.memfd(`muser-journal:${name}`, JOURNAL_SIZE);
    if (fd < 0) throw new Error(`journal: memfd failed: errno ${-fd}`);
    const j = new Journal(fd);
    j.clear();
    return j;
  }

  /** Maps a journal memfd received from the parent (the fd stays the caller's). */
  static open(fd: number): Journal {
    const j = new Journal(fd);
    if (j.view.getUint32(H_MAGIC, true) !== MAGIC) throw new Error('journal: bad magic');
    return j;
  }

  /** Empties everything: a new connection starts. */
  clear(): void {
    this.view.setUint32(H_MAGIC, MAGIC, true);
    this.view.setUint32(H_ACTIVE_SLOT, 0, true);
    this.view.setUint32(H_LOST, 0, true);
    this.rx.reset(0);
    this.tx.reset(0);
    this.view.setFloat64(H_REPLAY_TAG, -1, true);
    this.view.setUint32(H_REPLAY_COUNT, 0, true);
    this.rxConsumedTo = 0;
    this.rxConsuming = 0;
    this.noteQueuedReply(-1, 0);
    this.persistent.clear();
  }

  /** Stream offset up to which the client's bytes were consumed from the socket (all of them are in the rx log or answered). */
  get rxConsumedTo(): number {
    return this.view.getFloat64(H_RX_CONSUMED, true);
  }
  set rxConsumedTo(at: number) {
    this.view.setFloat64(H_RX_CONSUMED, at, true);
  }

  /** Bytes a consume (recvDiscard) is under way for, 0 when none: set before it, cleared after. */
  get rxConsuming(): number {
    return this.view.getFloat64(H_RX_CONSUMING, true);
  }
  set rxConsuming(n: number) {
    this.view.setFloat64(H_RX_CONSUMING, n, true);
  }

  /**
   * Appends to the tx log bytes that answer the rx log up to `answersTo`
   * (the request of a reply queued under backpressure; undefined: none, as
   * for the rest of a predecessor's replies) and notes that in the same
   * step: the note is written first and counts only once the tx log's end
   * reaches past the bytes, so a kill at any point leaves either neither
   * (a successor serves the request again) or both (it sends the queued
   * reply and does not serve the request again).
   */
  queueTx(data: Uint8Array, answersTo: number | undefined): void {
    this.noteQueuedReply(answersTo === undefined ? -1 : this.tx.end + data.length, answersTo ?? 0);
    this.tx.append(data);
  }

  /**
   * A successor's first step with the rx log, before it reads it: drops the
   * request whose reply its predecessor queued (queueTx) without having
   * advanced the rx log past it yet. Then forgets the note: one whose
   * bytes never made it into the tx log must not count once later bytes
   * take the log's end past it.
   */
  settleQueuedReply(): void {
    const txEnd = this.view.getFloat64(H_QUEUED_TX_END, true);
    if (txEnd >= 0 && this.tx.end >= txEnd) this.rx.advance(this.view.getFloat64(H_QUEUED_ANSWERS_TO, true));
    this.noteQueuedReply(-1, 0);
  }

  private noteQueuedReply(txEnd: number, answersTo: number): void {
    // Invalid first: a kill between the two stores leaves no note rather than a mixed one.
    this.view.setFloat64(H_QUEUED_TX_END, -1, true);
    this.view.setFloat64(H_QUEUED_ANSWERS_TO, answersTo, true);
    this.view.setFloat64(H_QUEUED_TX_END, txEnd, true);
  }

  /**
   * Counts one more successor serving frame `tag` again; returns how many
   * have (a request that killed or hung two children in a row is not
   * served a third time).
   */
  countReplay(tag: number): number {
    const n = this.view.getFloat64(H_REPLAY_TAG, true) === tag ? this.view.getUint32(H_REPLAY_COUNT, true) + 1 : 1;
    this.view.setFloat64(H_REPLAY_TAG, tag, true);
    this.view.setUint32(H_REPLAY_COUNT, n, true);
    return n;
  }

  /** True once a log overflowed: the connection cannot be taken over exactly. */
  get lost(): boolean {
    return this.view.getUint32(H_LOST, true) !== 0;
  }

  /**
   * Stores a checkpoint in the slot not in use, then makes it the current
   * one: a crash half-way leaves the previous checkpoint whole. False (and
   * nothing stored) when it does not fit.
   */
  writeCheckpoint(appliedTag: number, reply: Buffer | undefined, state: readonly Uint8Array[]): boolean {
    const stateLength = state.reduce((n, c) => n + c.length, 0);
    const replyLength = reply?.length ?? 0;
    if (24 + replyLength + stateLength > SLOT_CAP) return false;
    const slot = this.view.getUint32(H_ACTIVE_SLOT, true) === 1 ? 2 : 1;
    const at = SLOTS_AT + (slot - 1) * SLOT_CAP;
    this.view.setFloat64(at, appliedTag, true);
    this.view.setInt32(at + 8, reply ? replyLength : -1, true);
    this.view.setUint32(at + 12, stateLength, true);
    let p = at + 24;
    if (reply) this.bytes.set(reply, p);
    p += replyLength;
    for (const c of state) {
      this.bytes.set(c, p);
      p += c.length;
    }
    this.view.setUint32(H_ACTIVE_SLOT, slot, true);
    return true;
  }

  /** The current checkpoint, if any (copied out). */
  readCheckpoint(): Checkpoint | undefined {
    const slot = this.view.getUint32(H_ACTIVE_SLOT, true);
    if (slot !== 1 && slot !== 2) return undefined;
    const at = SLOTS_AT + (slot - 1) * SLOT_CAP;
    const appliedTag = this.view.getFloat64(at, true);
    const replyLength = this.view.getInt32(at + 8, true);
    const stateLength = this.view.getUint32(at + 12, true);
    const p = at + 24;
    const reply = replyLength >= 0 ? Buffer.from(this.bytes.subarray(p, p + replyLength)) : undefined;
    const s = p + Math.max(replyLength, 0);
    return { appliedTag, reply, state: Buffer.from(this.bytes.subarray(s, s + stateLength)) };
  }

  /** Forgets the checkpoint (the device was reset: its state is the power-on state again). */
  dropCheckpoint(): void {
    this.view.setUint32(H_ACTIVE_SLOT, 0, true);
  }

  /** Unmaps (the fd stays open). */
  unmap(): void {
    native.munmap(this.mapping[1] as never, this.mapping[0]);
  }
}
