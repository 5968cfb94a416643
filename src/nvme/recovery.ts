/**
 * Recovery of an NVMe controller in a successor process (`muser run
 * --isolate`, DeviceSpec.onRecover) from the in-flight log its
 * predecessor left (inflight-log.ts), before the successor reads the
 * client:
 *
 *  1. the registers, and the configuration snapshot with every queue at
 *     the positions the log holds (not the checkpoint's: doorbells and
 *     fetches between checkpoints are in the log);
 *  2. each CQ's slots from the logged tail on: an entry whose phase tag is
 *     already the current phase was posted (the predecessor died before
 *     logging it): its command is done, the tail moves past it;
 *  3. every command taken and not posted is started again, oldest first,
 *     from its logged copy: reads and writes are idempotent; the admin
 *     command whose result the snapshot holds is completed with it (its
 *     effect is in the snapshot), any other is executed again (its effect
 *     is not); a held Asynchronous Event Request is held again, once;
 *  4. every queue is drained (a shadow doorbell may have moved without a
 *     ring), and every CQ raises its interrupt once: a spurious interrupt
 *     is harmless, a lost one hangs the driver.
 *
 * With I/O queues on worker threads all of it runs here, over every part
 * of the log, but for the I/O commands' restart: the threads get their
 * queues as recovered, then the slots to start again, and drain and
 * interrupt their queues themselves (RecoveryParts.handOver).
 */
import { AdminOpcode, Cc, Csts, Shutdown } from './constants.js';
import { CQE, SQE } from './layouts.js';
import type { ControllerCore } from './core.js';
import type { AsyncEvents } from './events.js';
import type { InflightLog, LoggedCommand } from './inflight-log.js';
import { then } from './maybe.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';
import { viewOf } from './shadow.js';
import { checkInt, checkObject, loadController, saveController, savedRegisters } from './state.js';

/** The result of the admin command a snapshot includes. */
interface AdminDone {
  seq: number;
  status: number;
  dw0: number;
}

/** The controller as recovery sees it. */
type Recovering = ControllerCore & { readonly events: AsyncEvents };

/** The parts recovery starts again. */
export interface RecoveryParts {
  /** Starts a logged command (SqFetcher.start). */
  start(sq: SubmissionQueue, bytes: Uint8Array, at: number, slot: number): Promise<void> | undefined;
  /** The admin queue fetches again once `running` settles. */
  resumeAfter(sq: SubmissionQueue, running: Promise<void>): void;
  /** Raises a completion queue's interrupt. */
  interrupt(vector: number): void;
  /** Finishes a shutdown the predecessor had started. */
  shutdown(): void;
  /** With queue threads: hands them their I/O queues, and the logged commands of `slots` to start again on them. */
  handOver?(slots: readonly number[]): void;
}

/** What a recovery found and did. */
export interface RecoveryReport {
  /** Completions the predecessor had posted but not logged. */
  posted: number;
  /** Commands started again. */
  restarted: number;
}

/**
 * The configuration as the log's snapshot holds it: the migration state
 * without what the log holds itself (completions waiting, held AERs), and
 * `done`, the result of the admin command whose effect it includes.
 */
export function configSnapshot(c: Recovering, done: AdminDone | null): string {
  return JSON.stringify({ ...saveController(c), pending: [], aers: [], done });
}

/**
 * Rebuilds the controller (fresh, at reset) from `log` and starts again
 * what its predecessor had in flight. Synchronous while the completion
 * queues have views; otherwise fetching waits until their slots were read.
 */
