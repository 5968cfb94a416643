/**
 * The client's bytes between the socket and the journal. The isolated
 * child only peeks at the socket (MSG_PEEK, from the socket's peek offset,
 * SO_PEEK_OFF), copies what it peeked into the journal's rx log, and only
 * then consumes those bytes from the socket. A SIGKILL at any instant (even
 * inside the recvmsg) thus leaves every byte either still in the socket or
 * in the journal, and the socket's peek offset with the journal's
 * rxConsumedTo and rxConsuming say which: a successor consumes what its
 * predecessor journaled but did not consume, and peeks again what it
 * peeked but did not journal.
 *
 * Invariant between reads: every journaled byte is consumed (the journal's
 * rx end = rxConsumedTo) and the peek offset is 0. Reading a chunk of n bytes:
 *   peek (offset n) -> rx end += n -> rxConsuming = n -> recvDiscard(n)
 *   (offset 0) -> rxConsumedTo += n -> rxConsuming = 0.
 */
import { native } from '../native/index.js';
import { crashPoint, crashPointsArmed } from './crash-point.js';
import type { Journal } from './journal.js';

/**
 * Journals `chunk` (just peeked) and consumes it from the socket. Returns
 * an error message when the socket did not give back what was peeked (the
 * connection cannot be trusted any more).
 */
export function journalPeeked(fd: number, journal: Journal, chunk: Buffer): string | undefined {
  if (crashPointsArmed) crashPoint('peeked');
  journal.rx.append(chunk);
  if (crashPointsArmed) crashPoint('journaled');
  return consume(fd, journal, chunk.length);
}

/**
 * A successor's first step, before it reads the client: brings the socket
 * and the journal back to the invariant, whatever instant the predecessor
 * died at. Returns why it cannot (the connection is then to be closed
 * rather than guessed at), or undefined.
 */
export function resyncSocket(fd: number, journal: Journal): string | undefined {
  const offset = native.peekOffset(fd);
  if (offset < -1) return `cannot read the socket's peek offset: errno ${-offset}`;
  const pending = (): number => journal.rx.end - journal.rxConsumedTo;
  if (offset === -1) {
    // Never set, so never peeked: consistent only with nothing journaled from the socket.
    if (pending() !== 0 || journal.rxConsuming !== 0) return `the socket has no peek offset, yet ${pending()} journaled bytes were not consumed`;
    const rc = native.setPeekOffset(fd, 0);
    return rc < 0 ? `cannot set the socket's peek offset: errno ${-rc}` : undefined;
  }
  const consuming = journal.rxConsuming;
  if (consuming > 0) {
    // The predecessor died inside a consume of `consuming` bytes. Either rxConsumedTo was
    // already advanced (nothing pending), or the socket tells how much of it went:
    // a real recv lowers the peek offset by what it consumed.
    const j = pending();
    if (j === consuming) {
      if (offset > j) return `inconsistent socket: peek offset ${offset} while consuming ${consuming} journaled bytes`;
      journal.rxConsumedTo += j - offset;
    } else if (j !== 0) return `inconsistent journal: consuming ${consuming} bytes with ${j} journaled and not consumed`;
    journal.rxConsuming = 0;
  }
  const j = pending();
  // The peek offset covers what was peeked and not consumed: all of the journaled bytes, and
  // more when the predecessor peeked bytes it did not journal (they are peeked again).
  if (offset < j) return `inconsistent socket: peek offset ${offset} below the ${j} journaled bytes not consumed`;
  if (offset > j) {
    const rc = native.setPeekOffset(fd, j);
    if (rc < 0) return `cannot set the socket's peek offset: errno ${-rc}`;
  }
  return j > 0 ? consume(fd, journal, j) : undefined;
}

/** Consumes `n` journaled bytes from the socket, announced in the journal so that a death half-way is resolved. */
function consume(fd: number, journal: Journal, n: number): string | undefined {
  journal.rxConsuming = n;
  if (crashPointsArmed) crashPoint('consuming');
  const got = native.recvDiscard(fd, n);
  if (got !== n) return got < 0 ? `consuming peeked bytes failed: errno ${-got}` : `the socket gave back ${got} of ${n} peeked bytes`;
  if (crashPointsArmed) crashPoint('discarded');
  journal.rxConsumedTo += n;
  if (crashPointsArmed) crashPoint('consumed');
  journal.rxConsuming = 0;
  return undefined;
}
