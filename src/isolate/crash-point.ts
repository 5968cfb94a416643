/**
 * Test-only kill points of the isolated child (reading the client, queuing a reply, sending a predecessor's). With MUSER_READ_CRASH_AT set to
 * a file's path, the child reads that file at each named point; when it
 * holds `<point>` or `<point>:<passes>`, the point lets `passes` passes by
 * (counting down in the file), then deletes the file and SIGKILLs its own
 * process there. One kill per arming, whichever child reaches it.
 *
 * Without MUSER_READ_CRASH_AT (always, outside tests) a point costs one test of
 * a constant.
 */
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';

/**
 * Where the child can be killed while it reads the client:
 * - `peeked`: bytes peeked from the socket, not in the journal yet;
 * - `journaled`: in the journal, the consume not announced;
 * - `consuming`: the consume announced (journal's rxConsuming), not done;
 * - `discarded`: the bytes consumed from the socket, rxConsumedTo not advanced;
 * - `consumed`: rxConsumedTo advanced, rxConsuming not cleared;
 * - `reply-queued`: a reply went into the tx log (the kernel did not take it whole), the rx log not yet advanced past its request;
 * - `resending`: a successor about to send its predecessor's unsent replies (the tx log).
 */
export type CrashPoint = 'peeked' | 'journaled' | 'consuming' | 'discarded' | 'consumed' | 'reply-queued' | 'resending';

const ARM = process.env.MUSER_READ_CRASH_AT || undefined;

/** True when kill points are armed in this process (a test set MUSER_READ_CRASH_AT). */
export const crashPointsArmed = ARM !== undefined;

/** Kills this process if the test armed `point` (call only when {@link crashPointsArmed}). */
export function crashPoint(point: CrashPoint): void {
  if (!ARM || !existsSync(ARM)) return;
  const [want, passes] = readFileSync(ARM, 'utf8').trim().split(':');
  if (want !== point) return;
  if (Number(passes) > 0) return void writeFileSync(ARM, `${want}:${Number(passes) - 1}`);
  unlinkSync(ARM);
  process.kill(process.pid, 'SIGKILL');
}
