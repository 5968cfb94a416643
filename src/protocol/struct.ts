/**
 * Fixed-layout structs, each declared once as an ordered field list from
 * which both directions derive: offsets follow from the order, the size from
 * the sum, and `read`/`write` can no longer disagree about either.
 *
 * ```ts
 * const DMA_UNMAP = defineStruct<DmaUnmap>('DMA_UNMAP', { argsz: 'u32', flags: 'u32', address: 'u64', size: 'u64' });
 * ```
 *
 * `read` and `write` are compiled from the list into straight-line code,
 * one Buffer call per field, i.e. what the hand-written pair used to be. A
 * generic loop over the fields would store every field through one keyed
 * property site that V8 cannot specialise: measured 2-3x slower on the
 * header, which every message pays. The compiled source is built only from
 * the layouts declared in this folder, with names checked to be
 * identifiers; no message byte ever reaches it.
 */
import { alloc, need, readU64, readU64Big, writeU64, writeU64Big } from './wire.js';

/**
 * Wire type of a field, all little-endian unsigned. `u64` is a number and
 * reads as EINVAL above 2^53-1; `u64big` is the full range as a bigint.
 */
export type FieldType = 'u8' | 'u16' | 'u32' | 'u64' | 'u64big';

type TypeFor<V> = V extends bigint ? 'u64big' : V extends number ? Exclude<FieldType, 'u64big'> : never;

/**
 * Every field of `T` with its wire type, in wire order (key order). Keys
 * starting with `_` are reserved bytes, given as a byte count: written as
 * zeros, skipped when read.
 */
export type Layout<T> = { readonly [K in keyof T]-?: TypeFor<T[K]> } & {
  readonly [reserved: `_${string}`]: number;
};

/** A fixed-size struct: the fields of `T` at computed offsets. */
export interface Struct<T> {
  /** Size in bytes, reserved bytes included. */
  readonly size: number;
  /** Reads the struct at `offset`; the caller checked bounds. EINVAL for a `u64` above 2^53-1. */
  read(buf: Buffer, offset: number): T;
  /** Writes `value` at `offset`, reserved bytes as zeros. RangeError for an out-of-range field. */
  write(buf: Buffer, offset: number, value: T): void;
  /** EINVAL (`what: need N bytes, ...`) unless the struct fits at `offset`, then reads it. */
  decode(buf: Buffer, what: string, offset?: number): T;
  /** A new zero-filled buffer holding `value`. */
  encode(value: T): Buffer;
  /** Reads `count` consecutive structs from `offset`; the caller checked bounds. */
  readArray(buf: Buffer, offset: number, count: number): T[];
  /** Writes `values` one after another from `offset`. */
  writeArray(buf: Buffer, offset: number, values: readonly T[]): void;
  /** Compiles the same struct followed by `data` bytes: call once, at module level. */
  withData(): DataStruct<T>;
}

/** A struct followed directly by variable-length `data`. */
export interface DataStruct<T> {
  /** Size of the fixed part; `data` starts here. */
  readonly size: number;
  /**
   * Reads the fixed part at `offset` and returns it with `data` (which the
   * caller sliced and checks): one object, as a literal would be.
   */
  read(buf: Buffer, offset: number, data: Uint8Array): T & { data: Uint8Array };
  /** Writes the fixed part at `offset` and copies `data` right after it. */
  write(buf: Buffer, offset: number, value: T & { data: Uint8Array }): void;
  /** A new buffer of `size + data.length` bytes holding `value`. */
  encode(value: T & { data: Uint8Array }): Buffer;
}

interface Field {
  name: string;
  type: FieldType;
  offset: number;
}

