// NVMe under --isolate with its I/O queues on worker threads (`workers`):
// each thread logs its queues into its part of the in-flight log (mapped
// from the journal memfd), and a successor restarts what the threads had
// taken and not posted (src/nvme/inflight-log.ts, recovery.ts, worker/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PersistentBlock } from '../src/device/persistent.js';
import { InflightLog } from '../src/nvme/inflight-log.js';
import { REG } from './helpers/nvme-driver.js';
import { killed, nvmeIsolated, prng, pump, VerifiedIo, type KillPoint } from './helpers/nvme-isolated.js';

test('nvme in-flight log parts: each takes and frees only its own slots, numbering past every number in the area', () => {
  const memory = new Uint8Array(4 << 20);
  const block = new PersistentBlock(memory);
  block.clear();
  const main = InflightLog.attach(block, 3, 5, 3);
  main.clear();
  assert.equal(main.capacity, 12);
  const area = main.area;
  const t1 = new InflightLog(area, 3, 5, 1, 3);
  const t2 = new InflightLog(area, 3, 5, 2, 3);
  const sqe = new Uint8Array(64);
  const slots = (log: InflightLog, sqid: number): number[] => {
    const out: number[] = [];
    while (log.hasRoom) out.push(log.taken(sqid, out.length + 1, sqe, 0));
    return out;
  };
  const a = slots(main, 0);
  const b = slots(t1, 1);
  const c = slots(t2, 2);
  assert.deepEqual([a, b, c].map((s) => [...s].sort((x, y) => x - y)), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], 'disjoint slices');
  assert.deepEqual([t1.sqFetched(1).seq, t2.sqFetched(2).seq], [4, 4], 'numbered per part');
  // A slot of another part posted here (recovery started it) is not taken here again.
  main.posted(b[0], 1, 1, 1);
  assert.equal(main.hasRoom, false);
  t1.refresh();
  assert.ok(t1.hasRoom, 'its owner takes it again');
  // A part opened later numbers past every number in the area.
  const again = new InflightLog(area, 3, 5, 2, 3);
  again.clearPart();
  assert.deepEqual(main.commands().filter((e) => e.sqid === 2), [], 'clearPart forgets its slice only');
  assert.equal(main.commands().length, 7);
  const s = again.taken(2, 1, sqe, 0);
  assert.ok(again.seqOf(s) > 4, 'past the numbers of every part');
  assert.throws(() => new InflightLog(area, 3, 5, 3, 3), RangeError);
  assert.throws(() => new InflightLog(area.subarray(8), 3, 5), RangeError);
});

test('isolate nvme workers: a kill at each log point of a thread queue loses no command, completes none twice, corrupts nothing', async () => {
  const n = await nvmeIsolated({ mib: 8, workers: 2 });
  const io = new VerifiedIo(n, [1, 2], 8, 256, prng(11));
  let restarts = 0;
  try {
    await pump(io, () => io.completed >= 64);
    const points: [KillPoint, number][] = [
      ['taken', 5],
      ['half-logged', 3],
      ['cqe-written', 6],
      ['entry-freed', 6],
      ['taken', 40],
    ];
    for (const [point, passes] of points) {
      await n.arm(point, passes);
      restarts++;
      await pump(io, () => !n.armed());
      await killed(n, restarts);
      const before = io.completed;
      await pump(io, () => io.completed >= before + 48);
      assert.equal(io.failure, undefined);
    }
    // A controller reset, then a kill on a thread queue: the threads log into their parts afresh.
    const d = n.driver;
    await d.write32(REG.CC, 0);
    await d.waitCsts(1, 0);
    io.abandon();
    await d.enable();
    await d.createIoQueues(2, 64);
    assert.equal((await d.configureShadowDoorbells()).status, 0);
    io.addQueue(1);
    io.addQueue(2);
    await n.arm('taken', 20);
    restarts++;
    await pump(io, () => !n.armed());
    await killed(n, restarts);
    const before = io.completed;
    await pump(io, () => io.completed >= before + 64);
    assert.equal(io.failure, undefined);
    assert.equal((await d.identify(1)).cqe.status, 0, 'the connection and the admin queue are in sync');
    assert.equal(n.server.restarts, restarts);
  } finally {
    n.close();
  }
});
