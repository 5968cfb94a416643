/**
 * virtio-blk served by a child process, our client as the driver in this
 * one: I/O on two queues, a broken ring, a client that vanishes with
 * requests in flight, reconnects, and no fd leak across them; all of it
 * with the queues on the main thread and on two worker threads.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DescFlag, VirtioStatus } from '../src/virtio/index.js';
import { connectClient } from './helpers/raw.js';
import { VirtioDriver } from './helpers/virtio-driver.js';
import { VirtioProcess } from './helpers/virtio-process.js';
import { S_IOERR, S_OK, T_GET_ID, T_IN, T_OUT, blk } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';

for (const workers of [0, 2]) describe(`virtio-blk in a child process${workers ? ', queues on worker threads' : ''}`, () => {
  let p: VirtioProcess;
  before(async () => {
    p = await VirtioProcess.start('blk', { size: 2 * 1024 * 1024, queues: 2, workers });
  });
  after(async () => {
    await p.stop();
  });

  async function session<T>(fn: (d: VirtioDriver) => Promise<T>, memory: 'shared' | 'private' = 'shared'): Promise<T> {
    const client = await connectClient(p.path);
    const d = await VirtioDriver.open(client, { memory });
    try {
      return await fn(d);
    } finally {
      d.close();
      client.close();
    }
  }

  test('I/O on both queues, every doorbell, shared and fd-less memory', async () => {
    for (const memory of ['shared', 'private'] as const) {
      await session(async (d) => {
        await d.start(2);
        for (const q of [0, 1]) {
          for (const kick of ['message', 'posted', 'eventfd'] as const) {
            const data = pattern(4096, q * 10 + kick.length);
            const sector = q * 64 + kick.length * 8;
            assert.equal((await blk(d, q, T_OUT, sector, { out: data, kick })).status, S_OK);
            assert.deepEqual((await blk(d, q, T_IN, sector, { inLen: 4096, kick, indirect: true })).data, data);
          }
        }
        assert.equal((await blk(d, 0, T_GET_ID, 0, { inLen: 20 })).data.subarray(0, 5).toString(), 'child');
        assert.equal((await blk(d, 0, T_IN, 4095, { inLen: 1024 })).status, S_IOERR);
      }, memory);
    }
  });

  test('a descriptor loop sets DEVICE_NEEDS_RESET; the child keeps serving', async () => {
    await session(async (d) => {
      await d.start(1);
      const q = d.queues.get(0)!;
      const seen = d.vectors[0].total;
      d.writeDesc(q.desc, 0, { addr: d.alloc(8), len: 8, flags: DescFlag.NEXT, next: 0 });
      d.publish(0, 0);
      await d.kick(0, 'posted');
      await d.vectors[0].waitFor(seen + 1);
      assert.ok((await d.status()) & VirtioStatus.DEVICE_NEEDS_RESET);
      await d.start(1);
      assert.equal((await blk(d, 0, T_GET_ID, 0, { inLen: 20 })).status, S_OK);
    });
  });

  test('clients that vanish with requests in flight leak nothing; the disk keeps its data', async () => {
    await session(async (d) => {
      await d.start(1);
      assert.equal((await blk(d, 0, T_OUT, 100, { out: pattern(4096, 77) })).status, S_OK);
    });
    // Worker threads close what the connection lent them a moment after it ends: count once that settled.
    const settledFds = async (): Promise<number> => {
      await p.waitIdle();
      let last = (await p.stats()).fds;
      for (;;) {
        await new Promise((res) => setTimeout(res, 50));
        const now = (await p.stats()).fds;
        if (now === last) return now;
        last = now;
      }
    };
    const before = await settledFds();
    for (let i = 0; i < 5; i++) {
      await session(async (d) => {
        await d.start(2);
        for (let j = 0; j < 8; j++) d.post(j % 2, [{ addr: d.put(Buffer.alloc(16)), len: 16 }, { addr: d.alloc(4096), len: 4096, write: true }, { addr: d.alloc(1), len: 1, write: true }]);
        await d.kick(0, 'eventfd');
        await d.kick(1, 'posted');
      });
      await p.waitIdle();
    }
    assert.equal(await settledFds(), before, 'same fds after 5 abrupt clients');
    await session(async (d) => {
      await d.start(1);
      assert.deepEqual((await blk(d, 0, T_IN, 100, { inLen: 4096 })).data, pattern(4096, 77));
    });
    assert.ok(p.alive);
  });
});
