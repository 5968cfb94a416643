// NVMe under --isolate with its I/O queues on worker threads (`workers`):
// each thread logs its queues into its part of the in-flight log (mapped
// from the journal memfd), and a successor restarts what the threads had
// taken and not posted (src/nvme/inflight-log.ts, recovery.ts, worker/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PersistentBlock } from '../src/device/persistent.js';
import { nvmeController, nvmeControllerOf, serve } from '../src/index.js';
import { native } from '../src/native/index.js';
import { InflightLog } from '../src/nvme/inflight-log.js';
import { slowShared } from './fixtures/slow-nvme-backend.js';
import { pattern } from './helpers/bytes.js';
import { tempDir } from './helpers/isolated.js';
import { NvmeDriver, REG } from './helpers/nvme-driver.js';
import { killUnderIo, nvmeIsolated, prng, pump, VerifiedIo, type KillPoint } from './helpers/nvme-isolated.js';
import { connectClient } from './helpers/raw.js';
import { STARTED, waitUntil } from './helpers/slow-backend.js';

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

test('nvme in-flight log: a completion posted after a reset cleared its entry does not free its slot twice', () => {
  const block = new PersistentBlock(new Uint8Array(1 << 20));
  block.clear();
  const log = InflightLog.attach(block, 2, 3);
  log.clear();
  assert.equal(log.capacity, 4);
  const sqe = new Uint8Array(64);
  const late = log.taken(1, 1, sqe, 0);
  log.clear();
  // Its completion was being written when the reset came: posted now.
  log.posted(late, 1, 1, 1);
  const slots: number[] = [];
  while (log.hasRoom) slots.push(log.taken(1, slots.length + 1, sqe, 0));
  assert.equal(slots.length, 4, 'each slot once');
  assert.equal(new Set(slots).size, 4);
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
    for (const [point, passes] of points) await killUnderIo(n, io, point, passes, ++restarts);
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
    await killUnderIo(n, io, 'taken', 20, ++restarts, 64);
    assert.equal((await d.identify(1)).cqe.status, 0, 'the connection and the admin queue are in sync');
    assert.equal(n.server.restarts, restarts);
  } finally {
    n.close();
  }
});

test('nvme workers with an in-flight log: a reset has each thread forget its slice, so the slots its abandoned commands held serve again', async () => {
  // Persistent memory in a memfd, as an isolated child's journal has it: the threads map it.
  const size = 4 << 20;
  const fd = native.memfd('nvme-log-test', size);
  const m = native.mmap(fd, 0, size, true);
  assert.ok(typeof m !== 'number');
  const persistent = new PersistentBlock(new Uint8Array(m[0]), undefined, { fd, offset: 0 });
  persistent.clear();
  const dir = tempDir();
  const path = join(dir, 'disk.img');
  writeFileSync(path, pattern(1 << 20, 3));
  const counts = new SharedArrayBuffer(8);
  // Queues of 4 entries: the table has (2 + 1) * 3 slots, 3 for each thread, as many as a queue holds in flight.
  const spec = nvmeController({ namespaces: [await slowShared({ path, delayMs: 100, counts })], queues: 2, queueEntries: 4, workers: 2 });
  const server = serve(spec, join(dir, 'nvme.sock'), { log: 'silent' });
  server.device.persistent = persistent;
  const client = await connectClient(server.path);
  const d = await NvmeDriver.open(client);
  try {
    await d.enable();
    await d.createIoQueues(2, 4);
    assert.ok(nvmeControllerOf(spec)!.log, 'the controller logs');
    const started = new Int32Array(counts);
    for (let round = 1; round <= 3; round++) {
      // Three reads in flight on each queue (every slot of each thread's slice), abandoned by a reset.
      for (const qid of [1, 2]) {
        for (let i = 0; i < 3; i++) d.put(qid, { opcode: 0x02, nsid: 1, prp1: d.alloc(4096), cdw10: i * 8, cdw12: 7 });
        await d.submit(qid);
      }
      await waitUntil(() => Atomics.load(started, STARTED) === 6 * round, `round ${round}: the reads in the threads' backends`);
      await d.write32(REG.CC, 0);
      await d.waitCsts(1, 0);
      await d.enable();
      await d.createIoQueues(2, 4);
    }
    for (const qid of [1, 2]) {
      const got = await Promise.race([d.rw(qid, false, 8, 8), new Promise<never>((_, no) => setTimeout(() => no(new Error(`queue ${qid}: no slot of its thread's slice came back`)), 3000))]);
      assert.equal(got.cqe.status, 0);
      assert.deepEqual(got.data, pattern(1 << 20, 3).subarray(8 * 512, 16 * 512));
    }
  } finally {
    d.close();
    client.close();
    server.close();
    native.munmap(m[1], m[0]);
    native.close(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
