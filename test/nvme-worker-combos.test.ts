/**
 * NVMe I/O queues on worker threads (`workers`) combined with the other
 * features they meet: the doorbell page the client maps (`mmapDoorbells`;
 * migrated with it: mapped-doorbells.test.ts), the interrupt counters when a thread hands an interrupt to the main
 * thread, and a reload of an isolated controller while its threads have
 * I/O in flight. Real sockets, the test driver, every byte read back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { EventFd } from '../src/client/index.js';
import { IrqIndex, memfdBackend, nvmeController, nvmeControllerOf, serve } from '../src/index.js';
import { pattern } from './helpers/bytes.js';
import { NvmeDriver, type Cqe } from './helpers/nvme-driver.js';
import { nvmeIsolated, prng, pump, VerifiedIo } from './helpers/nvme-isolated.js';
import { connectClient } from './helpers/raw.js';
import { until } from './helpers/wait.js';

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
});

describe('nvme workers: the interrupt counter counts each interrupt once', () => {
  /** A controller with two queue threads and a driver that has enabled it (MSI-X vectors, or none: INTx). */
  async function start(msix: boolean) {
    const spec = nvmeController({ namespaces: [memfdBackend(MiB)], queues: 2, workers: 2 });
    const server = serve(spec, join(dir, `nvme${serial++}.sock`), { log: 'silent' });
    const client = await connectClient(server.path);
    const d = await NvmeDriver.open(client, { msix });
    return { server, client, d, controller: nvmeControllerOf(spec)! };
  }

  test('MSI-X straight from the threads: the count equals the signals the vectors received', async () => {
    const { server, client, d, controller } = await start(true);
    try {
      await d.enable();
      await d.createIoQueues(2);
      await until(() => d.vectors[0].total === 5, 'the admin completions\' interrupts (Set Features, two CQs, two SQs)');
      for (const qid of [1, 2]) {
        for (let i = 0; i < 6; i++) {
          const before = d.vectors[qid].total;
          assert.equal((await d.rw(qid, true, i * 8, 8, pattern(4096, qid * 10 + i))).cqe.status, 0);
          await d.vectors[qid].waitFor(before + 1);
        }
      }
      assert.deepEqual(d.vectors.slice(0, 3).map((v) => v.total), [5, 6, 6], 'one interrupt per completion, on its queue\'s vector');
      assert.equal(server.device.irqs.signals, 5, 'the I/O queues\' went straight from their threads');
      assert.equal(controller.counters().interrupts, 17);
    } finally {
      d.close();
      client.close();
      server.close();
    }
  });

  test('INTx, raised for the threads by the main thread: the count equals the signals sent, not twice the threads\' share', async () => {
    const { server, client, d, controller } = await start(false);
    const intx = new EventFd();
    try {
      await client.setIrqEventfds(IrqIndex.INTX, 0, [intx.fd]);
      // One command at a time, and INTx unmasked after each (it masks itself when it fires): one signal per completion.
      const step = async (command: () => Promise<Cqe>): Promise<void> => {
        const before = intx.total;
        assert.equal((await command()).status, 0);
        await intx.waitFor(before + 1);
        await client.maskIrqs(IrqIndex.INTX, 0, 1, false);
      };
      await d.enable();
      await step(() => d.admin({ opcode: 0x09, cdw10: 0x07, cdw11: (1 << 16) | 1 }));
      for (const qid of [1, 2]) {
        // Without MSI-X only vector 0 exists: both queues (on two threads) raise INTx.
        await step(() => d.createCq(qid, 16, { vector: 0 }));
        await step(() => d.createSq(qid, 16, qid));
      }
      for (const qid of [1, 2]) for (let i = 0; i < 6; i++) await step(async () => (await d.rw(qid, false, i * 8, 8)).cqe);
      assert.equal(intx.total, 17, 'one INTx per completion');
      assert.equal(server.device.irqs.signals, 17);
      assert.equal(controller.stats.ioCommands, 0, 'the I/O ran on the threads');
      assert.equal(controller.counters().interrupts, 17, 'each interrupt counted once, by the thread that raised it or by the main thread');
    } finally {
      intx.close();
      d.close();
      client.close();
      server.close();
    }
  });
});

describe('nvme workers under --isolate, reloaded', () => {
  for (const shadow of [true, false]) {
    test(`I/O in flight on both queue threads across two reloads completes exactly once, every block verified${shadow ? '' : ' (doorbells by message)'}`, async () => {
      const n = await nvmeIsolated({ mib: 8, workers: 2, shadow });
      // Every completion must match a command in flight (none twice, none lost: finish() fails on either), every read its last write.
      const io = new VerifiedIo(n, [1, 2], 8, 64, prng(shadow ? 41 : 43));
      try {
        await pump(io, () => io.completed >= 32);
        for (let round = 1; round <= 2; round++) {
          const pid = n.server.childPid;
          let reloaded = false;
          const reload = n.server.reload().then(() => (reloaded = true));
          // The driver keeps both queues full while the old child quiesces and the new one takes over.
          const before = io.completed;
          await pump(io, () => reloaded && io.completed >= before + 16);
          await reload;
          assert.notEqual(n.server.childPid, pid, `round ${round}: a new child serves`);
          assert.equal(io.failure, undefined);
        }
        assert.equal(n.server.restarts, 0, 'no child died');
        assert.deepEqual(n.said, [], 'the supervisor had nothing to warn about');
        assert.equal((await n.driver.identify(1)).cqe.status, 0, 'the admin queue is in sync');
      } finally {
        n.close();
      }
    });
  }
});
