/**
 * Declarative register maps: a device's registers written down the way its
 * datasheet lists them (name, offset, width, access, reset value, behaviour),
 * turned into a BAR's `read` / `write` callbacks.
 *
 * Access rules (the same for every map, so a device file need not repeat them):
 *
 * - An access may cover several registers: it is split at register
 *   boundaries and each part is served in address order.
 * - Each part that falls inside a register must be naturally aligned within
 *   it and 1, 2, 4 or 8 bytes long, no wider than the register, and one of the
 *   register's `widths` when it lists them. Otherwise the whole access is
 *   refused with EINVAL before any register is touched.
 * - A narrower read returns the addressed bytes of the register's value (the
 *   read hook runs once). A narrower write is merged, byte by byte, into the
 *   register's stored value (write-only registers: into its reset value),
 *   and the hook sees the merged value.
 * - Offsets no register covers read as zero and ignore writes (and, in a
 *   BAR, are counted in the device's report of unmodeled accesses). Reads of
 *   write-only registers return zero; writes to read-only registers are
 *   ignored, as hardware does.
 * - A window ({@link RegisterWindow}) is a range served by its hooks at
 *   register granularity: each part inside it obeys the same width and
 *   alignment rules, and the hooks get the offset within the window, the
 *   width, and (for writes) the value. It stores nothing.
 * - {@link RegisterMap.reset} puts every register back to its reset value.
 *   A map served as a device's BAR (through {@link RegisterMap.bar}) or as
 *   its `configRegisters` is reset by every device reset (client reset, FLR,
 *   disconnect) before the device's `onReset` runs: no wiring needed.
 * - A map's stored values (registers and memory-backed blocks) are part of
 *   the device's default migration: saved with the device, restored on load.
 * - With a `log` at debug level every access is traced by register name:
 *   `read reg=0x1 name=in0_7 val=0x00`, `write reg=0x0 name=out0_7 val=0x01`.
 */
import { DeviceError, Errno } from './errors.js';
import type { Logger } from './logger.js';
import type { BarSpec } from './region-spec.js';
import type { Device, MaybePromise } from './types.js';

/** Width of a register in bytes. */
export type RegisterWidth = 1 | 2 | 4 | 8;

/**
 * What software may do with a register:
 * - `ro`: read only; writes are ignored.
 * - `rw`: read and write; a write stores the value (the bits in `writable`).
 * - `wo`: write only (a command); reads return zero.
 * - `rw1c`: read, and write 1 to clear: each 1 bit written clears that bit.
 * - `rc`: read only, cleared (back to its reset value) by a read.
 */
export type RegisterAccess = 'ro' | 'rw' | 'wo' | 'rw1c' | 'rc';

/** What every register entry has. */
export interface RegisterBase {
  /** Name used in traces and by {@link RegisterMap.get} / {@link RegisterMap.set}. */
  name: string;
  /** Offset in the BAR; a multiple of the register's width. */
  offset: number;
  /** Default `rw`. */
  access?: RegisterAccess;
  /** Access widths the register accepts (default: 1, 2, 4, 8 up to its width). */
  widths?: readonly RegisterWidth[];
  /** Trace accesses with the map's logger (default true); false for a register polled in a loop. */
  trace?: boolean;
  /** The datasheet's words, for readers and generated docs. */
  description?: string;
  /** Registers are not windows; this tells them apart from {@link RegisterWindow}. */
  window?: undefined;
}

/**
 * A register of 1, 2 or 4 bytes. Its value is a `number`.
 * @typeParam C - what hooks receive as context: the {@link Device} when served through {@link RegisterMap.bar}
 */
export interface Register<C = Device> extends RegisterBase {
  width: 1 | 2 | 4;
  /** Value at power-on and after reset (default 0). */
  reset?: number;
  /** Bits a write may change (default all). */
  writable?: number;
  /** Computes the value a read returns; without it, reads return the stored value. */
  read?(context: C): MaybePromise<number>;
  /**
   * Runs after a write has updated the stored value. `value` is the merged
   * value written (for `rw1c`: the bits to clear); `previous` the stored
   * value before the write, for registers whose effect depends on the change.
   */
  write?(value: number, context: C, previous: number): MaybePromise<void>;
}

/**
 * A 64-bit register. Its value is a `bigint`.
 * @typeParam C - what hooks receive as context (see {@link Register})
 */
export interface Register64<C = Device> extends RegisterBase {
  width: 8;
  /** Value at power-on and after reset (default 0n). */
  reset?: bigint;
  /** Bits a write may change (default all). */
  writable?: bigint;
  /** Computes the value a read returns; without it, reads return the stored value. */
  read?(context: C): MaybePromise<bigint>;
  /** Runs after a write has updated the stored value (see {@link Register.write}). */
  write?(value: bigint, context: C, previous: bigint): MaybePromise<void>;
}

