/**
 * What VFIO owns of a device's interrupts: per IRQ index, the client's
 * eventfds and the SET_IRQS mask bit of each vector, the INTx automask and
 * resample fd, and INTx's pending bit. MSI and MSI-X pending bits and the
 * config-space masks belong to the PCI model (PBA, MSI pending register);
 * {@link Device} combines both and owns the trigger and unmask paths.
 * The index that last received trigger eventfds among INTx, MSI and MSI-X
 * is the active interrupt mode; INTx is automasked after each signal.
 */
import { native, PollEvent, PollMode, type PollHandle } from '../native/index.js';
import { IrqIndex } from '../protocol/constants.js';
import { DeviceError, Errno } from './errors.js';

export { IrqIndex };
/** Number of VFIO PCI IRQ indexes. */
export const IRQ_INDEX_COUNT: number = IrqIndex.NUM;

/** Counts of each index's vectors, as the device declares them. */
export interface IrqCounts {
  intx: number;
  msi: number;
  msix: number;
  err: number;
  req: number;
}

class IrqLine {
  fds: number[];
  masked: boolean[];
  /** INTx only: fd that unmasks when signalled (resample). */
  unmaskFd = -1;
  unmaskPoll: PollHandle | undefined;

  constructor(readonly count: number) {
    this.fds = new Array<number>(count).fill(-1);
    this.masked = new Array<boolean>(count).fill(false);
  }
}

/** Outcome of a trigger, for logs and tests. */
export type TriggerResult = 'sent' | 'pending' | 'no-eventfd';

/** Told when the client clears a vector's SET_IRQS mask (a pending vector may now fire). */
export type UnmaskListener = (index: number, vector: number) => void;

/** The VFIO side of one device's interrupts. */
export class IrqState {
  private readonly lines: IrqLine[];
  /** Active mode among INTx/MSI/MSI-X; -1 when none has eventfds. */
  private active = -1;
  /** INTx raised while masked; INTx has no PCI-model pending bit of its own. */
  private intxPending = false;
  /** Number of eventfd signals sent, for statistics. */
  signals = 0;
  /** Bumped whenever eventfds are installed or dropped: the same fd number may then name another eventfd. */
  fdVersion = 0;

  constructor(
    readonly counts: IrqCounts,
    private readonly onUnmask: UnmaskListener = () => {},
    /** Told after eventfds or masks change (worker threads route MSI-X by them; INTx automask is not reported). */
    private readonly onChange: () => void = () => {},
  ) {
    this.lines = [counts.intx, counts.msi, counts.msix, counts.err, counts.req].map((c) => new IrqLine(c));
  }

  /** Vectors of `index`. */
  count(index: number): number {
    return this.lines[index]?.count ?? 0;
  }

  /** The active interrupt mode (IrqIndex), or -1. */
  get activeIndex(): number {
    return this.active;
  }

  /** Eventfd of a vector, or -1. */
  eventfd(index: number, vector: number): number {
    return this.lines[index]?.fds[vector] ?? -1;
  }

  /** Checks that [start, start+count) lies within `index`. */
  checkRange(index: number, start: number, count: number): void {
    const line = this.lines[index];
    if (!line) throw new DeviceError(Errno.EINVAL, `no IRQ index ${index}`);
    if (start > line.count || count > line.count - start) {
      throw new DeviceError(Errno.EINVAL, `IRQ range ${start}+${count} exceeds ${line.count} vectors of index ${index}`);
    }
  }

  /**
   * Installs eventfds for [start, start+fds.length). Takes ownership of the
   * fds; -1 entries unassign. Replaced fds are closed.
   */
  setEventfds(index: number, start: number, fds: readonly number[]): void {
    const line = this.lines[index];
    fds.forEach((fd, i) => {
      const old = line.fds[start + i];
      if (old >= 0) native.close(old);
      line.fds[start + i] = fd;
    });
    this.fdVersion++;
    if (index <= IrqIndex.MSIX) this.active = line.fds.some((fd) => fd >= 0) ? index : this.active === index ? -1 : this.active;
    this.onChange();
  }

