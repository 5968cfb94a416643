/**
 * The NVMe in-flight log: what a successor process needs to carry on the
 * controller after its predecessor died (`muser run --isolate`), kept in
 * the device's persistent memory (device/persistent.ts). Stores into it
 * are plain memory stores, each written in an order that leaves every
 * crash point recoverable (recovery.ts reads it back):
 *
 *  - the registers (CC, CSTS, AQA, ASQ, ACQ, INTMS), stored on every change;
 *  - per queue id: the SQ's fetch word (the sequence number of the last
 *    command taken from it, times 4096, plus the head after it: one 8-byte
 *    store, so the head and "which commands count" never disagree), the
 *    tail the driver last wrote to the SQ doorbell register, the CQ's tail
 *    and phase, and the head the driver last wrote to the CQ doorbell;
 *  - every command taken and not yet posted: its sequence number, SQ id
 *    and a copy of its 64-byte entry (the driver may reuse the SQ slot as
 *    soon as any completion reports a newer SQ head). An entry is written
 *    whole, then its sequence number, then the SQ's fetch word: an entry
 *    newer than its SQ's fetch word was never taken (a batch half-logged);
 *  - a snapshot of the controller's configuration (queues, features,
 *    shadow doorbell buffers, events, error log), JSON in one of two slots,
 *    written before each admin command's completion is posted, with that
 *    command's result. Admin commands run one at a time, so the snapshot
 *    holds either all of a command's effect and its result or none of it.
 *
 * A completion is posted in this order: its entry in guest memory, its
 * log entry freed, the CQ's tail advanced in the log. A reset (CC.EN
 * cleared, a controller or function reset) clears the log.
 *
 * With I/O queues on worker threads (`workers`), each thread maps the area
 * itself (it is a part of the journal memfd: PersistentMemory.locate) and
 * logs its own queues, without atomics or messages: the command table is
 * partitioned, part 0 (the main thread: the admin queue) and part t + 1
 * (thread t) each owning a slice of its slots, taking and freeing only
 * those; each part numbers its commands itself. A queue's record is
 * written by the thread serving the queue only (the main thread writes it
 * at creation, before the thread hears of the queue). Sequence numbers
 * then only increase per part, hence per SQ, which is all recovery needs
 * (a command counts as taken when its number is at most its SQ's fetch
 * word's); each part starts numbering past every number in the area. The
 * registers and the snapshot are the main thread's. Recovery runs on the
 * main thread over the whole table (every part), then hands each thread
 * its queues and the slots to start again (nvme/worker/).
 */
import type { PersistentMemory } from '../device/persistent.js';
import { SQE } from './layouts.js';

/** The area's name in persistent memory. */
export const INFLIGHT_AREA = 'nvme inflight';
const MAGIC = 0x474c564e; // "NVLG"
/** Commands the log holds at most (more are not fetched until some complete). */
export const MAX_LOGGED_COMMANDS = 32768;
/** Bytes of one snapshot slot. */
const SNAPSHOT_CAP = 64 * 1024;
/** The fetch word's head part (heads are below 4096). */
const HEAD_SPAN = 4096;

// Header (byte offsets).
const H_MAGIC = 0;
const H_SNAPSHOT = 4; // u32: 0 none, 1 or 2
const H_SNAPSHOT_LENGTH = 8; // u32 per slot (8, 12)
const H_CC = 16;
const H_CSTS = 20;
const H_AQA = 24;
const H_INTMS = 28;
const H_ASQ = 32; // u32 low, u32 high
const H_ACQ = 40; // u32 low, u32 high
const HEADER = 64;
/** Per queue id: f64 SQ fetch word, u32 SQ tail, u32 CQ tail | phase << 16, u32 CQ head, u32 unused. */
const QUEUE = 24;
/** Per command: f64 sequence number (0: free), u16 SQ id, 6 unused, the 64-byte entry. */
const ENTRY = 16 + SQE.size;

/** The registers as logged. */
export interface LoggedRegisters {
  cc: number;
  csts: number;
  aqa: number;
  intms: number;
  asq: bigint;
  acq: bigint;
}

/** A logged command: where it is and which command it is. */
export interface LoggedCommand {
  slot: number;
  seq: number;
  sqid: number;
}

