// A successor's resync of the client's socket with the journal
// (src/isolate/rx-socket.ts), from each state a kill inside a read can
// leave, over a real socket pair: afterwards every journaled byte is
// consumed, no byte is consumed twice or skipped, and the peek offset is 0.
// A state that cannot arise is refused with a reason, not guessed at.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../src/native/index.js';
import { Journal } from '../src/isolate/journal.js';
import { journalPeeked, resyncSocket } from '../src/isolate/rx-socket.js';

/** A socket pair with `abcdef` waiting at `a`, and an empty journal. */
function setup(): { a: number; b: number; journal: Journal; done(): void } {
  const [a, b] = native.socketpair();
  assert.equal(native.sendmsg(b, Buffer.from('abcdef')), 6);
  const journal = Journal.create('rx-socket-test');
  return {
    a,
    b,
    journal,
    done() {
      journal.unmap();
      for (const fd of [a, b, journal.fd]) native.close(fd);
    },
  };
}

/** Consumes what is left in the socket; how many bytes it was. */
function remaining(a: number): number {
  let n = 0;
  while (native.recvDiscard(a, 1) === 1) n++;
  return n;
}

test('rx socket: a fresh connection gets peek offset 0', () => {
  const s = setup();
  try {
    assert.equal(native.peekOffset(s.a), -1);
    assert.equal(resyncSocket(s.a, s.journal), undefined);
    assert.equal(native.peekOffset(s.a), 0);
    assert.equal(remaining(s.a), 6, 'nothing consumed');
  } finally {
    s.done();
  }
});

test('rx socket: each state a kill inside a read leaves is brought back in step', () => {
  const cases: { name: string; make(s: ReturnType<typeof setup>): void; consumedTo: number; left: number }[] = [
    // peeked 4, journaled none: peeked again
    { name: 'peeked', make: (s) => native.setPeekOffset(s.a, 4), consumedTo: 0, left: 6 },
    // peeked and journaled 4, consume not announced: consumed now
    { name: 'journaled', make: (s) => (native.setPeekOffset(s.a, 4), s.journal.rx.append(Buffer.from('abcd'))), consumedTo: 4, left: 2 },
    // announced, not done
    { name: 'consuming', make: (s) => (native.setPeekOffset(s.a, 4), s.journal.rx.append(Buffer.from('abcd')), (s.journal.rxConsuming = 4)), consumedTo: 4, left: 2 },
    // announced, half done (a consume stops after bytes that carry fds)
    { name: 'half consumed', make: (s) => (native.setPeekOffset(s.a, 4), s.journal.rx.append(Buffer.from('abcd')), (s.journal.rxConsuming = 4), native.recvDiscard(s.a, 2)), consumedTo: 4, left: 2 },
    // done, not noted
    { name: 'discarded', make: (s) => (native.setPeekOffset(s.a, 4), s.journal.rx.append(Buffer.from('abcd')), (s.journal.rxConsuming = 4), native.recvDiscard(s.a, 4)), consumedTo: 4, left: 2 },
    // noted, the announce not cleared
    { name: 'consumed', make: (s) => (native.setPeekOffset(s.a, 4), s.journal.rx.append(Buffer.from('abcd')), (s.journal.rxConsuming = 4), native.recvDiscard(s.a, 4), (s.journal.rxConsumedTo = 4)), consumedTo: 4, left: 2 },
  ];
  for (const c of cases) {
    const s = setup();
    try {
      native.setPeekOffset(s.a, 0);
      c.make(s);
      assert.equal(resyncSocket(s.a, s.journal), undefined, c.name);
      assert.equal(s.journal.rxConsumedTo, c.consumedTo, `${c.name}: consumed to`);
      assert.equal(s.journal.rxConsuming, 0, `${c.name}: no consume announced`);
      assert.equal(native.peekOffset(s.a), 0, `${c.name}: peek offset`);
      assert.equal(remaining(s.a), c.left, `${c.name}: bytes left in the socket`);
    } finally {
      s.done();
    }
  }
});

test('rx socket: a read journals then consumes; a state that cannot arise closes rather than guesses', () => {
  const s = setup();
  try {
    native.setPeekOffset(s.a, 0);
    native.setPeekOffset(s.a, 6); // as a peek of the 6 bytes leaves it
    assert.equal(journalPeeked(s.a, s.journal, Buffer.from('abcdef')), undefined);
    assert.deepEqual([s.journal.rx.end, s.journal.rxConsumedTo, s.journal.rxConsuming, native.peekOffset(s.a)], [6, 6, 0, 0]);
    assert.equal(native.recvDiscard(s.a, 1), -11, 'consumed');
    // A consume of bytes the socket does not hold.
    assert.match(journalPeeked(s.a, s.journal, Buffer.from('gh')) ?? '', /consuming peeked bytes failed: errno 11/);
  } finally {
    s.done();
  }
  const t = setup();
  try {
    native.setPeekOffset(t.a, 0);
    t.journal.rx.append(Buffer.from('abcd')); // journaled, yet never peeked
    assert.match(resyncSocket(t.a, t.journal) ?? '', /peek offset 0 below the 4 journaled bytes not consumed/);
    assert.equal(remaining(t.a), 6, 'nothing consumed on a guess');
  } finally {
    t.done();
  }
});
