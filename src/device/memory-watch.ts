/**
 * Watched memory: doorbells that cost the guest no exit and the device no
 * message. A memory-backed region (or a page-aligned part of it, a sparse
 * mmap area) is mapped by the client; the guest writes its doorbells there
 * as plain stores, and muser polls the watched words and calls the
 * device's `onWrite` with each new value.
 *
 * When the words are looked at:
 *
 * - under `--poll` (`serve(..., { poll })`), on every turn of the event
 *   loop while it busy-polls, and a write seen keeps it busy-polling for
 *   the idle window: a busy guest is served within microseconds, at the
 *   price of one CPU kept at 100% while it is busy;
 * - otherwise, and while the loop sleeps after the window, every
 *   `intervalMs` (default 1 ms) on a timer: a doorbell after a quiet spell
 *   waits up to that long, and the watch costs a wake-up per interval
 *   while a client is connected (none without one).
 *
 * Watching starts when a client connects (what the words hold then counts
 * as seen), stops when it leaves, and pauses while migration stops the
 * device (writes meanwhile are seen when it runs again). Under
 * `--isolate` a successor serving the memory its predecessor served starts
 * holding, its rearming watches leaving the words as they are, and looks
 * once it recovered the device: a word not holding the rearm value is a
 * store no process saw. A watch serves one region of one device: list it
 * in the region's `watches`.
 */
import { native, type MapHandle, type WatchHandle } from '../native/index.js';
import type { Logger } from './logger.js';
import type { Device, MaybePromise } from './types.js';

/** What a watch needs of its region (regions.ts's Region is one). */
export interface WatchedRegion {
  readonly index: number;
  readonly memory: { readonly bytes: Uint8Array; readonly map: MapHandle; readonly buffer: ArrayBuffer } | undefined;
  readonly mmapAreas: readonly { offset: number; size: number }[];
}

/** Options of {@link memoryWatch}. */
export interface MemoryWatchOptions {
  /** Name in messages (default 'watch'). */
  name?: string;
  /** Offset of the first watched word in the region: inside one of its mmap areas, a multiple of `width`. */
  offset: number;
  /** Bytes watched: a multiple of `width`, inside the same mmap area. */
  length: number;
  /** Bytes per word: 1, 2 or 4 (default 4). */
  width?: 1 | 2 | 4;
  /**
   * How a write is told. Undefined (the default): a word whose value
   * changed was written, and `onWrite` gets its new value; writing the
   * same value again is not seen (NVMe's tail and head doorbells, whose
   * values only move). A number: each word is set to it when watching
   * starts and swapped back to it, atomically, after each write is seen,
   * so every write is seen, a repeated value included, except a write of
   * this value itself (virtio's notify, where the driver writes the queue
   * index each time: rearm with 0xffff). Either way, several writes
   * between two looks are seen as one, with the last value.
   */
  rearm?: number;
  /** Milliseconds between looks while the loop sleeps (default 1, at most 60000). */
  intervalMs?: number;
  /**
   * A watched word was written: `offset` is its offset in the region,
   * `value` what it holds. Runs on the main thread; a throw or a rejection
   * is logged and watching goes on.
   */
  onWrite(offset: number, value: number, device: Device): MaybePromise<void>;
}

/** Watched words of one region. Built by {@link memoryWatch}. */
export class MemoryWatch {
  readonly name: string;
  readonly offset: number;
  readonly length: number;
  readonly width: 1 | 2 | 4;
  readonly rearm: number | undefined;
  readonly intervalMs: number;
  private readonly onWrite: MemoryWatchOptions['onWrite'];
  private device: Device | undefined;
  private region: WatchedRegion | undefined;
  private handle: WatchHandle | undefined;
  private quiesced = false;
  /** Not scanned while held: a process handing the device to another one (see {@link hold}). */
  private held = false;
  /** Writes seen since the device was built. */
  private seenCount = 0;

