/**
 * NVMe I/O queues on device worker threads (`nvmeController({ workers })`):
 * each thread maps guest memory itself, serves its queues' commands over
 * its own backend, takes its doorbells (forwarded messages, or the
 * ioeventfds it watches) and raises MSI-X itself; the admin queue stays on
 * the main thread. A reset is done only once the threads' abandoned
 * commands cannot write guest memory; a migration save holds the threads'
 * queue state.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { Client, migrate } from '../src/client/index.js';
import { memfdBackend, nvmeController, nvmeControllerOf, ramBackend, serve, type BlockBackend, type NvmeController, type Server } from '../src/index.js';
import { pattern } from './helpers/bytes.js';
import { NvmeDriver, REG } from './helpers/nvme-driver.js';
import { connectClient } from './helpers/raw.js';
import { changedPages, COMPLETED, STARTED, waitUntil } from './helpers/slow-backend.js';
import { slowShared } from './fixtures/slow-nvme-backend.js';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';
import { closeEach } from './helpers/close.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-nvmew-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const MiB = 1024 * 1024;

interface Rig {
  server: Server;
  client: Client;
  driver: NvmeDriver;
  controller: NvmeController;
}

let r: Rig | undefined;
afterEach(() => {
  if (!r) return;
  r.driver.close();
  r.client.close();
  r.server.close();
  r = undefined;
});

async function rig(o: { backend?: BlockBackend; workers?: number; queues?: number; ioeventfds?: boolean; resetTimeoutMs?: number; shadow?: boolean } = {}): Promise<Rig> {
  const queues = o.queues ?? 2;
  const spec = nvmeController({ namespaces: [o.backend ?? memfdBackend(4 * MiB)], queues, workers: o.workers ?? 2, ioeventfdDoorbells: o.ioeventfds, resetTimeoutMs: o.resetTimeoutMs });
  const server = serve(spec, join(dir, `nvme${serial++}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const driver = await NvmeDriver.open(client);
  await driver.enable();
  if (o.shadow) assert.equal((await driver.configureShadowDoorbells()).status, 0);
  await driver.createIoQueues(queues);
  r = { server, client, driver, controller: nvmeControllerOf(spec)! };
  return r;
}

/** Writes then reads back `count` 4 KiB blocks on each queue, several in flight at once; asserts every byte. */
async function verifiedIo(d: NvmeDriver, queues: number[], count: number, seed: number): Promise<void> {
  await Promise.all(
    queues.map(async (qid) => {
      for (let i = 0; i < count; i++) {
        const lba = (qid * count + i) * 8;
        const data = pattern(4096, seed + qid * 1000 + i);
        const w = await d.rw(qid, true, lba, 8, data);
        assert.equal(w.cqe.status, 0, `write q${qid} #${i}`);
        const back = await d.rw(qid, false, lba, 8);
        assert.equal(back.cqe.status, 0, `read q${qid} #${i}`);
        assert.deepEqual(back.data, data, `q${qid} #${i} read back`);
      }
    }),
  );
}

