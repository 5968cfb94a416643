/**
 * Transport: the Framer's splitting and fd attribution, and a Channel under
 * backpressure (partial writes, queued messages with dup'd fds) on a real
 * socketpair.
 */
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import { describe, test } from 'node:test';
import { native } from '../src/native/index.js';
import { Channel, closeAll } from '../src/transport/channel.js';
import { Framer, FramingError, type Frame } from '../src/transport/framer.js';
import { encodeMessage } from '../src/protocol/header.js';
import { selfFdCount } from './helpers/raw.js';

const msg = (id: number, len: number): Buffer => encodeMessage({ msgId: id, command: 4 }, Buffer.alloc(len, id & 0xff));

function tick(ms = 10): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('Framer', () => {
  test('splits a stream fed in arbitrary pieces into whole messages', () => {
    const stream = Buffer.concat([msg(1, 0), msg(2, 5), msg(3, 300), msg(4, 16)]);
    for (const step of [1, 3, 7, 16, 17, 100, stream.length]) {
      const f = new Framer(1 << 20);
      const out: Frame[] = [];
      for (let i = 0; i < stream.length; i += step) f.push(stream.subarray(i, i + step), undefined, (fr) => out.push({ bytes: Buffer.from(fr.bytes), fds: fr.fds }));
      assert.deepEqual(out.map((o) => o.bytes.readUInt16LE(0)), [1, 2, 3, 4], `step ${step}`);
      assert.deepEqual(Buffer.concat(out.map((o) => o.bytes)), stream);
    }
  });

  test('fds belong to the last message that starts in their chunk, or to the one in progress', () => {
    const a = msg(1, 40);
    const b = msg(2, 8);
    const c = msg(3, 100);
    const f = new Framer(1 << 20);
    const got: [number, number[]][] = [];
    const emit = (fr: Frame): void => {
      got.push([fr.bytes.readUInt16LE(0), fr.fds]);
    };
    // Chunk 1: head of a. Chunk 2 (fds 10, 11): tail of a + whole b + head of c.
    f.push(a.subarray(0, 20), undefined, emit);
    f.push(Buffer.concat([a.subarray(20), b, c.subarray(0, 50)]), [10, 11], emit);
    assert.deepEqual(got, [[1, []], [2, []]]);
    // Chunk 3 (fd 12): the middle of c, no message starts here: c is in progress.
    f.push(c.subarray(50, 60), [12], emit);
    f.push(c.subarray(60), undefined, emit);
    assert.deepEqual(got, [[1, []], [2, []], [3, [10, 11, 12]]]);
    assert.deepEqual(f.drain(), []);
  });

  test('untrusted sizes throw FramingError and drain() returns the fds held', () => {
    for (const size of [0, 15, 4097]) {
      const f = new Framer(4096);
      const h = Buffer.alloc(16);
      h.writeUInt32LE(size, 4);
      assert.throws(() => f.push(h, [5, 6], () => assert.fail('no frame')), FramingError);
      assert.deepEqual(f.drain(), [5, 6]);
    }
    // A good message first is still delivered, with its own fds.
    const f = new Framer(4096);
    const bad = Buffer.alloc(16);
    bad.writeUInt32LE(3, 4);
    const out: Frame[] = [];
    f.push(msg(9, 4), [1], (fr) => out.push(fr));
    assert.throws(() => f.push(bad, [2], (fr) => out.push(fr)), FramingError);
    assert.deepEqual(out.map((o) => o.fds), [[1]]);
    assert.deepEqual(f.drain(), [2]);
  });
});

describe('Channel', () => {
  test('under backpressure, queued messages and their fds arrive intact and in order', async () => {
    const before = selfFdCount();
    const [a, b] = native.socketpair();
    const N = 48;
    const SIZE = 200 * 1024; // far more than the socket buffer holds
    const received: Frame[] = [];
    let closedB = false;
    const sender = new Channel(a, { onFrame: () => assert.fail('sender receives nothing'), onClose: () => {} });
    // Fill the socket before anyone reads: sends go partial, then queue.
    for (let i = 0; i < N; i++) {
      const fd = native.memfd(`bp-${i}`, 0);
      assert.ok(sender.send(msg(i, SIZE), [fd]));
      native.close(fd); // borrowed only: the channel dup'd what it queued
    }
    const receiver = new Channel(b, { onFrame: (f) => received.push({ bytes: Buffer.from(f.bytes), fds: f.fds }), onClose: () => (closedB = true) }, 1 << 20);
    for (let i = 0; i < 500 && received.length < N; i++) await tick(5);
    assert.equal(received.length, N);
    received.forEach((f, i) => {
      assert.equal(f.bytes.length, 16 + SIZE);
      assert.equal(f.bytes.readUInt16LE(0), i, 'in order');
      assert.equal(f.bytes[16 + SIZE - 1], i & 0xff, 'payload intact');
      assert.equal(f.fds.length, 1, `message ${i} has its fd`);
      assert.match(readlinkSync(`/proc/self/fd/${f.fds[0]}`), new RegExp(`memfd:bp-${i} `), `message ${i} has the right fd`);
      closeAll(f.fds);
    });
    sender.close();
    for (let i = 0; i < 100 && !closedB; i++) await tick(5);
    assert.ok(closedB, 'peer close seen');
    receiver.close();
    assert.equal(selfFdCount(), before, 'every dup made for the queue was closed');
  });

  test('closing with writes still queued closes their dup\'d fds', async () => {
    const before = selfFdCount();
    const [a, b] = native.socketpair();
    const sender = new Channel(a, { onFrame: () => {}, onClose: () => {} });
    for (let i = 0; i < 20; i++) {
      const fd = native.eventfd(0);
      sender.send(msg(i, 100 * 1024), [fd]);
      native.close(fd);
    }
    assert.ok(selfFdCount() > before + 2, 'queued writes hold dups');
    sender.close();
    assert.equal(sender.send(msg(99, 1)), false, 'a closed channel refuses to send');
    native.close(b); // the unread fds in the socket buffer go with it
    await tick();
    assert.equal(selfFdCount(), before);
  });
});
