/**
 * Walking one split-virtqueue descriptor chain (virtio 1.2, 2.7.5 and
 * 2.7.5.3, INDIRECT_DESC included) into its readable and writable buffers,
 * with every guest value checked. The walk reads guest memory through views
 * where it can and stops, asking for a copy, where it cannot: one walker
 * then serves both the synchronous fast path (rings in memory with views)
 * and the asynchronous one (memory reached by messages), with the same
 * checks.
 */
import { u64OrNaNAt } from '../layout/u64.js';
import { DescFlag, MAX_QUEUE_SIZE } from './constants.js';
import { DESCRIPTOR } from './layouts.js';
import type { GuestSpan } from '../device/queue-memory.js';
import { emptySpan } from '../device/dma-access.js';

/** The driver broke the ring: the queue stops and asks for a reset. */
export class RingError extends Error {}

/** Bytes of one descriptor. */
const DESC_SIZE = DESCRIPTOR.size;
/** Where a descriptor's fields are. */
const { addr: ADDR, len: LEN, flags: FLAGS, next: NEXT } = DESCRIPTOR.offsets;
const EMPTY_WORDS: DataView = new DataView(new ArrayBuffer(0));
/** Descriptors in one indirect table, at most (the spec's largest queue). */
const MAX_INDIRECT = MAX_QUEUE_SIZE;
/** Found-buffer lists longer than this are dropped between chains rather than reused. */
const KEEP_FOUND = 64;

/**
 * Where guest memory [addr, addr+length) can be read in place: true with
 * `out` set (the bytes are out.memory[out.offset...]), false when they need
 * a copy. Throws when the memory is not mapped.
 */
export type PeekGuest = (addr: number, length: number, out: GuestSpan) => boolean;

const enum Step {
  Next,
  Done,
  NeedCopy,
}

const enum Pending {
  None,
  Descriptor,
  Table,
}

/**
 * Walks chains one at a time (a queue takes its chains in order, so it
 * keeps one walker). start(), then step() until it returns true; while it
 * returns false, copy guest bytes [needAt, needAt + needLength) and pass
 * them to the next step(). Throws RingError for a broken chain.
 */
export class ChainWalker {
  /**
   * The chain's buffers once step() returned true, packed as [addr, len]
   * pairs, the device-readable ones first (a new array per chain: requests
   * keep it; pairs rather than objects, as this runs for every request).
   */
  chain: number[] = [];
  /** How many of the chain's buffers are device-readable (the rest are writable). */
  readableCount = 0;
  /** Bytes of the chain's device-readable and device-writable buffers. */
  readableLength = 0;
  writableLength = 0;
  /** The buffers found so far, as pairs (reused: each chain's are copied out at its end, at their exact length). */
  private readonly found: number[] = [];
  private foundCount = 0;
  private writableCount = 0;
  /** Where the bytes the walk waits for start, when step() returned false. */
  needAt = 0;
  /** How many bytes the walk waits for. */
  needLength = 0;
  private head = 0;
  private index = 0;
  private tableBase = 0;
  private tableSize = 0;
  /** Descriptors we still accept in the current table. */
  private budget = 0;
  /** An indirect table being walked, read whole: its bytes are table[tableAt...]. */
  private table: Uint8Array | undefined;
  private tableAt = 0;
  /** Where peek() says guest bytes are (reused: no allocation per descriptor). */
  private readonly span: GuestSpan = emptySpan();
  private indirect = false;
  /** A view of the whole descriptor table, good for the whole walk; or undefined: peek each descriptor. */
  private descView: Uint8Array | undefined;
  private pending = Pending.None;
  private bytesA: Uint8Array | undefined;
  private wordsA: DataView = EMPTY_WORDS;
  private bytesB: Uint8Array | undefined;
  private wordsB: DataView = EMPTY_WORDS;

  constructor(private readonly peek: PeekGuest) {}

  /**
   * Begins the chain at `head` of a `size`-entry table at guest address
   * `desc`. `descView`: a view of that table that stays good until the walk
   * ends (only for a walk that does not wait); else each descriptor is peeked.
   */
  start(head: number, desc: number, size: number, indirect: boolean, descView: Uint8Array | undefined): void {
    this.foundCount = this.writableCount = this.readableLength = this.writableLength = 0;
    // A long chain's list does not stay this long.
    if (this.found.length > 2 * KEEP_FOUND) this.found.length = 0;
    this.head = this.index = head;
    this.tableBase = desc;
    this.tableSize = this.budget = size;
    this.table = undefined;
    this.indirect = indirect;
    this.descView = descView;
    this.pending = Pending.None;
  }

