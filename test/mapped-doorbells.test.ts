/**
 * Doorbells in mapped memory (`mmapDoorbells`): the client maps the
 * doorbell page it gets with the region's sparse mmap capability and rings
 * by storing into it, as a guest does when QEMU maps the page. The devices
 * run in a child process with `--poll`, as meant; every doorbell of these
 * tests goes through the page, so a watch that does not see a write leaves
 * its I/O hanging and the test failing.
 *
 * And kicks suppressed while a virtio queue polls its avail ring
 * (`pollMicroseconds`): the device keeps VIRTQ_USED_F_NO_NOTIFY set (or
 * avail_event behind, with EVENT_IDX) while it polls, serves chains added
 * without a kick, and asks for kicks again when the window closes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getMigrationState, migrate, MigrationState } from '../src/client/index.js';
import { memfdBackend, nvmeController, nvmeControllerOf, ramBackend, serve, virtioBlk } from '../src/index.js';
import { virtioTransportOf } from '../src/virtio/device.js';
import { probeRam } from './helpers/probe-backend.js';
import { VirtioFeature, featureBit } from '../src/virtio/index.js';
import { VIRTQ_USED_F_NO_NOTIFY } from '../src/virtio/constants.js';
import { connectClient } from './helpers/raw.js';
import { NvmeDriver, PAGE } from './helpers/nvme-driver.js';
import { VirtioDriver } from './helpers/virtio-driver.js';
import { VirtioProcess } from './helpers/virtio-process.js';
import { S_OK, T_IN, T_OUT, blk, buildBlk } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';
import { sleep, until } from './helpers/wait.js';
import { closeEach } from './helpers/close.js';

describe('NVMe with its doorbell page mapped, in a child process under --poll', () => {
  let p: VirtioProcess;
  before(async () => {
    p = await VirtioProcess.start('nvme', { size: 2 * 1024 * 1024, queues: 2, mmapDoorbells: true, poll: true });
  });
  after(async () => {
    await p.stop();
  });

  async function session<T>(fn: (d: NvmeDriver) => Promise<T>): Promise<T> {
    const client = await connectClient(p.path);
    const d = await NvmeDriver.open(client);
    try {
      await d.mapDoorbells();
      return await fn(d);
    } finally {
      d.close();
      client.close();
      await p.waitIdle();
    }
  }

  test('admin and I/O on two queues, with and without shadow doorbells: not one doorbell message', async () => {
    await session(async (d) => {
      assert.equal((await d.enable()) & 3, 1);
      await d.createIoQueues(2);
      for (const shadow of [false, true]) {
        if (shadow) assert.equal((await d.configureShadowDoorbells()).status, 0);
        for (const q of [1, 2]) {
          for (let i = 0; i < 20; i++) {
            const data = pattern(4096, q * 100 + i);
            const lba = q * 512 + i * 8;
            assert.equal((await d.rw(q, true, lba, 8, data)).cqe.status, 0, `write q${q} #${i} shadow=${shadow}`);
            assert.deepEqual((await d.rw(3 - q, false, lba, 8)).data, Buffer.from(data));
          }
        }
      }
      assert.equal(d.doorbellMessages, 0);
      assert.ok(d.doorbellStores > 100, `${d.doorbellStores} doorbells stored into the page`);
    });
  });

  test('a new session and a re-enabled controller start their queues from 0, whatever the page held', async () => {
    // Each session's first command writes admin tail 1, the value the session
    // before wrote last: seen only because the watch sees every write, not
    // only changes of value (with shadow doorbells a driver rings only now and
    // then, and may ring the same tail twice running once the queue went round).
    for (let s = 0; s < 2; s++) {
      await session(async (d) => {
        await d.enable();
        assert.equal((await d.identify(1)).cqe.status, 0, `session ${s}`);
      });
    }
    await session(async (d) => {
      await d.enable();
      await d.createIoQueues(1);
      assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
      // CC.EN 1 -> 0 -> 1 in the same session: the same again.
      await d.enable();
      await d.createIoQueues(1);
      assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0, 'after a controller reset');
    });
    assert.ok(p.alive);
  });
});

describe('virtio-blk with its notify page mapped, in a child process under --poll', () => {
  let p: VirtioProcess;
  before(async () => {
    p = await VirtioProcess.start('blk', { size: 2 * 1024 * 1024, queues: 2, mmapDoorbells: true, poll: true });
  });
  after(async () => {
    await p.stop();
  });

  test('kicks stored into the page, the same queue index again and again, on two queues', async () => {
    const client = await connectClient(p.path);
    const d = await VirtioDriver.open(client);
    try {
      await d.start(2);
      for (let i = 0; i < 20; i++) {
        for (const q of [0, 1]) {
          // Each kick writes the queue's index, as Linux does: the watch sees every one.
          const data = pattern(4096, q * 50 + i);
          const sector = q * 256 + i * 8;
          assert.equal((await blk(d, q, T_OUT, sector, { out: data, kick: 'mapped' })).status, S_OK);
          assert.deepEqual((await blk(d, 1 - q, T_IN, sector, { inLen: 4096, kick: 'mapped' })).data, data);
        }
      }
      // Messages still work beside the page.
      assert.equal((await blk(d, 0, T_IN, 0, { inLen: 512, kick: 'posted' })).status, S_OK);
    } finally {
      d.close();
      client.close();
    }
  });
});

describe('virtio-blk notify page: garbage stored into it is treated as a message of it would be', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-vgarbage-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('any value in a queue\'s word kicks that queue; words past the queues are ignored; the device serves on', async () => {
    const server = serve(virtioBlk({ backend: ramBackend(1024 * 1024), queues: 2, mmapDoorbells: true }), join(dir, 'b.sock'), { log: 'silent', poll: { idleMs: 1 } });
    const client = await connectClient(server.path);
    const d = await VirtioDriver.open(client);
    try {
      await d.start(2);
      for (const [value, width] of [[0xdeadbeef, 4], [7, 2], [0, 4]] as const) {
        const { bufs, result } = buildBlk(d, T_IN, 0, { inLen: 512 });
        d.post(1, bufs);
        await d.storeNotify(1 * 4, value, width); // queue 1's word, not holding 1
        await d.waitUsed(1, 1);
        assert.equal(result(512).status, S_OK, `kicked by 0x${value.toString(16)}`);
      }
      // Past the two queues: as a REGION_WRITE there, nothing happens; queue 0 is not kicked.
      const { bufs, result } = buildBlk(d, T_IN, 0, { inLen: 512 });
      d.post(0, bufs);
      await d.storeNotify(5 * 4, 0, 2);
      await client.regionWrite(d.caps.bar, d.caps.notify + 5 * 4, Buffer.from([0, 0]));
      await sleep(30);
      assert.deepEqual(d.takeUsed(0), []);
      await d.kick(0, 'mapped');
      await d.waitUsed(0, 1);
      assert.equal(result(512).status, S_OK);
      assert.equal(virtioTransportOf(server.device.spec)!.brokenReason, undefined, 'no queue broken');
    } finally {
      d.close();
      client.close();
      server.close();
    }
  });
});

describe('a virtio queue that polls its avail ring asks for no kicks meanwhile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-vpoll-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;

  for (const [eventIdx, onThread] of [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ]) {
    test(`notifications off while polling, served without a kick, asked for again after the window${eventIdx ? ' (EVENT_IDX)' : ''}${onThread ? ', the queue on a worker thread' : ''}`, async () => {
      const windowMs = 1000;
      const backend = onThread ? memfdBackend(1024 * 1024) : ramBackend(1024 * 1024);
      const server = serve(virtioBlk({ backend, pollMicroseconds: windowMs * 1000, workers: onThread ? 1 : 0 }), join(dir, `b${n++}.sock`), { log: 'silent' });
      const client = await connectClient(server.path);
      const d = await VirtioDriver.open(client);
      const ei = featureBit(VirtioFeature.EVENT_IDX);
      try {
        await d.start(1, (offered) => (eventIdx ? offered : offered & ~ei));
        const suppressed = (): boolean => {
          const u = d.usedState(0);
          return eventIdx ? u.availEvent !== (d.queues.get(0)!.nextAvail & 0xffff) : (u.flags & VIRTQ_USED_F_NO_NOTIFY) !== 0;
        };
        assert.equal((await blk(d, 0, T_IN, 0, { inLen: 512 })).status, S_OK);
        // Well after the drain's end (a thread's drain may still be ending when the used entry shows), inside the window.
        await sleep(50);
        assert.ok(suppressed(), 'the queue polls: the driver is asked not to kick');
        // Added without a kick: the polling device serves it.
        for (let i = 0; i < 3; i++) {
          const { bufs, result } = buildBlk(d, T_IN, i, { inLen: 512 });
          d.post(0, bufs);
          await d.waitUsed(0, 1);
          assert.equal(result(512).status, S_OK);
        }
        await until(() => !suppressed(), 'the window to close and kicks to be asked for again', 5000);
        // Idle now: a chain without a kick waits, as the driver was told it would.
        const { bufs, result } = buildBlk(d, T_IN, 1, { inLen: 512 });
        d.post(0, bufs);
        await sleep(50);
        assert.deepEqual(d.takeUsed(0), [], 'not served without a kick once idle');
        await d.kick(0);
        await d.waitUsed(0, 1);
        assert.equal(result(512).status, S_OK);
      } finally {
        d.close();
        client.close();
        server.close();
      }
    });
  }

  test('without a window (the default without --poll), kicks are asked for after every drain', async () => {
    const server = serve(virtioBlk({ backend: ramBackend(1024 * 1024) }), join(dir, `b${n++}.sock`), { log: 'silent' });
    const client = await connectClient(server.path);
    const d = await VirtioDriver.open(client);
    try {
      await d.start(1, (offered) => offered & ~featureBit(VirtioFeature.EVENT_IDX));
      assert.equal((await blk(d, 0, T_IN, 0, { inLen: 512 })).status, S_OK);
      assert.equal(d.usedState(0).flags & VIRTQ_USED_F_NO_NOTIFY, 0);
    } finally {
      d.close();
      client.close();
      server.close();
    }
  });
});

describe('NVMe with its doorbell page mapped, migrated', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-dbmig-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  // On the main thread, and on queue threads (workers: the doorbell the page holds reaches the destination's thread).
  for (const workers of [0, 2]) {
    test(`a doorbell stored as the source stops (it no longer looks) is served by the destination${workers ? "'s queue thread" : ''}`, async () => {
      const disk = workers ? memfdBackend(1024 * 1024) : probeRam(1024 * 1024);
      const make = () => nvmeController({ namespaces: [disk], queues: 2, workers, serial: 'MIG', mmapDoorbells: true });
      const [srcSpec, dstSpec] = [make(), make()];
      const source = serve(srcSpec, join(dir, `src${workers}.sock`), { log: 'silent', poll: { idleMs: 1 } });
      const destination = serve(dstSpec, join(dir, `dst${workers}.sock`), { log: 'silent', poll: { idleMs: 1 } });
      const a = await connectClient(source.path);
      const b = await connectClient(destination.path);
      const d = await NvmeDriver.open(a);
      // With threads, the second queue: the second thread's.
      const qid = workers ? 2 : 1;
      try {
        await d.mapDoorbells();
        await d.enable();
        await d.createIoQueues(qid, 32);
        assert.equal((await d.rw(qid, true, 0, 8, pattern(4096, 1))).cqe.status, 0);
        // A write, rung only once the source has stopped.
        const buf = d.alloc(PAGE);
        d.bytes(buf, 4096).set(pattern(4096, 7));
        d.put(qid, { opcode: 1, nsid: 1, prp1: buf, cdw10: 40, cdw12: 7, cid: 0x77 });
        const served = nvmeControllerOf(srcSpec)!.counters().ioCommands;
        await d.attachTo(b);
        let rung = false;
        await migrate(a, b, {
          onStep(step) {
            // The source is stopped: its watch looks no more, and the page goes with its memory.
            if (step === 'source: STOP_COPY') void d.ring(2 * qid, d.queues.get(qid)!.tail).then(() => (rung = true));
          },
        });
        assert.ok(rung);
        assert.equal(await getMigrationState(b), MigrationState.RUNNING);
        assert.equal(nvmeControllerOf(srcSpec)!.counters().ioCommands, served, 'the stopped source did not take it');
        d.useClient(b);
        await d.mapDoorbells();
        const c = await d.reap(qid);
        assert.deepEqual([c.cid, c.status], [0x77, 0], 'the destination served the doorbell the source left in the page');
        if (workers) assert.equal(nvmeControllerOf(dstSpec)!.stats.ioCommands, 0, 'on its thread, not the main thread');
        assert.deepEqual((await d.rw(1, false, 40, 8)).data, pattern(4096, 7), 'and goes on through its own page');
        assert.deepEqual((await d.rw(1, false, 0, 8)).data, pattern(4096, 1));
        assert.equal(d.doorbellMessages, 0);
      } finally {
        closeEach(d, a, b, source, destination);
      }
    });
  }
});
