// The inflight log's records and what a successor reads from them, at
// every point a process can die between two of its stores.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InflightLog } from '../src/virtio/inflight-log.js';

function log(size = 8): InflightLog {
  return new InflightLog(new Uint8Array(InflightLog.bytes(size)), size);
}

test('inflight log: a live log records takes and publishes; a cleared one is not live', () => {
  const l = log();
  assert.equal(l.live, false);
  l.start(10, 4);
  assert.equal(l.live, true);
  l.take(3, 10);
  l.take(5, 11);
  assert.deepEqual(l.recovery(8), { lastAvail: 12, usedIdx: 4, publishFrom: 4, taken: [{ head: 3, at: 10 }, { head: 5, at: 11 }] });
  // Publish head 3: intent, clear, done.
  l.publishing(5);
  l.completed(3);
  l.published();
  assert.deepEqual(l.recovery(8), { lastAvail: 12, usedIdx: 5, publishFrom: 5, taken: [{ head: 5, at: 11 }] });
  l.clear();
  assert.equal(l.live, false);
  assert.deepEqual(l.recovery(8).taken, []);
  assert.throws(() => new InflightLog(new Uint8Array(10), 8), RangeError);
});

test('inflight log: a death between the entry and lastAvail counts the chain as taken', () => {
  const bytes = new Uint8Array(InflightLog.bytes(8));
  const l = new InflightLog(bytes, 8);
  l.start(0xfffe, 0);
  l.take(2, 0xfffe);
  l.take(6, 0xffff);
  // The second take died after its entry: lastAvail (the header's first u16) still says 0xffff.
  new DataView(bytes.buffer).setUint16(0, 0xffff, true);
  const r = l.recovery(8);
  assert.equal(r.lastAvail, 0, 'past the half-recorded take, across the wrap');
  assert.deepEqual(r.taken, [{ head: 2, at: 0xfffe }, { head: 6, at: 0xffff }], 'oldest first across the wrap');
  l.settle(r, []);
  assert.equal(new DataView(bytes.buffer).getUint16(0, true), 0, 'settle finishes the take');
});

test('inflight log: a death after the publish intent: the used slots name the published heads, which settle clears', () => {
  const l = log();
  l.start(0, 0);
  for (const h of [1, 2, 3]) l.take(h, h - 1);
  // Heads 2 and 1 published (elements in guest memory), intent recorded, died after clearing head 2 only.
  l.publishing(2);
  l.completed(2);
  const r = l.recovery(8);
  assert.equal(r.publishFrom, 0);
  assert.equal(r.usedIdx, 2, 'the successor writes used->idx = 2');
  const left = l.settle(r, [2, 1]);
  assert.deepEqual(left, [{ head: 3, at: 2 }]);
  assert.deepEqual(l.recovery(8), { lastAvail: 3, usedIdx: 2, publishFrom: 2, taken: [{ head: 3, at: 2 }] }, 'settled: a second successor finds the same');
});

test('inflight log: entries that cannot be in flight are dropped by settle', () => {
  const l = log(8);
  l.start(100, 0);
  l.take(1, 100);
  l.take(7, 101);
  // A queue set up smaller than the log: head 7 is outside it; an entry older than the queue holds is stale.
  const small = l.recovery(4);
  assert.deepEqual(small.taken, [{ head: 1, at: 100 }]);
  assert.deepEqual(l.settle(small, []), [{ head: 1, at: 100 }]);
  assert.deepEqual(l.recovery(8).taken, [{ head: 1, at: 100 }]);
});
