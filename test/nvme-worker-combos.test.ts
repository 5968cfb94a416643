/**
 * NVMe I/O queues on worker threads (`workers`) combined with the other
 * features they meet: the doorbell page the client maps (`mmapDoorbells`),
 * the interrupt counters when a thread hands an interrupt to the main
 * thread, and a reload of an isolated controller while its threads have
 * I/O in flight. Real sockets, the test driver, every byte read back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { getMigrationState, migrate, MigrationState } from '../src/client/index.js';
import { memfdBackend, nvmeController, nvmeControllerOf, serve } from '../src/index.js';
import { pattern } from './helpers/bytes.js';
import { NvmeDriver, PAGE } from './helpers/nvme-driver.js';
import { connectClient } from './helpers/raw.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-nvmecombo-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const MiB = 1024 * 1024;

/**
 * Each queue writes `count` 4 KiB blocks, the queues at once; then each
 * reads back the blocks the next queue wrote (another thread's backend
 * must see them). Each queue has one command at a time: the driver reaps
 * in order. Asserts every byte.
 */
async function verifiedIo(d: NvmeDriver, queues: number[], count: number, seed: number): Promise<void> {
  const block = (qid: number, i: number) => ({ lba: (qid * count + i) * 8, data: pattern(4096, seed + qid * 1000 + i) });
  await Promise.all(
    queues.map(async (qid) => {
      for (let i = 0; i < count; i++) {
        const { lba, data } = block(qid, i);
        assert.equal((await d.rw(qid, true, lba, 8, data)).cqe.status, 0, `write q${qid} #${i}`);
      }
    }),
  );
  await Promise.all(
    queues.map(async (qid, n) => {
      const writer = queues[(n + 1) % queues.length];
      for (let i = 0; i < count; i++) {
        const { lba, data } = block(writer, i);
        const back = await d.rw(qid, false, lba, 8);
        assert.equal(back.cqe.status, 0, `read q${qid} #${i}`);
        assert.deepEqual(back.data, data, `q${writer} #${i} read back on q${qid}`);
      }
    }),
  );
}

describe('nvme workers with the doorbell page mapped (mmapDoorbells)', () => {
  for (const shadow of [false, true]) {
    test(`two queues on two threads, every doorbell a store into the page${shadow ? ', with shadow doorbells' : ''}: verified I/O, no doorbell message`, async () => {
      const spec = nvmeController({ namespaces: [memfdBackend(4 * MiB)], queues: 2, workers: 2, mmapDoorbells: true });
      const server = serve(spec, join(dir, `nvme${serial++}.sock`), { log: 'silent', poll: { idleMs: 1 } });
      const client = await connectClient(server.path);
      const d = await NvmeDriver.open(client);
      const controller = nvmeControllerOf(spec)!;
      try {
        await d.mapDoorbells();
        await d.enable();
        if (shadow) assert.equal((await d.configureShadowDoorbells()).status, 0);
        await d.createIoQueues(2);
        assert.deepEqual([controller.threadOf(1), controller.threadOf(2)], [0, 1], 'a thread per queue');
        await verifiedIo(d, [1, 2], 12, shadow ? 100 : 1);
        assert.equal(d.doorbellMessages, 0, 'every doorbell went through the page');
        assert.ok(d.doorbellStores > 0);
        const c = controller.counters();
        assert.equal(controller.stats.ioCommands, 0, 'the main thread ran no I/O command');
        assert.equal(c.ioCommands, 48, 'the threads ran every one');
        assert.equal(c.ioDoorbellWrites, 0, 'no I/O doorbell by message');
        assert.ok(c.mappedDoorbells > 0, 'doorbells seen in the page');
      } finally {
        d.close();
        client.close();
        server.close();
      }
    });
  }

  test('migrated: a doorbell stored as the source stops is served by the destination\'s thread', async () => {
    const disk = memfdBackend(MiB);
    const make = () => nvmeController({ namespaces: [disk], queues: 2, workers: 2, mmapDoorbells: true });
    const [srcSpec, dstSpec] = [make(), make()];
    const source = serve(srcSpec, join(dir, `src${serial++}.sock`), { log: 'silent', poll: { idleMs: 1 } });
    const destination = serve(dstSpec, join(dir, `dst${serial++}.sock`), { log: 'silent', poll: { idleMs: 1 } });
    const a = await connectClient(source.path);
    const b = await connectClient(destination.path);
    const d = await NvmeDriver.open(a);
    try {
      await d.mapDoorbells();
      await d.enable();
      await d.createIoQueues(2, 32);
      assert.equal((await d.rw(2, true, 0, 8, pattern(4096, 1))).cqe.status, 0);
      // A write in SQ 2 (the second thread's), rung only once the source has stopped.
      const buf = d.alloc(PAGE);
      d.bytes(buf, 4096).set(pattern(4096, 7));
      d.put(2, { opcode: 1, nsid: 1, prp1: buf, cdw10: 40, cdw12: 7, cid: 0x77 });
      const served = nvmeControllerOf(srcSpec)!.counters().ioCommands;
      await d.attachTo(b);
      let rung = false;
      await migrate(a, b, {
        onStep(step) {
          if (step === 'source: STOP_COPY') void d.ring(4, d.queues.get(2)!.tail).then(() => (rung = true));
        },
      });
      assert.ok(rung);
      assert.equal(await getMigrationState(b), MigrationState.RUNNING);
      assert.equal(nvmeControllerOf(srcSpec)!.counters().ioCommands, served, 'the stopped source did not take it');
      d.useClient(b);
      await d.mapDoorbells();
      const c = await d.reap(2);
      assert.deepEqual([c.cid, c.status], [0x77, 0], 'the destination served the doorbell the source left in the page');
      const dst = nvmeControllerOf(dstSpec)!;
      assert.equal(dst.stats.ioCommands, 0, 'on its thread, not the main thread');
      assert.deepEqual((await d.rw(1, false, 40, 8)).data, pattern(4096, 7), 'and goes on through its own page');
      assert.deepEqual((await d.rw(1, false, 0, 8)).data, pattern(4096, 1));
      assert.equal(d.doorbellMessages, 0);
    } finally {
      d.close();
      a.close();
      b.close();
      source.close();
      destination.close();
    }
  });
});
