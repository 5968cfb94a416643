/**
 * `muser trace --stats`: region accesses per place (region, offset, width,
 * direction), as seen on the wire. The proxy sees neither the register
 * table nor which accesses hit no register (`muser run` reports those when
 * it stops); it sees how often each place is touched, which ones the device
 * refused, and which values reads returned. A read that came back thousands
 * of times with one value is a driver polling for a bit the device never
 * sets; a place with errors is one the model refuses.
 *
 * REGION_WRITE_MULTI is counted per command only (stats.ts), not per place.
 */
import { regionLabel } from '../../device/unmodeled.js';
import type { TraceEvent } from './decode.js';

/** Distinct places kept; accesses at others are counted in `otherAccesses`. */
export const MAX_TRACED_PLACES = 256;
/** Distinct values kept per place. */
const MAX_VALUES = 4;
/** Places shown in the text table (busiest first). */
const SHOWN_PLACES = 32;
/** Requests waiting for their reply, at most (a client that never reads replies cannot grow it). */
const MAX_WAITING = 4096;

/** The accesses at one place. */
export interface PlaceStats {
  region: number;
  offset: number;
  width: number;
  op: 'read' | 'write';
  /** Requests seen. */
  count: number;
  /** Error replies. */
  errors: number;
  /** Seconds since the proxy started, of the first request. */
  firstT: number;
  /** Reads: the distinct values returned (little-endian numbers in hex), the first {@link MAX_VALUES}. */
  values?: string[];
  /** Reads: true when more distinct values came than `values` holds. */
  moreValues?: boolean;
}

/** Every place, busiest first, and the accesses beyond the places kept. */
export interface AccessSummary {
  places: PlaceStats[];
  otherAccesses: number;
}

/** Collects region accesses from trace events. */
export class AccessStats {
  private readonly places = new Map<string, PlaceStats>();
  private others = 0;
  /** Requests waiting for their reply: `conn:msgId` to their place (undefined when not kept). */
  private readonly waiting = new Map<string, PlaceStats | undefined>();

  add(e: TraceEvent): void {
    if (e.command !== 'region_read' && e.command !== 'region_write') return;
    const key = `${e.conn ?? 0}:${e.msgId}`;
    if (e.type === 'request') {
      if (e.dir !== 'c>s') return;
      const place = this.count(e);
      if (!e.noReply && this.waiting.size < MAX_WAITING) this.waiting.set(key, place);
      return;
    }
    if (!this.waiting.has(key)) return;
    const place = this.waiting.get(key);
    this.waiting.delete(key);
    if (!place) return;
    if (e.errno !== undefined) place.errors++;
    else if (place.op === 'read') noteValue(place, e.fields.data, e.fields.dataLength);
  }

  summary(): AccessSummary {
    const places = [...this.places.values()]
      .map((p) => ({ ...p, ...(p.values ? { values: [...p.values] } : {}) }))
      .sort((a, b) => b.count - a.count || a.region - b.region || a.offset - b.offset);
    return { places, otherAccesses: this.others };
  }

  /** The busiest places as an aligned table ('' when no region access passed). */
  format(): string {
    const { places, otherAccesses } = this.summary();
    if (places.length === 0) return '';
    const head = `${'region access'.padEnd(26)}${'count'.padStart(9)}${'errors'.padStart(8)}${'first s'.padStart(10)}  values read`;
    const rows = places.slice(0, SHOWN_PLACES).map((p) => {
      const where = `${regionLabel(p.region)} 0x${p.offset.toString(16)} w${p.width} ${p.op}`;
      const values = p.values === undefined ? '' : p.values.length === 1 && !p.moreValues ? `always ${p.values[0]}` : `${p.values.join(' ')}${p.moreValues ? ' ...' : ''}`;
      return `${where.padEnd(26)}${String(p.count).padStart(9)}${String(p.errors).padStart(8)}${p.firstT.toFixed(3).padStart(10)}  ${values}`.trimEnd();
    });
    const hidden = places.slice(SHOWN_PLACES).reduce((n, p) => n + p.count, 0) + otherAccesses;
    if (hidden > 0) rows.push(`and ${hidden} more accesses at other places`);
    return [head, ...rows].join('\n') + '\n';
  }

  /** Counts a request at its place; the place, or undefined when places are full. */
  private count(e: TraceEvent): PlaceStats | undefined {
    const { region, offset, count } = e.fields;
    if (typeof region !== 'number' || typeof offset !== 'string' || typeof count !== 'number') return undefined;
    const op = e.command === 'region_read' ? 'read' : 'write';
    const key = `${region}:${offset}:${count}:${op}`;
    let place = this.places.get(key);
    if (!place) {
      if (this.places.size >= MAX_TRACED_PLACES) {
        this.others++;
        return undefined;
      }
      place = { region, offset: Number(offset), width: count, op, count: 0, errors: 0, firstT: e.t };
      this.places.set(key, place);
    }
    place.count++;
    return place;
  }
}

/** Records a read's value (when the trace kept all of its bytes). */
function noteValue(place: PlaceStats, data: unknown, length: unknown): void {
  if (typeof data !== 'string' || typeof length !== 'number' || length > 8 || data.length !== length * 2) return;
  const value = `0x${BigInt(`0x${Buffer.from(data, 'hex').reverse().toString('hex') || '0'}`).toString(16)}`;
  place.values ??= [];
  if (place.values.includes(value)) return;
  if (place.values.length < MAX_VALUES) place.values.push(value);
  else place.moreValues = true;
}