export function recoverController(c: Recovering, log: InflightLog, parts: RecoveryParts): RecoveryReport | Promise<RecoveryReport> {
  const regs = log.readRegisters();
  const text = log.readSnapshot();
  const saved = text === undefined ? undefined : checkObject(JSON.parse(text), 'snapshot');
  const report: RecoveryReport = { posted: 0, restarted: 0 };
  const setRegisters = (csts: number): void => {
    c.regs.aqa = regs.aqa;
    c.regs.asq = regs.asq;
    c.regs.acq = regs.acq;
    c.regs.intms = regs.intms;
    c.regs.cc = regs.cc;
    c.regs.csts = csts;
  };
  if (!(regs.cc & Cc.EN)) {
    // Disabled (or being disabled): nothing the predecessor started can write guest memory any more.
    setRegisters(0);
    log.clear();
    c.logRegisters();
    return report;
  }
  if (!saved || !(regs.csts & Csts.RDY)) {
    // Enable refused (CFS), or the predecessor died inside a disable whose CC write is served again.
    setRegisters(regs.csts);
    if (regs.csts & Csts.CFS) c.fatalReason = 'fatal before the process was replaced';
    return report;
  }
  const done = adminDone(saved.done);
  const shadowed = saved.dbbuf !== null;
  loadController(c, {
    ...saved,
    ...savedRegisters(regs),
    sqs: (saved.sqs as Record<string, unknown>[]).map((q) => {
      const id = q.id as number;
      const size = q.size as number;
      const head = log.sqFetched(id).head;
      // A shadowed SQ's tail is in the shadow buffer (read when it drains); otherwise the doorbell's.
      const written = log.sqTailWritten(id);
      return { ...q, head, tail: shadowed && id > 0 ? head : written < size ? written : head, outstanding: 0 };
    }),
    cqs: (saved.cqs as Record<string, unknown>[]).map((q) => {
      const p = log.cqPosition(q.id as number);
      return { ...q, tail: p.tail, phase: p.phase, head: p.head < (q.size as number) ? p.head : p.tail };
    }),
  });
  if (regs.csts & Csts.CFS) c.fatalReason = 'fatal before the process was replaced';
  // Commands the log holds: those their SQ's fetch word counts were taken; the others never were.
  const commands: LoggedCommand[] = [];
  for (const e of log.commands()) {
    const sq = c.sqs.get(e.sqid);
    if (!sq || e.seq > log.sqFetched(e.sqid).seq || !c.accepting) log.drop(e.slot);
    else commands.push(e);
  }
  if (!c.accepting) return report;
  // Nothing is fetched or posted until the CQ slots past the logged tails were read.
  c.paused = true;
  const scans = [...c.cqs.values()].map((cq) => scanPosted(c, log, cq, commands, report));
  const go = (): RecoveryReport => {
    c.paused = false;
    restart(c, log, parts, commands, done, report);
    return report;
  };
  if (scans.some((s) => s instanceof Promise)) return Promise.all(scans).then(go);
  return go();
}

/**
 * Moves CQ `cq`'s tail past the entries the predecessor posted without
 * logging them (their phase tag shows the current phase), and takes their
 * commands off `commands` (the oldest with that SQ id and command id).
 */
function scanPosted(c: Recovering, log: InflightLog, cq: CompletionQueue, commands: LoggedCommand[], report: RecoveryReport): void | Promise<void> {
  const view = c.memory.accessible() ? viewOf(c.memory, cq.base, cq.size * CQE.size, false) : undefined;
  const read = (tail: number): Uint8Array | Promise<Uint8Array> => (view ? view.subarray(tail * CQE.size, (tail + 1) * CQE.size) : c.memory.read(cq.base + tail * CQE.size, CQE.size));
  const step = (): void | Promise<void> => {
    if (cq.full) return;
    return then(read(cq.tail), (entry) => {
      const dv = new DataView(entry.buffer, entry.byteOffset, CQE.size);
      const dw3 = dv.getUint32(12, true);
      if (((dw3 >>> 16) & 1) !== cq.phase) return;
      const sqid = dv.getUint16(10, true);
      const cid = dw3 & 0xffff;
      const i = commands.findIndex((e) => e.sqid === sqid && cidOf(log, e.slot) === cid);
      if (i >= 0) {
        log.drop(commands[i].slot);
        commands.splice(i, 1);
      }
      cq.advance();
      log.cqTail(cq.id, cq.tail, cq.phase);
      report.posted++;
      return step();
    });
  };
  return step();
}

