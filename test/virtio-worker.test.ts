/**
 * Virtqueues on worker threads, driven by our client as the virtio driver:
 * virtio-blk with its queues on two threads (data, every doorbell kind,
 * interrupts straight to the MSI-X eventfd, INTx and fd-less memory by way
 * of the main thread), and a held queue module that shows DMA_UNMAP and
 * reset waiting for a thread's I/O, and a thread that dies.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import type { Client } from '../src/client/index.js';
import { dirtyReport, getMigrationState, migrate, MigrationState, startDirtyLogging, stopDirtyLogging } from '../src/client/index.js';
import { memfdBackend, openSharedBackend, serve, virtioBlk, virtioDevice, type Server, type ShareableBackend } from '../src/index.js';
import { IrqIndex } from '../src/protocol/constants.js';
import { virtioTransportOf, VirtioStatus } from '../src/virtio/index.js';
import type { HeldQueueData } from './fixtures/held-queue.js';
import { connectClient } from './helpers/raw.js';
import { fuzzRing } from './helpers/ring-fuzz.js';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';
import { parseRunArgs } from '../src/cli/run/index.js';
import { S_OK, T_GET_ID, T_IN, T_OUT, blk, buildBlk } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';
import { GUEST_BASE, VirtioDriver } from './helpers/virtio-driver.js';
import { sleep, until } from './helpers/wait.js';
import { closeEach } from './helpers/close.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-vworker-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const MiB = 1024 * 1024;

interface Rig {
  server: Server;
  client: Client;
  driver: VirtioDriver;
  backend?: ShareableBackend;
}

function close(r: Rig | undefined): void {
  if (!r) return;
  r.driver.close();
  r.client.close();
  r.server.close();
  void r.backend?.close();
}

async function blkRig(o: { memory?: 'shared' | 'private'; msix?: boolean } = {}): Promise<Rig> {
  const backend = memfdBackend(4 * MiB);
  const spec = virtioBlk({ backend, queues: 2, workers: 2, serial: 'worker-serial', queueSize: 64 });
  const server = serve(spec, join(dir, `w${serial++}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const driver = await VirtioDriver.open(client, { memory: o.memory, msix: o.msix });
  await driver.start(2);
  return { server, client, driver, backend };
}

describe('virtio-blk with queues on worker threads', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('both queues, each on its own thread, read and write the one disk with every doorbell', async () => {
    r = await blkRig();
    const transport = virtioTransportOf(r.server.device.spec)!;
    assert.equal(transport.threads?.threadCount, 2);
    let seed = 1;
    for (const kick of ['message', 'posted', 'eventfd'] as const) {
      for (const q of [0, 1]) {
        const data = pattern(12 * 1024, seed++);
        const sector = seed * 40;
        const w = await blk(r.driver, q, T_OUT, sector, { out: data, kick, indirect: q === 1 });
        assert.equal(w.status, S_OK);
        const back = Buffer.alloc(data.length);
        await r.backend!.read(sector * 512, [back]);
        assert.deepEqual(back, data, 'the write reached the shared disk');
        // Read it back on the other queue: the other thread sees the same storage.
        const rd = await blk(r.driver, 1 - q, T_IN, sector, { inLen: data.length, kick });
        assert.equal(rd.status, S_OK);
        assert.deepEqual(rd.data, data);
      }
    }
    assert.equal((await blk(r.driver, 0, T_GET_ID, 0, { inLen: 20 })).data.subarray(0, 13).toString(), 'worker-serial');
    // Every completion interrupt went from the threads straight to the MSI-X eventfds.
    assert.equal(r.server.device.irqs.signals, 0, 'the main thread signalled no interrupt');
    const counts = transport.requestCounts();
    assert.deepEqual(counts.map((c) => c.thread), [0, 1], 'each queue on its own thread');
    assert.deepEqual(counts.map((c) => c.requests), [7, 6], 'the threads served every request');
  });

  test('INTx: the threads ask the main thread, which sets the ISR and signals INTx', async () => {
    r = await blkRig({ msix: false });
    const data = pattern(4096, 3);
    assert.equal((await blk(r.driver, 0, T_OUT, 8, { out: data })).status, S_OK);
    assert.deepEqual((await blk(r.driver, 1, T_IN, 8, { inLen: 4096 })).data, data);
    // The thread publishes the used ring itself; the main thread sets the ISR once the thread's message
    // reaches it, which on a loaded machine can be after the driver saw the completion. Reading clears the
    // ISR, so the poll stops at the first read that has the bit.
    let isr = 0;
    const deadline = Date.now() + 5000;
    while (!((isr = (await r.client.regionRead(0, 0x1000, 1))[0]) & 1) && Date.now() < deadline) await sleep(10);
    assert.equal(isr & 1, 1, 'ISR queue bit set by the main thread');
  });

  test('guest memory without an fd: the threads reach it by DMA messages through the main thread', async () => {
    r = await blkRig({ memory: 'private' });
    const data = pattern(8192, 9);
    assert.equal((await blk(r.driver, 1, T_OUT, 32, { out: data })).status, S_OK);
    const rd = await blk(r.driver, 0, T_IN, 32, { inLen: 8192, indirect: true });
    assert.equal(rd.status, S_OK);
    assert.deepEqual(rd.data, data);
  });

  test('migration quiesce: the saved ring indices are the threads\' own', async () => {
    r = await blkRig();
    for (let i = 0; i < 5; i++) assert.equal((await blk(r.driver, 1, T_GET_ID, 0, { inLen: 20 })).status, S_OK);
    const transport = virtioTransportOf(r.server.device.spec)!;
    assert.equal(await transport.quiesce(), true);
    const saved = transport.save();
    assert.equal(saved.queues[1].lastAvail, 5);
    assert.equal(saved.queues[1].usedIdx, 5);
    assert.equal(saved.queues[0].lastAvail, 0);
    transport.resume();
    assert.equal((await blk(r.driver, 1, T_GET_ID, 0, { inLen: 20 })).status, S_OK);
  });

  test('a seeded fuzz of ring memory served on a thread never crashes or hangs the device', async () => {
    r = await blkRig();
    const broken = await fuzzRing(r.driver, 120, 0x51f15eed);
    assert.ok(broken > 0, 'the fuzz broke the ring at least once');
    const data = pattern(4096, 5);
    assert.equal((await blk(r.driver, 0, T_OUT, 0, { out: data })).status, S_OK);
    assert.deepEqual((await blk(r.driver, 0, T_IN, 0, { inLen: 4096 })).data, data);
    assert.equal(virtioTransportOf(r.server.device.spec)!.threads!.threadCount, 2, 'no thread died');
  });

  test('a backend that threads cannot open is refused up front', () => {
    assert.throws(() => virtioBlk({ backend: { size: 4096, readOnly: false, capabilities: { flush: false, discard: false, writeZeroes: false } } as never, queues: 2, workers: 2 }), /worker threads needs a backend/);
    assert.throws(() => virtioBlk({ backend: memfdBackend(MiB), queues: 1, workers: 2 }), RangeError);
  });
});

function heldRig(): { gate: Int32Array; spec: ReturnType<typeof virtioDevice> } {
  const sab = new SharedArrayBuffer(16);
  const data: HeldQueueData = { gate: sab, fill: 0x5a };
  const spec = virtioDevice({
    type: 4,
    queues: [{ worker: { module: new URL('./fixtures/held-queue.js', import.meta.url), data, resetTimeoutMs: 500 } }],
  });
  return { gate: new Int32Array(sab), spec };
}

/** Resolves to 'pending' if `p` has not settled after `ms`. */
async function stillPending(p: Promise<unknown>, ms = 200): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((res) => setTimeout(res, ms));
  return !settled;
}

