/**
 * Asynchronous events and the error log (NVMe 1.4, 5.2 and 5.14.1.1):
 * Asynchronous Event Requests held until an event completes them, events
 * waiting for a request, event types masked until the host reads their log
 * page, and the last few failed commands.
 */
import { AsyncEvent, LogPageId, Status, statusName } from './constants.js';
import type { ControllerCore } from './core.js';
import type { ErrorEntry } from './identify.js';
import type { SubmissionQueue } from './queues.js';

/** Asynchronous Event Requests one controller holds at most. */
export const AER_LIMIT = 4;
/** Entries of the error log. */
export const ERROR_LOG_ENTRIES = 4;
/** Events kept while no request waits. */
export const MAX_PENDING_EVENTS = 16;

/** One event not yet reported. */
export interface AsyncEventRecord {
  type: number;
  info: number;
  log: number;
}

/** A held Asynchronous Event Request. */
export interface HeldRequest {
  sq: SubmissionQueue;
  cid: number;
  /** Its entry in the in-flight log (-1: not logged). */
  slot: number;
}

/** The asynchronous events and error log of one controller. */
export class AsyncEvents {
  readonly aers: HeldRequest[] = [];
  readonly events: AsyncEventRecord[] = [];
  readonly maskedEventTypes = new Set<number>();
  readonly errors: ErrorEntry[] = [];

  constructor(private readonly c: ControllerCore) {}

  /** Queues an asynchronous event and completes a waiting Asynchronous Event Request with it. */
  raise(type: number, info: number, log: number): void {
    if (!this.c.accepting) return;
    if (this.events.length >= MAX_PENDING_EVENTS) return;
    if (this.events.some((e) => e.type === type && e.info === info)) return;
    this.events.push({ type, info, log });
    this.deliver();
  }

  /** Holds an Asynchronous Event Request (or refuses it beyond the limit). */
  hold(sq: SubmissionQueue, cid: number, nsid: number, slot: number): void {
    if (this.aers.length >= AER_LIMIT) {
      this.c.complete(sq, cid, nsid, Status.ASYNC_EVENT_LIMIT_EXCEEDED, 0, slot);
      return;
    }
    this.aers.push({ sq, cid, slot });
    this.deliver();
  }

  private deliver(): void {
    while (this.aers.length > 0) {
      const i = this.events.findIndex((e) => !this.maskedEventTypes.has(e.type));
      if (i < 0) return;
      const [e] = this.events.splice(i, 1);
      const aer = this.aers.shift()!;
      // An event type stays masked until the host reads its log page.
      this.maskedEventTypes.add(e.type);
      this.c.complete(aer.sq, aer.cid, 0, Status.SUCCESS, e.type | (e.info << 8) | (e.log << 16), aer.slot);
    }
  }

  /** Get Log Page read `log` without Retain Asynchronous Event: unmask the event types it reports. */
  logRead(log: number, retain: boolean): void {
    if (retain) return;
    if (log === LogPageId.ERROR) this.maskedEventTypes.delete(AsyncEvent.TYPE_ERROR);
    if (log === LogPageId.SMART) this.maskedEventTypes.delete(AsyncEvent.TYPE_SMART);
    this.deliver();
  }

  /**
   * Records a failed command in the error log; with `why` (an I/O
   * command's failure), the server's log says it too.
   */
  recordError(sqid: number, cid: number, status: number, nsid: number, why?: string): void {
    if (why !== undefined) this.c.host.warnDriver?.(`SQ ${sqid} command ${cid} (nsid ${nsid}) failed with ${statusName(status)}: ${why}`);
    this.c.health.errorEntries++;
    this.errors.push({ count: this.c.health.errorEntries, sqid, cid, status, nsid });
    if (this.errors.length > ERROR_LOG_ENTRIES) this.errors.shift();
  }

  /** Drops the held requests (their queue is gone: a reset). */
  abandonRequests(): void {
    this.aers.length = 0;
  }

  /** Forgets events, masks and held requests (the controller is disabled). */
  clear(): void {
    this.events.length = 0;
    this.maskedEventTypes.clear();
    this.aers.length = 0;
  }
}
