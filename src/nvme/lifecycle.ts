/**
 * The CC / CSTS state machine (NVMe 1.4, 7.6): enable (checks the admin
 * queue settings, builds the admin queue pair, sets CSTS.RDY), disable and
 * controller reset (abandon the commands in flight, and CSTS.RDY clears only
 * once none of them can write guest memory), shutdown (finish, flush,
 * report SHST complete), and the controller fatal status.
 */
import { Cc, Csts, Shutdown } from './constants.js';
import { CQE, SQE } from './layouts.js';
import type { ControllerCore } from './core.js';
import type { AsyncEvents } from './events.js';
import { CompletionQueue, SubmissionQueue } from './queues.js';
import { defaultFeatures } from './types.js';

/** The CC/CSTS machine of one controller. */
export class ControllerLifecycle {
  constructor(
    private readonly c: ControllerCore,
    private readonly events: AsyncEvents,
  ) {}

  /** A host write of CC: `v` is stored, `before` the value it replaced. */
  writeCc(v: number, before: number): void {
    const wasEnabled = (before & Cc.EN) !== 0;
    const enabled = (v & Cc.EN) !== 0;
    if (wasEnabled && !enabled) {
      this.disable();
      return;
    }
    if (!wasEnabled && enabled) {
      this.enable();
      return;
    }
    const shn = (v >> Cc.SHN_SHIFT) & 3;
    const prevShn = (before >> Cc.SHN_SHIFT) & 3;
    if (enabled && shn !== Shutdown.NONE && prevShn === Shutdown.NONE) this.shutdown();
  }

  private enable(): void {
    const c = this.c;
    const regs = c.regs;
    const problem = this.enableProblem();
    if (problem) {
      this.fatal(`enable refused: ${problem}`);
      return;
    }
    // A host that re-enables before RDY cleared still starts from nothing: commands of the old session are dropped.
    c.epoch++;
    this.clearQueues();
    const acqs = ((regs.aqa >> 16) & 0xfff) + 1;
    const asqs = (regs.aqa & 0xfff) + 1;
    const cq = new CompletionQueue(0, Number(regs.acq), acqs, true, 0);
    const sq = new SubmissionQueue(0, Number(regs.asq), asqs, cq);
    cq.sqs.add(sq);
    c.cqs.set(0, cq);
    c.sqs.set(0, sq);
    regs.csts = Csts.RDY;
    // A new session of the log: the admin queues, and the registers once the CC write is stored.
    const log = c.log;
    if (log) {
      log.clear();
      log.queueCreated(0, true);
      log.queueCreated(0, false);
      c.logConfig();
    }
  }

  /** What is wrong with the admin queue settings or CC, if anything. */
  private enableProblem(): string | undefined {
    const { aqa, asq, acq, cc } = this.c.regs;
    const asqs = aqa & 0xfff;
    const acqs = (aqa >> 16) & 0xfff;
    if (asqs < 1 || acqs < 1) return `AQA 0x${aqa.toString(16)} gives an admin queue of fewer than 2 entries`;
    if (asq & 0xfffn || acq & 0xfffn) return 'ASQ or ACQ is not page aligned';
    if (asq > BigInt(Number.MAX_SAFE_INTEGER) || acq > BigInt(Number.MAX_SAFE_INTEGER)) return 'ASQ or ACQ is out of range';
    if ((cc >> Cc.CSS_SHIFT) & 7) return 'CC.CSS selects a command set other than NVM';
    if ((cc >> Cc.MPS_SHIFT) & 0xf) return 'CC.MPS selects a page size other than 4 KiB';
    if ((cc >> Cc.AMS_SHIFT) & 7) return 'CC.AMS selects an arbitration other than round robin';
    if (!this.c.memory.mapped(Number(asq), (asqs + 1) * SQE.size, false)) return 'the admin submission queue is not in mapped memory';
    if (!this.c.memory.mapped(Number(acq), (acqs + 1) * CQE.size, true)) return 'the admin completion queue is not in writable mapped memory';
    return undefined;
  }

  /** CC.EN 1 -> 0: stop, wait until abandoned commands cannot write guest memory (CSTS.RDY stays set until then), then forget everything. */
  private disable(): void {
    const c = this.c;
    const epoch = c.epoch + 1;
    // What was in flight is abandoned: a successor must not start it again.
    c.log?.clear();
    void this.abandonCommands().then(() => {
      if (c.epoch !== epoch || c.regs.cc & Cc.EN) return;
      this.clearQueues();
      c.regs.csts = 0;
      c.fatalReason = undefined;
      c.logRegisters();
    });
  }

  /** CC.SHN: stop fetching, finish commands in flight, flush, report shutdown complete (also: one a predecessor process began). */
  shutdown(): void {
    const c = this.c;
    c.regs.csts = (c.regs.csts & ~Csts.SHST_MASK) | (Shutdown.OCCURRING << Csts.SHST_SHIFT);
    c.logRegisters();
    const epoch = c.epoch;
    // Commands on queue threads finish too.
    void Promise.all([c.whenIdle(), c.remote?.idle()])
      .then(async () => {
        for (const ns of c.config.namespaces) if (ns.capabilities.flush) await Promise.resolve().then(() => ns.disk.flush()).catch(() => undefined);
      })
      .then(() => {
        if (c.epoch !== epoch) return;
        c.regs.csts = (c.regs.csts & ~Csts.SHST_MASK) | (Shutdown.COMPLETE << Csts.SHST_SHIFT);
        c.logRegisters();
      });
  }

  /**
   * The one way commands in flight are abandoned (CC.EN cleared, a
   * controller reset): stop the queues, then resolve once none of the
   * commands can write guest memory any more.
   */
  private async abandonCommands(): Promise<void> {
    const threads = this.stopQueues();
    await Promise.all([this.c.host.settleAbandoned(this.c.whenIdle()), threads]);
  }

  /**
   * Stops fetching and abandons what waits (AERs, pending completions); the
   * epoch drops late completions. Queue threads drop theirs: the Promise
   * resolves once their commands cannot write guest memory.
   */
  private stopQueues(): Promise<void> | undefined {
    const c = this.c;
    c.epoch++;
    for (const sq of [...c.sqs.values(), ...c.deleting]) {
      sq.dead = true;
      sq.wakeIdle();
    }
    for (const cq of c.cqs.values()) cq.pending.length = 0;
    this.events.abandonRequests();
    return c.remote?.abandon();
  }

  private clearQueues(): void {
    const c = this.c;
    c.sqs.clear();
    c.cqs.clear();
    c.shadow.buffers = undefined;
    c.features = defaultFeatures(c.volatileWriteCache);
    this.events.clear();
  }

  /**
   * Power-on reset (FLR, a client's DEVICE_RESET, disconnect): registers
   * back to their reset values at once; commands still in the backend are
   * abandoned (their completions and copies dropped). Resolves once none
   * of them can write guest memory: the reset's reply waits for that.
   */
  reset(): Promise<void> {
    const c = this.c;
    const abandoned = this.abandonCommands();
    this.clearQueues();
    c.regs.reset();
    c.fatalReason = undefined;
    this.events.errors.length = 0;
    c.health.powerCycles++;
    c.log?.clear();
    c.logRegisters();
    return abandoned;
  }

  /** Sets CSTS.CFS and stops every queue until the host resets the controller. */
  fatal(reason: string): void {
    const c = this.c;
    if (c.regs.csts & Csts.CFS) return;
    c.fatalReason = reason;
    c.host.logFatal?.(reason);
    c.regs.csts |= Csts.CFS;
    c.logRegisters();
    void this.stopQueues();
  }
}
