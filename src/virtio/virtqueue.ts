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
 * Notifications (virtio 1.2, 2.7.10): while a drain takes chains the
 * driver is asked not to notify; when it ends, the device asks again and
 * reads the avail index once more after a full memory barrier, or, with a
 * polling window (`pollMicroseconds`), keeps them off and polls the index.
 *
 * One loop serves a kick: where the rings and buffers have views (a sealed
 * memfd, the usual case) and the handler finishes at once, it runs
 * synchronously (ring walk, handler, used-ring update and interrupt without
 * a Promise per request, completions published once per batch); memory
 * reached by messages makes it continue on a Promise from the step that
 * waits, with the same checks.
 *
 * This file is the engine (the drain loop, handing out, enable, reset,
 * pause, save and restore); the ring's state and math are in ring.ts, its
 * memory access in ring-access.ts, completion publishing (the used ring
 * and the interrupt) in used-publisher.ts, polling an idle queue in
 * avail-poller.ts and recovery from the inflight log in queue-recovery.ts.
 *
 * Depends only on its {@link VirtqueueHost} (queue-host.ts), so it can run off the
 * main thread.
 */
import { native } from '../native/index.js';
import { VIRTQ_USED_F_NO_NOTIFY } from './constants.js';
import type { VirtqueueHost } from './queue-host.js';
import { ChainWalker, RingError } from './chain.js';
import { SpanCache } from '../device/span-cache.js';
import { VirtqueueRequest, type RequestSink } from './request.js';
import { BounceBudget } from './bounce-budget.js';
import { RingState, type RingFeatures, type VirtqueueState } from './ring.js';
import { Area, RingAccess, ringMemoryError } from './ring-access.js';
import { UsedPublisher } from './used-publisher.js';
import { AvailPoller } from './avail-poller.js';
import type { InflightLog } from './inflight-log.js';
import { recoverQueue } from './queue-recovery.js';