/**
 * A range of bytes that is not a register: a window onto a buffer, a FIFO,
 * a small RAM. Any access inside it is allowed. Unless both hooks are given
 * it has zeroed memory of its own (cleared on reset): writes are stored there
 * (then the write hook runs) and reads come from it when there is no read hook.
 * @typeParam C - what hooks receive as context (see {@link Register})
 */
export interface RegisterBlock<C = Device> {
  name: string;
  offset: number;
  /** Size in bytes. */
  size: number;
  /** Blocks have no width; this tells them apart from registers. */
  width?: undefined;
  /** Blocks are not windows; this tells them apart from {@link RegisterWindow}. */
  window?: undefined;
  /** `ro`, `rw` (default) or `wo`. */
  access?: 'ro' | 'rw' | 'wo';
  /** Serves a read of `length` bytes at `offset` within the block. */
  read?(offset: number, length: number, context: C): MaybePromise<Uint8Array>;
  /** Serves a write at `offset` within the block; `data` is the hook's own copy. */
  write?(offset: number, data: Buffer, context: C): MaybePromise<void>;
  trace?: boolean;
  description?: string;
}

/**
 * A range served at register granularity by hooks, with no storage of its
 * own: a doorbell array (each write rings the doorbell at `offset / stride`),
 * a window onto state selected elsewhere (virtio's feature words chosen by a
 * select register, the fields of the selected queue).
 *
 * Every part of an access inside the window must be 1, 2, 4 or 8 bytes (one
 * of `widths` when given) and aligned to its own width within the window;
 * otherwise the access is refused with EINVAL before any hook runs. A read
 * without a read hook (or of a `wo` window) returns zero; a write without a
 * write hook (or to an `ro` window) is ignored. Values are numbers for
 * accesses of up to 4 bytes and bigints for 8-byte ones; a read hook may
 * return either, and the value is cut to the access width.
 *
 * @example
 * ```ts
 * // 16 doorbells, 4 bytes apart: a write to 0x1008 rings doorbell 2
 * { name: 'doorbells', offset: 0x1000, size: 64, window: true, access: 'wo', widths: [4],
 *   write: (offset, value, _width, device) => ring(device, offset / 4, Number(value)) }
 * ```
 * @typeParam C - what hooks receive as context (see {@link Register})
 */
export interface RegisterWindow<C = Device> {
  name: string;
  /** Offset in the BAR; a multiple of the widest access the window takes. */
  offset: number;
  /** Size in bytes. */
  size: number;
  /** Marks the entry as a window. */
  window: true;
  /** Windows have no width of their own; accesses have. */
  width?: undefined;
  /** `ro`, `rw` (default) or `wo`. */
  access?: 'ro' | 'rw' | 'wo';
  /** Access widths the window accepts (default: 1, 2, 4, 8 up to its size). */
  widths?: readonly RegisterWidth[];
  /** Serves a read of `width` bytes at `offset` within the window. */
  read?(offset: number, width: RegisterWidth, context: C): MaybePromise<number | bigint>;
  /** Serves a write of `value` (`width` bytes) at `offset` within the window. */
  write?(offset: number, value: number | bigint, width: RegisterWidth, context: C): MaybePromise<void>;
  trace?: boolean;
  description?: string;
}

/** One line of a register table. */
export type RegisterEntry<C = Device> = Register<C> | Register64<C> | RegisterBlock<C> | RegisterWindow<C>;

/** A map's stored values by entry name (see {@link RegisterMap.saveValues}). */
export type RegisterValues = Record<string, string>;

/** Options of {@link defineRegisters}. */
export interface RegisterMapOptions {
  /** Where register traces go (at debug level). */
  log?: Logger;
}

/** The BAR properties {@link RegisterMap.bar} takes; the map supplies `read` and `write`. */
export type RegisterBarOptions = Omit<BarSpec, 'read' | 'write' | 'memory'>;

/** Where a map served as a BAR reports the parts of accesses that no entry covers (the device's unmodeled-access report). */
export interface GapSink {
  gap(map: object, offset: number, width: number, accessLength: number, op: 'read' | 'write'): void;
}

