/**
 * The split ring's state and math alone (src/virtio/ring.ts): no guest
 * memory, no queue engine.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RingError } from '../src/virtio/chain.js';
import { RingState } from '../src/virtio/ring.js';

test('pending chains count across the 16-bit wrap; an avail index more than a queue ahead is a broken ring', () => {
  const r = new RingState(0, 256);
  r.size = 8;
  r.lastAvail = 0xfffe;
  assert.equal(r.pending(0xfffe), 0);
  assert.equal(r.pending(3), 5, '0xfffe -> 3 is 5 entries across the wrap');
  assert.throws(() => r.pending(7), RingError, '9 ahead of a queue of 8');
  assert.equal(r.nextAvailAt, 4 + 2 * (0xfffe % 8));
  r.takeAvail();
  r.takeAvail();
  assert.equal(r.lastAvail, 0, 'wraps to 0');
  assert.equal(r.nextAvailAt, 4);
  assert.equal(r.usedEntryAt(0xffff), 4 + 8 * 7);
  assert.equal(r.usedEventAt, 4 + 2 * 8);
  assert.equal(r.availEventAt, 4 + 8 * 8);
  assert.deepEqual([r.descBytes, r.availBytes, r.usedBytes], [128, 22, 70]);
});

test('interrupt suppression: NO_INTERRUPT flag without EVENT_IDX; used_event crossed (wrap-safe) with it', () => {
  const r = new RingState(0, 16);
  assert.equal(r.wantsInterrupt(0, 0, 0, 1), true);
  assert.equal(r.wantsInterrupt(1, 0, 0, 1), false, 'VIRTQ_AVAIL_F_NO_INTERRUPT');
  assert.equal(r.enable({ eventIdx: true, indirect: false }), undefined);
  // vring_need_event(event, new, old): new - event - 1 < new - old.
  assert.equal(r.wantsInterrupt(1, 5, 3, 6), true, 'moved 3 -> 6 past used_event 5 (flags ignored)');
  assert.equal(r.wantsInterrupt(0, 9, 3, 6), false, 'used_event 9 not reached');
  assert.equal(r.wantsInterrupt(0, 0xffff, 0xfffe, 1), true, 'crossed across the wrap');
  assert.equal(r.wantsInterrupt(0, 2, 0xfffe, 1), false, 'not yet, across the wrap');
});

test('layout checks, reset and saved state', () => {
  const r = new RingState(1, 64);
  assert.throws(() => new RingState(0, 100), RangeError);
  r.size = 48;
  assert.match(r.layoutError()!, /size 48/);
  r.size = 128;
  assert.match(r.layoutError()!, /size 128/, 'over the maximum');
  r.size = 32;
  r.desc = 8;
  assert.match(r.enable({ eventIdx: false, indirect: false })!, /misaligned/);
  assert.equal(r.enabled, false);
  r.desc = 0x1000;
  r.driver = 0x2000;
  r.device = 0x3000;
  assert.equal(r.enable({ eventIdx: false, indirect: true }), undefined);
  r.lastAvail = 7;
  r.usedIdx = 5;
  const saved = r.save();
  assert.deepEqual(saved, { size: 32, enabled: true, desc: 0x1000, driver: 0x2000, device: 0x3000, msixVector: 0xffff, lastAvail: 7, usedIdx: 5 });
  r.reset();
  assert.deepEqual(r.save(), { size: 64, enabled: false, desc: 0, driver: 0, device: 0, msixVector: 0xffff, lastAvail: 0, usedIdx: 0 });
  assert.equal(r.restore(saved), undefined);
  assert.deepEqual({ ...r.save(), enabled: true }, saved, 'restored (enabling is the caller\'s)');
  assert.match(r.restore({ ...saved, usedIdx: 0x10000 })!, /bad saved state/);
  assert.match(r.restore({ ...saved, desc: -1 })!, /bad saved state/);
});
