/**
 * The state of I/O queues served on other threads, moved between them and
 * the controller's stand-ins: after a quiesce the stand-ins take the
 * threads' heads, tails, phases and waiting completions (so that the
 * migration save reads them as it reads the main thread's queues); after
 * a restore the threads take the stand-ins'.
 */
import type { ControllerCore } from './core.js';
import type { RemoteQueues, RemoteQueueState } from './remote.js';
import { savedCq, savedPending, savedSq } from './state.js';

type Queues = Pick<ControllerCore, 'sqs' | 'cqs' | 'shadow'>;

/** The stand-ins take the threads' state (a quiesce). */
export function adoptRemoteState(c: Queues, s: RemoteQueueState): void {
  for (const q of s.cqs) {
    const cq = c.cqs.get(q.id);
    if (!cq) continue;
    cq.head = q.head;
    cq.tail = q.tail;
    cq.phase = q.phase;
    cq.pending.length = 0;
  }
  for (const q of s.sqs) {
    const sq = c.sqs.get(q.id);
    if (!sq) continue;
    sq.head = q.head;
    sq.tail = q.tail;
    sq.outstanding = q.outstanding;
  }
  for (const p of s.pending) {
    const sq = c.sqs.get(p.sqid);
    if (sq) sq.cq.pending.push({ sq, cid: p.cid, status: p.status, dw0: p.dw0, slot: -1 });
  }
}

/** The threads take the I/O queues a migration loaded into the stand-ins, whose waiting completions become theirs. */
export function handRemoteState(c: Queues, remote: RemoteQueues): void {
  const cqs = [...c.cqs.values()].filter((q) => q.id > 0);
  const sqs = [...c.sqs.values()].filter((q) => q.id > 0);
  remote.restore({ cqs: cqs.map(savedCq), sqs: sqs.map(savedSq), pending: savedPending(cqs) }, c.shadow.buffers);
  for (const cq of cqs) cq.pending.length = 0;
}