/** A register table, ready to serve accesses. Built by {@link defineRegisters}. */
export class RegisterMap<C = Device> {
  private readonly slots: Slot<C>[];
  private readonly byName = new Map<string, Slot<C>>();
  /** Readable / writable slots, sorted by offset, not overlapping. */
  private readonly readers: Slot<C>[];
  private readonly writers: Slot<C>[];
  private log: Logger | undefined;
  /** Set when the log was given in the options: a server's logger does not replace it. */
  private readonly ownLog: boolean;

  /** @see {@link defineRegisters} */
  constructor(entries: readonly RegisterEntry<C>[], options: RegisterMapOptions = {}) {
    this.log = options.log;
    this.ownLog = options.log !== undefined;
    this.slots = entries.map((e, i) => toSlot(e, i));
    for (const s of this.slots) {
      if (this.byName.has(s.name)) throw new TypeError(`register ${s.name} is defined twice`);
      this.byName.set(s.name, s);
    }
    this.readers = sortedWithoutOverlap(this.slots.filter((s) => s.readable), 'read');
    this.writers = sortedWithoutOverlap(this.slots.filter((s) => s.writable), 'write');
  }

  /** Bytes the table spans: the end of its last entry. */
  get size(): number {
    return Math.max(0, ...this.slots.map((s) => s.offset + s.size));
  }

  /** True when an entry has a read or write hook: state the map cannot see may live behind it. */
  get hasHooks(): boolean {
    return this.slots.some((s) => {
      const e = s.entry ?? s.block ?? s.window;
      return e?.read !== undefined || e?.write !== undefined;
    });
  }

  /** Every entry's name and the bytes it spans, in table order. */
  layout(): readonly { name: string; offset: number; size: number }[] {
    return this.slots.map((s) => ({ name: s.name, offset: s.offset, size: s.size }));
  }

  /**
   * Traces accesses to `log` (at debug level) unless the map was defined
   * with a log of its own. The server calls it with its logger, so
   * `muser run -v` traces every map of a device without any wiring.
   */
  traceTo(log: Logger | undefined): void {
    if (!this.ownLog) this.log = log;
  }

  /**
   * A BAR served by this map. Every entry must lie inside `options.size`.
   * @example
   * ```ts
   * bars: { 0: registers.bar({ size: 4096 }) }
   * ```
   */
  bar(this: RegisterMap<Device>, options: RegisterBarOptions): BarSpec {
    if (this.size > options.size) throw new RangeError(`registers end at 0x${this.size.toString(16)}, past the BAR's ${options.size} bytes`);
    // Gaps go to the device's report of unmodeled accesses (see unmodeled.ts).
    const read: BarSpec['read'] = (offset, length, device) => this.serveRead(offset, length, device, device.unmodeled);
    mapsByReadHook.set(read, this);
    return { ...options, read, write: (offset, data, device) => this.serveWrite(offset, data, device, device.unmodeled) };
  }

  /** Serves a read of `length` bytes at `offset`, as a BAR read would. */
  read(offset: number, length: number, context: C): MaybePromise<Uint8Array> {
    return this.serveRead(offset, length, context, undefined);
  }

  /** Serves a write of `data` at `offset`, as a BAR write would. */
  write(offset: number, data: Uint8Array, context: C): MaybePromise<void> {
    return this.serveWrite(offset, data, context, undefined);
  }

  /** {@link read}, telling `gaps` about the parts no entry covers. */
  private serveRead(offset: number, length: number, context: C, gaps: GapSink | undefined): MaybePromise<Uint8Array> {
    const one = this.insideOneRegister(this.readers, offset, length, 'read');
    if (one) {
      // The common case, without the splitting machinery. Every byte of `out` is written.
      const out = Buffer.allocUnsafe(length);
      const done = one.kind === 'window' ? this.readWindow(one, offset, context, out, 0, length) : this.readRegister(one, offset, context, out, 0, length);
      return then(done, () => out);
    }
    const out = Buffer.allocUnsafe(length).fill(0); // pooled: far cheaper than alloc for small reads
    const steps: (() => MaybePromise<void>)[] = [];
    for (const part of this.split(this.readers, this.writers, offset, length, 'read')) {
      const at = part.start - offset;
      const s = part.slot;
      if (!s || !s.readable) {
        if (!s) gaps?.gap(this, part.start, part.length, length, 'read');
        steps.push(() => this.trace(s, part.start, 'read', out.subarray(at, at + part.length), s ? ' ignored (write-only)' : ''));
      } else if (s.kind === 'block') {
        steps.push(() => then(readBlock(s, part.start - s.offset, part.length, context), (bytes) => {
          out.set(bytes, at);
          this.trace(s, part.start, 'read', bytes, '');
        }));
      } else if (s.kind === 'window') {
        steps.push(() => this.readWindow(s, part.start, context, out, at, part.length));
      } else {
        steps.push(() => this.readRegister(s, part.start, context, out, at, part.length));
      }
    }
    return then(sequence(steps), () => out);
  }

