/**
 * A successor process's recovery of one virtqueue from its inflight log
 * (under --isolate, see inflight-log.ts): it ends the publish the dead
 * process was in (used->idx included), takes the log's indices, and hands
 * the chains still in flight out again, oldest first.
 */

import { RingError } from './chain.js';
import type { InflightLog } from './inflight-log.js';
import type { RingState } from './ring.js';

/** What recovery needs from the queue it recovers. */
export interface RecoveringQueue {
  readonly index: number;
  readonly state: RingState;
  /** Guest memory at `at`: through a view, or by message. */
  read(at: number, length: number): Uint8Array | Promise<Uint8Array>;
  /** Stores used->idx. */
  writeUsedIdx(idx: number): Promise<void> | undefined;
  /** Walks the chain at `head` anew and hands it out, the avail ring untouched. */
  retake(head: number): Promise<void>;
}

/** Recovers `q` from `log`; resolves with the number of chains handed out again. */
export async function recoverQueue(log: InflightLog, q: RecoveringQueue): Promise<number> {
  const st = q.state;
  const r = log.recovery(st.size);
  const publishing = (r.usedIdx - r.publishFrom) & 0xffff;
  if (publishing > st.size) throw new RingError(`queue ${q.index}: the inflight log publishes ${publishing} entries, more than the queue size ${st.size}`);
  // The heads of the publish under way: its elements are in guest memory.
  const published: number[] = [];
  for (let i = r.publishFrom; i !== r.usedIdx; i = (i + 1) & 0xffff) {
    const b = await q.read(st.device + st.usedEntryAt(i), 4);
    published.push(b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24));
  }
  const inFlight = log.settle(r, published);
  st.lastAvail = r.lastAvail;
  st.usedIdx = r.usedIdx;
  await q.writeUsedIdx(r.usedIdx);
  for (const t of inFlight) await q.retake(t.head);
  return inFlight.length;
}
