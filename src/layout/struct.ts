/**
 * Fixed-layout structs, each declared once as an ordered field list from
 * which both directions derive: offsets follow from the order, the size from
 * the sum, and `read`/`write` can no longer disagree about either. The
 * protocol's messages and the devices' in-memory structures (NVMe queue
 * entries and Identify data, virtio descriptors and configs) are declared
 * with it.
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
 * layouts declared in the source tree, with names checked to be
 * identifiers; no message byte ever reaches it. A hot path that must not
 * allocate reads single fields at `offsets` instead.
 */
import { rangeError, readU64, readU64Big, writeU64, writeU64Big, type Invalid } from './u64.js';

/**
 * Type of a field: little-endian unsigned integers, or `{ bytes: N }`, N
 * raw bytes (an identifier, a padded string). `u64` is a number, and
 * reads as invalid above 2^53-1; `u64big` is the full range as a bigint.
 */
export type FieldType = IntegerType | BytesType;
/** A little-endian unsigned integer. */
export type IntegerType = 'u8' | 'u16' | 'u32' | 'u64' | 'u64big';
/** A run of `bytes` raw bytes: read as a copy, written zero-padded. */
export interface BytesType {
  readonly bytes: number;
}

type TypeFor<V> = V extends bigint ? 'u64big' : V extends number ? Exclude<IntegerType, 'u64big'> : V extends Uint8Array ? BytesType : never;

/**
 * Every field of `T` with its type, in layout order (key order). Keys
 * starting with `_` are reserved bytes, given as a byte count: written as
 * zeros, skipped when read.
 */
export type Layout<T> = { readonly [K in keyof T]-?: TypeFor<T[K]> } & {
  readonly [reserved: `_${string}`]: number;
};

/** A field (or a reserved run, `type` 'reserved') where the layout puts it. */
export interface PlacedField {
  readonly name: string;
  readonly type: FieldType | 'reserved';
  readonly offset: number;
  /** Bytes it takes. */
  readonly size: number;
}

