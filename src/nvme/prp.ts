/**
 * Physical Region Page transfers (NVMe 1.4, 4.3): PRP1 and PRP2, PRP lists
 * chained across pages. Every address is checked against the client's DMA
 * maps before any data moves; offsets must follow the spec's alignment
 * rules; a list that returns to a page it already used is refused, so no
 * driver can make the walk loop. Data then moves through zero-copy views
 * (pinned while the backend uses them) or through copies where the memory
 * offers no views.
 */
import type { GuestSpan, QueueMemory } from '../device/queue-memory.js';
import { emptySpan } from '../device/dma-access.js';
import type { SpanCache } from '../device/span-cache.js';
import { CommandError } from './command.js';
import { PAGE_SIZE, Status } from './constants.js';

/** One contiguous piece of guest memory. */
export interface GuestRange {
  addr: number;
  len: number;
}

function address(v: number | bigint, what: string): number {
  if (v > Number.MAX_SAFE_INTEGER) throw new CommandError(Status.DATA_TRANSFER_ERROR, `${what} 0x${v.toString(16)} is beyond any mapping`);
  return Number(v);
}

/**
 * One walk over PRP1/PRP2 and their lists, resumable so that the same
 * checks serve the synchronous fast path (list pages read through views)
 * and the asynchronous path (list pages copied, maybe by message): while
 * not `done`, step() takes the `needLength` bytes of PRP list at `needAt`
 * (finish() does that loop). Every data
 * range is checked against the DMA maps as it is added; with `collectViews`
 * the check is taking its zero-copy views, kept in `views` (undefined once
 * a range has none).
 */
export class PrpWalk {
  /** Views of every range in order, while all of them have views (collectViews only). */
  views: Uint8Array[] | undefined;
  /** Where the next step() needs PRP list bytes (while not done). */
  needAt = 0;
  needLength = 0;
  private left = 0;
  private list = 0;
  private visited: Set<number> | undefined;
  /** Still collecting views (collectViews, and every range so far had views). */
  private collecting = false;
  /** The ranges, adjacent pieces merged: the first one as numbers, any others listed (no allocation for one). */
  private firstAddr = 0;
  private firstLen = 0;
  private more: GuestRange[] | undefined;

  /** A region cache good while the constructor runs (PRP1 and PRP2), never for list pages taken later. */
  private spans: SpanCache | undefined;

  /**
   * `write`: the controller writes guest memory (a Read command). Throws
   * {@link CommandError} for PRP1 and PRP2 problems. `spans`: the caller's
   * region cache, when this runs within a synchronous stretch it clears.
   */
  constructor(
    private readonly mem: QueueMemory,
    prp1: number | bigint,
    prp2: number | bigint,
    length: number,
    private readonly write: boolean,
    collectViews: boolean,
    spans?: SpanCache,
  ) {
    this.spans = spans;
    this.begin(prp1, prp2, length, collectViews);
    this.spans = undefined;
  }

