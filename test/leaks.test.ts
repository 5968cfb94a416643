/**
 * No fd or mapping leaks under churn: 10,000 DMA regions mapped and
 * unmapped with one memfd passed each time, IRQ eventfds set and cleared
 * hundreds of times, and many short connections. The server runs in a
 * child process; its /proc/self/fd count must return to its baseline and
 * the client memory it mapped must leave its /proc/self/maps (the total
 * line count only near its baseline: the JS heap adds mappings of its own).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FileSeal, native } from '../src/native/index.js';
import { Client } from '../src/client/index.js';
import { DmaMapFlag, IrqSetFlag } from '../src/protocol/constants.js';
import { ServerProcess, type ServerStats } from './helpers/server-process.js';
import { connectClient, selfFdCount } from './helpers/raw.js';

const INTX = 0;
const MSIX = 2;
const PAGE = 4096;
/** A memfd sealed against shrinking (as QEMU's are), so the server maps it zero-copy. */
function sealedMemfd(name: string, size: number): number {
  const fd = native.memfd(name, size, true);
  native.addSeals(fd, FileSeal.SHRINK);
  return fd;
}

/** Growth of /proc/self/maps allowed for the JS heap (a leak here would be thousands). */
const MAPS_SLACK = 200;

/** Runs fn(0..n-1) with at most `window` in flight. */
async function pipelined(n: number, fn: (i: number) => Promise<unknown>, window = 256): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(window, n) }, worker));
}

function ring(c: Client, n: number): Promise<void> {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return c.regionWrite(1, 0, b);
}

