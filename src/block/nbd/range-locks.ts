/**
 * Byte-range locks for read-modify-write: while a partial block is read,
 * merged and written back, no other modifying request may touch that block,
 * or one of the two writes would be lost.
 */
interface Held {
  readonly start: number;
  readonly end: number;
  readonly done: Promise<void>;
}

export class RangeLocks {
  private readonly held = new Set<Held>();

  /** Waits until no held range overlaps [start, end), then holds it. Returns the release function. */
  async acquire(start: number, end: number): Promise<() => void> {
    for (;;) {
      const blocking: Promise<void>[] = [];
      for (const h of this.held) if (h.start < end && start < h.end) blocking.push(h.done);
      if (blocking.length === 0) break;
      await Promise.all(blocking);
    }
    let release!: () => void;
    const entry: Held = { start, end, done: new Promise<void>((r) => (release = r)) };
    this.held.add(entry);
    return () => {
      this.held.delete(entry);
      release();
    };
  }
}