  /** {@link write}, telling `gaps` about the parts no entry covers. */
  private serveWrite(offset: number, data: Uint8Array, context: C, gaps: GapSink | undefined): MaybePromise<void> {
    const one = this.insideOneRegister(this.writers, offset, data.length, 'write');
    if (one) return one.kind === 'window' ? this.writeWindow(one, offset, data, context) : this.writeRegister(one, offset, data, context);
    const steps: (() => MaybePromise<void>)[] = [];
    for (const part of this.split(this.writers, this.readers, offset, data.length, 'write')) {
      // A copy: later steps may run after an async hook, when `data` (a view
      // of the receive buffer) holds another message; a block's hook may keep it.
      const bytes = Buffer.from(data.subarray(part.start - offset, part.start - offset + part.length));
      const s = part.slot;
      if (!s || !s.writable) {
        if (!s) gaps?.gap(this, part.start, part.length, data.length, 'write');
        steps.push(() => this.trace(s, part.start, 'write', bytes, s ? ' ignored (read-only)' : ''));
      } else if (s.kind === 'block') {
        steps.push(() => {
          this.trace(s, part.start, 'write', bytes, '');
          return writeBlock(s, part.start - s.offset, bytes, context);
        });
      } else if (s.kind === 'window') {
        steps.push(() => this.writeWindow(s, part.start, bytes, context));
      } else {
        steps.push(() => this.writeRegister(s, part.start, bytes, context));
      }
    }
    // Parts are validated above, before any step runs: a refused access changes nothing.
    return sequence(steps);
  }

  /** Puts every register back to its reset value and clears memory-backed blocks. */
  reset(): void {
    for (const s of this.slots) {
      s.value = s.reset;
      s.buffer?.fill(0);
    }
  }

  /** The stored value of a register of up to 4 bytes (what a read returns when it has no read hook). */
  get(name: string): number {
    const s = this.slot(name);
    if (s.size === 8) throw new TypeError(`register ${name} is 64-bit: use get64`);
    return Number(s.value);
  }

  /** The stored value of a 64-bit register. */
  get64(name: string): bigint {
    return this.slot(name).value;
  }

  /** Sets a register's stored value from the device side: no access rules, no hooks, no trace. */
  set(name: string, value: number | bigint): void {
    const s = this.slot(name);
    s.value = BigInt.asUintN(s.size * 8, BigInt(value));
  }

  /**
   * Every stored value, by name: registers as hex strings, memory-backed
   * blocks as base64. Plain JSON; the default migration carries it.
   */
  saveValues(): RegisterValues {
    const out: RegisterValues = {};
    for (const s of this.slots) {
      if (s.kind === 'register') out[s.name] = s.value.toString(16);
      else if (s.buffer) out[s.name] = s.buffer.toString('base64');
    }
    return out;
  }

  /**
   * Puts back values taken by {@link saveValues}: no hooks, no trace.
   * Entries the values do not name keep theirs. Checks everything first:
   * @throws TypeError naming the entry when a name is not a register or
   *   memory-backed block of this map, or a value is malformed or too wide;
   *   nothing is changed then.
   */
  loadValues(values: RegisterValues): void {
    if (typeof values !== 'object' || values === null || Array.isArray(values)) throw new TypeError('register values must be an object by name');
    const apply: (() => void)[] = [];
    for (const [name, v] of Object.entries(values)) {
      const s = this.byName.get(name);
      if (!s || (s.kind !== 'register' && !s.buffer)) throw new TypeError(`register values: no register or memory block named ${name}`);
      if (typeof v !== 'string') throw new TypeError(`register values: ${name} must be a string, got ${typeof v}`);
      if (s.kind === 'register') {
        if (!/^[0-9a-f]{1,16}$/.test(v)) throw new TypeError(`register values: ${name} is not a hex number`);
        const value = BigInt(`0x${v}`);
        if (value >> BigInt(s.size * 8) !== 0n) throw new TypeError(`register values: ${name} does not fit in ${s.size} bytes`);
        apply.push(() => (s.value = value));
      } else {
        const bytes = Buffer.from(v, 'base64');
        if (bytes.length !== s.size) throw new TypeError(`register values: block ${name} has ${bytes.length} bytes, ${s.size} wanted`);
        apply.push(() => bytes.copy(s.buffer!));
      }
    }
    for (const f of apply) f();
  }