/** The in-flight log of one controller over its persistent area. */
export class InflightLog {
  /** A non-AER admin command executing (its slot), or -1: its completion writes the snapshot. */
  runningAdmin = -1;
  /** Fetching stopped for want of a free entry: posting one should wake the submission queues. */
  starved = false;
  protected readonly u8: Uint8Array;
  protected readonly u16: Uint16Array;
  protected readonly u32: Uint32Array;
  protected readonly f64: Float64Array;
  protected readonly queuesAt: number;
  private readonly snapshotAt: number;
  protected readonly entriesAt: number;
  protected readonly free: Int32Array;
  protected freeCount = 0;
  protected seq = 0;
  /** The slots this part owns: [first, end). */
  private readonly first: number;
  private readonly end: number;

  /**
   * Part `part` of `parts` of the log over `area` (of {@link layout}'s
   * size) of a controller with `queues` queue ids of up to `entries`
   * entries each, as found: call {@link clear} for a new one.
   */
  constructor(
    readonly area: Uint8Array,
    readonly queues: number,
    entries: number,
    readonly part = 0,
    readonly parts = 1,
  ) {
    const { capacity, size } = InflightLog.layout(queues, entries);
    if (area.length !== size) throw new RangeError(`nvme in-flight log: the area has ${area.length} bytes, the layout ${size}`);
    if (!Number.isInteger(parts) || parts < 1 || !Number.isInteger(part) || part < 0 || part >= parts || parts > capacity) throw new RangeError(`nvme in-flight log: part ${part} of ${parts} does not fit ${capacity} slots`);
    this.capacity = capacity;
    const per = Math.floor(capacity / parts);
    this.first = part * per;
    this.end = part === parts - 1 ? capacity : this.first + per;
    this.u8 = area;
    this.u16 = new Uint16Array(area.buffer, area.byteOffset, area.length >> 1);
    this.u32 = new Uint32Array(area.buffer, area.byteOffset, area.length >> 2);
    this.f64 = new Float64Array(area.buffer, area.byteOffset, area.length >> 3);
    this.queuesAt = HEADER;
    this.snapshotAt = align8(HEADER + queues * QUEUE);
    this.entriesAt = this.snapshotAt + 2 * SNAPSHOT_CAP;
    this.free = new Int32Array(this.end - this.first);
    this.rebuildFreeList();
  }

  /** Slots of the whole table (every part). */
  readonly capacity: number;

  /** The table's slots and the area's bytes for `queues` queue ids of up to `entries` entries each. */
  static layout(queues: number, entries: number): { capacity: number; size: number } {
    const capacity = Math.min(queues * (entries - 1), MAX_LOGGED_COMMANDS);
    return { capacity, size: align8(HEADER + queues * QUEUE) + 2 * SNAPSHOT_CAP + capacity * ENTRY };
  }

  /**
   * The log of a controller with `queues` queue ids (admin included) of up
   * to `entries` entries each, in `memory`: found as the predecessor left
   * it, or new (zeroed: {@link fresh}).
   */
  static attach(memory: PersistentMemory, queues: number, entries: number, parts = 1): InflightLog {
    return new InflightLog(memory.area(INFLIGHT_AREA, InflightLog.layout(queues, entries).size), queues, entries, 0, parts);
  }

  /** True when nothing was ever stored (a new connection). */
  get fresh(): boolean {
    return this.u32[H_MAGIC >> 2] !== MAGIC;
  }

  /**
   * Forgets the commands of this part (a queue thread's reset: those it
   * had are abandoned; a thread starting afresh: those of the one it
   * replaces).
   */
  clearPart(): void {
    for (let s = this.first; s < this.end; s++) this.f64[(this.entriesAt + s * ENTRY) >> 3] = 0;
    this.rebuildFreeList();
    this.starved = false;
  }

  /** Forgets every command (of every part), queue position and snapshot (a reset); the registers stay. */
  clear(): void {
    this.u32[H_SNAPSHOT >> 2] = 0;
    this.u8.fill(0, this.queuesAt, this.snapshotAt);
    for (let s = 0; s < this.capacity; s++) this.f64[(this.entriesAt + s * ENTRY) >> 3] = 0;
    this.rebuildFreeList();
    this.runningAdmin = -1;
    this.starved = false;
    this.u32[H_MAGIC >> 2] = MAGIC;
  }

  // ---- the hot path ----

  /** A free entry is left: the fetch loop may take one more command. */
  get hasRoom(): boolean {
    return this.freeCount > 0;
  }

