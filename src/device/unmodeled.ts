/**
 * Guest accesses that hit no register: offsets of a register map no entry
 * covers, config-space bytes nothing claims, and BARs with no callback or
 * memory for the access's direction. They read as zero and ignore writes,
 * so a driver touching a register the model lacks goes unnoticed unless
 * someone lists them: `muser run` prints this report when it stops.
 *
 * Only register-sized accesses (1, 2, 4 or 8 bytes) are counted: a larger
 * one is a dump (QEMU reads all of config space once at start, `muser
 * lspci` reads it in chunks), not a driver touching a register. The
 * register hot path never comes here; the map holds at most
 * {@link MAX_UNMODELED_PLACES} places, and counts accesses beyond them.
 */
import { CONFIG_REGION } from './regions.js';

/** Distinct places (region, offset, width, direction) listed one by one. */
export const MAX_UNMODELED_PLACES = 256;

/** Accesses wider than this are dumps, not register accesses, and are not counted. */
const REGISTER_ACCESS_MAX = 8;

/** Guest accesses, at one place, that no register served. */
export interface UnmodeledAccess {
  /** Region index: 0-5 the BARs, 7 config space, 9 and up device-specific regions. */
  region: number;
  /** `BAR0`, `config`, `region 9`. */
  where: string;
  /** Offset in the region of the bytes no register covers. */
  offset: number;
  /** How many bytes of the access no register covers (the whole access when none does). */
  width: number;
  op: 'read' | 'write';
  /** Accesses seen at this place. */
  count: number;
  /** When the first came, in milliseconds since the device was built (it started serving). */
  firstAtMs: number;
}

/** Every unmodeled access since the device was built. */
export interface UnmodeledReport {
  /** One entry per place, by region, then reads before writes, then offset. */
  accesses: UnmodeledAccess[];
  /** Accesses at places beyond the first {@link MAX_UNMODELED_PLACES}, counted but not listed. */
  otherAccesses: number;
}

/** The name of region `index` in reports: `BAR0`, `config`, `region 9`. */
export function regionLabel(index: number): string {
  if (index >= 0 && index <= 5) return `BAR${index}`;
  if (index === CONFIG_REGION) return 'config';
  return `region ${index}`;
}

/** Collects a device's unmodeled accesses (one per Device, for its whole life). */
export class UnmodeledAccesses {
  private readonly places = new Map<string, UnmodeledAccess>();
  private others = 0;
  private readonly since = performance.now();

  /**
   * @param mapRegions - which BAR each register map serves, so that a map
   *   reporting a gap ({@link gap}) is placed in its BAR
   */
  constructor(private readonly mapRegions: ReadonlyMap<object, number> = new Map()) {}

  /**
   * Counts `width` bytes at `offset` of region `region` that no register
   * serves, part of an access of `accessLength` bytes.
   */
  note(region: number, offset: number, width: number, accessLength: number, op: 'read' | 'write'): void {
    if (accessLength > REGISTER_ACCESS_MAX) return;
    const key = `${region}:${offset}:${width}:${op}`;
    const known = this.places.get(key);
    if (known) {
      known.count++;
    } else if (this.places.size >= MAX_UNMODELED_PLACES) {
      this.others++;
    } else {
      const firstAtMs = Math.round(performance.now() - this.since);
      this.places.set(key, { region, where: regionLabel(region), offset, width, op, count: 1, firstAtMs });
    }
  }

  /** A register map served as a BAR reports the part of an access no entry covers. */
  gap(map: object, offset: number, width: number, accessLength: number, op: 'read' | 'write'): void {
    const region = this.mapRegions.get(map);
    if (region !== undefined) this.note(region, offset, width, accessLength, op);
  }

  /** What was seen so far (copies). */
  report(): UnmodeledReport {
    const accesses = [...this.places.values()]
      .map((a) => ({ ...a }))
      .sort((a, b) => a.region - b.region || a.op.localeCompare(b.op) || a.offset - b.offset || a.width - b.width);
    return { accesses, otherAccesses: this.others };
  }

  /** Forgets everything seen so far. */
  clear(): void {
    this.places.clear();
    this.others = 0;
  }
}

/**
 * The report as text, or '' when there is nothing to report:
 *
 *     unmodeled accesses of mydev (no register there: reads returned zero, writes were ignored):
 *       BAR0 0x10 w4 read ×12 (first at +1.2 s)
 */
export function formatUnmodeled(deviceName: string, report: UnmodeledReport): string {
  if (report.accesses.length === 0 && report.otherAccesses === 0) return '';
  const lines = [`unmodeled accesses of ${deviceName} (no register there: reads returned zero, writes were ignored):`];
  for (const run of sweeps(report.accesses)) {
    const a = run[0];
    const first = `first at +${(Math.min(...run.map((r) => r.firstAtMs)) / 1000).toFixed(1)} s`;
    if (run.length === 1) {
      lines.push(`  ${a.where} 0x${a.offset.toString(16)} w${a.width} ${a.op} ×${a.count} (${first})`);
    } else {
      const end = run[run.length - 1].offset + a.width - 1;
      lines.push(`  ${a.where} 0x${a.offset.toString(16)}-0x${end.toString(16)} w${a.width} ${a.op} ×${a.count} each (${run.length} places, ${first})`);
    }
  }
  if (report.otherAccesses > 0) {
    lines.push(`  and ${report.otherAccesses} more at other places (only the first ${MAX_UNMODELED_PLACES} places are listed)`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * Groups places into runs of back-to-back offsets read or written alike
 * (same region, direction, width and count): a sweep, such as a guest
 * dumping config space a dword at a time, is one line, not 48.
 */
function sweeps(accesses: readonly UnmodeledAccess[]): UnmodeledAccess[][] {
  const runs: UnmodeledAccess[][] = [];
  for (const a of accesses) {
    const run = runs[runs.length - 1];
    const last = run?.[run.length - 1];
    const continues = last && last.region === a.region && last.op === a.op && last.width === a.width && last.count === a.count && last.offset + last.width === a.offset;
    if (continues) run.push(a);
    else runs.push([a]);
  }
  return runs;
}
