/**
 * The register access engine: serves a read or write of any length against
 * a map's compiled entries. It splits an access at entry boundaries, checks
 * each part's width and alignment (refusing the whole access before any
 * entry is touched), merges narrow writes into stored values, hands window
 * parts to their hooks as values, and traces each part by entry name.
 */
import { DeviceError, Errno } from './errors.js';
import type { Logger } from './logger.js';
import { sortedWithoutOverlap, type RegisterWidth, type Slot } from './register-entries.js';
import type { MaybePromise } from './types.js';

/** Where a map served as a BAR reports the parts of accesses that no entry covers (the device's unmodeled-access report). */
export interface GapSink {
  gap(map: object, offset: number, width: number, accessLength: number, op: 'read' | 'write'): void;
}

interface Part<C> {
  /** The entry the part falls in, undefined for unused offsets. */
  slot: Slot<C> | undefined;
  start: number;
  length: number;
}

/** Serves accesses to a map's slots; the map keeps the slots' values, the engine reads and changes them. */
export class RegisterEngine<C> {
  /** Readable / writable slots, sorted by offset, not overlapping. */
  private readonly readers: Slot<C>[];
  private readonly writers: Slot<C>[];
  /** Where accesses are traced (at debug level); undefined: not traced. */
  log: Logger | undefined;

  /**
   * @param owner - the map, as named to a {@link GapSink}
   * @throws RangeError when two readable or two writable slots overlap
   */
  constructor(private readonly owner: object, slots: readonly Slot<C>[], log: Logger | undefined) {
    this.log = log;
    this.readers = sortedWithoutOverlap(slots.filter((s) => s.readable), 'read');
    this.writers = sortedWithoutOverlap(slots.filter((s) => s.writable), 'write');
  }

  /** Serves a read of `length` bytes at `offset`, telling `gaps` about the parts no entry covers. */
  serveRead(offset: number, length: number, context: C, gaps: GapSink | undefined): MaybePromise<Uint8Array> {
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
        if (!s) gaps?.gap(this.owner, part.start, part.length, length, 'read');
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

  /** Serves a write of `data` at `offset`, telling `gaps` about the parts no entry covers. */
  serveWrite(offset: number, data: Uint8Array, context: C, gaps: GapSink | undefined): MaybePromise<void> {
    const one = this.insideOneRegister(this.writers, offset, data.length, 'write');
    if (one) return one.kind === 'window' ? this.writeWindow(one, offset, data, context) : this.writeRegister(one, offset, data, context);
    const steps: (() => MaybePromise<void>)[] = [];
    for (const part of this.split(this.writers, this.readers, offset, data.length, 'write')) {
      // A copy: later steps may run after an async hook, when `data` (a view
      // of the receive buffer) holds another message; a block's hook may keep it.
      const bytes = Buffer.from(data.subarray(part.start - offset, part.start - offset + part.length));
      const s = part.slot;
      if (!s || !s.writable) {
        if (!s) gaps?.gap(this.owner, part.start, part.length, data.length, 'write');
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