  /** The register or window [offset, offset+length) lies in, if it lies in one (checked); undefined otherwise. */
  private insideOneRegister(slots: Slot<C>[], offset: number, length: number, op: 'read' | 'write'): Slot<C> | undefined {
    const s = covering(slots, offset);
    if (!s || s.kind === 'block' || offset + length > s.offset + s.size) return undefined;
    checkWidth(s, offset, length, op);
    return s;
  }

  /** Reads the bytes [start, start+length) of register `s` into out[at...]. */
  private readRegister(s: Slot<C>, start: number, context: C, out: Buffer, at: number, length: number): MaybePromise<void> {
    const hook = s.entry!.read as ((context: C) => MaybePromise<number | bigint>) | undefined;
    const done = (v: number | bigint): void => {
      if (typeof v === 'number' && !Number.isInteger(v)) throw new DeviceError(Errno.EIO, `register ${s.name}: read hook returned ${v}`);
      if (s.access === 'rc') s.value = s.reset;
      const shift = (start - s.offset) * 8;
      if (s.size <= 4 && typeof v === 'number') {
        // Plain numbers for the common narrow registers: no BigInt on the hot path.
        let x = (s.size === 4 ? v >>> 0 : v & ((1 << (s.size * 8)) - 1)) >>> shift;
        for (let i = 0; i < length; i++, x >>>= 8) out[at + i] = x & 0xff;
      } else {
        writeLE(out, at, length, BigInt.asUintN(s.size * 8, BigInt(v)) >> BigInt(shift));
      }
      this.trace(s, start, 'read', out.subarray(at, at + length), '');
    };
    return then(hook ? hook(context) : s.size <= 4 ? Number(s.value) : s.value, done);
  }

  /** Writes `bytes` at `start` into register `s` (merged into its value), then runs its hook. */
  private writeRegister(s: Slot<C>, start: number, bytes: Uint8Array, context: C): MaybePromise<void> {
    this.trace(s, start, 'write', bytes, '');
    const hook = s.entry!.write as ((value: number | bigint, context: C, previous: number | bigint) => MaybePromise<void>) | undefined;
    if (s.size <= 4) {
      // Plain numbers, as in readRegister: every value fits in 32 bits, kept unsigned by `>>> 0`.
      const shift = (start - s.offset) * 8;
      let written = 0;
      for (let i = bytes.length - 1; i >= 0; i--) written = ((written << 8) | bytes[i]) >>> 0;
      written = (written << shift) >>> 0;
      const laneMask = ((bytes.length === 4 ? 0xffffffff : (1 << (bytes.length * 8)) - 1) << shift) >>> 0;
      const writable = Number(s.writableBits);
      const value = Number(s.value);
      const base = s.access === 'wo' ? Number(s.reset) : value;
      const merged = ((base & ~laneMask) | written) >>> 0;
      let seen = merged;
      if (s.access === 'rw1c') {
        seen = (written & writable) >>> 0;
        s.value = BigInt((value & ~seen) >>> 0);
      } else {
        const next = ((value & ~writable) | (merged & writable)) >>> 0;
        s.value = BigInt(next);
        if (s.access === 'rw') seen = next;
      }
      return hook?.(seen, context, value);
    }
    const shift = BigInt((start - s.offset) * 8);
    const written = readLE(bytes) << shift;
    const laneMask = ((1n << BigInt(bytes.length * 8)) - 1n) << shift;
    const previous = s.value;
    const base = s.access === 'wo' ? s.reset : previous;
    const merged = (base & ~laneMask) | written;
    let seen = merged;
    if (s.access === 'rw1c') {
      seen = written & s.writableBits;
      s.value &= ~seen;
    } else {
      s.value = (s.value & ~s.writableBits) | (merged & s.writableBits);
      if (s.access === 'rw') seen = s.value;
    }
    return hook?.(seen, context, previous);
  }

  private slot(name: string): Slot<C> {
    const s = this.byName.get(name);
    if (!s || s.kind !== 'register') throw new TypeError(`no register named ${name}`);
    return s;
  }

  /** Reads `length` bytes at `start` of window `s` through its hook into out[at...]. */
  private readWindow(s: Slot<C>, start: number, context: C, out: Buffer, at: number, length: number): MaybePromise<void> {
    const hook = s.window!.read;
    const done = (v: number | bigint): void => {
      if (typeof v === 'number' && !Number.isInteger(v)) throw new DeviceError(Errno.EIO, `window ${s.name}: read hook returned ${v}`);
      if (length <= 4 && typeof v === 'number') {
        for (let i = 0, x = v; i < length; i++, x >>>= 8) out[at + i] = x & 0xff;
      } else {
        writeLE(out, at, length, BigInt.asUintN(length * 8, BigInt(v)));
      }
      this.trace(s, start, 'read', out.subarray(at, at + length), '');
    };
    return hook ? then(hook(start - s.offset, length as RegisterWidth, context), done) : done(0);
  }

