/**
 * Doorbells bound to eventfds (DEVICE_GET_REGION_IO_FDS): the client writes
 * the eventfd instead of sending REGION_WRITE, and the device's onSignal
 * runs with the count of writes. Per connection; created on first request,
 * or adopted (an isolated device's successor serves the eventfds the
 * client already holds).
 */
import { native, PollEvent, PollMode, type PollHandle } from '../native/index.js';
import type { Device } from './device.js';
import type { Logger } from './logger.js';
import type { IoEventFdSpec } from './region-spec.js';

interface Doorbell {
  fd: number;
  /** Watched here, or claimed by the device (then its release function). */
  poll: PollHandle | undefined;
  release: (() => void) | undefined;
}

/** The ioeventfds of one connection, by region. */
export class IoEventFds {
  private readonly byRegion = new Map<number, Doorbell[]>();

  constructor(
    private readonly device: Device,
    private readonly log: Logger,
    /** Busy-poll window after a doorbell, in ms (0: sleep in epoll). */
    private readonly pollIdleMs = 0,
  ) {}

  /** The eventfds of a region's doorbells, in spec order (borrowed: they stay ours). */
  fds(index: number): number[] {
    let list = this.byRegion.get(index);
    if (!list) {
      list = (this.device.regions[index]?.ioeventfds ?? []).map((spec) => this.open(index, spec));
      this.byRegion.set(index, list);
    }
    return list.map((d) => d.fd);
  }

  /**
   * Serves `fds` (owned from now on) as region `index`'s doorbells, in spec
   * order, instead of new eventfds: the client holds them already. A
   * count written while nobody watched is read at once. Wrong count: the
   * fds are closed and new ones made on request.
   */
  adopt(index: number, fds: number[]): void {
    const specs = this.device.regions[index]?.ioeventfds ?? [];
    if (this.byRegion.has(index) || specs.length !== fds.length) {
      this.log.warn(`region ${index}: cannot serve the ${fds.length} doorbells handed over (it has ${specs.length}${this.byRegion.has(index) ? ', already served' : ''})`);
      for (const fd of fds) native.close(fd);
      return;
    }
    this.byRegion.set(index, specs.map((spec, i) => this.open(index, spec, fds[i])));
  }

  /**
   * Stops (true) or resumes serving every doorbell; what the client writes
   * meanwhile waits in the eventfds. An isolated device's old child stops
   * before its successor takes the same eventfds over: two processes must
   * not both read them (a count one of them took would be lost to the other).
   */
  pause(paused: boolean): void {
    for (const [index, list] of this.byRegion) {
      list.forEach((d, i) => {
        if (d.poll) native.pollPause(d.poll, paused);
        else if (paused) {
          // A claimed doorbell (a worker thread watches it): let go of it, claim it again on resume.
          d.release?.();
          d.release = undefined;
        } else if (!d.release) d.release = this.claim(this.device.regions[index]!.ioeventfds[i], d.fd);
      });
    }
  }

  /** Stops watching and closes every eventfd. */
  close(): void {
    for (const list of this.byRegion.values()) {
      for (const d of list) {
        if (d.poll) native.pollStop(d.poll);
        try {
          d.release?.();
        } catch (e) {
          this.log.error(`releasing a claimed doorbell failed: ${String(e)}`);
        }
        native.close(d.fd);
      }
    }
    this.byRegion.clear();
  }

  private open(index: number, spec: IoEventFdSpec, fd = native.eventfd(0)): Doorbell {
    const release = this.claim(spec, fd);
    if (release) return { fd, poll: undefined, release };
    // A device callback that throws (or rejects) must not take the process down.
    const fail = (e: unknown): void => this.log.error(`doorbell handler of region ${index} at 0x${spec.offset.toString(16)} failed: ${String(e)}`);
    const poll = native.pollStart(fd, PollMode.EventFd, (kind, count) => {
      if (kind !== PollEvent.Count) return;
      try {
        const r: unknown = spec.onSignal?.(count as number, this.device);
        if (r instanceof Promise) r.catch(fail);
      } catch (e) {
        fail(e);
      }
    });
    if (this.pollIdleMs > 0) native.pollSpin(poll, Math.round(this.pollIdleMs * 1e6));
    return { fd, poll, release: undefined };
  }

  /** Hands the doorbell to whoever watches it instead of this thread (a worker thread); its release function, or undefined. */
  private claim(spec: IoEventFdSpec, fd: number): (() => void) | undefined {
    return spec.worker ? this.device.doorbellThreads?.claim(spec, fd, this.pollIdleMs) : spec.claim?.(fd, this.device, this.pollIdleMs);
  }
}