/** Starts the logged commands again, oldest first, then drains every queue and raises every interrupt once. */
function restart(c: Recovering, log: InflightLog, parts: RecoveryParts, commands: readonly LoggedCommand[], done: AdminDone | null, report: RecoveryReport): void {
  let adminRunning: Promise<void> | undefined;
  // I/O queues on threads are theirs: their stand-ins here neither start, drain nor post.
  const here = (q: { id: number }): boolean => !c.remote || q.id === 0;
  const handed: number[] = [];
  for (const e of commands) {
    const sq = c.sqs.get(e.sqid)!;
    const entry = log.entry(e.slot);
    report.restarted++;
    if (!here(sq)) {
      handed.push(e.slot);
      continue;
    }
    sq.outstanding++;
    if (sq.id === 0 && done?.seq === e.seq) {
      // Its effect is in the snapshot: complete it with its result (the snapshot written again keeps it).
      log.runningAdmin = e.slot;
      c.complete(sq, cidOf(log, e.slot), new DataView(entry.buffer, entry.byteOffset).getUint32(4, true), done.status, done.dw0, e.slot);
      continue;
    }
    const running = parts.start(sq, entry, 0, e.slot);
    if (running) adminRunning = running;
  }
  if (c.remote) parts.handOver?.(handed);
  for (const sq of c.sqs.values()) {
    if (!here(sq)) continue;
    if (sq.id === 0 && adminRunning) parts.resumeAfter(sq, adminRunning);
    else c.drain(sq);
  }
  for (const cq of c.cqs.values()) {
    if (!here(cq)) continue;
    c.flushCq(cq);
    if (cq.interruptsEnabled) parts.interrupt(cq.vector);
  }
  if (((c.regs.csts & Csts.SHST_MASK) >> Csts.SHST_SHIFT) === Shutdown.OCCURRING) parts.shutdown();
}

/** The snapshot's admin result, checked. */
function adminDone(v: unknown): AdminDone | null {
  if (v === null || v === undefined) return null;
  const d = checkObject(v, 'snapshot.done');
  return { seq: checkInt(d.seq, 1, Number.MAX_SAFE_INTEGER, 'done.seq'), status: checkInt(d.status, 0, 0x7fff, 'done.status'), dw0: checkInt(d.dw0, 0, 0xffffffff, 'done.dw0') };
}

function cidOf(log: InflightLog, slot: number): number {
  const e = log.entry(slot);
  return e[2] | (e[3] << 8);
}

/**
 * Writes the whole controller state into a cleared log (after a migration
 * loaded it): registers, queue positions, the snapshot, and the held
 * Asynchronous Event Requests as logged commands.
 */
export function relog(c: Recovering, log: InflightLog): void {
  log.clear();
  c.logRegisters();
  for (const cq of c.cqs.values()) {
    log.queueCreated(cq.id, false);
    log.cqTail(cq.id, cq.tail, cq.phase);
    log.cqHead(cq.id, cq.head);
  }
  for (const sq of c.sqs.values()) {
    log.queueCreated(sq.id, true);
    log.sqTail(sq.id, sq.tail);
  }
  const admin = c.sqs.get(0);
  if (admin) {
    for (const aer of c.events.aers) {
      const entry = new Uint8Array(SQE.size);
      entry[0] = AdminOpcode.ASYNC_EVENT_REQUEST;
      entry[2] = aer.cid & 0xff;
      entry[3] = aer.cid >> 8;
      aer.slot = log.taken(0, admin.head, entry, 0);
    }
  }
  for (const sq of c.sqs.values()) log.sqFetchedAt(sq.id, sq.head);
  log.writeSnapshot(configSnapshot(c, null));
}