  /** Hands a write of `bytes` at `start` to window `s`'s hook as a value. */
  private writeWindow(s: Slot<C>, start: number, bytes: Uint8Array, context: C): MaybePromise<void> {
    this.trace(s, start, 'write', bytes, '');
    const hook = s.window!.write;
    if (!hook) return;
    let value: number | bigint;
    if (bytes.length <= 4) {
      value = 0;
      for (let i = bytes.length - 1; i >= 0; i--) value = ((value << 8) | bytes[i]) >>> 0;
    } else {
      value = readLE(bytes);
    }
    return hook(start - s.offset, value, bytes.length as RegisterWidth, context);
  }

  /**
   * Splits [offset, offset+length) into parts that each lie inside one
   * entry of `primary`, or in a gap (then named after the `other` direction's
   * entry there, if any). Refuses a part that a register cannot take.
   */
  private split(primary: Slot<C>[], other: Slot<C>[], offset: number, length: number, op: 'read' | 'write'): Part<C>[] {
    const parts: Part<C>[] = [];
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const hit = covering(primary, pos);
      let stop: number;
      let slot: Slot<C> | undefined = hit;
      if (hit) {
        stop = Math.min(end, hit.offset + hit.size);
        if (hit.kind !== 'block') checkWidth(hit, pos, stop - pos, op);
      } else {
        const otherHit = covering(other, pos);
        slot = otherHit;
        stop = Math.min(end, nextStart(primary, pos), otherHit ? otherHit.offset + otherHit.size : nextStart(other, pos));
      }
      parts.push({ slot, start: pos, length: stop - pos });
      pos = stop;
    }
    return parts;
  }

  private trace(slot: Slot<C> | undefined, start: number, op: 'read' | 'write', bytes: Uint8Array, note: string): void {
    if (!this.log || slot?.trace === false) return;
    const what = `reg=0x${start.toString(16)} name=${slot?.name ?? 'unused'}`;
    const shown = bytes.length <= 8 ? `val=0x${readLE(bytes).toString(16).padStart(bytes.length * 2, '0')}` : `len=${bytes.length} data=${Buffer.from(bytes.subarray(0, 16)).toString('hex')}`;
    this.log.debug(`${op} ${what} ${shown}${note}`);
  }
}

/** Which map serves a BAR built by {@link RegisterMap.bar}, keyed by its read hook (which survives a spread of the BarSpec). */
const mapsByReadHook = new WeakMap<object, RegisterMap<Device>>();

/** The register map behind a BAR built by {@link RegisterMap.bar}, if it is one. */
export function registerMapOf(bar: Pick<BarSpec, 'read'> | undefined): RegisterMap<Device> | undefined {
  return bar?.read ? mapsByReadHook.get(bar.read) : undefined;
}

/**
 * Builds a register map from a table. Mistakes in the table (overlapping
 * entries, a misaligned offset, a reset value wider than its register) throw
 * here, when the device is defined, not when a guest first touches it.
 * Two entries may share offsets only when one is read-only (`ro`, `rc`) and
 * the other write-only (`wo`): the datasheet's "read: status, write: command".
 *
 * @example
 * ```ts
 * import { defineRegisters } from 'muser';
 *
 * const registers = defineRegisters([
 *   { name: 'id', offset: 0x0, width: 4, access: 'ro', reset: 0x1234_0001 },
 *   { name: 'scratch', offset: 0x4, width: 4, access: 'rw' },
 *   { name: 'status', offset: 0x8, width: 1, access: 'rw1c' },
 * ]);
 * registers.set('status', 0x3); // the device sets two status bits
 * ```
 * @typeParam C - what hooks receive as context: the {@link Device} by default
 */
export function defineRegisters<C = Device>(entries: readonly RegisterEntry<C>[], options?: RegisterMapOptions): RegisterMap<C> {
  return new RegisterMap<C>(entries, options);
}

interface Slot<C> {
  kind: 'register' | 'block' | 'window';
  name: string;
  offset: number;
  size: number;
  access: RegisterAccess;
  readable: boolean;
  writable: boolean;
  value: bigint;
  reset: bigint;
  writableBits: bigint;
  widths: readonly number[];
  trace: boolean;
  buffer: Buffer | undefined;
  /** The table line: a register's for kind 'register', a block's for kind 'block'. */
  entry?: Register<C> | Register64<C>;
  block?: RegisterBlock<C>;
  window?: RegisterWindow<C>;
}