  /**
   * Logs a command taken from SQ `sqid` (its entry at `at` of `bytes`),
   * after which the SQ head is `head`; returns its slot. The fetch loop
   * checks {@link hasRoom} first; without room (copies of several queues
   * in flight at once) the head is still logged, so the command is not
   * fetched twice, but it is not recoverable (-1).
   */
  taken(sqid: number, head: number, bytes: Uint8Array, at: number): number {
    if (this.freeCount === 0) {
      this.f64[(this.queuesAt + sqid * QUEUE) >> 3] = this.seq * HEAD_SPAN + head;
      return -1;
    }
    const slot = this.free[--this.freeCount];
    const e = this.entriesAt + slot * ENTRY;
    this.u16[(e + 8) >> 1] = sqid;
    this.u8.set(bytes.subarray(at, at + SQE.size), e + 16);
    const seq = ++this.seq;
    this.f64[e >> 3] = seq;
    this.entryWritten();
    // The commit: from here on the command counts as taken.
    this.f64[(this.queuesAt + sqid * QUEUE) >> 3] = seq * HEAD_SPAN + head;
    return slot;
  }

  /** The command in `slot` was posted on CQ `cqid`, whose tail and phase are now `tail` and `phase`. */
  posted(slot: number, cqid: number, tail: number, phase: number): void {
    this.freed(slot);
    this.u32[(this.queuesAt + cqid * QUEUE + 12) >> 2] = tail | (phase << 16);
  }

  /** Frees `slot`'s entry (its completion is in guest memory). */
  protected freed(slot: number): void {
    const at = (this.entriesAt + slot * ENTRY) >> 3;
    // Forgotten already (a reset cleared it while its completion was being written): it is on the free list.
    if (this.f64[at] === 0) return;
    this.f64[at] = 0;
    // A slot of another part (recovery started it here) is that part's to take again.
    if (slot >= this.first && slot < this.end) this.free[this.freeCount++] = slot;
  }

  /** A command's entry is whole, its SQ's fetch word not yet moved (a crash point for tests: crash-points.ts). */
  protected entryWritten(): void {}

  /** CQ `qid`'s tail and phase are now `tail` and `phase` (recovery found an entry posted past the logged tail). */
  cqTail(qid: number, tail: number, phase: number): void {
    this.u32[(this.queuesAt + qid * QUEUE + 12) >> 2] = tail | (phase << 16);
  }

  /** SQ `qid`'s head is `head`, every command this part logged so far counting as taken (a state loaded by migration, a queue handed to a thread). */
  sqFetchedAt(qid: number, head: number): void {
    this.f64[(this.queuesAt + qid * QUEUE) >> 3] = this.seq * HEAD_SPAN + head;
  }

  /** The driver wrote SQ `qid`'s tail doorbell register. */
  sqTail(qid: number, tail: number): void {
    this.u32[(this.queuesAt + qid * QUEUE + 8) >> 2] = tail;
  }

  /** The driver moved CQ `qid`'s head. */
  cqHead(qid: number, head: number): void {
    this.u32[(this.queuesAt + qid * QUEUE + 16) >> 2] = head;
  }

  // ---- configuration ----

  /** Stores the registers (after every change). */
  registers(r: LoggedRegisters): void {
    const w = this.u32;
    w[H_CC >> 2] = r.cc;
    w[H_CSTS >> 2] = r.csts;
    w[H_AQA >> 2] = r.aqa;
    w[H_INTMS >> 2] = r.intms;
    w[H_ASQ >> 2] = Number(r.asq & 0xffffffffn);
    w[(H_ASQ >> 2) + 1] = Number(r.asq >> 32n);
    w[H_ACQ >> 2] = Number(r.acq & 0xffffffffn);
    w[(H_ACQ >> 2) + 1] = Number(r.acq >> 32n);
    w[H_MAGIC >> 2] = MAGIC;
  }

  /** Queue `qid` was created (SQ or CQ): its positions start at zero, a CQ's phase at 1. */
  queueCreated(qid: number, sq: boolean): void {
    const q = this.queuesAt + qid * QUEUE;
    if (sq) {
      this.f64[q >> 3] = 0;
      this.u32[(q + 8) >> 2] = 0;
    } else {
      this.u32[(q + 12) >> 2] = 1 << 16;
      this.u32[(q + 16) >> 2] = 0;
    }
  }

  /**
   * Stores a snapshot of the configuration in the slot not in use, then
   * makes it current (a crash half-way leaves the previous one whole).
   * False when it does not fit (the previous one stays).
   */
  writeSnapshot(json: string): boolean {
    const slot = this.u32[H_SNAPSHOT >> 2] === 1 ? 2 : 1;
    const at = this.snapshotAt + (slot - 1) * SNAPSHOT_CAP;
    const written = Buffer.from(this.u8.buffer, this.u8.byteOffset + at, SNAPSHOT_CAP).write(json, 'utf8');
    if (written >= SNAPSHOT_CAP || Buffer.byteLength(json, 'utf8') !== written) return false;
    this.u32[(H_SNAPSHOT_LENGTH >> 2) + slot - 1] = written;
    this.u32[H_SNAPSHOT >> 2] = slot;
    return true;
  }

