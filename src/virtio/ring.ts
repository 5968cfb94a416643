/**
 * The state of one split virtqueue (virtio 1.2, 2.7) as the driver set it
 * up and as the device progressed through it, and the ring math on it:
 * where the next avail and used entries are, how many chains wait, when
 * the driver wants an interrupt (EVENT_IDX or flags), index wrap-around.
 * Pure: it touches no guest memory and schedules nothing, so it can be
 * tested alone, and a queue served on another thread keeps one here too.
 */
import { MAX_QUEUE_SIZE, VIRTQ_AVAIL_F_NO_INTERRUPT } from './constants.js';
import { RingError } from './chain.js';
import { DESCRIPTOR } from './layouts.js';

/** Ring features negotiated for the queue. */
export interface RingFeatures {
  eventIdx: boolean;
  indirect: boolean;
}

/** The migratable part of a queue. */
export interface VirtqueueState {
  size: number;
  enabled: boolean;
  desc: number;
  driver: number;
  device: number;
  msixVector: number;
  lastAvail: number;
  usedIdx: number;
}

/** Configuration and progress of one split virtqueue. Configure the fields, then enable(). */
export class RingState implements VirtqueueState {
  /** Size chosen by the driver (starts at the maximum). */
  size: number;
  desc = 0;
  driver = 0;
  device = 0;
  msixVector = 0xffff;
  enabled = false;
  /** The next avail entry the device takes (free-running, mod 2^16). */
  lastAvail = 0;
  /** The next used entry the device fills (free-running, mod 2^16). */
  usedIdx = 0;
  features: RingFeatures = { eventIdx: false, indirect: false };

  constructor(
    readonly index: number,
    readonly maxSize: number,
  ) {
    if (!isPowerOfTwo(maxSize) || maxSize > MAX_QUEUE_SIZE) throw new RangeError(`queue size must be a power of two up to ${MAX_QUEUE_SIZE}, got ${maxSize}`);
    this.size = maxSize;
  }

  /** Bytes of the descriptor table. */
  get descBytes(): number {
    return DESCRIPTOR.size * this.size;
  }

  /** Bytes of the avail ring (flags, idx, ring, used_event). */
  get availBytes(): number {
    return 6 + 2 * this.size;
  }

  /** Bytes of the used ring (flags, idx, ring, avail_event). */
  get usedBytes(): number {
    return 6 + 8 * this.size;
  }

  /** Why the size and addresses the driver wrote are unusable, or undefined. */
  layoutError(): string | undefined {
    if (!isPowerOfTwo(this.size) || this.size > this.maxSize) return `queue ${this.index}: size ${this.size} is not a power of two up to ${this.maxSize}`;
    if (this.desc % 16 !== 0 || this.driver % 2 !== 0 || this.device % 4 !== 0) return `queue ${this.index}: misaligned ring addresses`;
    return undefined;
  }

  /** Enables the ring with `features`, or returns why its layout is unusable. */
  enable(features: RingFeatures): string | undefined {
    const err = this.layoutError();
    if (err) return err;
    this.features = features;
    this.enabled = true;
    return undefined;
  }

  /** Back to the reset state. */
  reset(): void {
    this.enabled = false;
    this.size = this.maxSize;
    this.desc = this.driver = this.device = 0;
    this.msixVector = 0xffff;
    this.lastAvail = this.usedIdx = 0;
  }

  /**
   * Chains the driver made available and the device has not taken, given
   * the avail ring's index. Throws RingError when the index ran ahead by
   * more than the queue holds.
   */
  pending(availIdx: number): number {
    const n = (availIdx - this.lastAvail) & 0xffff;
    if (n > this.size) throw new RingError(`avail index ${availIdx} is ${n} ahead of ${this.lastAvail}, more than the queue size ${this.size}`);
    return n;
  }

  /** Offset in the avail ring of the next entry to take. */
  get nextAvailAt(): number {
    return 4 + 2 * (this.lastAvail % this.size);
  }

  /** Takes the next avail entry. */
  takeAvail(): void {
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
  }

  /** Offset in the used ring of entry `idx` (free-running). */
  usedEntryAt(idx: number): number {
    return 4 + 8 * (idx % this.size);
  }

  /** Offset of used_event in the avail ring (EVENT_IDX). */
  get usedEventAt(): number {
    return 4 + 2 * this.size;
  }

  /** Offset of avail_event in the used ring (EVENT_IDX). */
  get availEventAt(): number {
    return 4 + 8 * this.size;
  }

  /**
   * Whether the driver wants an interrupt after the used index moved from
   * `old` to `now`: with EVENT_IDX when it passed `usedEvent` (the
   * vring_need_event rule, wrap-safe), else unless the avail ring's flags
   * say NO_INTERRUPT.
   */
  wantsInterrupt(availFlags: number, usedEvent: number, old: number, now: number): boolean {
    if (this.features.eventIdx) return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    return (availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** The state that migrates. */
  save(): VirtqueueState {
    const { size, enabled, desc, driver, device, msixVector, lastAvail, usedIdx } = this;
    return { size, enabled, desc, driver, device, msixVector, lastAvail, usedIdx };
  }

  /** Takes saved state (after a reset); returns why it is unusable, or undefined. Does not enable. */
  restore(s: VirtqueueState): string | undefined {
    this.reset();
    const ints = [s.size, s.desc, s.driver, s.device, s.msixVector, s.lastAvail, s.usedIdx];
    if (!ints.every((v) => Number.isSafeInteger(v) && v >= 0) || s.lastAvail > 0xffff || s.usedIdx > 0xffff || s.msixVector > 0xffff) {
      return `queue ${this.index}: bad saved state`;
    }
    this.size = s.size;
    this.desc = s.desc;
    this.driver = s.driver;
    this.device = s.device;
    this.msixVector = s.msixVector;
    this.lastAvail = s.lastAvail;
    this.usedIdx = s.usedIdx;
    return undefined;
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
