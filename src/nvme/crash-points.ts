/**
 * Named crash points of the NVMe in-flight log, for tests of crash
 * recovery on every thread that logs (the main thread and the queue
 * threads): with `MUSER_NVME_CRASH_ARM` naming a file, a process whose
 * thread reaches a point the file names (`<point>:<passes>`) lets
 * `passes` passes by (counting the file down), then deletes the file and
 * kills itself (SIGKILL). Unset (the usual case), the ordinary
 * {@link InflightLog} is used and nothing here runs. Points:
 *
 *  - `half-logged`: a command's entry is written, its SQ's fetch word not yet;
 *  - `taken`: a command is logged, not yet started;
 *  - `cqe-written`: a CQE is in guest memory, the log not told;
 *  - `entry-freed`: the entry is freed, the CQ's tail not logged yet.
 */
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { InflightLog } from './inflight-log.js';

const ARM = process.env.MUSER_NVME_CRASH_ARM || undefined;

/** Part `part` of `parts` of the log over `area` (see InflightLog): the ordinary one, or one that dies where the arm file says. */
export function inflightLogOver(area: Uint8Array, queues: number, entries: number, part: number, parts: number): InflightLog {
  return ARM ? new CrashingInflightLog(area, queues, entries, part, parts) : new InflightLog(area, queues, entries, part, parts);
}

function at(point: string): void {
  if (!ARM || !existsSync(ARM)) return;
  let armed: string;
  try {
    armed = readFileSync(ARM, 'utf8');
  } catch {
    return; // Another thread fired it meanwhile.
  }
  const [want, passes] = armed.split(':');
  if (want !== point) return;
  if (Number(passes) > 0) {
    try {
      // In place ('r+', padded to its length): a thread counting down never brings back a file another one deleted as it fired.
      writeFileSync(ARM, `${want}:${Number(passes) - 1}`.padEnd(armed.length), { flag: 'r+' });
    } catch {
      // Fired meanwhile.
    }
    return;
  }
  try {
    unlinkSync(ARM);
  } catch {
    // Fired by another thread: dying twice is the same.
  }
  process.kill(process.pid, 'SIGKILL');
}

/** The log with crash points between its steps (the same stores, in the same order). */
class CrashingInflightLog extends InflightLog {
  protected override entryWritten(): void {
    at('half-logged');
  }

  override taken(sqid: number, head: number, bytes: Uint8Array, at_: number): number {
    const slot = super.taken(sqid, head, bytes, at_);
    at('taken');
    return slot;
  }

  override posted(slot: number, cqid: number, tail: number, phase: number): void {
    at('cqe-written');
    super.posted(slot, cqid, tail, phase);
  }

  protected override freed(slot: number): void {
    super.freed(slot);
    at('entry-freed');
  }
}
