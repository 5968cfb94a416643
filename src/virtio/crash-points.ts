/**
 * Named crash points of the inflight log, for tests of crash recovery
 * (`MUSER_CRASH_AT`): the process kills itself at a point of the take or
 * publish sequence, between two of the log's stores or between the log and
 * guest memory. Off (the environment variable unset, the usual case), the
 * ordinary {@link InflightLog} is used and nothing here runs.
 *
 *     MUSER_CRASH_AT=<point>[@<n>]:<marker file>
 *
 * kills the process the n-th time (default 1) it reaches `point`, unless
 * the marker file exists (it is created first: a successor, which inherits
 * the environment, does not die there again). Points:
 *
 *  - `take`: the entry is written, lastAvail not yet;
 *  - `taken`: the chain is logged, not yet handed to the device;
 *  - `elements`: the used elements are in guest memory, the publish intent not yet;
 *  - `intent`: the intent is recorded, no head cleared yet;
 *  - `clearing`: the first head of the publish is cleared, the rest not yet;
 *  - `index`: the log is done with the publish, used->idx not written yet;
 *  - `clear`: a reset cleared the log; the reset's request is not answered (nor checkpointed) yet.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { InflightLog, LAST_AVAIL, TAKEN } from './inflight-log.js';

/** The points where a process may be made to die. */
export type CrashPoint = 'take' | 'taken' | 'elements' | 'intent' | 'clearing' | 'index' | 'clear';

const POINTS: readonly CrashPoint[] = ['take', 'taken', 'elements', 'intent', 'clearing', 'index', 'clear'];

/** The crash asked for by the environment, if any (read once). */
const asked = parse(process.env.MUSER_CRASH_AT);

function parse(v: string | undefined): { point: CrashPoint; nth: number; marker: string } | undefined {
  if (!v) return undefined;
  const m = /^([a-z]+)(?:@(\d+))?:(.+)$/.exec(v);
  if (!m || !POINTS.includes(m[1] as CrashPoint)) throw new RangeError(`MUSER_CRASH_AT must be <point>[@<n>]:<marker file> with a point among ${POINTS.join(', ')}, got ${JSON.stringify(v)}`);
  return { point: m[1] as CrashPoint, nth: m[2] ? Number(m[2]) : 1, marker: m[3] };
}

/** A queue's inflight log over `area`: the ordinary one, or one that dies where MUSER_CRASH_AT says. */
export function inflightLog(area: Uint8Array, maxSize: number, where?: { fd: number; offset: number }): InflightLog {
  return asked ? new CrashingInflightLog(area, maxSize, where) : new InflightLog(area, maxSize, where);
}

let reached = 0;

function at(point: CrashPoint): void {
  if (!asked || asked.point !== point || ++reached !== asked.nth || existsSync(asked.marker)) return;
  writeFileSync(asked.marker, point);
  process.kill(process.pid, 'SIGKILL');
}

/** The log with crash points between its steps (the same stores, in the same order). */
class CrashingInflightLog extends InflightLog {
  private clearing = false;

  override take(head: number, at_: number): void {
    this.entries[head] = TAKEN | at_;
    at('take');
    this.header[LAST_AVAIL] = (at_ + 1) & 0xffff;
    at('taken');
  }

  override publishing(to: number): void {
    at('elements');
    super.publishing(to);
    at('intent');
    this.clearing = true;
  }

  override completed(head: number): void {
    super.completed(head);
    if (this.clearing) at('clearing');
    this.clearing = false;
  }

  override published(): void {
    super.published();
    at('index');
  }

  override clear(): void {
    const live = this.live;
    super.clear();
    if (live) at('clear');
  }
}