interface Part<C> {
  /** The entry the part falls in, undefined for unused offsets. */
  slot: Slot<C> | undefined;
  start: number;
  length: number;
}

const ACCESS_TYPES: readonly string[] = ['ro', 'rw', 'wo', 'rw1c', 'rc'];
const BLOCK_ACCESS_TYPES: readonly string[] = ['ro', 'rw', 'wo'];
const ENTRY_FIELDS: readonly string[] = ['name', 'offset', 'access', 'widths', 'trace', 'description', 'width', 'reset', 'writable', 'read', 'write', 'size', 'window'];

/** Checks what TypeScript would, for tables in device files that no compiler saw. */
function checkEntryShape<C>(e: RegisterEntry<C>, index: number): void {
  if (typeof e !== 'object' || e === null) throw new TypeError(`register table entry ${index}: must be an object, got ${String(e)}`);
  if (typeof e.name !== 'string' || e.name === '') throw new TypeError(`register table entry ${index}: a register needs a name`);
  const where = `register ${e.name}`;
  for (const k of Object.keys(e)) {
    if (!ENTRY_FIELDS.includes(k)) throw new TypeError(`${where}: unknown field '${k}' (known: ${ENTRY_FIELDS.join(', ')})`);
  }
  if (e.window !== undefined) {
    const w: unknown = e.window;
    if (w !== true) throw new TypeError(`${where}: window must be true (or left out), got ${String(w)}`);
    if ((e as { width?: unknown }).width !== undefined) throw new TypeError(`${where}: a window has a size, not a width`);
    for (const k of ['reset', 'writable'] as const) {
      if (k in e) throw new TypeError(`${where}: a window stores nothing, so it takes no '${k}'`);
    }
    if (e.read === undefined && e.write === undefined) throw new TypeError(`${where}: a window needs a read or a write hook (a range with memory of its own is a block)`);
  }
  const kinds = e.width === undefined ? BLOCK_ACCESS_TYPES : ACCESS_TYPES;
  if (e.access !== undefined && !kinds.includes(e.access)) {
    throw new RangeError(`${where}: access '${String(e.access)}' is not one of ${kinds.map((k) => `'${k}'`).join(' | ')}`);
  }
  for (const hook of ['read', 'write'] as const) {
    if (e[hook] !== undefined && typeof e[hook] !== 'function') throw new TypeError(`${where}: ${hook} must be a function`);
  }
  if (e.trace !== undefined && typeof e.trace !== 'boolean') throw new TypeError(`${where}: trace must be a boolean`);
  if (e.width !== undefined) {
    const r = e as Register<C> | Register64<C>;
    if (r.reset !== undefined && typeof r.reset !== 'number' && typeof r.reset !== 'bigint') throw new TypeError(`${where}: reset must be a number, got ${typeof r.reset}`);
    if (r.writable !== undefined && typeof r.writable !== 'number' && typeof r.writable !== 'bigint') throw new TypeError(`${where}: writable must be a bit mask`);
  }
  if (e.width !== undefined || e.window !== undefined) {
    const widths = (e as { widths?: unknown }).widths;
    if (widths !== undefined && (!Array.isArray(widths) || widths.length === 0 || widths.some((w) => ![1, 2, 4, 8].includes(w as number)))) {
      throw new RangeError(`${where}: widths must list access widths of 1, 2, 4 or 8 bytes`);
    }
  }
}

