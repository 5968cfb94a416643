/**
 * Reads and writes of one split virtqueue's rings in guest memory: through
 * views of the descriptor table, the avail ring and the used ring taken
 * once and reused (the hot path then reads and writes ring fields without
 * translating an address per field), else by copy or by message.
 *
 * A view of memory unmapped since reads length 0 and is taken again (or
 * the slow path reports the fault).
 */
import type { GuestSpan, QueueMemory } from '../device/queue-memory.js';
import type { SpanCache } from '../device/span-cache.js';
import { RingError } from './chain.js';
import { DESCRIPTOR } from './layouts.js';
import type { RingState } from './ring.js';

/** The three ring areas a queue keeps views of. */
export const enum Area {
  Desc,
  Avail,
  Used,
}

/** Ring memory access for one queue: `state` says where the rings are, `host.memory` reaches them. */
export class RingAccess {
  /** null: that memory offers no single view; undefined: not taken yet. */
  private descCache: Uint8Array | null | undefined;
  private availCache: Uint8Array | null | undefined;
  private usedCache: Uint8Array | null | undefined;

  constructor(
    private readonly state: RingState,
    private readonly host: { readonly memory: QueueMemory },
  ) {}

  /** Drops the views (the rings moved, or the queue reset). */
  forget(): void {
    this.descCache = this.availCache = this.usedCache = undefined;
  }

  /** The cached view of a ring area, (re)taken when missing or unmapped; undefined when there is none. */
  areaView(which: Area): Uint8Array | undefined {
    const cached = which === Area.Desc ? this.descCache : which === Area.Avail ? this.availCache : this.usedCache;
    if (cached === null) return undefined;
    // Views skip the per-access checks: ask for them once (migration hold, Bus Master Enable).
    if (!this.host.memory.accessible()) return undefined;
    const length = which === Area.Desc ? DESCRIPTOR.size * this.state.size : which === Area.Avail ? 6 + 2 * this.state.size : 6 + 8 * this.state.size;
    if (cached && cached.length === length) return cached;
    const start = which === Area.Desc ? this.state.desc : which === Area.Avail ? this.state.driver : this.state.device;
    let view: Uint8Array | null = null;
    try {
      const v = this.host.memory.views(start, length, which === Area.Used);
      if (v && v.length === 1 && v[0].length === length) view = v[0];
    } catch {
      // Not mapped (now): the slow path reports it as it always did.
      return undefined;
    }
    if (which === Area.Desc) this.descCache = view;
    else if (which === Area.Avail) this.availCache = view;
    else this.usedCache = view;
    return view ?? undefined;
  }

  /** Bytes of a ring area from its cached view, when [addr, addr+length) lies in one. */
  private fromCache(addr: number, length: number): Uint8Array | undefined {
    if (addr >= this.state.desc && addr + length <= this.state.desc + DESCRIPTOR.size * this.state.size) {
      const v = this.areaView(Area.Desc);
      return v && v.subarray(addr - this.state.desc, addr - this.state.desc + length);
    }
    if (addr >= this.state.driver && addr + length <= this.state.driver + 6 + 2 * this.state.size) {
      const v = this.areaView(Area.Avail);
      return v && v.subarray(addr - this.state.driver, addr - this.state.driver + length);
    }
    return undefined;
  }

  /**
   * Where guest memory [addr, addr+length) can be read in place, without a
   * new view (see {@link PeekGuest}): false when it takes a copy (no fd, or
   * two regions). Throws when it is not mapped.
   */
  locate(addr: number, length: number, out: GuestSpan, spans?: SpanCache): boolean {
    const st = this.state;
    if (addr >= st.desc && addr + length <= st.desc + DESCRIPTOR.size * st.size) {
      const v = this.areaView(Area.Desc);
      if (v) {
        out.memory = v;
        out.offset = addr - st.desc;
        return true;
      }
    }
    return spans ? spans.locate(this.host.memory, addr, length, false, out) : this.host.memory.locate(addr, length, false, out);
  }

  /** A view of guest memory for reading, or undefined when it takes a copy (no fd, or two regions). */
  peek(addr: number, length: number): Uint8Array | undefined {
    const c = this.fromCache(addr, length);
    if (c) return c;
    const v = this.host.memory.views(addr, length, false);
    if (!v || v.length !== 1) return undefined;
    // A view of memory unmapped meanwhile reads as empty: a fault, not zeros.
    if (v[0].length !== length) throw new RingError(`guest memory at 0x${addr.toString(16)} went away`);
    return v[0];
  }

  /** Writes through a view; false when the memory needs a message. */
  poke(addr: number, data: Uint8Array): boolean {
    const v = this.host.memory.views(addr, data.length, true);
    if (!v || v.length !== 1) return false;
    if (v[0].length !== data.length) throw new RingError(`guest memory at 0x${addr.toString(16)} went away`);
    v[0].set(data);
    return true;
  }

  /** A u16 of guest memory: from a view at once (the avail ring's cached one first), else copied. */
  readU16(addr: number): number | Promise<number> {
    // The avail ring's fields, straight from its cached view: no allocation.
    if (addr >= this.state.driver && addr + 2 <= this.state.driver + 6 + 2 * this.state.size) {
      const v = this.areaView(Area.Avail);
      if (v) return v[addr - this.state.driver] | (v[addr - this.state.driver + 1] << 8);
    }
    const b = this.peek(addr, 2);
    if (b) return b[0] | (b[1] << 8);
    return this.host.memory.read(addr, 2).then((c) => c[0] | (c[1] << 8));
  }

  /** Writes a u16 at `at` of the used ring: through its view at once, else by message. */
  writeUsedU16(at: number, value: number): Promise<void> | undefined {
    const used = this.areaView(Area.Used);
    if (used) {
      used[at] = value & 0xff;
      used[at + 1] = (value >> 8) & 0xff;
      this.host.memory.markDirty(this.state.device + at, 2);
      return undefined;
    }
    return this.writeBytes(this.state.device + at, Uint8Array.of(value & 0xff, (value >> 8) & 0xff));
  }

  /** Writes through a view at once, or by message (the Promise). */
  writeBytes(addr: number, data: Uint8Array): Promise<void> | undefined {
    return this.poke(addr, data) ? undefined : this.host.memory.write(addr, data);
  }
}

/** Why the rings of `state` are not all in mapped guest memory (with the right access), or undefined. */
export function ringMemoryError(state: RingState, memory: QueueMemory): string | undefined {
  const ok = memory.mapped(state.desc, state.descBytes, false) && memory.mapped(state.driver, state.availBytes, false) && memory.mapped(state.device, state.usedBytes, true);
  return ok ? undefined : `queue ${state.index}: rings are not in mapped guest memory`;
}