describe('leaks: a server in a child process under churn', () => {
  let server: ServerProcess;
  let c: Client;
  let idle: ServerStats;
  /** Stats with one client connected and nothing mapped or set. */
  let connected: ServerStats;
  let ourFds: number;

  before(async () => {
    server = await ServerProcess.start({ device: 'bench' });
    // Warm up (first client, first DMA map, first eventfd) before the baselines.
    c = await Client.connect(server.path);
    const m = sealedMemfd('warm', PAGE);
    await c.dmaMapRaw(0x1000, PAGE, DmaMapFlag.READ | DmaMapFlag.WRITE, 0, m);
    await c.dmaUnmap(0x1000, PAGE);
    native.close(m);
    c.close();
    idle = await server.idle();
    c = await connectClient(server.path);
    connected = await server.stats();
    ourFds = selfFdCount();
  });

  after(async () => {
    c?.close();
    await server?.stop();
  });

  test('10,000 DMA regions mapped with one memfd, then unmapped: fds and mappings return', async () => {
    const N = 10_000;
    const mfd = sealedMemfd('dma-churn', PAGE);
    try {
      await pipelined(N, (i) => c.dmaMapRaw(0x100000 + i * 2 * PAGE, PAGE, DmaMapFlag.READ | DmaMapFlag.WRITE, 0, mfd));
      const full = await server.stats();
      assert.equal(full.dmaMaps, N);
      assert.equal(full.fds, connected.fds, 'the server closed every DMA fd after mapping it');
      assert.ok(full.maps >= connected.maps + N, `each region is mapped: ${full.maps} lines vs ${connected.maps}`);
      assert.equal(server.memfdMappings('dma-churn'), N);
      await pipelined(N, (i) => c.dmaUnmap(0x100000 + i * 2 * PAGE, PAGE));
      const empty = await server.stats();
      assert.equal(empty.dmaMaps, 0);
      assert.equal(empty.fds, connected.fds);
      assert.equal(server.memfdMappings('dma-churn'), 0, 'every mapping released');
      assert.ok(empty.maps < connected.maps + MAPS_SLACK, `mappings released: ${empty.maps} vs ${connected.maps}`);
      // Map/unmap at the same address, and unmap-all of many at once.
      for (let round = 0; round < 10; round++) {
        await pipelined(200, (i) => c.dmaMapRaw(0x40000000 + i * PAGE, PAGE, DmaMapFlag.READ, 0, i % 2 ? mfd : undefined));
        await c.dmaUnmap(0, 0, true);
      }
      for (let i = 0; i < 500; i++) {
        await c.dmaMapRaw(0x2000, PAGE, DmaMapFlag.READ | DmaMapFlag.WRITE, 0, mfd);
        await c.dmaUnmap(0x2000, PAGE);
      }
      const end = await server.stats();
      assert.equal(end.dmaMaps, 0);
      assert.equal(end.fds, connected.fds);
      assert.equal(server.memfdMappings('dma-churn'), 0);
      assert.ok(end.maps < connected.maps + MAPS_SLACK, `mappings released: ${end.maps} vs ${connected.maps}`);
    } finally {
      native.close(mfd);
    }
    assert.equal(selfFdCount(), ourFds, 'no fd left behind in the client either');
  });

  test('IRQ eventfds set, replaced and cleared hundreds of times: fds return', async () => {
    for (let i = 0; i < 300; i++) {
      const fd = native.eventfd(0);
      await c.setIrqEventfds(MSIX, 0, [fd]);
      await ring(c, 1);
      assert.equal(native.eventfdRead(fd), 1, `round ${i}: the new eventfd is the live one`);
      native.close(fd); // the server holds its own copy
      if (i % 3 === 0) await c.disableIrqs(MSIX);
      else if (i % 3 === 1) await c.setIrqs(MSIX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1); // no fd: unassign
      // i % 3 === 2: left in place, replaced by the next round
    }
    let s = await server.stats();
    assert.ok(s.irqFds <= 1);
    assert.equal(s.fds, connected.fds + s.irqFds);
    await c.disableIrqs(MSIX);
    // INTx trigger and unmask (resample) eventfds.
    for (let i = 0; i < 200; i++) {
      const trig = native.eventfd(0);
      const unmask = native.eventfd(0);
      await c.setIrqEventfds(INTX, 0, [trig]);
      await c.setIrqs(INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, 0, 1, undefined, [unmask]);
      native.close(trig);
      native.close(unmask);
      if (i % 2) await c.disableIrqs(INTX);
      else await c.setIrqs(INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, 0, 1); // clears the unmask fd only
    }
    s = await server.stats();
    assert.ok(s.irqFds <= 1, `at most the last INTx trigger fd: ${s.irqFds}`);
    await c.disableIrqs(INTX);
    s = await server.stats();
    assert.equal(s.irqFds, 0);
    assert.equal(s.fds, connected.fds, 'every eventfd the server received was closed');
    assert.equal(selfFdCount(), ourFds);
  });

  test('200 connections that each map memory and set eventfds, then leave: fds and mappings return', async () => {
    c.close();
    await server.idle();
    const mfd = sealedMemfd('conn-churn', 16 * PAGE);
    try {
      for (let i = 0; i < 200; i++) {
        const k = await connectClient(server.path);
        const efd = native.eventfd(0);
        await k.dmaMapRaw(0x10000, 16 * PAGE, DmaMapFlag.READ | DmaMapFlag.WRITE, 0, mfd);
        await k.dmaMapRaw(0x100000, PAGE, DmaMapFlag.READ, 0);
        await k.setIrqEventfds(MSIX, 0, [efd]);
        native.close(efd);
        k.close();
        await k.whenClosed;
      }
    } finally {
      native.close(mfd);
    }
    const s = await server.idle();
    assert.equal(s.fds, idle.fds, `idle fds back to baseline ${idle.fds}`);
    assert.equal(s.irqFds, 0);
    assert.equal(server.memfdMappings('conn-churn'), 0, 'client memory unmapped when each client left');
    assert.ok(s.maps < idle.maps + MAPS_SLACK, `mappings near baseline: ${s.maps} vs ${idle.maps}`);
    // And it still serves.
    c = await connectClient(server.path);
    assert.equal((await c.deviceInfo()).numRegions, 9);
  });
});
