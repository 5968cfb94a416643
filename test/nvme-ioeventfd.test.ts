/**
 * NVMe doorbells through ioeventfds (`ioeventfdDoorbells`): the I/O
 * queues' SQ tail and CQ head doorbells are offered by
 * DEVICE_GET_REGION_IO_FDS; an eventfd count is a kick whose value the
 * controller reads from the shadow doorbell buffer (as QEMU's own NVMe
 * does once shadow doorbells are on). A kick on a queue without shadow
 * doorbells cannot be served: it is counted and reported as an event.
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { nvmeController, ramBackend } from '../src/index.js';
import { pattern } from './helpers/bytes.js';
import { close, rig, type Rig } from './helpers/nvme-rig.js';
import { until } from './helpers/wait.js';

let r: Rig | undefined;
afterEach(() => {
  close(r);
  r = undefined;
});

test('I/O doorbells rung through ioeventfds: verified writes and reads on two queues, no doorbell message', async () => {
  r = await rig({ queues: 2, ioeventfdDoorbells: true });
  const d = r.driver;
  assert.equal((await d.configureShadowDoorbells()).status, 0);
  await d.createIoQueues(2);
  await d.useIoeventfds();
  const before = r.controller.stats.ioDoorbellWrites;
  for (const qid of [1, 2]) {
    for (let i = 0; i < 8; i++) {
      const data = pattern(4096, qid * 100 + i);
      assert.equal((await d.rw(qid, true, qid * 64 + i * 8, 8, data)).cqe.status, 0);
      const back = await d.rw(qid, false, qid * 64 + i * 8, 8);
      assert.equal(back.cqe.status, 0);
      assert.deepEqual(back.data, Buffer.from(data));
    }
  }
  assert.ok(d.doorbellKicks > 0, 'the driver rang through the eventfds');
  assert.equal(r.controller.stats.ioDoorbellWrites, before, 'no I/O doorbell arrived as a message');
  assert.ok(r.controller.stats.ioeventfdKicks > 0, 'the controller counted the kicks');
  assert.equal(r.controller.stats.lostKicks, 0);
});

test('a kick on a queue without shadow doorbells is lost, counted and reported; the same doorbell by message is served', async () => {
  r = await rig({ queues: 1, ioeventfdDoorbells: true });
  const d = r.driver;
  await d.createIoQueues(1);
  await d.useIoeventfds();
  const q = d.queues.get(1)!;
  const buf = d.alloc(4096);
  d.put(1, { opcode: 0x02, nsid: 1, prp1: buf, cdw12: 7 });
  await d.ring(2, q.tail);
  await until(() => r!.controller.stats.lostKicks === 1, 'the lost kick to be counted');
  assert.ok(d.cqEmpty(1), 'nothing was fetched: the tail is unknown');
  // The register write carries the tail.
  await d.write32(0x1000 + 2 * 4, q.tail);
  assert.equal((await d.reap(1, { ringHead: false })).status, 0);
});

test('without the option the BAR offers no doorbell eventfds', async () => {
  r = await rig({ queues: 2 });
  const io = await r.client.regionIoFds(0);
  assert.equal(io.fds.length, 0);
});

test('bad ioeventfdDoorbells values get a TypeError naming the option', () => {
  const namespaces = [ramBackend(1 << 20)];
  assert.throws(() => nvmeController({ namespaces, ioeventfdDoorbells: 'yes' as unknown as boolean }), (e: Error) => e instanceof TypeError && /ioeventfdDoorbells must be a boolean, got 'yes'/.test(e.message));
  assert.throws(() => nvmeController({ namespaces, ioeventfdDoorbells: true, shadowDoorbells: false }), (e: Error) => e instanceof TypeError && /ioeventfdDoorbells needs shadowDoorbells/.test(e.message));
});
