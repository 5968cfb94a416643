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
import { memfdBackend, serve, virtioBlk, virtioDevice, type Server, type ShareableBackend } from '../src/index.js';
import { IrqIndex } from '../src/protocol/constants.js';
import { virtioTransportOf, VirtioStatus } from '../src/virtio/index.js';
import type { HeldQueueData } from './fixtures/held-queue.js';
import { connectClient } from './helpers/raw.js';
import { S_OK, T_GET_ID, T_IN, T_OUT, blk, buildBlk, pattern } from './helpers/virtio-blk-driver.js';
import { GUEST_BASE, VirtioDriver } from './helpers/virtio-driver.js';

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
  });

  test('INTx: the threads ask the main thread, which sets the ISR and signals INTx', async () => {
    r = await blkRig({ msix: false });
    const data = pattern(4096, 3);
    assert.equal((await blk(r.driver, 0, T_OUT, 8, { out: data })).status, S_OK);
    assert.deepEqual((await blk(r.driver, 1, T_IN, 8, { inLen: 4096 })).data, data);
    const isr = await r.client.regionRead(0, 0x1000, 1);
    assert.equal(isr[0] & 1, 1, 'ISR queue bit set by the main thread');
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

  test('a backend that threads cannot open is refused up front', () => {
    assert.throws(() => virtioBlk({ backend: { size: 4096, readOnly: false, capabilities: { flush: false, discard: false, writeZeroes: false } } as never, queues: 2, workers: 2 }), /worker threads needs a backend/);
    assert.throws(() => virtioBlk({ backend: memfdBackend(MiB), queues: 1, workers: 2 }), RangeError);
  });
});

function heldRig(o: { crash?: boolean } = {}): { gate: Int32Array; spec: ReturnType<typeof virtioDevice> } {
  const sab = new SharedArrayBuffer(8);
  const data: HeldQueueData = { gate: sab, fill: 0x5a, crash: o.crash };
  const spec = virtioDevice({
    type: 4,
    queues: [{ worker: { module: new URL('./fixtures/held-queue.js', import.meta.url), data } }],
  });
  return { gate: new Int32Array(sab), spec };
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 5));
  }
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

  async function start(o: { crash?: boolean } = {}): Promise<Rig & { gate: Int32Array }> {
    const { gate, spec } = heldRig(o);
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
    await waitFor(() => Atomics.load(h.gate, 0) === 1, 'the thread to hold the request');
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
    await waitFor(() => Atomics.load(h.gate, 0) === 1, 'the thread to hold the request');
    const reset = h.driver.setStatus(0);
    assert.equal(await stillPending(reset), true, 'the status write waits for the thread');
    Atomics.store(h.gate, 1, 1);
    await reset;
    assert.equal(h.driver.usedState(0).idx, 0, 'the abandoned request never completed');
  });

  test('a thread that dies sets DEVICE_NEEDS_RESET; the process serves on, and a reset starts a new thread', async () => {
    const h = await start({ crash: true });
    Atomics.store(h.gate, 1, 1);
    h.driver.post(0, [{ addr: h.driver.alloc(64), len: 64, write: true }]);
    await h.driver.kick(0);
    const transport = virtioTransportOf(h.server.device.spec)!;
    await waitFor(() => (transport.status & VirtioStatus.DEVICE_NEEDS_RESET) !== 0, 'DEVICE_NEEDS_RESET');
    assert.match(transport.brokenReason ?? '', /worker thread 0/);
    // The device still answers, and a reset brings up a new thread.
    await h.driver.setStatus(0);
    await waitFor(() => transport.threads!.threadCount === 1, 'a new thread');
    assert.equal(h.server.device.irqs.count(IrqIndex.MSIX) > 0, true);
  });
});
