/**
 * Completion publishing for one split virtqueue: collects completed
 * (head, length) pairs and publishes them in the used ring (entries, then
 * the index, then the interrupt if the driver wants one), once per batch
 * however many complete meanwhile. Synchronous while the rings have views;
 * from a write or read that must wait on, it continues on a Promise.
 */
import type { QueueMemory } from '../device/queue-memory.js';
import { Area, type RingAccess } from './ring-access.js';
import type { RingState } from './ring.js';
import type { InflightLog } from './inflight-log.js';

/** What the publisher needs from its queue (callbacks made once per queue). */
export interface PublisherOwner {
  /** Whether `generation` is the queue's current one (a reset bumps it). */
  isCurrent(generation: number): boolean;
  /** True once the driver broke the ring: nothing more is published. */
  isBroken(): boolean;
  /** Publishing failed: stop the queue (when `generation` is still current). */
  fail(generation: number, e: unknown, what: string): void;
  /** Raise the queue's used-buffer interrupt (may throw). */
  interrupt(): void;
  /** Something the queue's idle() waits for may have finished. */
  wakeIdle(): void;
}

/** Publishes one queue's completions in its used ring. */
export class UsedPublisher {
  /** Completed (head, length) pairs waiting to be published. */
  private completed: number[] = [];
  private flushing = false;
  private flushScheduled = false;
  /** The queue's inflight log (under --isolate): each publish records its intent and clears its heads. */
  log: InflightLog | undefined;

  constructor(
    private readonly state: RingState,
    private readonly ring: RingAccess,
    private readonly host: { readonly memory: QueueMemory },
    private readonly owner: PublisherOwner,
  ) {}

  /** Records a completion (published by the next flush). */
  add(head: number, written: number): void {
    this.completed.push(head, written >>> 0);
  }

  /** Completions wait to be published. */
  get pending(): boolean {
    return this.completed.length > 0;
  }

  /** Completions wait, or a flush is scheduled or under way. */
  get busy(): boolean {
    return this.completed.length > 0 || this.flushing || this.flushScheduled;
  }

  /** Drops what waits; flushes of the old generation notice and stop on their own. */
  reset(): void {
    this.completed = [];
    this.flushing = this.flushScheduled = false;
  }

  /** Publishes completions at the end of this turn of the event loop (once, however many complete meanwhile). */
  schedule(gen: number): void {
    if (this.flushing || this.flushScheduled) return;
    this.flushScheduled = true;
    // Completions from the same turn of the event loop share one used-index
    // update and one interrupt: publish once the loop's callbacks of this
    // turn (other requests' completions among them) have run, not after the
    // first one's microtasks.
    setImmediate(() => {
      if (!this.owner.isCurrent(gen)) return;
      this.flushScheduled = false;
      this.flush(gen);
      this.owner.wakeIdle();
    });
  }

  /**
   * Publishes completions: entries, then the index, then the interrupt if
   * the driver wants one. Synchronous while the rings have views; from a
   * write or read that must wait on, it continues on a Promise (and takes
   * the completions that come meanwhile too).
   */
  flush(gen: number): void {
    if (this.flushing) return; // the flush under way takes these too
    let rest: Promise<void> | undefined;
    try {
      rest = this.publish(gen);
    } catch (e) {
      this.owner.fail(gen, e, 'cannot publish used buffers: ');
    }
    if (!rest) return;
    this.flushing = true;
    rest.then(
      () => this.flushed(gen),
      (e: unknown) => {
        this.owner.fail(gen, e, 'cannot publish used buffers: ');
        this.flushed(gen);
      },
    );
  }

  private flushed(gen: number): void {
    if (!this.owner.isCurrent(gen)) return;
    this.flushing = false;
    // Completions that came after the flush's last look.
    if (this.completed.length > 0) this.schedule(gen);
    this.owner.wakeIdle();
  }