  /**
   * Walks on as far as views allow. True when the chain is complete; false
   * when it needs a copy of [needAt, needAt + needLength), which the next
   * call takes as `copy`.
   */
  step(copy?: Uint8Array): boolean {
    if (this.pending !== Pending.None) {
      if (copy === undefined || copy.length !== this.needLength) throw new TypeError('the walk waits for a copy of the bytes it asked for');
      const pending = this.pending;
      this.pending = Pending.None;
      if (pending === Pending.Table) this.enterTable(copy, 0, copy.length);
      else {
        const r = this.visit(copy, 0);
        if (r !== Step.Next) return r === Step.Done;
      }
    }
    for (;;) {
      const index = this.index;
      if (index >= this.tableSize) throw new RingError(`descriptor index ${index} is outside a table of ${this.tableSize}`);
      if (this.budget-- <= 0) throw new RingError(`descriptor chain from head ${this.head} loops or is longer than its table`);
      let r: Step;
      if (this.table) r = this.visit(this.table, this.tableAt + index * DESC_SIZE);
      else if (this.descView) r = this.visit(this.descView, index * DESC_SIZE);
      else {
        const at = this.tableBase + index * DESC_SIZE;
        if (!this.peek(at, DESC_SIZE, this.span)) return this.wait(Pending.Descriptor, at, DESC_SIZE);
        r = this.visit(this.span.memory, this.span.offset);
      }
      if (r !== Step.Next) return r === Step.Done;
    }
  }

  /** Takes the descriptor at `b[at]`; each field is read once, so the driver changing it meanwhile cannot make us use two values. */
  private visit(b: Uint8Array, at: number): Step {
    // Words of a DataView kept per array (not a decoded object, not a BigInt): this runs for every descriptor.
    const w = this.wordsOf(b);
    const addr = u64OrNaNAt(w, at + ADDR);
    const len = w.getUint32(at + LEN, true);
    const flags = w.getUint16(at + FLAGS, true);
    const next = w.getUint16(at + NEXT, true);
    if (flags & DescFlag.INDIRECT) {
      if (!this.indirect) throw new RingError('indirect descriptor without INDIRECT_DESC');
      if (this.table) throw new RingError('indirect descriptor inside an indirect table');
      if (flags & DescFlag.NEXT) throw new RingError('indirect descriptor with NEXT');
      if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > MAX_INDIRECT) throw new RingError(`indirect table of ${len} bytes`);
      if (!Number.isSafeInteger(addr)) throw new RingError('indirect table address out of range');
      if (!this.peek(addr, len, this.span)) {
        this.wait(Pending.Table, addr, len);
        return Step.NeedCopy;
      }
      this.enterTable(this.span.memory, this.span.offset, len);
      return Step.Next;
    }
    if (flags & DescFlag.WRITE) {
      this.writableCount++;
      this.writableLength += len;
    } else if (this.writableCount > 0) throw new RingError('device-readable descriptor after a device-writable one');
    else this.readableLength += len;
    const found = this.found;
    const n = this.foundCount++;
    found[2 * n] = addr;
    found[2 * n + 1] = len;
    if (!(flags & DescFlag.NEXT)) {
      this.chain = found.slice(0, 2 * n + 2);
      this.readableCount = n + 1 - this.writableCount;
      return Step.Done;
    }
    this.index = next;
    return Step.Next;
  }

  /**
   * A DataView of `b`, kept for the two arrays last read (the ring's
   * descriptor table and the mapping holding indirect tables alternate):
   * making one costs more than the reads of a descriptor.
   */
  private wordsOf(b: Uint8Array): DataView {
    if (b === this.bytesA) return this.wordsA;
    if (b === this.bytesB) return this.wordsB;
    const w = new DataView(b.buffer, b.byteOffset, b.length);
    this.bytesB = this.bytesA;
    this.wordsB = this.wordsA;
    this.bytesA = b;
    this.wordsA = w;
    return w;
  }

  /** Walks on in the indirect table at t[at, at+length). */
  private enterTable(t: Uint8Array, at: number, length: number): void {
    this.table = t;
    this.tableAt = at;
    this.tableSize = this.budget = length / DESC_SIZE;
    this.index = 0;
  }

  private wait(what: Pending, at: number, length: number): false {
    this.pending = what;
    this.needAt = at;
    this.needLength = length;
    return false;
  }
}