describe('a queue module on a worker thread', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  async function start(): Promise<Rig & { gate: Int32Array }> {
    const { gate, spec } = heldRig();
    const server = serve(spec, join(dir, `h${serial++}.sock`), { log: 'silent' });
    const client = await connectClient(server.path);
    const driver = await VirtioDriver.open(client);
    await driver.start(1);
    r = { server, client, driver };
    return { ...r, gate };
  }

  test('DMA_UNMAP of memory a thread is using is answered only after the thread let go of it', async () => {
    const h = await start();
    const buf = { addr: h.driver.alloc(4096, 4096), len: 4096, write: true };
    h.driver.post(0, [buf]);
    await h.driver.kick(0);
    await until(() => Atomics.load(h.gate, 0) === 1, 'the thread to hold the request', 10_000);
    const unmap = h.client.dmaUnmap(GUEST_BASE, h.driver.mem.bytes.length);
    assert.equal(await stillPending(unmap), true, 'the unmap waits for the thread');
    Atomics.store(h.gate, 1, 1);
    await unmap;
    // The thread wrote the memory before it was unmapped: the driver's copy shows it.
    assert.equal(h.driver.bytes(buf.addr, 4096)[100], 0x5a);
  });

  test('a reset by the driver completes only once the thread finished the requests it abandons', async () => {
    const h = await start();
    h.driver.post(0, [{ addr: h.driver.alloc(4096, 4096), len: 4096, write: true }]);
    await h.driver.kick(0);
    await until(() => Atomics.load(h.gate, 0) === 1, 'the thread to hold the request', 10_000);
    const reset = h.driver.setStatus(0);
    assert.equal(await stillPending(reset), true, 'the status write waits for the thread');
    Atomics.store(h.gate, 1, 1);
    await reset;
    assert.equal(h.driver.usedState(0).idx, 0, 'the abandoned request never completed');
  });

  test('a handler stuck in a loop: the reset ends its thread after the reset timeout and a new thread serves', async () => {
    const h = await start();
    Atomics.store(h.gate, 3, 1);
    h.driver.post(0, [{ addr: h.driver.alloc(64), len: 64, write: true }]);
    await h.driver.kick(0);
    await until(() => Atomics.load(h.gate, 0) === 1, 'the handler to start spinning', 10_000);
    // The main thread is not stuck: the device answers.
    assert.equal((await h.driver.status()) & VirtioStatus.DEVICE_NEEDS_RESET, 0);
    Atomics.store(h.gate, 3, 0);
    Atomics.store(h.gate, 1, 1);
    await h.driver.start(1); // resets: waits 500 ms, then restarts the thread
    const buf = { addr: h.driver.alloc(4096, 4096), len: 4096, write: true };
    await h.driver.roundTrip(0, [buf]);
    assert.equal(h.driver.bytes(buf.addr, 4096)[0], 0x5a, 'served by the new thread');
  });

  test('a thread that dies sets DEVICE_NEEDS_RESET; the process serves on, and a reset starts a new thread that serves', async () => {
    const h = await start();
    Atomics.store(h.gate, 1, 1);
    Atomics.store(h.gate, 2, 1);
    h.driver.post(0, [{ addr: h.driver.alloc(64), len: 64, write: true }]);
    await h.driver.kick(0);
    const transport = virtioTransportOf(h.server.device.spec)!;
    await until(() => (transport.status & VirtioStatus.DEVICE_NEEDS_RESET) !== 0, 'DEVICE_NEEDS_RESET', 10_000);
    assert.match(transport.brokenReason ?? '', /worker thread 0/);
    // The device still answers; a reset brings up a new thread, with the guest memory mapped.
    Atomics.store(h.gate, 2, 0);
    await h.driver.start(1);
    assert.equal(transport.threads!.threadCount, 1);
    const buf = { addr: h.driver.alloc(4096, 4096), len: 4096, write: true };
    const used = await h.driver.roundTrip(0, [buf]);
    assert.equal(used.len, 4096);
    assert.equal(h.driver.bytes(buf.addr, 4096)[4095], 0x5a, 'the new thread wrote the buffer');
  });

});