  private publish(gen: number): Promise<void> | undefined {
    while (this.completed.length > 0 && this.owner.isCurrent(gen) && !this.owner.isBroken()) {
      const wait = this.publishEntries(gen, 0, this.completed.length, this.state.usedIdx);
      if (wait) return wait.then(() => this.publish(gen));
    }
    return undefined;
  }

  /**
   * Writes completed entries [i, end) to the used ring (through its view,
   * or one by one where it has none), then the index and the interrupt.
   * `old`: the used index before this batch.
   */
  private publishEntries(gen: number, i: number, end: number, old: number): Promise<void> | undefined {
    const st = this.state;
    const list = this.completed;
    const used = this.ring.areaView(Area.Used);
    for (; i < end; i += 2) {
      const at = st.usedEntryAt(st.usedIdx);
      if (used) {
        setU32(used, at, list[i]);
        setU32(used, at + 4, list[i + 1]);
      } else {
        const elem = new Uint8Array(8);
        setU32(elem, 0, list[i]);
        setU32(elem, 4, list[i + 1]);
        if (!this.ring.poke(st.device + at, elem)) {
          const next = i + 2;
          return this.host.memory.write(st.device + at, elem).then(() => {
            // A reset meanwhile gave the ring to a new driver setup: stop here.
            if (!this.owner.isCurrent(gen)) return undefined;
            st.usedIdx = (st.usedIdx + 1) & 0xffff;
            return this.publishEntries(gen, next, end, old);
          });
        }
      }
      st.usedIdx = (st.usedIdx + 1) & 0xffff;
    }
    const log = this.log;
    if (log) {
      // The elements are in guest memory: record the intent, then the heads leave the log before used->idx shows them.
      log.publishing(st.usedIdx);
      for (let j = 0; j < end; j += 2) log.completed(list[j]);
      log.published();
    }
    // Published: what completed during a wait stays for the next batch.
    if (end === list.length) list.length = 0;
    else list.splice(0, end);
    let wait: Promise<void> | undefined;
    if (used) {
      used[2] = st.usedIdx & 0xff;
      used[3] = st.usedIdx >> 8;
      // One dirty record for the entries and the index (a no-op unless migration logs).
      this.host.memory.markDirty(st.device, st.usedBytes);
    } else {
      wait = this.ring.writeBytes(st.device + 2, Uint8Array.of(st.usedIdx & 0xff, st.usedIdx >> 8));
    }
    if (!wait) return this.notify(gen, old);
    return wait.then(() => (this.owner.isCurrent(gen) ? this.notify(gen, old) : undefined));
  }

  /** Interrupts if the driver wants one for the used index moving from `old` to now. */
  private notify(gen: number, old: number): Promise<void> | undefined {
    const st = this.state;
    const avail = this.ring.areaView(Area.Avail);
    if (avail) {
      if (this.wantsInterruptFrom(avail, old, st.usedIdx)) this.interrupt(gen);
      return undefined;
    }
    const now = st.usedIdx;
    const field = this.ring.readU16(st.features.eventIdx ? st.driver + st.usedEventAt : st.driver);
    const decide = (v: number): void => {
      if (!this.owner.isCurrent(gen)) return;
      const yes = st.features.eventIdx ? st.wantsInterrupt(0, v, old, now) : st.wantsInterrupt(v, 0, old, now);
      if (yes) this.interrupt(gen);
    };
    if (typeof field !== 'number') return field.then(decide);
    decide(field);
    return undefined;
  }

  private interrupt(gen: number): void {
    try {
      this.owner.interrupt();
    } catch (e) {
      this.owner.fail(gen, e, 'cannot interrupt: ');
    }
  }

  /** The same decision, from the avail ring's view. */
  private wantsInterruptFrom(avail: Uint8Array, old: number, now: number): boolean {
    const at = this.state.usedEventAt;
    return this.state.wantsInterrupt(avail[0] | (avail[1] << 8), avail[at] | (avail[at + 1] << 8), old, now);
  }
}

function setU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = v >>> 24;
}
