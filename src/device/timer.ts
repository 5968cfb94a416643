/**
 * Device timers: a countdown a register write starts (a watchdog, a
 * command timeout, a periodic tick re-armed on expiry) that behaves as the
 * device's own clock must:
 *
 * - a reset cancels it (client reset, FLR, the client leaving);
 * - it does not run while migration stops the device: stopping pauses it,
 *   running again resumes it with the time that was left;
 * - with a `stateKey`, the time left is kept in `device.state` while the
 *   device is stopped, so the default migration carries it and the
 *   destination resumes the countdown when it runs.
 *
 * A timer serves one device: list it in the spec's `timers`, which attaches
 * it when the device is built.
 */
import type { Device, MaybePromise } from './types.js';
import { describeValue } from '../values/describe.js';

/** Longest delay setTimeout takes; longer countdowns are chained. */
const MAX_DELAY_MS = 0x7fffffff;
/** A timeout may fire up to a millisecond before the monotonic clock says it is due. */
const EARLY_MS = 1;

/** Options of {@link deviceTimer}. */
export interface DeviceTimerOptions {
  /** Name in error messages (default 'timer'). */
  name?: string;
  /**
   * Runs when the time is up, with the device: raise an interrupt, set a
   * status bit, re-arm a periodic timer with `start`. Never runs while the
   * device is stopped for migration. A throw or rejection is logged to
   * stderr; the timer stays idle.
   */
  onExpire(device: Device): MaybePromise<void>;
  /**
   * A key of the device's `state` where the timer keeps its time: null
   * while idle; the countdown's length while it runs; the milliseconds left
   * while the device is stopped for migration. The default migration then
   * carries it, and the destination's timer (listed under the same key)
   * resumes the countdown when the device runs there. Without it, a
   * pause and resume on one device still keep the time, but the default
   * migration does not offer a device whose timer has none.
   */
  stateKey?: string;
}

/** A countdown owned by one device. Built by {@link deviceTimer}. */
export class DeviceTimer {
  readonly name: string;
  readonly stateKey: string | undefined;
  private readonly onExpire: DeviceTimerOptions['onExpire'];
  private served: Device | undefined;
  private handle: NodeJS.Timeout | undefined;
  /** When a running countdown ends, on the monotonic clock (performance.now()). */
  private deadline = 0;
  /** The time left of a countdown the device's stop paused. */
  private pausedMs: number | undefined;

  /** @see {@link deviceTimer} */
  constructor(options: DeviceTimerOptions) {
    if (typeof options !== 'object' || options === null || typeof options.onExpire !== 'function') {
      throw new TypeError('deviceTimer: onExpire must be a function');
    }
    if (options.name !== undefined && typeof options.name !== 'string') throw new TypeError('deviceTimer: name must be a string');
    if (options.stateKey !== undefined && (typeof options.stateKey !== 'string' || options.stateKey === '')) {
      throw new TypeError('deviceTimer: stateKey must be a non-empty string');
    }
    this.name = options.name ?? 'timer';
    this.stateKey = options.stateKey;
    this.onExpire = options.onExpire;
  }

