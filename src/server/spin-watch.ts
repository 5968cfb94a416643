/**
 * A driver spinning on a status bit the model never sets: the guest reads
 * the same register over and over, the value never changes, and nothing
 * else happens to the device. The driver then times out (or hangs) far
 * from the cause; this says which register, once per register and client.
 *
 * O(1) per access and no allocation: the watch keeps only the current
 * streak (same region, offset and width, same value, no other access in
 * between). The clock is read only once a streak is
 * {@link SPIN_CLOCK_AFTER} reads long, so ordinary accesses cost a few
 * comparisons.
 */
import type { Device } from '../device/device.js';
import type { Logger } from '../device/logger.js';
import { registerMapOf } from '../device/registers.js';
import { CONFIG_REGION } from '../device/regions.js';
import { regionLabel } from '../device/unmodeled.js';

/** Identical reads in a row that make a spin. */
export const SPIN_READS = 1000;
/** ...within this many milliseconds (measured from the {@link SPIN_CLOCK_AFTER}th read). */
export const SPIN_WINDOW_MS = 2000;
/** The streak's clock starts at this read: shorter streaks never read the clock. */
const SPIN_CLOCK_AFTER = 16;

/** Watches one client's region accesses to one device for spinning reads. */
export class SpinWatch {
  private region = -1;
  private offset = -1;
  private width = 0;
  private low = 0;
  private high = 0;
  private reads = 0;
  private clockStart = 0;
  /** Places already warned about (`region:offset:width`). */
  private readonly warned = new Set<string>();

  constructor(
    private readonly device: Device,
    private readonly log: Logger,
  ) {}

  /** The guest read `data` at `offset` of `region`. */
  read(region: number, offset: number, data: Uint8Array): void {
    this.readAt(region, offset, data, 0, data.length);
  }

  /** The guest read the `width` bytes at `at` of `buf` (a reply being built) at `offset` of `region`. */
  readAt(region: number, offset: number, buf: Uint8Array, at: number, width: number): void {
    if (width > 8) return this.other();
    let low = 0;
    let high = 0;
    for (let i = Math.min(width, 4) - 1; i >= 0; i--) low = ((low << 8) | buf[at + i]) >>> 0;
    for (let i = width - 1; i >= 4; i--) high = ((high << 8) | buf[at + i]) >>> 0;
    if (region !== this.region || offset !== this.offset || width !== this.width || low !== this.low || high !== this.high) {
      this.region = region;
      this.offset = offset;
      this.width = width;
      this.low = low;
      this.high = high;
      this.reads = 1;
      return;
    }
    const reads = ++this.reads;
    if (reads === SPIN_CLOCK_AFTER) this.clockStart = performance.now();
    else if (reads === SPIN_READS + SPIN_CLOCK_AFTER - 1) this.check();
  }

  /** Any other access to the device (a write, a wide read) ends the streak. */
  other(): void {
    this.region = -1;
  }

  /** The streak reached its length: a spin if it was fast enough; else it starts over. */
  private check(): void {
    const ms = performance.now() - this.clockStart;
    if (ms > SPIN_WINDOW_MS) {
      // A slow poll, not a spin: count again from here.
      this.reads = SPIN_CLOCK_AFTER;
      this.clockStart = performance.now();
      return;
    }
    const key = `${this.region}:${this.offset}:${this.width}`;
    if (this.warned.has(key)) return;
    this.warned.add(key);
    const value = (BigInt(this.high) << 32n) | BigInt(this.low);
    this.log.warn(
      `${this.placeName()} read ${SPIN_READS} times in ${Math.max(1, Math.round(ms))} ms, always 0x${value.toString(16)}: ` +
        'is the driver waiting for a bit the model never sets?',
    );
  }

  /** `BAR0 status (0x4)`, `config esb_lock (0x68)`, or `BAR2 0x10` where no register map names it. */
  private placeName(): string {
    const where = regionLabel(this.region);
    const map = this.region === CONFIG_REGION ? this.device.spec.configRegisters : registerMapOf(this.device.spec.bars?.[this.region as 0]);
    const entry = map?.layout().find((e) => this.offset >= e.offset && this.offset < e.offset + e.size);
    const at = `0x${this.offset.toString(16)}`;
    return entry ? `${where} ${entry.name} (${at})` : `${where} ${at}`;
  }
}