function toSlot<C>(e: RegisterEntry<C>, index: number): Slot<C> {
  checkEntryShape(e, index);
  const where = `register ${e.name}`;
  if (!Number.isSafeInteger(e.offset) || e.offset < 0) throw new RangeError(`${where}: offset ${e.offset} is not a byte offset`);
  const access = e.access ?? 'rw';
  const base = {
    name: e.name,
    offset: e.offset,
    access,
    readable: access !== 'wo',
    writable: access !== 'ro' && access !== 'rc',
    trace: e.trace ?? true,
  };
  if (e.window === true) {
    if (!Number.isSafeInteger(e.size) || e.size < 1) throw new RangeError(`${where}: window size ${e.size} is not a byte count`);
    const widths = e.widths ?? [1, 2, 4, 8].filter((w) => w <= e.size);
    if (widths.length === 0 || widths.some((w) => w > e.size)) throw new RangeError(`${where}: an access width is wider than the window's ${e.size} bytes`);
    const widest = Math.max(...widths);
    if (e.offset % widest !== 0) throw new RangeError(`${where}: offset 0x${e.offset.toString(16)} is not aligned to its widest access (${widest} bytes)`);
    return { ...base, kind: 'window', size: e.size, value: 0n, reset: 0n, writableBits: 0n, widths, buffer: undefined, window: e };
  }
  if (e.width === undefined) {
    if (!Number.isSafeInteger(e.size) || e.size < 1) throw new RangeError(`${where}: block size ${e.size} is not a byte count`);
    // Memory of its own unless hooks serve both directions.
    const buffer = e.read && e.write ? undefined : Buffer.alloc(e.size);
    return { ...base, kind: 'block', size: e.size, value: 0n, reset: 0n, writableBits: 0n, widths: [], buffer, block: e };
  }
  if (![1, 2, 4, 8].includes(e.width)) throw new RangeError(`${where}: width ${String(e.width)} is not 1, 2, 4 or 8`);
  if (e.offset % e.width !== 0) throw new RangeError(`${where}: offset 0x${e.offset.toString(16)} is not aligned to its width ${e.width}`);
  const bits = BigInt(e.width * 8);
  const full = (1n << bits) - 1n;
  const reset = BigInt(e.reset ?? 0);
  if (reset < 0n || reset > full) throw new RangeError(`${where}: reset value does not fit in ${e.width} bytes`);
  const widths = e.widths ?? [1, 2, 4, 8].filter((w) => w <= e.width);
  if (widths.some((w) => w > e.width)) throw new RangeError(`${where}: an access width is wider than the register`);
  return {
    ...base,
    kind: 'register',
    size: e.width,
    value: reset,
    reset,
    writableBits: e.writable === undefined ? full : BigInt.asUintN(Number(bits), BigInt(e.writable)),
    widths,
    buffer: undefined,
    entry: e,
  };
}

function sortedWithoutOverlap<C>(slots: Slot<C>[], op: string): Slot<C>[] {
  const sorted = [...slots].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (sorted[i].offset < prev.offset + prev.size) throw new RangeError(`registers ${prev.name} and ${sorted[i].name} overlap for ${op}s`);
  }
  return sorted;
}

/** The slot containing `pos` (binary search over sorted, disjoint slots). */
function covering<C>(slots: Slot<C>[], pos: number): Slot<C> | undefined {
  let lo = 0;
  let hi = slots.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const s = slots[mid];
    if (pos < s.offset) hi = mid - 1;
    else if (pos >= s.offset + s.size) lo = mid + 1;
    else return s;
  }
  return undefined;
}

/** Where the first slot starting after `pos` begins (Infinity if none). */
function nextStart<C>(slots: Slot<C>[], pos: number): number {
  for (const s of slots) if (s.offset > pos) return s.offset;
  return Infinity;
}

function checkWidth<C>(s: Slot<C>, pos: number, length: number, op: string): void {
  const within = pos - s.offset;
  if (!s.widths.includes(length) || within % length !== 0) {
    const accepted = s.widths.join('/');
    throw new DeviceError(
      Errno.EINVAL,
      `${length}-byte ${op} at 0x${pos.toString(16)} hits register ${s.name} (0x${s.offset.toString(16)}, ${s.size} bytes) ` +
        `unaligned or at a width it does not take (${accepted}-byte aligned accesses)`,
    );
  }
}

function readBlock<C>(s: Slot<C>, at: number, length: number, context: C): MaybePromise<Uint8Array> {
  const hook = s.block!.read;
  if (hook) {
    return then(hook(at, length, context), (bytes) => {
      if (bytes.length !== length) throw new DeviceError(Errno.EIO, `block ${s.name}: read hook returned ${bytes.length} bytes, ${length} wanted`);
      return bytes;
    });
  }
  return s.buffer!.subarray(at, at + length);
}

function writeBlock<C>(s: Slot<C>, at: number, data: Buffer, context: C): MaybePromise<void> {
  s.buffer?.set(data, at);
  return s.block!.write?.(at, data, context);
}

function readLE(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

function writeLE(out: Uint8Array, at: number, length: number, value: bigint): void {
  for (let i = 0; i < length; i++, value >>= 8n) out[at + i] = Number(value & 0xffn);
}

/** Applies `f` now if `v` is a value, or when it settles if it is a Promise. */
function then<T, U>(v: MaybePromise<T>, f: (x: T) => U): MaybePromise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/** Runs steps in order, synchronously until one returns a Promise. */
function sequence(steps: (() => MaybePromise<void>)[], from = 0): MaybePromise<void> {
  for (let i = from; i < steps.length; i++) {
    const r = steps[i]();
    if (r instanceof Promise) return r.then(() => sequence(steps, i + 1));
  }
}