export type { RingFeatures, VirtqueueState } from './ring.js';
export type { VirtqueueHost } from './queue-host.js';
export { ringMemoryError } from './ring-access.js';

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
  /** Reads the idle queue's avail index for the polling window, notifications off. */
  private readonly poller: AvailPoller;
  /** True while a synchronous drain hands out requests: their completions are published when it ends, not later. */
  private collecting = false;
  /** The region last located while collecting (one synchronous drain: see SpanCache); cleared as each begins. */
  private readonly spans = new SpanCache();
  private inflightHeads: Uint8Array;
  private inflightCount = 0;
  private idleWaiters: (() => void)[] = [];
  /** The rings in guest memory, through views taken once and reused. */
  private readonly rings: RingAccess;
  /** Completions waiting for, and on their way to, the used ring. */
  private readonly publisher: UsedPublisher;
  private readonly walker: ChainWalker;
  /** Where taken and published chains are recorded for a successor process (under --isolate), or undefined. */
  private log: InflightLog | undefined;

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly host: VirtqueueHost,
  ) {
    this.state = new RingState(index, maxSize);
    this.inflightHeads = new Uint8Array(maxSize);
    this.rings = new RingAccess(this.state, host);
    this.walker = new ChainWalker((addr, length, out) => this.rings.locate(addr, length, out, this.collecting ? this.spans : undefined));
    this.publisher = new UsedPublisher(this.state, this.rings, host, {
      isCurrent: (gen) => gen === this.generation,
      isBroken: () => this.broken,
      fail: (gen, e, what) => this.failWith(gen, e, what),
      interrupt: () => this.host.interrupt(this),
      wakeIdle: () => this.wakeIdle(),
    });
    const st = this.state;
    this.poller = new AvailPoller({
      mayPoll: (gen) => gen === this.generation && !this.draining && !this.broken && !this.paused && st.enabled,
      isCurrent: (gen) => gen === this.generation,
      availIdxView: () => {
        const avail = this.rings.areaView(Area.Avail);
        return avail ? avail[2] | (avail[3] << 8) : undefined;
      },
      readAvailIdx: () => this.rings.readU16(st.driver + 2),
      lastAvail: () => st.lastAvail,
      askForNotifications: () => this.askForNotifications(),
      kick: () => this.kick(),
      failWith: (gen, e) => this.failWith(gen, e),
    });
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
    this.rings.forget();
    this.log?.start(this.state.lastAvail, this.state.usedIdx);
    return undefined;
  }

  /**
   * Records taken and published chains in `log` from now on (undefined:
   * no more). Attaching does not change the log: enable() starts it,
   * reset() clears it, recover() finishes what it holds.
   */
  attachLog(log: InflightLog | undefined): void {
    this.log = log;
    this.publisher.log = log;
  }

  /** Back to the reset state; requests in flight are abandoned. */
  reset(): void {
    this.generation++;
    this.state.reset();
    this.broken = false;
    this.rings.forget();
    this.inflightHeads.fill(0);
    this.inflightCount = 0;
    this.publisher.reset();
    this.log?.clear();
    this.kickedWhilePaused = false;
    // Loops of the old generation notice the change and stop on their own.
    this.draining = this.again = this.collecting = false;
    this.poller.stop();
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
   * In a successor process (under --isolate): finishes from the attached
   * log what the dead one took and did not publish (queue-recovery.ts).
   * Call on a restored, paused queue; it stays paused. Resolves with the
   * number of chains handed out again.
   */
  recover(): Promise<number> {
    const log = this.log;
    if (!log || !this.state.enabled) return Promise.resolve(0);
    return recoverQueue(log, {
      index: this.index,
      state: this.state,
      read: (at, length) => this.rings.peek(at, length) ?? this.host.memory.read(at, length),
      writeUsedIdx: (idx) => this.rings.writeUsedU16(2, idx),
      retake: (head) => this.retake(head),
    });
  }

  /** Walks the chain at `head` anew and hands it out without touching the avail ring (recovery). */
  private async retake(head: number): Promise<void> {
    const gen = this.generation;
    if (await this.walkAnew(gen, head)) this.handOut(gen, head, true);
  }

  /**
   * Walks the chain at `head` from scratch, copying what has no view (no
   * table view: after a wait a view may be stale, and peek() checks each
   * time). False when a reset came meanwhile.
   */
  private async walkAnew(gen: number, head: number): Promise<boolean> {
    this.checkHead(head);
    const st = this.state;
    const w = this.walker;
    w.start(head, st.desc, st.size, st.features.indirect, undefined);
    let copy: Uint8Array | undefined;
    while (!w.step(copy)) {
      copy = await this.host.memory.read(w.needAt, w.needLength);
      if (gen !== this.generation) return false;
    }
    return true;
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
    this.publisher.add(head, written);
    // A synchronous drain publishes what completed under it when it ends.
    if (this.collecting) return;
    this.publisher.schedule(generation);
  }

  private isIdle(): boolean {
    return this.inflightCount === 0 && !this.publisher.busy && !this.draining;
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
    if (this.publisher.pending) this.publisher.schedule(gen);
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
          if (!st.features.eventIdx) wait = this.rings.writeUsedU16(0, VIRTQ_USED_F_NO_NOTIFY);
          break;
        case Step.TAKE:
          step = Step.PARK;
          wait = this.takeAvailable(gen);
          break;
        case Step.PARK:
          if (this.broken) return undefined;
          if (this.pollWindow() > 0) {
            // Polling: notifications stay off (NO_NOTIFY from PASS, or avail_event one behind).
            step = Step.POLL;
            if (st.features.eventIdx) wait = this.rings.writeUsedU16(st.availEventAt, (st.lastAvail - 1) & 0xffff);
            break;
          }
          // Publish where we are, then look once more: the driver may have
          // added buffers without notifying while we were busy.
          step = Step.RECHECK;
          wait = this.askForNotifications();
          break;
        case Step.POLL:
          step = Step.END;
          this.poller.start(gen, this.pollWindow());
          break;
        case Step.RECHECK: {
          step = Step.END;
          // The store above before the load below: the driver does the mirror image (add, barrier, read flags).
          native.memoryFence();
          const idx = this.rings.readU16(st.driver + 2);
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
    // Drained again on the next turn, not at once: the completions of this drain are published first
    // (the driver added these without a kick while it waited for them).
    if (availIdx !== this.state.lastAvail && !this.paused) setImmediate(() => this.kick());
  }

  /** Lets the driver notify again: NO_NOTIFY cleared, or avail_event at the next index. */
  private askForNotifications(): Promise<void> | undefined {
    const st = this.state;
    return st.features.eventIdx ? this.rings.writeUsedU16(st.availEventAt, st.lastAvail) : this.rings.writeUsedU16(0, 0);
  }

  /** Microseconds to poll an idle queue now: only where the avail ring has a view (polling by message would cost more than kicks). */
  private pollWindow(): number {
    const us = this.host.pollMicroseconds ?? 0;
    return us > 0 && this.rings.areaView(Area.Avail) ? us : 0;
  }

  /** Hands out the chains the avail index shows. */
  private takeAvailable(gen: number): Promise<void> | undefined {
    const idx = this.rings.readU16(this.state.driver + 2);
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
    const avail = this.rings.areaView(Area.Avail);
    const desc = this.rings.areaView(Area.Desc);
    this.collecting = true;
    this.spans.clear();
    try {
      while (pending > 0 && !this.paused) {
        const at = st.nextAvailAt;
        const head = avail ? avail[at] | (avail[at + 1] << 8) : this.rings.readU16(st.driver + at);
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
        this.handOut(gen, head);
        if (gen !== this.generation) return undefined;
      }
    } finally {
      this.collecting = false;
      this.publisher.flush(gen);
    }
    return wait;
  }

  /** Walks the chain at `head` copying what has no view, hands it out, then takes the rest. */
  private async walkCopying(gen: number, head: number, pending: number): Promise<void> {
    if (gen !== this.generation || !(await this.walkAnew(gen, head))) return;
    this.handOut(gen, head);
    if (gen !== this.generation) return;
    return this.takeFrom(gen, pending - 1);
  }

  private checkHead(head: number): void {
    if (head >= this.state.size) throw new RingError(`head index ${head} is outside the queue of ${this.state.size}`);
    if (this.inflightHeads[head]) throw new RingError(`head ${head} made available again while in flight`);
  }

  /** Consumes the avail entry (unless `again`: recovery) and hands the walker's chain to the device. */
  private handOut(gen: number, head: number, again = false): void {
    if (!again) {
      // Taken: recorded for a successor before the device sees it.
      this.log?.take(head, this.state.lastAvail);
      this.state.takeAvail();
    }
    this.inflightHeads[head] = 1;
    this.inflightCount++;
    const w = this.walker;
    const req = new VirtqueueRequest(this.index, head, w.chain, w.readableCount, w.readableLength, w.writableLength, this.host.memory, this, gen, this.host.bounce);
    // Its views are lent to the handler's synchronous part (translated when first asked for).
    req.lend(this.collecting ? this.spans : undefined);
    try {
      this.host.dispatch(req);
    } catch {
      req.complete(0);
    } finally {
      req.unlend();
    }
  }
}

/** Where a drain is: each pass parks notifications, takes the chains, then tells the driver where it is and looks again (or polls). */
const enum Step {
  PASS,
  TAKE,
  PARK,
  POLL,
  RECHECK,
  END,
}