describe('muser run virtio-blk --workers', () => {
  test('serves a RAM disk from two threads, and stops cleanly on SIGTERM', async () => {
    const path = join(dir, `cli${serial++}.sock`);
    const server = await startServer([MAIN, 'run', 'virtio-blk', path, '--size', '4M', '--queues', '2', '--workers', '--stats'], path, `on ${path}`, 'muser run');
    const client = await connectClient(path);
    const driver = await VirtioDriver.open(client);
    try {
      await driver.start(2);
      const data = pattern(8192, 11);
      assert.equal((await blk(driver, 0, T_OUT, 64, { out: data, kick: 'eventfd' })).status, S_OK);
      assert.deepEqual((await blk(driver, 1, T_IN, 64, { inLen: 8192, kick: 'eventfd' })).data, data);
      assert.equal((await blk(driver, 1, T_GET_ID, 0, { inLen: 20 })).status, S_OK);
    } finally {
      driver.close();
      client.close();
    }
    // --stats: when the client left, each queue's requests were counted on its own thread.
    const deadline = Date.now() + 5000;
    while (!/virtio-blk: stats .*\n/.test(server.stderr) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    assert.match(server.stderr, /virtio-blk: stats q0=thread0:1 q1=thread1:2\n/);
    const exited = new Promise<number | null>((resolve) => server.child.once('exit', (code) => resolve(code)));
    server.child.kill('SIGTERM');
    assert.equal(await exited, 0, server.stderr);
  });

  test('--workers alone means one thread per queue; it takes a following number only', () => {
    const run = parseRunArgs(['virtio-blk', 'a.sock', '--size', '4M', '--queues', '2', '--workers', 'counter', 'b.sock']);
    assert.equal(run.devices[0].options.workers, true);
    assert.equal(run.devices[1].device, 'counter');
    assert.equal(parseRunArgs(['virtio-blk', 'a.sock', '--workers', '2']).devices[0].options.workers, '2');
    assert.equal(parseRunArgs(['virtio-blk', 'a.sock', '--workers=1']).devices[0].options.workers, '1');
  });

  test('refuses --workers with an NBD disk, or more workers than queues', async () => {
    const nbd = await runCli(['run', 'virtio-blk', join(dir, 'x.sock'), '--nbd', 'nbd://127.0.0.1:1/x', '--workers', '1']);
    assert.notEqual(nbd.code, 0);
    assert.match(nbd.stderr, /worker threads serve --image or --size disks, not --nbd/);
    const many = await runCli(['run', 'virtio-blk', join(dir, 'y.sock'), '--size', '1M', '--workers', '2']);
    assert.notEqual(many.code, 0);
    assert.match(many.stderr, /--workers must be 0..1/);
  });
});

describe('virtio-blk on worker threads under migration', () => {
  test('pages the threads write are in the dirty-page log', async () => {
    const r = await blkRig();
    try {
      const size = r.driver.mem.bytes.length;
      await startDirtyLogging(r.client, 4096, [{ iova: GUEST_BASE, length: size }]);
      await dirtyReport(r.client, GUEST_BASE, size); // clear what setup marked
      const header = Buffer.alloc(16);
      header.writeUInt32LE(T_IN);
      const data = r.driver.alloc(4096, 4096);
      const status = r.driver.alloc(1, 4096);
      r.driver.post(1, [{ addr: r.driver.put(header, 16), len: 16 }, { addr: data, len: 4096, write: true }, { addr: status, len: 1, write: true }]);
      await r.driver.kick(1, 'eventfd');
      await r.driver.waitUsed(1, 1);
      const pages = await dirtyReport(r.client, GUEST_BASE, size);
      assert.ok(pages.includes(data), 'the data page a thread wrote is dirty');
      assert.ok(pages.includes(status - (status % 4096)), 'the status page is dirty');
      await stopDirtyLogging(r.client);
    } finally {
      close(r);
    }
  });

  test('migrates between two processes\' worth of servers with threads, over one memfd disk', async () => {
    const disk = memfdBackend(4 * MiB);
    const twin = await openSharedBackend(disk.share());
    const source = serve(virtioBlk({ backend: disk, queues: 2, workers: 2, queueSize: 64 }), join(dir, `ms${serial++}.sock`), { log: 'silent' });
    const destination = serve(virtioBlk({ backend: twin as ShareableBackend, queues: 2, workers: 1, queueSize: 64 }), join(dir, `md${serial++}.sock`), { log: 'silent' });
    const a = await connectClient(source.path);
    const b = await connectClient(destination.path);
    const d = await VirtioDriver.open(a);
    try {
      await d.start(2);
      for (const q of [0, 1]) assert.equal((await blk(d, q, T_OUT, q * 64, { out: pattern(4096, q + 1) })).status, S_OK);
      await d.attachTo(b);
      let preCopy: Promise<number> | undefined;
      await migrate(a, b, {
        onStep(step) {
          if (step === 'source: PRE_COPY') preCopy = blk(d, 1, T_OUT, 200, { out: pattern(4096, 9) }).then((x) => x.status);
        },
      });
      assert.equal(await preCopy, S_OK);
      assert.equal(await getMigrationState(b), MigrationState.RUNNING);
      d.useClient(b);
      for (const q of [0, 1]) {
        assert.deepEqual((await blk(d, q, T_IN, q * 64, { inLen: 4096, kick: 'eventfd' })).data, pattern(4096, q + 1));
      }
      assert.deepEqual((await blk(d, 0, T_IN, 200, { inLen: 4096 })).data, pattern(4096, 9));
    } finally {
      closeEach(d, a, b, source, destination);
      await disk.close();
      await twin.close();
    }
  });
});
