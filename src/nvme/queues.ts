/**
 * Submission and completion queues as the controller tracks them: where
 * they live in guest memory, head and tail, phase, interrupt routing, and
 * the shadow doorbell and EventIdx slots once Doorbell Buffer Config gave
 * them (NVMe 1.4, 4.1 and 5.8).
 */
import { CQE } from './layouts.js';

/** Shadow doorbell and EventIdx addresses of one queue. */
export interface ShadowSlots {
  doorbell: number;
  eventIdx: number;
}

/** One saved completion queue. */
export interface SavedCq {
  id: number;
  base: number;
  size: number;
  head: number;
  tail: number;
  phase: number;
  interruptsEnabled: boolean;
  vector: number;
}

/** One saved submission queue. */
export interface SavedSq {
  id: number;
  base: number;
  size: number;
  head: number;
  tail: number;
  cqid: number;
  outstanding: number;
}

/** A completion waiting for room in its completion queue. */
export interface PendingCompletion {
  sq: SubmissionQueue;
  cid: number;
  status: number;
  dw0: number;
  /** Its entry in the in-flight log (-1: not logged). */
  slot: number;
}

/** A completion queue. */
export class CompletionQueue {
  head = 0;
  tail = 0;
  phase = 1;
  shadow: ShadowSlots | undefined;
  readonly pending: PendingCompletion[] = [];
  /** Submission queues that post here. */
  readonly sqs = new Set<SubmissionQueue>();
  /** A flush of `pending` is waiting for guest memory (a copy, or the shadow head). */
  flushing = false;
  /** A flush of `pending` is scheduled for the end of this turn. */
  scheduled = false;
  /** Completions of a synchronous drain wait here to be posted when the drain's batch ends. */
  collected = false;
  /** The cached view of the whole queue (reading length 0 once unmapped), and its words. */
  ring: Uint8Array | undefined;
  words: DataView | undefined;
  /** The posting batch under way: entries posted, submission queues given room, entries written through `ring`. */
  batchPosted = 0;
  batchFreed: SubmissionQueue | Set<SubmissionQueue> | undefined;
  batchThroughRing = false;

  constructor(
    readonly id: number,
    readonly base: number,
    readonly size: number,
    readonly interruptsEnabled: boolean,
    readonly vector: number,
  ) {}

  get full(): boolean {
    return (this.tail + 1) % this.size === this.head;
  }

  /** Entries posted and not yet consumed by the host. */
  get used(): number {
    return (this.tail - this.head + this.size) % this.size;
  }

  /** Address of the next entry to post. */
  get slot(): number {
    return this.base + this.tail * CQE.size;
  }

  advance(): void {
    this.tail = (this.tail + 1) % this.size;
    if (this.tail === 0) this.phase ^= 1;
  }

  /** True when `head` is a head the host may write: between the current head and the tail. */
  validHead(head: number): boolean {
    return head < this.size && (head - this.head + this.size) % this.size <= this.used;
  }
}

/** A submission queue. */
export class SubmissionQueue {
  head = 0;
  tail = 0;
  shadow: ShadowSlots | undefined;
  /** Commands fetched whose completion is not yet posted. */
  outstanding = 0;
  /** A drain is running; `again` asks it for another pass. */
  draining = false;
  again = false;
  /** Deleted (or the controller reset): fetch nothing more. */
  dead = false;
  /** Called once `outstanding` drops to zero (or the controller resets). */
  idleWaiters: (() => void)[] = [];
  /** The fast path's cached view of the whole queue (reading length 0 once unmapped), and its words. */
  ring: Uint8Array | undefined;
  words: DataView | undefined;
  /** Shadow doorbell polling: running, and until when (ms, performance.now()). */
  polling = false;
  pollUntil = 0;

  constructor(
    readonly id: number,
    readonly base: number,
    readonly size: number,
    readonly cq: CompletionQueue,
  ) {}

  get empty(): boolean {
    return this.head === this.tail;
  }

  /** Wakes whoever waits for this queue to have no command outstanding. */
  wakeIdle(): void {
    // Called at the end of nearly every batch: no copy of an empty list.
    if (this.idleWaiters.length === 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }
}

/**
 * Deletes `sq` (Delete I/O Submission Queue): it fetches nothing more, and
 * this resolves once the commands it started completed, or a reset (a new
 * `epoch()`) dropped them.
 */
export async function retireSq(sq: SubmissionQueue, epoch: () => number): Promise<void> {
  sq.dead = true;
  const at = epoch();
  while (sq.outstanding > 0 && epoch() === at) await new Promise<void>((r) => sq.idleWaiters.push(r));
}

/** Where the dwords of a CQE are (NVMe 1.4, 4.6): dword 2 holds sqHead then sqId, dword 3 cid then status. */
const { dw0: CQE_DW0, dw1: CQE_DW1, sqHead: CQE_DW2, cid: CQE_DW3 } = CQE.offsets;

/**
 * Writes a completion queue entry at `at` of a queue's view (`words` over
 * the same bytes), dword 3 with the phase tag last and in one store, so a
 * driver that sees the new phase sees the whole entry (NVMe 1.4, 4.6).
 * Allocation-free: it runs for every command.
 */
export function writeCompletion(words: DataView, at: number, sq: SubmissionQueue, cid: number, status: number, dw0: number, phase: number): void {
  words.setUint32(at + CQE_DW0, dw0 >>> 0, true);
  words.setUint32(at + CQE_DW1, 0, true);
  words.setUint32(at + CQE_DW2, (sq.head | (sq.id << 16)) >>> 0, true);
  words.setUint32(at + CQE_DW3, (cid | (completionStatus(status, phase) << 16)) >>> 0, true);
}

/** A completion queue entry (NVMe 1.4, 4.6) as a new buffer, for writes that cannot go through a view. */
export function encodeCompletion(c: PendingCompletion, phase: number): Buffer {
  return CQE.encode({ dw0: c.dw0 >>> 0, dw1: 0, sqHead: c.sq.head, sqId: c.sq.id, cid: c.cid, status: completionStatus(c.status, phase) });
}

/** The CQE's status half-word: the status field above the phase tag. */
function completionStatus(status: number, phase: number): number {
  return ((status << 1) | phase) & 0xffff;
}
