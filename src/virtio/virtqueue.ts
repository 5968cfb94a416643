/**
 * A split virtqueue (virtio 1.2, 2.7) served from guest memory: walks
 * descriptor chains (with INDIRECT_DESC), hands them out as requests,
 * publishes completions in the used ring in whatever order they finish,
 * and honours EVENT_IDX / flag-based notification suppression both ways.
 *
 * Everything in guest memory is untrusted. A broken ring (avail index
 * jumping by more than the queue size, a head or next index out of range,
 * a loop or a chain longer than allowed, a bad indirect table, rings in
 * unmapped memory, a head reused while in flight) stops the queue and
 * reports through `onBroken`: the transport then sets DEVICE_NEEDS_RESET.
 * Buffer-level faults (unmapped data, wrong direction, wrapping lengths)
 * are the request handler's to report (for example as an I/O error).
 *
 * One loop serves a kick: where the rings and buffers have views (a sealed
 * memfd, the usual case) and the handler finishes at once, it runs
 * synchronously (ring walk, handler, used-ring update and interrupt without
 * a Promise per request, completions published once per batch); memory
 * reached by messages makes it continue on a Promise from the step that
 * waits, with the same checks.
 *
 * Depends only on {@link QueueMemory} and callbacks, so it can run off the
 * main thread.
 */
import { VIRTQ_USED_F_NO_NOTIFY } from './constants.js';
import type { QueueMemory } from '../device/queue-memory.js';
import { ChainWalker, DESC_SIZE, RingError } from './chain.js';
import { BounceBudget, VirtqueueRequest, type Descriptor, type RequestSink } from './request.js';
import { RingState, type RingFeatures, type VirtqueueState } from './ring.js';

export type { RingFeatures, VirtqueueState } from './ring.js';

/** What a virtqueue needs from its transport. */
export interface VirtqueueHost {
  readonly memory: QueueMemory;
  /** Bounce-buffer bytes shared by the device's queues. */
  readonly bounce: BounceBudget;
  /** Raise this queue's used-buffer interrupt. */
  interrupt(queue: Virtqueue): void;
  /** The driver broke the ring: stop and ask for a reset. */
  onBroken(queue: Virtqueue, reason: string): void;
  /** Serve one request; complete it with request.complete(bytesWritten). */
  dispatch(request: VirtqueueRequest): void;
}

/** Rounds of "take everything, look again" per wakeup before yielding to the event loop. */
const MAX_PASSES = 4;

/**
 * The engine of one split virtqueue: takes chains, hands them out,
 * publishes completions and interrupts. Its ring's configuration and
 * indices are {@link state}: configure that, then enable().
 */