/** A fixed-size struct: the fields of `T` at computed offsets. */
export interface Struct<T> {
  /** Size in bytes, reserved bytes included. */
  readonly size: number;
  /** Each field's byte offset, for hot paths that read one field without decoding the struct. */
  readonly offsets: { readonly [K in keyof T]-?: number };
  /** Every field and reserved run, in order. */
  readonly fields: readonly PlacedField[];
  /** Reads the struct at `offset`; the caller checked bounds. Invalid for a `u64` above 2^53-1. */
  read(buf: Buffer, offset: number): T;
  /** Writes `value` at `offset`, reserved bytes as zeros. RangeError for an out-of-range field. */
  write(buf: Buffer, offset: number, value: T): void;
  /** Invalid (`what: need N bytes, ...`) unless the struct fits at `offset`, then reads it. */
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

interface Codegen {
  size: number;
  /** The expression that reads the field at offset expression `at` of `b`. */
  read(at: string): string;
  /** The statement that writes `v` there. */
  write(at: string, v: string): string;
}

/** Per integer type: its size, and the code that reads it from / writes it to `b`. */
const INTEGERS: Record<IntegerType, Codegen> = {
  u8: { size: 1, read: (at) => `b.readUInt8(${at})`, write: (at, v) => `b.writeUInt8(${v}, ${at});` },
  u16: { size: 2, read: (at) => `b.readUInt16LE(${at})`, write: (at, v) => `b.writeUInt16LE(${v}, ${at});` },
  u32: { size: 4, read: (at) => `b.readUInt32LE(${at})`, write: (at, v) => `b.writeUInt32LE(${v}, ${at});` },
  u64: { size: 8, read: (at) => `readU64(b, ${at}, invalid)`, write: (at, v) => `writeU64(b, ${at}, ${v});` },
  u64big: { size: 8, read: (at) => `readU64Big(b, ${at})`, write: (at, v) => `writeU64Big(b, ${at}, ${v});` },
};

function codegen(name: string, key: string, type: FieldType): Codegen {
  if (typeof type === 'string') {
    const c = INTEGERS[type];
    if (!c) throw new TypeError(`struct ${name}: field ${key} has no type ${String(type)}`);
    return c;
  }
  const n = type.bytes;
  if (!Number.isInteger(n) || n < 1) throw new TypeError(`struct ${name}: field ${key} needs a positive whole number of bytes, got ${String(n)}`);
  return {
    size: n,
    read: (at) => `Buffer.from(b.subarray(${at}, ${at} + ${n}))`,
    write: (at, v) => `writeBytes(b, ${at}, ${n}, ${v}, ${JSON.stringify(`${name}.${key}`)});`,
  };
}

/** Copies `value` into `n` bytes at `at`, zero-padded; RangeError when longer. */
function writeBytes(b: Buffer, at: number, n: number, value: Uint8Array, what: string): void {
  if (value.length > n) throw new RangeError(`${what}: ${value.length} bytes do not fit in ${n}`);
  b.set(value, at);
  b.fill(0, at + value.length, at + n);
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/**
 * Declares a struct; see the module note. `name` labels the compiled
 * functions in stack traces and the errors. `invalid` refuses bad input
 * (too few bytes for `decode`, a `u64` past 2^53-1): it must throw, and
 * throws a RangeError unless given.
 */
export function defineStruct<T>(name: string, layout: Layout<T>, invalid: Invalid = rangeError): Struct<T> {
  const fields: Field[] = [];
  const placed: PlacedField[] = [];
  const reserved: Array<[number, number]> = [];
  const offsets: Record<string, number> = {};
  let size = 0;
  for (const [key, spec] of Object.entries(layout) as Array<[string, FieldType | number]>) {
    if (!IDENTIFIER.test(key)) throw new TypeError(`struct ${name}: field name ${key} is not an identifier`);
    if (typeof spec === 'number') {
      if (!key.startsWith('_') || !Number.isInteger(spec) || spec < 1) throw new TypeError(`struct ${name}: ${key} must be a reserved run (_name) of a positive byte count`);
      reserved.push([size, spec]);
      placed.push({ name: key, type: 'reserved', offset: size, size: spec });
      size += spec;
    } else {
      const width = codegen(name, key, spec).size;
      fields.push({ name: key, type: spec, offset: size });
      placed.push({ name: key, type: spec, offset: size, size: width });
      offsets[key] = size;
      size += width;
    }
  }
  const plain = compile<T>(name, fields, reserved, size, false, invalid);
  return {
    size,
    offsets: Object.freeze(offsets) as Struct<T>['offsets'],
    fields: Object.freeze(placed),
    read: plain.read,
    write: plain.write,
    decode(buf, what, offset = 0) {
      if (buf.length < offset + size) invalid(`${what}: need ${offset + size} bytes, have ${buf.length}`);
      return plain.read(buf, offset);
    },
    encode(value) {
      const b = Buffer.alloc(size);
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
    withData: () => dataStruct(compile<T & { data: Uint8Array }>(name, fields, reserved, size, true, invalid), size),
  };
}

function dataStruct<T>(compiled: Compiled<T & { data: Uint8Array }>, size: number): DataStruct<T> {
  return {
    size,
    read: compiled.read,
    write: compiled.write,
    encode(value) {
      const b = Buffer.alloc(size + value.data.length);
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
  invalid: Invalid,
): Compiled<T> {
  const at = (offset: number): string => (offset === 0 ? 'o' : `o + ${offset}`);
  const entries = fields.map((f) => `${f.name}: ${codegen(name, f.name, f.type).read(at(f.offset))}`);
  const writes = fields.map((f) => codegen(name, f.name, f.type).write(at(f.offset), `v.${f.name}`));
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
  const make = new Function('readU64', 'readU64Big', 'writeU64', 'writeU64Big', 'writeBytes', 'invalid', 'Buffer', source) as (
    ...helpers: [typeof readU64, typeof readU64Big, typeof writeU64, typeof writeU64Big, typeof writeBytes, Invalid, typeof Buffer]
  ) => Compiled<T>;
  return make(readU64, readU64Big, writeU64, writeU64Big, writeBytes, invalid, Buffer);
}
