/**
 * The NVMe controller served by a child process, our client as the driver
 * in this one: enable, queues, I/O in shared and fd-less memory, shadow
 * doorbells, hostile commands and a controller fatal status, a client that
 * vanishes with I/O in flight, reconnects, and no fd leak across them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connectClient } from './helpers/raw.js';
import { NvmeDriver, PAGE, REG } from './helpers/nvme-driver.js';
import { pattern } from './helpers/bytes.js';
import { VirtioProcess } from './helpers/virtio-process.js';

describe('nvme in a child process', () => {
  let p: VirtioProcess;
  before(async () => {
    p = await VirtioProcess.start('nvme', { size: 2 * 1024 * 1024, queues: 2 });
  });
  after(async () => {
    await p.stop();
  });

  async function session<T>(fn: (d: NvmeDriver) => Promise<T>, memory: 'shared' | 'private' = 'shared'): Promise<T> {
    const client = await connectClient(p.path);
    const d = await NvmeDriver.open(client, { memory });
    try {
      return await fn(d);
    } finally {
      d.close();
      client.close();
    }
  }

  test('I/O on two queues in shared and fd-less memory, with and without shadow doorbells', async () => {
    const fds = (await p.stats()).fds;
    for (const memory of ['shared', 'private'] as const) {
      await session(async (d) => {
        assert.equal((await d.enable()) & 3, 1);
        await d.createIoQueues(2);
        for (const shadow of [false, true]) {
          if (shadow) assert.equal((await d.configureShadowDoorbells()).status, 0);
          for (const q of [1, 2]) {
            const data = pattern(16 * 1024, q + (shadow ? 10 : 0));
            const lba = q * 64 + (shadow ? 32 : 0);
            assert.equal((await d.rw(q, true, lba, 32, data)).cqe.status, 0, `${memory} write q${q} shadow=${shadow}`);
            assert.deepEqual((await d.rw(3 - q, false, lba, 32)).data, Buffer.from(data));
          }
        }
      }, memory);
      await p.waitIdle();
    }
    assert.equal((await p.stats()).fds, fds, 'no fd leaked');
  });

  test('hostile commands and a fatal status leave the process serving the next client', async () => {
    await session(async (d) => {
      await d.enable();
      await d.createIoQueues(1);
      assert.equal((await d.run(1, { opcode: 2, nsid: 1, prp1: 0x7000_0000, cdw12: 0 })).sc, 0x04);
      assert.equal((await d.createCq(1, 8)).sc, 0x01);
      // An SQ tail pointing at garbage memory beyond the queue: the doorbell value is refused, no crash.
      await d.ring(2, 9999);
      // Move the admin SQ out of the maps: enable fails with CFS.
      await d.write32(REG.CC, 0);
      await d.waitCsts(1, 0);
      await d.write64(REG.ASQ, 0x7000_0000);
      await d.write32(REG.CC, 0x00460001);
      assert.equal((await d.read32(REG.CSTS)) & 2, 2);
    });
    await p.waitIdle();
    assert.ok(p.alive);
    await session(async (d) => {
      assert.equal((await d.enable()) & 3, 1, 'the next client starts from a reset controller');
      await d.createIoQueues(1);
      assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
    });
  });

  test('a client that leaves with I/O in flight; the next one reads what the first wrote', async () => {
    const data = pattern(4096, 42);
    await session(async (d) => {
      await d.enable();
      await d.createIoQueues(1);
      assert.equal((await d.rw(1, true, 100, 8, data)).cqe.status, 0);
      for (let i = 0; i < 20; i++) d.put(1, { opcode: 2, nsid: 1, prp1: d.alloc(PAGE), cdw10: i, cdw12: 0 });
      await d.submit(1);
    });
    await p.waitIdle();
    await session(async (d) => {
      await d.enable();
      await d.createIoQueues(1);
      assert.deepEqual((await d.rw(1, false, 100, 8)).data, Buffer.from(data));
    });
  });
});
