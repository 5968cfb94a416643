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
import type { Logger } from './logger.js';
import type { BarSpec } from './region-spec.js';
import { toSlot, type RegisterEntry, type Slot } from './register-entries.js';
import { RegisterEngine } from './register-engine.js';
import { loadSlotValues, saveSlotValues, type RegisterValues } from './register-values.js';
import type { Device, MaybePromise } from './types.js';

export type { Register, Register64, RegisterAccess, RegisterBase, RegisterBlock, RegisterEntry, RegisterWidth, RegisterWindow } from './register-entries.js';
export type { GapSink } from './register-engine.js';
export type { RegisterValues } from './register-values.js';

/** Options of {@link defineRegisters}. */
export interface RegisterMapOptions {
  /** Where register traces go (at debug level). */
  log?: Logger;
}

/** The BAR properties {@link RegisterMap.bar} takes; the map supplies `read` and `write`. */
export type RegisterBarOptions = Omit<BarSpec, 'read' | 'write' | 'memory'>;

/** A register table, ready to serve accesses. Built by {@link defineRegisters}. */
export class RegisterMap<C = Device> {
  private readonly slots: Slot<C>[];
  private readonly byName = new Map<string, Slot<C>>();
  private readonly engine: RegisterEngine<C>;
  /** Set when the log was given in the options: a server's logger does not replace it. */
  private readonly ownLog: boolean;

  /** @see {@link defineRegisters} */
  constructor(entries: readonly RegisterEntry<C>[], options: RegisterMapOptions = {}) {
    this.ownLog = options.log !== undefined;
    this.slots = entries.map((e, i) => toSlot(e, i));
    for (const s of this.slots) {
      if (this.byName.has(s.name)) throw new TypeError(`register ${s.name} is defined twice`);
      this.byName.set(s.name, s);
    }
    this.engine = new RegisterEngine(this, this.slots, options.log);
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
    if (!this.ownLog) this.engine.log = log;
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
    const read: BarSpec['read'] = (offset, length, device) => this.engine.serveRead(offset, length, device, device.unmodeled);
    mapsByReadHook.set(read, this);
    return { ...options, read, write: (offset, data, device) => this.engine.serveWrite(offset, data, device, device.unmodeled) };
  }

  /** Serves a read of `length` bytes at `offset`, as a BAR read would. */
  read(offset: number, length: number, context: C): MaybePromise<Uint8Array> {
    return this.engine.serveRead(offset, length, context, undefined);
  }

  /** Serves a write of `data` at `offset`, as a BAR write would. */
  write(offset: number, data: Uint8Array, context: C): MaybePromise<void> {
    return this.engine.serveWrite(offset, data, context, undefined);
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
    return saveSlotValues(this.slots);
  }

  /**
   * Puts back values taken by {@link saveValues}: no hooks, no trace.
   * Entries the values do not name keep theirs. Checks everything first:
   * @throws TypeError naming the entry when a name is not a register or
   *   memory-backed block of this map, or a value is malformed or too wide;
   *   nothing is changed then.
   */
  loadValues(values: RegisterValues): void {
    loadSlotValues(this.byName, values);
  }

  private slot(name: string): Slot<C> {
    const s = this.byName.get(name);
    if (!s || s.kind !== 'register') throw new TypeError(`no register named ${name}`);
    return s;
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