/** Per type: its size, and the code that reads it from / writes it to `b` at offset expression `at`. */
const TYPES: Record<FieldType, { size: number; read(at: string): string; write(at: string, v: string): string }> = {
  u8: { size: 1, read: (at) => `b.readUInt8(${at})`, write: (at, v) => `b.writeUInt8(${v}, ${at});` },
  u16: { size: 2, read: (at) => `b.readUInt16LE(${at})`, write: (at, v) => `b.writeUInt16LE(${v}, ${at});` },
  u32: { size: 4, read: (at) => `b.readUInt32LE(${at})`, write: (at, v) => `b.writeUInt32LE(${v}, ${at});` },
  u64: { size: 8, read: (at) => `readU64(b, ${at})`, write: (at, v) => `writeU64(b, ${at}, ${v});` },
  u64big: { size: 8, read: (at) => `readU64Big(b, ${at})`, write: (at, v) => `writeU64Big(b, ${at}, ${v});` },
};
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** Declares a struct; see the module note. `name` labels the compiled functions in stack traces. */
export function defineStruct<T>(name: string, layout: Layout<T>): Struct<T> {
  const fields: Field[] = [];
  const reserved: Array<[number, number]> = [];
  let size = 0;
  for (const [key, spec] of Object.entries(layout) as Array<[string, FieldType | number]>) {
    if (!IDENTIFIER.test(key)) throw new TypeError(`struct ${name}: field name ${key} is not an identifier`);
    if (typeof spec === 'number') {
      reserved.push([size, spec]);
      size += spec;
    } else {
      fields.push({ name: key, type: spec, offset: size });
      size += TYPES[spec].size;
    }
  }
  const plain = compile<T>(name, fields, reserved, size, false);
  return {
    size,
    read: plain.read,
    write: plain.write,
    decode(buf, what, offset = 0) {
      need(buf, offset + size, what);
      return plain.read(buf, offset);
    },
    encode(value) {
      const b = alloc(size);
      plain.write(b, 0, value);
      return b;
    },
    readArray(buf, offset, count) {
      const out: T[] = [];
      for (let i = 0; i < count; i++) out.push(plain.read(buf, offset + size * i));
      return out;
    },
    writeArray(buf, offset, values) {
      values.forEach((v, i) => plain.write(buf, offset + size * i, v));
    },
    withData: () => dataStruct(compile<T & { data: Uint8Array }>(name, fields, reserved, size, true), size),
  };
}

function dataStruct<T>(compiled: Compiled<T & { data: Uint8Array }>, size: number): DataStruct<T> {
  return {
    size,
    read: compiled.read,
    write: compiled.write,
    encode(value) {
      const b = alloc(size + value.data.length);
      compiled.write(b, 0, value);
      return b;
    },
  };
}

interface Compiled<T> {
  read(buf: Buffer, offset: number, data?: Uint8Array): T;
  write(buf: Buffer, offset: number, value: T): void;
}

/** Builds read/write for the fields (plus a trailing `data` when `withData`). */
function compile<T>(
  name: string,
  fields: readonly Field[],
  reserved: ReadonlyArray<[number, number]>,
  size: number,
  withData: boolean,
): Compiled<T> {
  const at = (offset: number): string => (offset === 0 ? 'o' : `o + ${offset}`);
  const entries = fields.map((f) => `${f.name}: ${TYPES[f.type].read(at(f.offset))}`);
  const writes = fields.map((f) => TYPES[f.type].write(at(f.offset), `v.${f.name}`));
  for (const [offset, length] of reserved) writes.push(`b.fill(0, ${at(offset)}, ${at(offset + length)});`);
  if (withData) {
    entries.push('data: d');
    writes.push(`b.set(v.data, ${at(size)});`);
  }
  const label = name.replace(/\W/g, '_');
  const source = `"use strict";
return {
  read: function read_${label}(b, o${withData ? ', d' : ''}) {
    return { ${entries.join(', ')} };
  },
  write: function write_${label}(b, o, v) {
    ${writes.join('\n    ')}
  },
};`;
  const make = new Function('readU64', 'readU64Big', 'writeU64', 'writeU64Big', source) as (
    ...helpers: [typeof readU64, typeof readU64Big, typeof writeU64, typeof writeU64Big]
  ) => Compiled<T>;
  return make(readU64, readU64Big, writeU64, writeU64Big);
}