describe('nvme I/O queues on worker threads', () => {
  test('two queues on two threads: verified writes and reads, served and interrupted by the threads', async () => {
    const { driver, controller, server } = await rig();
    await verifiedIo(driver, [1, 2], 16, 1);
    assert.equal(controller.stats.ioCommands, 0, 'the main thread ran no I/O command');
    assert.equal(controller.counters().ioCommands, 64, 'the threads ran every one');
    assert.equal(server.device.irqs.signals, 5, 'the main thread signalled only the admin completions (Set Features, two CQs, two SQs)');
    assert.equal(controller.healthNow().writeCommands, 32, 'SMART counts the threads\' writes');
  });

  test('doorbells through ioeventfds the threads watch, with shadow doorbells', async () => {
    const { driver, controller } = await rig({ ioeventfds: true, shadow: true });
    await driver.useIoeventfds();
    await verifiedIo(driver, [1, 2], 8, 2);
    assert.ok(driver.doorbellKicks > 0);
    const c = controller.counters();
    assert.ok(c.ioeventfdKicks > 0, 'the threads took the kicks');
    assert.equal(controller.stats.ioeventfdKicks, 0, 'none reached the main thread');
    assert.equal(c.ioDoorbellWrites, 0, 'no I/O doorbell message');
    assert.equal(c.lostKicks, 0);
  });

  test('an SQ whose CQ is served by another thread is refused (Completion Queue Invalid)', async () => {
    const spec = nvmeController({ namespaces: [memfdBackend(MiB)], queues: 2, workers: 2 });
    const server = serve(spec, join(dir, `nvme${serial++}.sock`), { log: 'silent' });
    const client = await connectClient(server.path);
    const driver = await NvmeDriver.open(client);
    r = { server, client, driver, controller: nvmeControllerOf(spec)! };
    await driver.enable();
    assert.equal((await driver.createCq(1, 16)).status, 0);
    const refused = await driver.createSq(2, 16, 1);
    assert.equal(refused.sc, 0x00);
    assert.equal(refused.sct, 1, 'command specific: Completion Queue Invalid');
    assert.equal((await driver.createSq(1, 16, 1)).status, 0);
  });

  test('controller reset under I/O: CSTS.RDY reads 0 only once the threads\' abandoned reads cannot write guest memory', async () => {
    const path = join(dir, `disk${serial++}.img`);
    writeFileSync(path, pattern(4 * MiB, 5));
    const counts = new SharedArrayBuffer(8);
    // Reads that take a second: a loaded machine can take 200 ms between their start and the reset, completing some first.
    const { driver } = await rig({ backend: await slowShared({ path, delayMs: 1000, counts }) });
    const started = new Int32Array(counts);
    const reads = 8;
    for (const qid of [1, 2]) {
      for (let i = 0; i < reads; i++) {
        const buf = driver.alloc(64 * 1024);
        driver.bytes(buf, 64 * 1024).fill(0xee);
        driver.put(qid, { opcode: 0x02, nsid: 1, ...driver.prps(buf, 64 * 1024), cdw10: i * 128, cdw12: 127 });
      }
      await driver.submit(qid);
    }
    await waitUntil(() => Atomics.load(started, STARTED) === 2 * reads, 'the reads in the threads\' backends');
    await driver.write32(REG.CC, 0);
    await driver.waitCsts(1, 0);
    const snapshot = Buffer.from(driver.mem.bytes);
    await waitUntil(() => Atomics.load(started, COMPLETED) === 2 * reads, 'the abandoned reads to finish');
    await driver.read32(REG.CSTS);
    assert.equal(changedPages(snapshot, driver.mem.bytes), 0, 'guest memory changed after the reset was done');
    assert.ok(driver.cqEmpty(1) && driver.cqEmpty(2), 'no abandoned command completed');
    // The controller serves again, on the same threads.
    await driver.enable();
    await driver.createIoQueues(2);
    const got = await driver.rw(2, false, 8, 8);
    assert.equal(got.cqe.status, 0);
    assert.deepEqual(got.data, pattern(4 * MiB, 5).subarray(8 * 512, 16 * 512));
  });

  test('a Delete I/O SQ waiting for its commands on a thread ends with a controller reset', async () => {
    const path = join(dir, `disk${serial++}.img`);
    writeFileSync(path, pattern(MiB, 4));
    const counts = new SharedArrayBuffer(8);
    const { driver, controller } = await rig({ backend: await slowShared({ path, delayMs: 400, counts }) });
    driver.put(1, { opcode: 0x02, nsid: 1, prp1: driver.alloc(4096), cdw12: 7 });
    await driver.submit(1);
    await waitUntil(() => Atomics.load(new Int32Array(counts), STARTED) === 1, 'the read in the backend');
    driver.put(0, { opcode: 0x00, cdw10: 1 }); // Delete I/O SQ 1: waits for the read
    await driver.submit(0);
    await waitUntil(() => controller.deleting.size === 1, 'the delete waiting');
    await driver.write32(REG.CC, 0);
    await driver.waitCsts(1, 0);
    await waitUntil(() => controller.deleting.size === 0, 'the delete to end with the reset');
  });

  test('a backend that never answers: the reset restarts the thread after its timeout (its mappings revoked), and it serves again', async () => {
    const path = join(dir, `disk${serial++}.img`);
    writeFileSync(path, pattern(MiB, 6));
    const counts = new SharedArrayBuffer(8);
    const { driver, client } = await rig({ backend: await slowShared({ path, delayMs: 1e9, counts }), resetTimeoutMs: 300 });
    const buf = driver.alloc(4096);
    driver.put(1, { opcode: 0x02, nsid: 1, prp1: buf, cdw12: 7 });
    await driver.submit(1);
    await waitUntil(() => Atomics.load(new Int32Array(counts), STARTED) === 1, 'the read in the backend');
    const t0 = Date.now();
    await client.reset();
    assert.ok(Date.now() - t0 >= 250, 'the reset waited for its timeout');
    await client.setBusMaster();
    await driver.enable();
    await driver.createIoQueues(2);
    // Queue 2's thread was never stuck; queue 1's is a new thread.
    const w = await driver.rw(2, true, 0, 8, pattern(4096, 7));
    assert.equal(w.cqe.status, 0);
  });

  test('migration save holds the threads\' queue state, and a restore serves on', async () => {
    const { driver, controller } = await rig();
    await verifiedIo(driver, [1, 2], 3, 8);
    await controller.quiesce();
    const saved = controller.save();
    const sq1 = saved.sqs.find((q) => q.id === 1)!;
    const cq2 = saved.cqs.find((q) => q.id === 2)!;
    assert.equal(sq1.head, 6, 'six commands fetched on SQ 1');
    assert.equal(sq1.tail, 6);
    assert.equal(cq2.tail, 6);
    controller.resume();
    await verifiedIo(driver, [1, 2], 1, 9);
  });

  test('live migration between two controllers with workers: the threads\' queues (a wrapped phase, shadow doorbells) move, and serve on', async () => {
    const disk = memfdBackend(4 * MiB);
    const make = () => nvmeController({ namespaces: [disk], queues: 2, workers: 2 });
    const srcSpec = make();
    const dstSpec = make();
    const source = serve(srcSpec, join(dir, `src${serial++}.sock`), { log: 'silent' });
    const destination = serve(dstSpec, join(dir, `dst${serial++}.sock`), { log: 'silent' });
    const a = await connectClient(source.path);
    const b = await connectClient(destination.path);
    const d = await NvmeDriver.open(a);
    try {
      await d.enable();
      await d.createIoQueues(2, 32);
      assert.equal((await d.configureShadowDoorbells()).status, 0);
      assert.equal((await d.rw(1, true, 0, 8, pattern(4096, 1))).cqe.status, 0);
      for (let i = 0; i < 40; i++) assert.equal((await d.run(2, { opcode: 0, nsid: 1 })).status, 0);
      await d.attachTo(b);
      await migrate(a, b);
      d.useClient(b);
      const dst = nvmeControllerOf(dstSpec)!;
      assert.equal(dst.sqs.get(2)!.cq.phase, 0, 'queue 2\'s wrapped phase came from its thread');
      await verifiedIo(d, [1, 2], 2, 11);
      assert.deepEqual((await d.rw(1, false, 0, 8)).data, pattern(4096, 1));
      assert.equal(dst.stats.ioCommands, 0);
      assert.ok(dst.counters().ioCommands >= 9, 'the destination\'s threads served them');
    } finally {
      closeEach(d, a, b, source, destination);
    }
  });

  test('muser run --isolate nvme --workers: serves I/O on its queue threads, logging them; more workers than queues is refused', async () => {
    const image = join(dir, `iso${serial++}.img`);
    writeFileSync(image, Buffer.alloc(MiB));
    const sock = join(dir, `x${serial++}.sock`);
    const server = await startServer([MAIN, 'run', '--isolate', 'nvme', sock, '--image', image, '--queues', '2', '--workers', '2'], sock, `serving nvme on ${sock} (isolated)`);
    const client = await Client.connect(sock);
    const d = await NvmeDriver.open(client);
    try {
      await d.enable();
      await d.createIoQueues(2, 32);
      assert.equal((await d.configureShadowDoorbells()).status, 0);
      for (const qid of [1, 2]) assert.equal((await d.rw(qid, true, qid * 8, 8, pattern(4096, qid))).cqe.status, 0);
      for (const qid of [1, 2]) assert.deepEqual((await d.rw(3 - qid, false, qid * 8, 8)).data, pattern(4096, qid));
      assert.doesNotMatch(server.stderr, /error|failed/i, 'the queue threads took their parts of the in-flight log');
    } finally {
      d.close();
      client.close();
      await server.stop();
    }
    const many = await runCli(['run', 'nvme', join(dir, `y${serial++}.sock`), '--size', '1M', '--queues', '1', '--workers', '2'], { killAfterMs: 20_000 });
    assert.notEqual(many.code, 0);
    assert.match(many.stderr, /--workers must be 0..1/);
  });

  test('bad workers values get a TypeError or RangeError naming the option', () => {
    const namespaces = [memfdBackend(MiB)];
    assert.throws(() => nvmeController({ namespaces, workers: '2' as unknown as number }), (e: Error) => e instanceof TypeError && /workers must be a number, got '2'/.test(e.message));
    assert.throws(() => nvmeController({ namespaces, queues: 2, workers: 3 }), (e: Error) => e instanceof RangeError && /workers must be 0\.\.2/.test(e.message));
    assert.throws(() => nvmeController({ namespaces: [ramBackend(MiB)], workers: 1 }), (e: Error) => e instanceof TypeError && /namespace 1's is not/.test(e.message));
  });
});