  // ---- reading back (recovery) ----

  /** The registers as last stored. */
  readRegisters(): LoggedRegisters {
    const w = this.u32;
    const u64 = (at: number): bigint => (BigInt(w[(at >> 2) + 1]) << 32n) | BigInt(w[at >> 2]);
    return { cc: w[H_CC >> 2], csts: w[H_CSTS >> 2], aqa: w[H_AQA >> 2], intms: w[H_INTMS >> 2], asq: u64(H_ASQ), acq: u64(H_ACQ) };
  }

  /** The current snapshot's text, if any. */
  readSnapshot(): string | undefined {
    const slot = this.u32[H_SNAPSHOT >> 2];
    if (slot !== 1 && slot !== 2) return undefined;
    const length = Math.min(this.u32[(H_SNAPSHOT_LENGTH >> 2) + slot - 1], SNAPSHOT_CAP);
    const at = this.snapshotAt + (slot - 1) * SNAPSHOT_CAP;
    return Buffer.from(this.u8.buffer, this.u8.byteOffset + at, length).toString('utf8');
  }

  /** SQ `qid`'s head, and the sequence number of the last command taken from it. */
  sqFetched(qid: number): { head: number; seq: number } {
    const word = this.f64[(this.queuesAt + qid * QUEUE) >> 3];
    return { head: word % HEAD_SPAN, seq: Math.floor(word / HEAD_SPAN) };
  }

  /** The tail last written to SQ `qid`'s doorbell register. */
  sqTailWritten(qid: number): number {
    return this.u32[(this.queuesAt + qid * QUEUE + 8) >> 2];
  }

  /** CQ `qid`'s tail, phase and the head the driver last wrote. */
  cqPosition(qid: number): { tail: number; phase: number; head: number } {
    const q = this.queuesAt + qid * QUEUE;
    const tp = this.u32[(q + 12) >> 2];
    return { tail: tp & 0xffff, phase: (tp >>> 16) & 1, head: this.u32[(q + 16) >> 2] };
  }

  /** Every command logged, oldest first (taken or not: the caller checks each against its SQ's fetch word). */
  commands(): LoggedCommand[] {
    const out: LoggedCommand[] = [];
    for (let slot = 0; slot < this.capacity; slot++) {
      const e = this.entriesAt + slot * ENTRY;
      const seq = this.f64[e >> 3];
      if (seq !== 0) out.push({ slot, seq, sqid: this.u16[(e + 8) >> 1] });
    }
    return out.sort((a, b) => a.seq - b.seq);
  }

  /** The 64-byte entry of the command in `slot` (a view of the log). */
  entry(slot: number): Uint8Array {
    const e = this.entriesAt + slot * ENTRY + 16;
    return this.u8.subarray(e, e + SQE.size);
  }

  /** The sequence number of the command in `slot` (0: free). */
  seqOf(slot: number): number {
    return this.f64[(this.entriesAt + slot * ENTRY) >> 3];
  }

  /** Frees the entry in `slot` without posting (a command that was never taken, or is dropped). */
  drop(slot: number): void {
    if (this.seqOf(slot) === 0) return;
    this.f64[(this.entriesAt + slot * ENTRY) >> 3] = 0;
    if (slot >= this.first && slot < this.end) this.free[this.freeCount++] = slot;
  }

  /** The SQ id of the command in `slot`. */
  sqidOf(slot: number): number {
    return this.u16[(this.entriesAt + slot * ENTRY + 8) >> 1];
  }

  /** Takes this part's free slots again from the table (recovery on another thread dropped some). */
  refresh(): void {
    this.rebuildFreeList();
  }

  /** This part's free entries are its slots with no sequence number; numbering goes on after the highest one in the area. */
  private rebuildFreeList(): void {
    this.freeCount = 0;
    // Highest slots last: the first commands take the lowest slots (fewer pages touched).
    for (let slot = this.capacity - 1; slot >= 0; slot--) {
      const seq = this.f64[(this.entriesAt + slot * ENTRY) >> 3];
      if (seq !== 0) this.seq = Math.max(this.seq, seq);
      else if (slot >= this.first && slot < this.end) this.free[this.freeCount++] = slot;
    }
    for (let q = 0; q < this.queues; q++) this.seq = Math.max(this.seq, this.sqFetched(q).seq);
  }
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}