  /** Closes every eventfd of `index` (DATA_NONE trigger with count 0). */
  disable(index: number): void {
    const line = this.lines[index];
    this.setEventfds(index, 0, new Array<number>(line.count).fill(-1));
    line.masked.fill(false);
    if (index === IrqIndex.INTX) {
      this.intxPending = false;
      this.setUnmaskFd(-1);
    }
  }

  /** Sets per-vector SET_IRQS mask bits; the unmask listener hears each cleared one. */
  setMasked(index: number, start: number, count: number, masked: boolean, which?: Uint8Array): void {
    const line = this.lines[index];
    for (let i = 0; i < count; i++) {
      if (which && !which[i]) continue;
      line.masked[start + i] = masked;
      if (!masked) this.onUnmask(index, start + i);
    }
    this.onChange();
  }

  /** True when the client masked the vector (SET_IRQS, or INTx automask). */
  isMasked(index: number, vector: number): boolean {
    return this.lines[index]?.masked[vector] ?? false;
  }

  /** Whether INTx was raised while masked and waits for an unmask. */
  get isIntxPending(): boolean {
    return this.intxPending;
  }

  /** Sets or clears INTx's pending bit (no delivery happens here). */
  setIntxPending(pending: boolean): void {
    this.intxPending = pending;
  }

  /**
   * Signals a vector's eventfd now, regardless of masks (the caller checked
   * them). INTx masks itself after firing.
   * @throws DeviceError EINVAL for a vector the index does not have.
   */
  signal(index: number, vector: number): TriggerResult {
    this.checkVector(index, vector);
    const line = this.lines[index];
    const fd = line.fds[vector];
    if (fd < 0) return 'no-eventfd';
    native.eventfdWrite(fd, 1);
    this.signals++;
    // INTx's automask is per interrupt and never changes an MSI-X route: no change to report.
    if (index === IrqIndex.INTX) line.masked[vector] = true;
    return 'sent';
  }

  /** Installs (or removes, with -1) the INTx unmask eventfd. Takes ownership. */
  setUnmaskFd(fd: number): void {
    const line = this.lines[IrqIndex.INTX];
    if (line.unmaskPoll) native.pollStop(line.unmaskPoll);
    if (line.unmaskFd >= 0) native.close(line.unmaskFd);
    line.unmaskPoll = undefined;
    line.unmaskFd = fd;
    if (fd >= 0) {
      line.unmaskPoll = native.pollStart(fd, PollMode.EventFd, (kind) => {
        if (kind === PollEvent.Count) this.setMasked(IrqIndex.INTX, 0, 1, false);
      });
    }
  }

  /** Clears mask bits and INTx pending but keeps the client's eventfds (device reset). */
  clearState(): void {
    for (const line of this.lines) line.masked.fill(false);
    this.intxPending = false;
    this.onChange();
  }

  /** Throws EINVAL unless `index` has a vector `vector`. */
  checkVector(index: number, vector: number): void {
    const line = this.lines[index];
    if (!line || !Number.isInteger(vector) || vector < 0 || vector >= line.count) {
      throw new DeviceError(Errno.EINVAL, `no vector ${vector} in IRQ index ${index}`);
    }
  }

  /** Drops every eventfd and resets masks: the client went away. */
  reset(): void {
    for (let i = 0; i < this.lines.length; i++) if (this.lines[i].count > 0) this.disable(i);
    this.active = -1;
    this.onChange();
  }

  /** Open eventfds, for leak checks. */
  openFdCount(): number {
    return this.lines.reduce((n, l) => n + l.fds.filter((fd) => fd >= 0).length + (l.unmaskFd >= 0 ? 1 : 0), 0);
  }
}
