/**
 * A virtqueue's inflight log: which chains the device took from the avail
 * ring and has not published in the used ring yet, kept in memory that
 * outlives the process (`device.persistent`, under `--isolate`). A
 * successor reads it to finish exactly what its predecessor left: every
 * request taken is published once, none twice, none lost.
 *
 * Layout (one area per queue, 8 + 4 x queue size bytes):
 *
 *     u16 lastAvail   the next avail index the device takes
 *     u16 usedIdx     the used index published, as far as this log knows
 *     u16 publishTo   the used index a publish under way is writing
 *     u16 flags       bit 0: live (the queue is enabled and logged)
 *     u32 entry[head] 0: not in flight; else 0x10000 | the avail index it was taken at
 *
 * Every record is a single aligned store, and they are written in an order
 * that leaves the log right after a death between any two of them:
 *
 *  - take (`take`): entry[head], then lastAvail. Dead in between: an entry
 *    taken at lastAvail itself, so lastAvail moves past it (the chain was
 *    walked; it is re-executed like any other taken one).
 *  - publish: the used elements are written to guest memory, then
 *    publishTo (the intent), then each head's entry is cleared, then
 *    usedIdx = publishTo, then used->idx in guest memory. Dead before the
 *    intent: the heads are still taken, executed again and published again
 *    into the same slots. Dead after it: the elements are all in guest
 *    memory, so a successor clears the heads the used slots
 *    [usedIdx, publishTo) name and writes used->idx = publishTo itself
 *    (rewriting the same value is harmless). The heads are cleared before
 *    used->idx shows them to the driver, so a head the driver reuses (and
 *    the device takes again, while a used->idx write by message is under
 *    way) is never cleared by mistake.
 *
 * Re-executing a taken chain is safe for virtio-blk: the driver does not
 * touch the descriptors or buffers of a chain in flight, and reading or
 * writing the same sectors again leaves the same result.
 */

/** @internal Header words and entry bits (for crash-points.ts). */
export const LAST_AVAIL = 0;
const USED_IDX = 1;
const PUBLISH_TO = 2;
const FLAGS = 3;
const LIVE = 1;
/** @internal */
export const TAKEN = 0x10000;
/** Bytes of the header, before the entries. */
const HEADER = 8;

/** What a successor finishes, read from a predecessor's log. */
export interface InflightRecovery {
  /** The next avail index to take. */
  lastAvail: number;
  /** The used index the predecessor published, or was publishing (its elements are in guest memory). */
  usedIdx: number;
  /** Where the last publish started: the used slots [publishFrom, usedIdx) may still be named by taken entries. */
  publishFrom: number;
  /** Chains taken and not completed, oldest first: head and the avail index it was taken at. */
  taken: { head: number; at: number }[];
}

/** One queue's inflight log over an area of persistent memory. */
export class InflightLog {
  protected readonly header: Uint16Array;
  protected readonly entries: Uint32Array;

  /** Bytes of the log of a queue of `maxSize` entries. */
  static bytes(maxSize: number): number {
    return HEADER + 4 * maxSize;
  }

  constructor(
    area: Uint8Array,
    readonly maxSize: number,
    /** Where the area lies in a memfd, for a worker thread serving the queue to map it. */
    readonly where?: { fd: number; offset: number },
  ) {
    if (area.length !== InflightLog.bytes(maxSize) || area.byteOffset % 4 !== 0) throw new RangeError(`inflight log: area of ${area.length} bytes at ${area.byteOffset} does not fit a queue of ${maxSize}`);
    this.header = new Uint16Array(area.buffer, area.byteOffset, HEADER / 2);
    this.entries = new Uint32Array(area.buffer, area.byteOffset + HEADER, maxSize);
  }

  /** True while the log follows an enabled queue. */
  get live(): boolean {
    return (this.header[FLAGS] & LIVE) !== 0;
  }

  /** Starts following a queue just enabled (or restored) at these indices: nothing in flight. */
  start(lastAvail: number, usedIdx: number): void {
    this.header[FLAGS] = 0;
    this.entries.fill(0);
    this.header[LAST_AVAIL] = lastAvail;
    this.header[USED_IDX] = usedIdx;
    this.header[PUBLISH_TO] = usedIdx;
    // Last: a death before this leaves a log that is not live, as before the enable.
    this.header[FLAGS] = LIVE;
  }

  /** Forgets the queue (reset): not live first, so a death half-way leaves nothing to recover. */
  clear(): void {
    this.header[FLAGS] = 0;
    this.entries.fill(0);
    this.header[LAST_AVAIL] = this.header[USED_IDX] = this.header[PUBLISH_TO] = 0;
  }

  /** Chain `head` was taken from avail index `at` (before it is handed to the device). */
  take(head: number, at: number): void {
    this.entries[head] = TAKEN | at;
    this.header[LAST_AVAIL] = (at + 1) & 0xffff;
  }

  /** A publish writes used->idx = `to` next: its elements are in guest memory. */
  publishing(to: number): void {
    this.header[PUBLISH_TO] = to;
  }

  /** Chain `head` is in the publish under way: no longer in flight. */
  completed(head: number): void {
    this.entries[head] = 0;
  }

  /** The publish's heads are cleared (used->idx is written next). */
  published(): void {
    this.header[USED_IDX] = this.header[PUBLISH_TO];
  }

  /**
   * What a successor must finish, for a queue of `size` entries (reads
   * only: a successor that dies while recovering leaves the log as it
   * found it, or as {@link settle} left it, which is as good).
   */
  recovery(size: number): InflightRecovery {
    let lastAvail = this.header[LAST_AVAIL];
    const taken: { head: number; at: number }[] = [];
    for (let head = 0; head < this.maxSize; head++) {
      const e = this.entries[head];
      if (e & TAKEN) taken.push({ head, at: e & 0xffff });
    }
    // Died between an entry and lastAvail: that chain was taken.
    if (taken.some((t) => t.at === lastAvail)) lastAvail = (lastAvail + 1) & 0xffff;
    const age = (at: number): number => (lastAvail - at) & 0xffff;
    // An entry that cannot be in flight (a head beyond the queue, an index not among the last `size` taken) is not.
    const valid = taken.filter((t) => t.head < size && age(t.at) >= 1 && age(t.at) <= size);
    valid.sort((a, b) => age(b.at) - age(a.at));
    return { lastAvail, usedIdx: this.header[PUBLISH_TO], publishFrom: this.header[USED_IDX], taken: valid };
  }

  /**
   * Finishes what the dead process left half-done, in the same order it
   * would have: clears the heads of the publish under way (`published`:
   * the heads the used slots [publishFrom, usedIdx) name) and the entries
   * that cannot be in flight, ends the publish, and moves lastAvail past a
   * take half-recorded. Returns the chains still in flight, oldest first.
   */
  settle(r: InflightRecovery, published: Iterable<number>): { head: number; at: number }[] {
    const done = new Set(published);
    const keep = new Set(r.taken.filter((t) => !done.has(t.head)).map((t) => t.head));
    for (let head = 0; head < this.maxSize; head++) if (this.entries[head] !== 0 && !keep.has(head)) this.entries[head] = 0;
    this.header[USED_IDX] = this.header[PUBLISH_TO];
    this.header[LAST_AVAIL] = r.lastAvail;
    return r.taken.filter((t) => keep.has(t.head));
  }
}