export class Virtqueue implements RequestSink {
  /** The ring's configuration, indices and math. */
  readonly state: RingState;
  /** Bumped on reset: completions of an older generation are dropped. */
  private generation = 0;
  private broken = false;
  private paused = false;
  private kickedWhilePaused = false;
  private draining = false;
  private again = false;
  /** True while a synchronous drain hands out requests: their completions are published when it ends, not later. */
  private collecting = false;
  private inflightHeads: Uint8Array;
  private inflightCount = 0;
  /** Completed (head, length) pairs waiting to be published. */
  private completed: number[] = [];
  private flushing = false;
  private flushScheduled = false;
  private idleWaiters: (() => void)[] = [];
  /**
   * Views of the descriptor table, the avail ring and the used ring, taken
   * once and reused: the hot path then reads and writes ring fields without
   * translating an address per field. A view of memory unmapped since reads
   * length 0 and is taken again (or the slow path reports the fault). null:
   * that memory offers no single view; undefined: not taken yet.
   */
  private descCache: Uint8Array | null | undefined;
  private availCache: Uint8Array | null | undefined;
  private usedCache: Uint8Array | null | undefined;
  private readonly walker: ChainWalker;

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly host: VirtqueueHost,
  ) {
    this.state = new RingState(index, maxSize);
    this.inflightHeads = new Uint8Array(maxSize);
    this.walker = new ChainWalker((addr, length) => this.peek(addr, length));
  }

  /** Sets the queue's MSI-X vector (the host reads it when it interrupts). */
  setVector(vector: number): void {
    this.state.msixVector = vector;
  }

  /** True once the driver enabled the queue (and it is not broken). */
  get isEnabled(): boolean {
    return this.state.enabled;
  }

  /** Requests handed out and not completed. */
  get inflight(): number {
    return this.inflightCount;
  }

  /**
   * Enables the queue with the size and addresses the driver wrote.
   * Returns an error message when they are unusable (the queue stays off).
   */
  enable(ring: RingFeatures, checkMemory = true): string | undefined {
    const err = this.state.layoutError() ?? (checkMemory ? ringMemoryError(this.state, this.host.memory) : undefined);
    if (err) return err;
    this.state.enable(ring);
    this.descCache = this.availCache = this.usedCache = undefined;
    return undefined;
  }

  /** Back to the reset state; requests in flight are abandoned. */
  reset(): void {
    this.generation++;
    this.state.reset();
    this.broken = false;
    this.descCache = this.availCache = this.usedCache = undefined;
    this.inflightHeads.fill(0);
    this.inflightCount = 0;
    this.completed = [];
    this.kickedWhilePaused = false;
    // Loops of the old generation notice the change and stop on their own.
    this.draining = this.flushing = this.flushScheduled = this.again = this.collecting = false;
    this.wakeIdle();
  }

  /** The driver notified this queue (doorbell): process everything available. */
  kick(): void {
    if (!this.state.enabled || this.broken) return;
    if (this.paused) {
      this.kickedWhilePaused = true;
      return;
    }
    if (this.draining) {
      this.again = true;
      return;
    }
    this.drain();
  }

  /** Stops taking requests (completions still publish); for migration. */
  pause(): void {
    this.paused = true;
  }

  /** Takes requests again, and catches up with kicks that came meanwhile. */
  resume(): void {
    this.paused = false;
    if (this.kickedWhilePaused || this.state.enabled) {
      this.kickedWhilePaused = false;
      this.kick();
    }
  }

  /** Resolves when no request is in flight and nothing waits to be published. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The state that migrates (take it while idle). */
  save(): VirtqueueState {
    return this.state.save();
  }

  /** Restores saved state. Returns an error message when it is unusable. */
  restore(s: VirtqueueState, ring: RingFeatures): string | undefined {
    this.reset();
    const err = this.state.restore(s);
    if (err) return err;
    // DMA is held while a migration loads: rings in unmapped memory show at the first access instead.
    return s.enabled ? this.enable(ring, false) : undefined;
  }

  /**
   * @internal A request of this queue finished (called by the request).
   * Completions of an older generation (before a reset) are dropped.
   */
  isCurrent(generation: number): boolean {
    return generation === this.generation;
  }

  requestDone(generation: number, head: number, written: number): void {
    if (generation !== this.generation || !this.inflightHeads[head]) return;
    this.inflightHeads[head] = 0;
    this.inflightCount--;
    this.completed.push(head, written >>> 0);
    // A synchronous drain publishes what completed under it when it ends.
    if (this.collecting) return;
    this.scheduleFlush();
  }

  private isIdle(): boolean {
    return this.inflightCount === 0 && this.completed.length === 0 && !this.flushing && !this.flushScheduled && !this.draining;
  }

  private wakeIdle(): void {
    if (!this.isIdle()) return;
    const ws = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of ws) w();
  }

  private fail(reason: string): void {
    if (this.broken) return;
    this.broken = true;
    this.host.onBroken(this, reason);
  }

  private failWith(gen: number, e: unknown, what = ''): void {
    if (gen === this.generation) this.fail(`queue ${this.index}: ${what}${e instanceof Error ? e.message : String(e)}`);
  }

  /**
   * Takes every available chain, in one loop: synchronous while the rings
   * and buffers have views and handlers finish at once (no Promise per
   * request, completions published once per batch), continuing on a Promise
   * only from the step that must wait (a copy or a write by message).
   */
  private drain(): void {
    const gen = this.generation;
    this.draining = true;
    let rest: Promise<void> | undefined;
    try {
      rest = this.run(gen, Step.PASS, 0);
    } catch (e) {
      this.failWith(gen, e);
    }
    if (!rest) return this.drained(gen);
    rest.then(
      () => this.drained(gen),
      (e: unknown) => {
        this.failWith(gen, e);
        this.drained(gen);
      },
    );
  }

  private drained(gen: number): void {
    this.collecting = false;
    if (gen !== this.generation) return;
    // Whatever completed under this drain and is not published yet (a fault).
    if (this.completed.length > 0) this.scheduleFlush();
    this.draining = false;
    this.wakeIdle();
  }

  /** The drain's steps from `step` on, synchronously until one must wait. */
  private run(gen: number, step: Step, passes: number): Promise<void> | undefined {
    const st = this.state;
    for (;;) {
      if (gen !== this.generation) return undefined;
      let wait: Promise<void> | undefined;
      switch (step) {
        case Step.PASS:
          // A driver that keeps adding buffers must not starve the event loop.
          if (++passes > MAX_PASSES) {
            setImmediate(() => this.kick());
            return undefined;
          }
          this.again = false;
          step = Step.TAKE;
          if (!st.features.eventIdx) wait = this.writeUsedU16(0, VIRTQ_USED_F_NO_NOTIFY);
          break;
        case Step.TAKE:
          step = Step.PARK;
          wait = this.takeAvailable(gen);
          break;
        case Step.PARK:
          if (this.broken) return undefined;
          // Publish where we are, then look once more: the driver may have
          // added buffers without notifying while we were busy.
          step = Step.RECHECK;
          wait = st.features.eventIdx ? this.writeUsedU16(st.availEventAt, st.lastAvail) : this.writeUsedU16(0, 0);
          break;
        case Step.RECHECK: {
          step = Step.END;
          const idx = this.readU16(st.driver + 2);
          if (typeof idx === 'number') this.rechecked(idx);
          else wait = idx.then((v) => this.rechecked(v));
          break;
        }
        case Step.END:
          if (!this.again || this.broken || this.paused) return undefined;
          step = Step.PASS;
          break;
      }
      if (wait) {
        const next = step;
        return wait.then(() => this.run(gen, next, passes));
      }
    }
  }

  private rechecked(availIdx: number): void {
    if (availIdx !== this.state.lastAvail && !this.paused) this.again = true;
  }

  /** Hands out the chains the avail index shows. */
  private takeAvailable(gen: number): Promise<void> | undefined {
    const idx = this.readU16(this.state.driver + 2);
    if (typeof idx === 'number') return this.takeFrom(gen, this.state.pending(idx));
    return idx.then((v) => (gen === this.generation ? this.takeFrom(gen, this.state.pending(v)) : undefined));
  }

  /**
   * Hands out `pending` chains while their heads and descriptors have views
   * (the views stay good throughout: an unmap, a DMA hold or a Bus Master
   * Enable change comes in a message, which the event loop reads after
   * this); from a head or chain that needs a copy on, continues on a
   * Promise. What completes meanwhile is published when the loop stops.
   */
  private takeFrom(gen: number, pending: number): Promise<void> | undefined {
    const st = this.state;
    const w = this.walker;
    let wait: Promise<void> | undefined;
    // Taken once for the loop: nothing in it can unmap them.
    const avail = this.areaView(Area.Avail);
    const desc = this.areaView(Area.Desc);
    this.collecting = true;
    try {
      while (pending > 0 && !this.paused) {
        const at = st.nextAvailAt;
        const head = avail ? avail[at] | (avail[at + 1] << 8) : this.readU16(st.driver + at);
        if (typeof head !== 'number') {
          const left = pending;
          wait = head.then((h) => this.walkCopying(gen, h, left));
          break;
        }
        this.checkHead(head);
        w.start(head, st.desc, st.size, st.features.indirect, desc);
        if (!w.step()) {
          wait = this.walkCopying(gen, head, pending);
          break;
        }
        pending--;
        this.handOut(gen, head, w.readable, w.writable);
        if (gen !== this.generation) return undefined;
      }
    } finally {
      this.collecting = false;
      this.flush(gen);
    }
    return wait;
  }

  /** Walks the chain at `head` copying what has no view, hands it out, then takes the rest. */
  private async walkCopying(gen: number, head: number, pending: number): Promise<void> {
    if (gen !== this.generation) return;
    this.checkHead(head);
    const st = this.state;
    const w = this.walker;
    // No table view here: after a wait a view may be stale, and peek() checks each time.
    w.start(head, st.desc, st.size, st.features.indirect, undefined);
    let copy: Uint8Array | undefined;
    while (!w.step(copy)) {
      copy = await this.host.memory.read(w.needAt, w.needLength);
      if (gen !== this.generation) return;
    }
    this.handOut(gen, head, w.readable, w.writable);
    if (gen !== this.generation) return;
    return this.takeFrom(gen, pending - 1);
  }

  private checkHead(head: number): void {
    if (head >= this.state.size) throw new RingError(`head index ${head} is outside the queue of ${this.state.size}`);
    if (this.inflightHeads[head]) throw new RingError(`head ${head} made available again while in flight`);
  }

  /** Consumes the avail entry and hands its chain to the device. */
  private handOut(gen: number, head: number, readable: Descriptor[], writable: Descriptor[]): void {
    this.state.takeAvail();
    this.inflightHeads[head] = 1;
    this.inflightCount++;
    const req = new VirtqueueRequest(this.index, head, readable, writable, this.host.memory, this, gen, this.host.bounce);
    // Materialized once: its views are lent to the handler's synchronous part.
    req.lend();
    try {
      this.host.dispatch(req);
    } catch {
      req.complete(0);
    } finally {
      req.unlend();
    }
  }

  /** Publishes completions at the end of this turn of the event loop (once, however many complete meanwhile). */
  private scheduleFlush(): void {
    if (this.flushing || this.flushScheduled) return;
    this.flushScheduled = true;
    const gen = this.generation;
    // Completions from the same turn of the event loop share one used-index
    // update and one interrupt: publish once the loop's callbacks of this
    // turn (other requests' completions among them) have run, not after the
    // first one's microtasks.
    setImmediate(() => {
      if (gen !== this.generation) return;
      this.flushScheduled = false;
      this.flush(gen);
      this.wakeIdle();
    });
  }

  /**
   * Publishes completions: entries, then the index, then the interrupt if
   * the driver wants one. Synchronous while the rings have views; from a
   * write or read that must wait on, it continues on a Promise (and takes
   * the completions that come meanwhile too).
   */
  private flush(gen: number): void {
    if (this.flushing) return; // the flush under way takes these too
    let rest: Promise<void> | undefined;
    try {
      rest = this.publish(gen);
    } catch (e) {
      this.failWith(gen, e, 'cannot publish used buffers: ');
    }
    if (!rest) return;
    this.flushing = true;
    rest.then(
      () => this.flushed(gen),
      (e: unknown) => {
        this.failWith(gen, e, 'cannot publish used buffers: ');
        this.flushed(gen);
      },
    );
  }

  private flushed(gen: number): void {
    if (gen !== this.generation) return;
    this.flushing = false;
    // Completions that came after the flush's last look.
    if (this.completed.length > 0) this.scheduleFlush();
    this.wakeIdle();
  }

  private publish(gen: number): Promise<void> | undefined {
    while (this.completed.length > 0 && gen === this.generation && !this.broken) {
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
    const used = this.areaView(Area.Used);
    for (; i < end; i += 2) {
      const at = st.usedEntryAt(st.usedIdx);
      if (used) {
        setU32(used, at, list[i]);
        setU32(used, at + 4, list[i + 1]);
      } else {
        const elem = new Uint8Array(8);
        setU32(elem, 0, list[i]);
        setU32(elem, 4, list[i + 1]);
        if (!this.poke(st.device + at, elem)) {
          const next = i + 2;
          return this.host.memory.write(st.device + at, elem).then(() => {
            // A reset meanwhile gave the ring to a new driver setup: stop here.
            if (gen !== this.generation) return undefined;
            st.usedIdx = (st.usedIdx + 1) & 0xffff;
            return this.publishEntries(gen, next, end, old);
          });
        }
      }
      st.usedIdx = (st.usedIdx + 1) & 0xffff;
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
      wait = this.writeBytes(st.device + 2, Uint8Array.of(st.usedIdx & 0xff, st.usedIdx >> 8));
    }
    if (!wait) return this.notify(gen, old);
    return wait.then(() => (gen === this.generation ? this.notify(gen, old) : undefined));
  }

  /** Interrupts if the driver wants one for the used index moving from `old` to now. */
  private notify(gen: number, old: number): Promise<void> | undefined {
    const st = this.state;
    const avail = this.areaView(Area.Avail);
    if (avail) {
      if (this.wantsInterruptFrom(avail, old, st.usedIdx)) this.interrupt(gen);
      return undefined;
    }
    const now = st.usedIdx;
    const field = this.readU16(st.features.eventIdx ? st.driver + st.usedEventAt : st.driver);
    const decide = (v: number): void => {
      if (gen !== this.generation) return;
      const yes = st.features.eventIdx ? st.wantsInterrupt(0, v, old, now) : st.wantsInterrupt(v, 0, old, now);
      if (yes) this.interrupt(gen);
    };
    if (typeof field !== 'number') return field.then(decide);
    decide(field);
    return undefined;
  }

  private interrupt(gen: number): void {
    try {
      this.host.interrupt(this);
    } catch (e) {
      this.failWith(gen, e, 'cannot interrupt: ');
    }
  }

  /** The same decision, from the avail ring's view. */
  private wantsInterruptFrom(avail: Uint8Array, old: number, now: number): boolean {
    const at = this.state.usedEventAt;
    return this.state.wantsInterrupt(avail[0] | (avail[1] << 8), avail[at] | (avail[at + 1] << 8), old, now);
  }

  /** Writes a u16 of the used ring through its view, recording the page dirty for migration. */
  private setUsedU16(used: Uint8Array, at: number, value: number): void {
    used[at] = value & 0xff;
    used[at + 1] = (value >> 8) & 0xff;
    this.host.memory.markDirty(this.state.device + at, 2);
  }

  /** The cached view of a ring area, (re)taken when missing or unmapped; undefined when there is none. */
  private areaView(which: Area): Uint8Array | undefined {
    const cached = which === Area.Desc ? this.descCache : which === Area.Avail ? this.availCache : this.usedCache;
    if (cached === null) return undefined;
    // Views skip the per-access checks: ask for them once (migration hold, Bus Master Enable).
    if (!this.host.memory.accessible()) return undefined;
    const length = which === Area.Desc ? DESC_SIZE * this.state.size : which === Area.Avail ? 6 + 2 * this.state.size : 6 + 8 * this.state.size;
    if (cached && cached.length === length) return cached;
    const start = which === Area.Desc ? this.state.desc : which === Area.Avail ? this.state.driver : this.state.device;
    let view: Uint8Array | null = null;
    try {
      const v = this.host.memory.views(start, length, which === Area.Used);
      if (v && v.length === 1 && v[0].length === length) view = v[0];
    } catch {
      // Not mapped (now): the slow path reports it as it always did.
      return undefined;
    }
    if (which === Area.Desc) this.descCache = view;
    else if (which === Area.Avail) this.availCache = view;
    else this.usedCache = view;
    return view ?? undefined;
  }

  /** Bytes of a ring area from its cached view, when [addr, addr+length) lies in one. */
  private fromCache(addr: number, length: number): Uint8Array | undefined {
    if (addr >= this.state.desc && addr + length <= this.state.desc + DESC_SIZE * this.state.size) {
      const v = this.areaView(Area.Desc);
      return v && v.subarray(addr - this.state.desc, addr - this.state.desc + length);
    }
    if (addr >= this.state.driver && addr + length <= this.state.driver + 6 + 2 * this.state.size) {
      const v = this.areaView(Area.Avail);
      return v && v.subarray(addr - this.state.driver, addr - this.state.driver + length);
    }
    return undefined;
  }

  /** A view of guest memory for reading, or undefined when it takes a copy (no fd, or two regions). */
  private peek(addr: number, length: number): Uint8Array | undefined {
    const c = this.fromCache(addr, length);
    if (c) return c;
    const v = this.host.memory.views(addr, length, false);
    if (!v || v.length !== 1) return undefined;
    // A view of memory unmapped meanwhile reads as empty: a fault, not zeros.
    if (v[0].length !== length) throw new RingError(`guest memory at 0x${addr.toString(16)} went away`);
    return v[0];
  }

  /** Writes through a view; false when the memory needs a message. */
  private poke(addr: number, data: Uint8Array): boolean {
    const v = this.host.memory.views(addr, data.length, true);
    if (!v || v.length !== 1) return false;
    if (v[0].length !== data.length) throw new RingError(`guest memory at 0x${addr.toString(16)} went away`);
    v[0].set(data);
    return true;
  }

  /** A u16 of guest memory: from a view at once (the avail ring's cached one first), else copied. */
  private readU16(addr: number): number | Promise<number> {
    // The avail ring's fields, straight from its cached view: no allocation.
    if (addr >= this.state.driver && addr + 2 <= this.state.driver + 6 + 2 * this.state.size) {
      const v = this.areaView(Area.Avail);
      if (v) return v[addr - this.state.driver] | (v[addr - this.state.driver + 1] << 8);
    }
    const b = this.peek(addr, 2);
    if (b) return b[0] | (b[1] << 8);
    return this.host.memory.read(addr, 2).then((c) => c[0] | (c[1] << 8));
  }

  /** Writes a u16 at `at` of the used ring: through its view at once, else by message. */
  private writeUsedU16(at: number, value: number): Promise<void> | undefined {
    const used = this.areaView(Area.Used);
    if (used) {
      this.setUsedU16(used, at, value);
      return undefined;
    }
    return this.writeBytes(this.state.device + at, Uint8Array.of(value & 0xff, (value >> 8) & 0xff));
  }

  /** Writes through a view at once, or by message (the Promise). */
  private writeBytes(addr: number, data: Uint8Array): Promise<void> | undefined {
    return this.poke(addr, data) ? undefined : this.host.memory.write(addr, data);
  }
}

/** Where a drain is: each pass parks notifications, takes the chains, then tells the driver where it is and looks again. */
const enum Step {
  PASS,
  TAKE,
  PARK,
  RECHECK,
  END,
}

/** The three ring areas a queue keeps views of. */
const enum Area {
  Desc,
  Avail,
  Used,
}

/** Why the rings of `state` are not all in mapped guest memory (with the right access), or undefined. */
export function ringMemoryError(state: RingState, memory: QueueMemory): string | undefined {
  const ok = memory.mapped(state.desc, state.descBytes, false) && memory.mapped(state.driver, state.availBytes, false) && memory.mapped(state.device, state.usedBytes, true);
  return ok ? undefined : `queue ${state.index}: rings are not in mapped guest memory`;
}

function setU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = v >>> 24;
}
