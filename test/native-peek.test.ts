// The addon's peek reads (PollMode.StreamPeek) with the socket's peek
// offset, and recvDiscard: what the isolated child reads the client with
// (src/isolate/rx-socket.ts). Peeked bytes stay in the socket until
// consumed; each peek goes on after the previous one; fds come as copies,
// and the originals are closed when their bytes are consumed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import { native, PollEvent, PollMode } from '../src/native/index.js';
import { selfFdCount } from './helpers/raw.js';
import { until } from './helpers/wait.js';

test('native peek: peeks follow SO_PEEK_OFF, fds come as copies, recvDiscard consumes across an fd boundary and closes the originals', async () => {
  const [a, b] = native.socketpair();
  const m = native.memfd('peek-me', 4096);
  const events: { kind: PollEvent; data?: string; fds?: number[]; offset: number }[] = [];
  let poll: ReturnType<typeof native.pollStart> | undefined;
  let consume = false;
  try {
    assert.equal(native.peekOffset(a), -1, 'off by default');
    assert.equal(native.setPeekOffset(a, 0), 0);
    assert.equal(native.peekOffset(a), 0);
    const before = selfFdCount();
    assert.equal(native.sendmsg(b, Buffer.from('hello'), [m]), 5);
    assert.equal(native.sendmsg(b, Buffer.from('world')), 5);
    poll = native.pollStart(a, PollMode.StreamPeek, (kind, x, y) => {
      events.push({ kind, data: Buffer.isBuffer(x) ? x.toString() : undefined, fds: y as number[] | undefined, offset: native.peekOffset(a) });
      if (consume && Buffer.isBuffer(x)) assert.equal(native.recvDiscard(a, x.length), x.length);
      if (kind === PollEvent.Eof) native.pollPause(poll!, true);
    });
    // Nothing is consumed: the second peek starts where the first ended (a read stops after bytes with fds).
    await until(() => events.length >= 2, 'two peeks');
    native.pollPause(poll, true);
    assert.deepEqual(
      events.map((e) => [e.kind, e.data, e.fds?.length ?? 0, e.offset]),
      [
        [PollEvent.Data, 'hello', 1, 5],
        [PollEvent.Data, 'world', 0, 10],
      ],
    );
    const copy = events[0].fds![0];
    assert.notEqual(copy, m);
    assert.match(readlinkSync(`/proc/self/fd/${copy}`), /memfd:peek-me/, 'the fd that came with the bytes');
    assert.equal(selfFdCount(), before + 1, "the peeked copy (the original is still the socket's)");
    // One consume covers both sends: the first recvmsg stops after the fd, recvDiscard goes on.
    assert.equal(native.recvDiscard(a, 10), 10);
    assert.equal(native.peekOffset(a), 0, 'a real read lowers the peek offset by what it consumed');
    assert.equal(selfFdCount(), before + 1, 'the original fd, received with the consumed bytes, was closed');
    native.close(copy);
    assert.equal(native.recvDiscard(a, 1), -11, 'nothing left: EAGAIN');
    // Consuming part of what was peeked leaves the rest to the next consume; the bytes are the stream's, in order.
    assert.equal(native.sendmsg(b, Buffer.from('abcdef')), 6);
    assert.equal(native.recvDiscard(a, 2), 2);
    native.close(b);
    events.length = 0;
    consume = true;
    native.pollPause(poll, false);
    await until(() => events.some((e) => e.kind === PollEvent.Eof), 'EOF');
    assert.deepEqual(
      events.map((e) => [e.kind, e.data]),
      [
        [PollEvent.Data, 'cdef'],
        [PollEvent.Eof, undefined],
      ],
      'the rest, then EOF',
    );
  } finally {
    if (poll) native.pollStop(poll);
    native.close(a);
    native.close(m);
  }
});
