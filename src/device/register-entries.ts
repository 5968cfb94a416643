/**
 * The lines of a register table, as a device file writes them (registers,
 * 64-bit registers, blocks, windows), and their compiled form: each entry
 * checked when the map is built, so a mistake in the table throws when the
 * device is defined, not when a guest first touches it.
 */
import type { Device, MaybePromise } from './types.js';
import { describeValue } from '../values/describe.js';

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

/** An entry, checked and compiled: what the access engine and the map's values work on. */
export interface Slot<C> {
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

const ACCESS_TYPES: readonly string[] = ['ro', 'rw', 'wo', 'rw1c', 'rc'];
const BLOCK_ACCESS_TYPES: readonly string[] = ['ro', 'rw', 'wo'];
const ENTRY_FIELDS: readonly string[] = ['name', 'offset', 'access', 'widths', 'trace', 'description', 'width', 'reset', 'writable', 'read', 'write', 'size', 'window'];

/** Checks what TypeScript would, for tables in device files that no compiler saw. */
function checkEntryShape<C>(e: RegisterEntry<C>, index: number): void {
  if (typeof e !== 'object' || e === null) throw new TypeError(`register table entry ${index}: must be an object, got ${describeValue(e)}`);
  if (typeof e.name !== 'string' || e.name === '') throw new TypeError(`register table entry ${index}: a register needs a name`);
  const where = `register ${e.name}`;
  for (const k of Object.keys(e)) {
    if (!ENTRY_FIELDS.includes(k)) throw new TypeError(`${where}: unknown field '${k}' (known: ${ENTRY_FIELDS.join(', ')})`);
  }
  if (e.window !== undefined) {
    const w: unknown = e.window;
    if (w !== true) throw new TypeError(`${where}: window must be true (or left out), got ${describeValue(w)}`);
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
    if (r.reset !== undefined && typeof r.reset !== 'number' && typeof r.reset !== 'bigint') throw new TypeError(`${where}: reset must be a number, got ${describeValue(r.reset)}`);
    if (r.writable !== undefined && typeof r.writable !== 'number' && typeof r.writable !== 'bigint') throw new TypeError(`${where}: writable must be a bit mask`);
  }
  if (e.width !== undefined || e.window !== undefined) {
    const widths = (e as { widths?: unknown }).widths;
    if (widths !== undefined && (!Array.isArray(widths) || widths.length === 0 || widths.some((w) => ![1, 2, 4, 8].includes(w as number)))) {
      throw new RangeError(`${where}: widths must list access widths of 1, 2, 4 or 8 bytes`);
    }
  }
}

/** Checks entry `index` of a table and compiles it into a slot holding its reset value. */
export function toSlot<C>(e: RegisterEntry<C>, index: number): Slot<C> {
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

/** `slots` sorted by offset; throws when two of them overlap (for `op`s). */
export function sortedWithoutOverlap<C>(slots: Slot<C>[], op: string): Slot<C>[] {
  const sorted = [...slots].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (sorted[i].offset < prev.offset + prev.size) throw new RangeError(`registers ${prev.name} and ${sorted[i].name} overlap for ${op}s`);
  }
  return sorted;
}