  /** @see {@link memoryWatch} */
  constructor(options: MemoryWatchOptions) {
    if (typeof options !== 'object' || options === null || typeof options.onWrite !== 'function') throw new TypeError('memoryWatch: onWrite must be a function');
    if (options.name !== undefined && typeof options.name !== 'string') throw new TypeError('memoryWatch: name must be a string');
    this.name = options.name ?? 'watch';
    const width = options.width ?? 4;
    if (width !== 1 && width !== 2 && width !== 4) throw new RangeError(`${this.name}: width must be 1, 2 or 4, got ${String(width)}`);
    this.width = width;
    for (const f of ['offset', 'length'] as const) {
      const v = options[f];
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v % width !== 0) throw new RangeError(`${this.name}: ${f} must be an integer >= 0 and a multiple of width ${width}, got ${String(v)}`);
    }
    if (options.length === 0) throw new RangeError(`${this.name}: length must be > 0`);
    const max = width === 4 ? 0xffffffff : (1 << (8 * width)) - 1;
    if (options.rearm !== undefined && (typeof options.rearm !== 'number' || !Number.isInteger(options.rearm) || options.rearm < 0 || options.rearm > max)) {
      throw new RangeError(`${this.name}: rearm must be a ${width}-byte value (0..${max}), got ${String(options.rearm)}`);
    }
    const interval = options.intervalMs ?? 1;
    if (typeof interval !== 'number' || !Number.isInteger(interval) || interval < 1 || interval > 60000) throw new RangeError(`${this.name}: intervalMs must be an integer in 1..60000, got ${String(interval)}`);
    this.offset = options.offset;
    this.length = options.length;
    this.rearm = options.rearm;
    this.intervalMs = interval;
    this.onWrite = options.onWrite;
  }

  /** True while the words are being watched (a client is connected). */
  get watching(): boolean {
    return this.handle !== undefined;
  }

  /** Writes seen since the device was built. */
  get writes(): number {
    return this.seenCount;
  }

  /** The device the watch serves (from its construction until it is disposed). */
  get servedDevice(): Device | undefined {
    return this.device;
  }

  /** The value of the word at `offset` (in the region) now. */
  read(offset: number): number {
    const at = this.wordAt(offset, 'read');
    const b = this.bytes('read');
    let v = 0;
    for (let i = this.width - 1; i >= 0; i--) v = v * 256 + b[at + i];
    return v;
  }

  /**
   * Writes the word at `offset` (in the region) and counts the value as
   * seen: `onWrite` is not called for it. For a device that resets its
   * doorbells (NVMe: a controller reset, a queue created). By-value
   * watches only (a rearming watch owns its words).
   * @throws RangeError for an offset outside the watch or a value wider than a word
   */
  store(offset: number, value: number): void {
    const at = this.wordAt(offset, 'store');
    const max = this.width === 4 ? 0xffffffff : (1 << (8 * this.width)) - 1;
    if (!Number.isInteger(value) || value < 0 || value > max) throw new RangeError(`${this.name}.store: value must be 0..${max}, got ${String(value)}`);
    if (this.rearm !== undefined) throw new TypeError(`${this.name}.store: a rearming watch owns its words`);
    if (this.handle) {
      native.watchStore(this.handle, at - this.offset, value);
      return;
    }
    const b = this.bytes('store');
    for (let i = 0, v = value; i < this.width; i++, v = Math.floor(v / 256)) b[at + i] = v & 0xff;
  }

  /**
   * @internal Binds the watch to the device and region that list it
   * (Device does it): the region must be memory-backed and the words
   * inside one of its mmap areas.
   */
  attach(device: Device, region: WatchedRegion): void {
    if (this.device) throw new TypeError(`${this.name}: already serves device ${this.device.name}; a watch serves one region of one device (create one per device)`);
    if (!region.memory) throw new TypeError(`region ${region.index}: ${this.name} needs a memory-backed region (memory: { mmap: [...] })`);
    const inArea = region.mmapAreas.some((a) => this.offset >= a.offset && this.offset + this.length <= a.offset + a.size);
    if (!inArea) {
      throw new RangeError(
        `region ${region.index}: ${this.name} (0x${this.offset.toString(16)}+${this.length}) must lie inside one mmap area; the client maps only those, and writes elsewhere come as messages`,
      );
    }
    this.device = device;
    this.region = region;
    device.addQuiesceListener((quiesced) => {
      if (this.device !== device) return; // detached since, maybe serving another device
      this.quiesced = quiesced;
      if (this.handle) native.watchPause(this.handle, this.quiesced || this.held);
    });
  }

  /**
   * @internal Stops looking (true) or looks again (false), the words left
   * as they are: what the guest stores meanwhile is seen once looking
   * again. Under `--isolate`: a child handing the device over stops, a
   * successor looks only once it recovered the device's state.
   */
  hold(held: boolean): void {
    this.held = held;
    if (this.handle) native.watchPause(this.handle, this.quiesced || this.held);
  }

  /**
   * @internal A client connected: watch from now on, busy-polling for
   * `pollIdleMs` after a write (0: never). `keep`: the memory is one the
   * client mapped before this process served it (an isolated successor),
   * so a rearming watch leaves the words as they are and reports each one
   * not holding the rearm value: a store no process saw.
   */
  start(pollIdleMs: number, log: Logger, keep = false): void {
    if (this.handle || !this.device || !this.region?.memory) return;
    const device = this.device;
    const fail = (e: unknown): void => log.error(`${this.name} of region ${this.region!.index}: onWrite failed: ${e instanceof Error ? e.message : String(e)}`);
    const m = this.region.memory;
    this.handle = native.watchStart(m.map, m.buffer, this.offset, this.length, this.width, this.rearm, this.intervalMs, Math.round(pollIdleMs * 1e6), (at, value) => {
      this.seenCount++;
      try {
        const r: unknown = this.onWrite(this.offset + at, value, device);
        if (r instanceof Promise) r.catch(fail);
      } catch (e) {
        fail(e);
      }
    }, keep);
    if (this.quiesced || this.held) native.watchPause(this.handle, true);
  }

  /** @internal The client left. */
  stop(): void {
    if (this.handle) native.watchStop(this.handle);
    this.handle = undefined;
  }

  /** @internal The device is disposed: the watch may serve another. */
  detach(): void {
    this.stop();
    this.device = undefined;
    this.region = undefined;
    this.quiesced = false;
    this.held = false;
  }

  private wordAt(offset: number, what: string): number {
    if (!Number.isInteger(offset) || offset < this.offset || offset + this.width > this.offset + this.length || (offset - this.offset) % this.width !== 0) {
      throw new RangeError(`${this.name}.${what}: offset 0x${Number(offset).toString(16)} is not a word of the watch (0x${this.offset.toString(16)}+${this.length}, width ${this.width})`);
    }
    return offset;
  }

  private bytes(what: string): Uint8Array {
    const m = this.region?.memory;
    if (!m) throw new TypeError(`${this.name}.${what}: the watch serves no region; list it in a region's watches`);
    return m.bytes;
  }
}

/**
 * Watched words of a memory-backed region that the client maps: list it
 * in the region's `watches`, and `onWrite` runs with each new value the
 * guest stores there (see the module documentation for when they are
 * looked at).
 *
 * @example
 * ```ts
 * const doorbell = memoryWatch({ offset: 0x1000, length: 4, onWrite: (_offset, value, device) => startWork(value, device) });
 * // spec: { ..., bars: { 0: { size: 0x2000, memory: { mmap: [{ offset: 0x1000, size: 0x1000 }] }, watches: [doorbell] } } }
 * ```
 */
export function memoryWatch(options: MemoryWatchOptions): MemoryWatch {
  return new MemoryWatch(options);
}