  private begin(prp1: number | bigint, prp2: number | bigint, length: number, collectViews: boolean): void {
    this.collecting = collectViews;
    if (collectViews) this.views = length === 0 ? [] : undefined;
    if (length === 0) return;
    const first = address(prp1, 'PRP1');
    if (first % 4 !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP1 is not dword aligned');
    const firstLen = Math.min(length, PAGE_SIZE - (first % PAGE_SIZE));
    this.add(first, firstLen);
    const left = length - firstLen;
    if (left === 0) return;
    const second = address(prp2, 'PRP2');
    if (left <= PAGE_SIZE) {
      if (second % PAGE_SIZE !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP2 data pointer is not page aligned');
      this.add(second, left);
      return;
    }
    // PRP2 points to a list; each list page's last entry chains to the next page while more entries remain.
    if (second % 8 !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP list pointer is not qword aligned');
    this.left = left;
    this.list = second;
    this.visited = new Set();
    this.enterList();
  }

  /** True once every range is known. */
  get done(): boolean {
    return this.left === 0;
  }

  /** The guest ranges, adjacent pieces merged (a new array). */
  get ranges(): GuestRange[] {
    if (this.firstLen === 0) return [];
    const first = { addr: this.firstAddr, len: this.firstLen };
    return this.more ? [first, ...this.more.map((r) => ({ ...r }))] : [first];
  }

  /** Checks the next list page and says which bytes of it are needed. */
  private enterList(): void {
    const list = this.list;
    const page = Math.floor(list / PAGE_SIZE);
    if (this.visited!.has(page)) throw new CommandError(Status.INVALID_FIELD, `PRP list returns to page 0x${(page * PAGE_SIZE).toString(16)}`);
    this.visited!.add(page);
    const slots = (PAGE_SIZE - (list % PAGE_SIZE)) / 8;
    const needed = Math.ceil(this.left / PAGE_SIZE);
    const take = needed <= slots ? needed : slots; // the last slot chains when more are needed
    if (!this.mem.mapped(list, take * 8, false)) throw new CommandError(Status.DATA_TRANSFER_ERROR, `PRP list at 0x${list.toString(16)} is not mapped`);
    this.needAt = list;
    this.needLength = take * 8;
  }

  /** Takes the `needLength` bytes of PRP list asked for at `needAt` (while not done). */
  step(bytes: Uint8Array): void {
    const take = this.needLength / 8;
    const view = new DataView(bytes.buffer, bytes.byteOffset, this.needLength);
    const needed = Math.ceil(this.left / PAGE_SIZE);
    const dataEntries = needed <= take ? take : take - 1;
    for (let i = 0; i < dataEntries; i++) {
      const entry = address(view.getBigUint64(i * 8, true), 'PRP entry');
      if (entry % PAGE_SIZE !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, `PRP entry ${i} is not page aligned`);
      const len = Math.min(this.left, PAGE_SIZE);
      this.add(entry, len);
      this.left -= len;
    }
    if (this.left > 0) {
      const next = address(view.getBigUint64((take - 1) * 8, true), 'PRP list chain');
      if (next % PAGE_SIZE !== 0) throw new CommandError(Status.PRP_OFFSET_INVALID, 'PRP list chain pointer is not page aligned');
      this.list = next;
      this.enterList();
    }
  }

  private add(addr: number, len: number): void {
    if (this.collecting) {
      // Taking the views is the mapping check: they throw exactly where mapped() is false.
      // Nearly always one view of one region: taken without the arrays of views().
      let one: Uint8Array | undefined;
      let v: Uint8Array[] | undefined;
      try {
        // locate() and the view inline: a view() wrapper around them measured 30-40 ns more per command.
        const spans = this.spans;
        one = spans ? (spans.locate(this.mem, addr, len, this.write, span) ? span.memory.subarray(span.offset, span.offset + len) : undefined) : this.mem.view(addr, len, this.write);
        if (!one) v = this.mem.views(addr, len, this.write);
      } catch {
        throw this.unmapped(addr, len);
      }
      const views = this.views;
      if (one) {
        if (views) views.push(one);
        else this.views = [one];
      } else if (v) {
        if (views) for (const x of v) views.push(x);
        else this.views = v;
      } else {
        this.collecting = false;
        this.views = undefined;
      }
    } else if (!this.mem.mapped(addr, len, this.write)) {
      throw this.unmapped(addr, len);
    }
    this.addRange(addr, len);
  }

  private addRange(addr: number, len: number): void {
    if (this.firstLen === 0) {
      this.firstAddr = addr;
      this.firstLen = len;
      return;
    }
    const more = this.more;
    if (!more) {
      if (this.firstAddr + this.firstLen === addr) this.firstLen += len;
      else this.more = [{ addr, len }];
      return;
    }
    const last = more[more.length - 1];
    if (last.addr + last.len === addr) last.len += len;
    else more.push({ addr, len });
  }

  private unmapped(addr: number, len: number): CommandError {
    return new CommandError(Status.DATA_TRANSFER_ERROR, `data at 0x${addr.toString(16)}+${len} is not mapped ${this.write ? 'writable' : 'readable'}`);
  }

  /**
   * Finishes the walk: list pages are read through their views where they
   * have one (at once, returning undefined), else copied out of guest
   * memory (by mapping or by message; the walk then goes on when the copy
   * arrives, and the returned Promise settles when it is done).
   */
  finish(): Promise<void> | undefined {
    while (this.left > 0) {
      let v: Uint8Array[] | undefined;
      try {
        v = this.mem.views(this.needAt, this.needLength, false);
      } catch (e) {
        throw listUnreadable(e);
      }
      if (!v || v.length !== 1) {
        return this.mem.read(this.needAt, this.needLength).then(
          (bytes) => {
            this.step(bytes);
            return this.finish();
          },
          (e: unknown) => {
            throw listUnreadable(e);
          },
        );
      }
      this.step(v[0]);
    }
    return undefined;
  }
}

function listUnreadable(e: unknown): CommandError {
  return new CommandError(Status.DATA_TRANSFER_ERROR, `cannot read the PRP list: ${(e as Error).message}`);
}

/**
 * The guest ranges a transfer of `length` bytes described by PRP1/PRP2
 * covers. `write`: the controller writes guest memory (a Read command).
 */
export async function walkPrps(mem: QueueMemory, prp1: number | bigint, prp2: number | bigint, length: number, write: boolean): Promise<GuestRange[]> {
  const walk = new PrpWalk(mem, prp1, prp2, length, write, false);
  await walk.finish();
  return walk.ranges;
}

function transferError(e: unknown): CommandError {
  if (e instanceof CommandError) return e;
  return new CommandError(Status.DATA_TRANSFER_ERROR, `guest memory: ${(e as Error).message}`);
}

/**
 * Lends the ranges to `io` as buffers: views of guest memory when every
 * range offers them (pinned until `io` settles), otherwise one bounce
 * buffer copied in before (`write` false) or out after (`write` true).
 * Guest memory failures become Data Transfer Error. `taken`: the views of
 * the ranges, already taken in this turn of the event loop. `abandoned`:
 * true once a reset abandoned the command (a bounce buffer is then not
 * copied out).
 */
export async function withGuestBuffers(mem: QueueMemory, ranges: readonly GuestRange[], write: boolean, io: (buffers: Uint8Array[]) => Promise<void>, taken?: Uint8Array[], abandoned?: () => boolean): Promise<void> {
  // `taken`: views of the ranges made in this same turn (by a PRP walk), not to be taken again.
  const views: Uint8Array[] = taken ?? [];
  let direct = true;
  try {
    for (const r of taken ? [] : ranges) {
      const v = mem.views(r.addr, r.len, write);
      if (!v) {
        direct = false;
        break;
      }
      views.push(...v);
    }
  } catch (e) {
    throw transferError(e);
  }
  if (direct) {
    const unpins = ranges.map((r) => mem.pin(r.addr, r.len));
    try {
      await io(views);
    } finally {
      for (const u of unpins) u();
    }
    return;
  }
  const bounce = write ? new Uint8Array(ranges.reduce((n, r) => n + r.len, 0)) : await copyFromGuest(mem, ranges);
  await io([bounce]);
  if (write && !abandoned?.()) await copyToGuest(mem, ranges, bounce);
}

/** Copies `data` into the ranges (for controller-generated data such as Identify). */
export async function copyToGuest(mem: QueueMemory, ranges: readonly GuestRange[], data: Uint8Array): Promise<void> {
  let at = 0;
  try {
    for (const r of ranges) {
      if (at >= data.length) break;
      const n = Math.min(r.len, data.length - at);
      await mem.write(r.addr, data.subarray(at, at + n));
      at += n;
    }
  } catch (e) {
    throw transferError(e);
  }
}

/** Copies the ranges out of guest memory. */
export async function copyFromGuest(mem: QueueMemory, ranges: readonly GuestRange[]): Promise<Uint8Array> {
  const total = ranges.reduce((n, r) => n + r.len, 0);
  const out = new Uint8Array(total);
  let at = 0;
  try {
    for (const r of ranges) {
      out.set(await mem.read(r.addr, r.len), at);
      at += r.len;
    }
  } catch (e) {
    throw transferError(e);
  }
  return out;
}

/** Where the region cache found a range (module scratch: set and used synchronously). */
const span: GuestSpan = emptySpan();