  /**
   * Starts the countdown (restarts it if one runs): `onExpire` runs in
   * `ms` milliseconds of the device running. Started while the device is
   * stopped for migration, it waits, paused, until the device runs.
   * @throws RangeError when `ms` is not a finite number of milliseconds >= 0
   * @throws TypeError when the timer is in no device's `timers`
   */
  start(ms: number): void {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) throw new RangeError(`${this.name}.start: ms must be a finite number of milliseconds >= 0, got ${describeValue(ms)}`);
    const device = this.attached('start');
    if (device.link?.quiesced) {
      this.stopCountdown();
      this.pause(ms);
    } else {
      this.run(ms);
    }
  }

  /** Stops the countdown, if any: `onExpire` will not run. */
  cancel(): void {
    this.stopCountdown();
    this.pausedMs = undefined;
    this.store(null);
  }

  /** True from `start` until it expires or is cancelled (paused included). */
  get active(): boolean {
    return this.handle !== undefined || this.pausedMs !== undefined;
  }

  /** True while paused: the device is stopped for migration. */
  get paused(): boolean {
    return this.pausedMs !== undefined;
  }

  /** The device the timer serves (from its construction until it is disposed). */
  get device(): Device | undefined {
    return this.served;
  }

  /** Milliseconds left, or undefined when the timer is idle. */
  get remainingMs(): number | undefined {
    if (this.pausedMs !== undefined) return this.pausedMs;
    if (this.handle === undefined) return undefined;
    return Math.max(0, this.deadline - performance.now());
  }

  /**
   * @internal Binds the timer to `device` (the Device does it for each of
   * its spec's `timers`): reset cancels it, a migration stop pauses it.
   */
  attach(device: Device): void {
    if (this.served) throw new TypeError(`${this.name}: already serves device ${this.served.name}; a timer serves one device (create one per device)`);
    this.served = device;
    if (this.stateKey !== undefined) device.state[this.stateKey] ??= null;
    device.addResetListener(() => {
      if (this.served === device) this.cancel();
    });
    device.addQuiesceListener((quiesced) => {
      if (this.served !== device) return;
      if (quiesced) this.onStop();
      else this.onRun();
    });
  }

  /** @internal The device is disposed: the countdown ends, and the timer may serve another device. */
  detach(): void {
    this.stopCountdown();
    this.pausedMs = undefined;
    this.served = undefined;
  }

  private attached(what: string): Device {
    if (!this.served) throw new TypeError(`${this.name}.${what}: the timer serves no device; list it in the spec's timers`);
    return this.served;
  }

  private run(ms: number): void {
    this.stopCountdown();
    this.pausedMs = undefined;
    this.deadline = performance.now() + ms;
    this.store(ms);
    this.schedule(ms);
  }

  private schedule(ms: number): void {
    this.handle = setTimeout(() => {
      const left = this.deadline - performance.now();
      if (left > EARLY_MS) this.schedule(left);
      else this.expire();
    }, Math.min(MAX_DELAY_MS, Math.max(0, ms)));
  }

  private pause(ms: number): void {
    this.pausedMs = ms;
    this.store(ms);
  }

  /** The device stopped: a running countdown keeps its time left. */
  private onStop(): void {
    if (this.handle === undefined) return;
    this.stopCountdown();
    this.pause(Math.max(0, Math.ceil(this.deadline - performance.now())));
  }

  /** The device runs again: a paused countdown (or one a migration brought in `state`) resumes. */
  private onRun(): void {
    if (this.handle !== undefined) return;
    const left = this.stateKey !== undefined ? this.served!.state[this.stateKey] : this.pausedMs;
    if (typeof left === 'number' && Number.isFinite(left) && left >= 0) this.run(left);
    else this.cancel();
  }

  private expire(): void {
    this.handle = undefined;
    this.pausedMs = undefined;
    this.store(null);
    const device = this.served!;
    const failed = (e: unknown): void => void process.stderr.write(`[${device.name}] error: ${this.name}: onExpire failed: ${e instanceof Error ? e.message : String(e)}\n`);
    try {
      const done = this.onExpire(device);
      if (done instanceof Promise) done.catch(failed);
    } catch (e) {
      failed(e);
    }
  }

  private stopCountdown(): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = undefined;
  }

  private store(value: number | null): void {
    if (this.stateKey !== undefined && this.served) this.served.state[this.stateKey] = value;
  }
}

/**
 * A device timer: list it in the spec's `timers`, start it from a
 * register's write hook, and it is cancelled on reset and paused while the
 * device is stopped for migration.
 *
 * @example
 * ```ts
 * const countdown = deviceTimer({ stateKey: 'countdownMs', onExpire: (device) => void device.trigger(0) });
 * const registers = defineRegisters([{ name: 'start', offset: 0, width: 4, access: 'wo', write: (ms) => countdown.start(ms) }]);
 * // spec: { ..., state: { countdownMs: null }, timers: [countdown], bars: { 0: registers.bar({ size: 4096 }) } }
 * ```
 */
export function deviceTimer(options: DeviceTimerOptions): DeviceTimer {
  return new DeviceTimer(options);
}
