/**
 * Client and server in separate processes over a real UNIX socket, with
 * real fds: the BAR0 memfd mapped on both sides, memfd DMA, eventfd IRQs.
 * A last part runs the server in-process to look at device-side views.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { native } from '../src/native/index.js';
import { Client, ClientError, EventFd, privateMemory, sharedMemory } from '../src/client/index.js';
import { DeviceInfoFlag, DmaMapFlag, IrqInfoFlag, IrqSetFlag, RegionInfoFlag } from '../src/protocol/constants.js';
import { serve } from '../src/index.js';
import { benchDevice } from '../src/samples/bench.js';
import { ServerProcess } from './helpers/server-process.js';
import { sleep } from './helpers/wait.js';
import { connectClient, selfFdCount } from './helpers/raw.js';
import { le32 } from './helpers/bytes.js';

const INTX = 0;
const MSIX = 2;
const EINVAL = 22;
const ENOENT = 2;
const EEXIST = 17;
const EFAULT = 14;
const EPERM = 1;

/** Rings the bench doorbell: BAR1 offset 0, raises vector 0 `n` times before the reply. */
function ring(c: Client, n: number): Promise<void> {
  return c.regionWrite(1, 0, le32(n));
}

async function rejectsWith(p: Promise<unknown>, errno: number): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof ClientError && e.errno === errno);
}

describe('bench device in a child process', () => {
  let server: ServerProcess;
  let c: Client;
  let testFds: number;

  before(async () => {
    testFds = selfFdCount();
    server = await ServerProcess.start({ device: 'bench' });
    c = await Client.connect(server.path);
  });

  after(async () => {
    c?.close();
    await server?.stop();
  });

  test('VERSION: the server offers its limits and write_multiple', () => {
    assert.equal(c.server.maxMsgFds, 16);
    assert.equal(c.server.maxDataXferSize, 1024 * 1024);
    assert.equal(c.server.maxDmaMaps, 65535);
    assert.equal(c.server.pgsizes, 4096);
    assert.equal(c.server.writeMultiple, true);
  });

  test('DEVICE_GET_INFO: a resettable PCI device with 9 regions and 5 IRQ indexes', async () => {
    const info = await c.deviceInfo();
    assert.equal(info.flags, DeviceInfoFlag.RESET | DeviceInfoFlag.PCI);
    assert.equal(info.numRegions, 9);
    assert.equal(info.numIrqs, 5);
  });

  test('REGION_INFO for every region; BAR0 comes with an fd', async () => {
    const RW = RegionInfoFlag.READ | RegionInfoFlag.WRITE;
    const want: [number, number, number][] = [
      [0, 4096, RW | RegionInfoFlag.MMAP],
      [1, 4096, RW],
      [2, 4096, RW], // MSI-X table and PBA
      [3, 0, 0],
      [4, 0, 0],
      [5, 0, 0],
      [6, 0, 0],
      [7, 4096, RW], // PCIe config space
      [8, 0, 0],
    ];
    for (const [index, size, flags] of want) {
      const r = await c.regionInfo(index);
      assert.equal(r.info.index, index);
      assert.equal(r.info.size, size, `region ${index} size`);
      assert.equal(r.info.flags, flags, `region ${index} flags`);
      assert.equal(r.fd !== undefined, index === 0, `region ${index} fd`);
      if (r.fd !== undefined) native.close(r.fd);
    }
    await rejectsWith(c.regionInfo(9), EINVAL);
  });

  test('BAR0 is shared memory: REGION_WRITE shows in our mapping of its fd, and back', async () => {
    const r = await c.regionInfo(0);
    assert.ok(r.fd !== undefined);
    const m = native.mmap(r.fd, r.info.offset, r.info.size, true);
    native.close(r.fd);
    assert.ok(Array.isArray(m));
    const mem = new Uint8Array(m[0]);
    try {
      await c.regionWrite(0, 0x100, Buffer.from('through the socket'));
      assert.equal(Buffer.from(mem.subarray(0x100, 0x112)).toString(), 'through the socket');
      mem.set(Buffer.from('through the mapping'), 0x200);
      assert.equal((await c.regionRead(0, 0x200, 19)).toString(), 'through the mapping');
    } finally {
      native.munmap(m[1], m[0]);
    }
  });

  test('REGION_READ/WRITE round trip for every width and the whole BAR', async () => {
    for (const [off, len] of [[0, 1], [2, 2], [4, 4], [8, 8], [4095, 1], [4088, 8]]) {
      const data = Buffer.from(Array.from({ length: len }, (_, i) => (off + i * 37) & 0xff));
      await c.regionWrite(0, off, data);
      assert.deepEqual(await c.regionRead(0, off, len), data);
    }
    const all = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff));
    await c.regionWrite(0, 0, all);
    assert.deepEqual(await c.regionRead(0, 0, 4096), all);
  });

  test('REGION_WRITE_MULTI: answered and posted writes land in order', async () => {
    const writes = [0, 1, 2, 3].map((i) => ({ region: 0, offset: 0x300 + 8 * i, count: 8, data: Buffer.alloc(8, 0xa0 + i) }));
    await c.regionWriteMulti(writes);
    for (let i = 0; i < 4; i++) assert.deepEqual(await c.regionRead(0, 0x300 + 8 * i, 8), Buffer.alloc(8, 0xa0 + i));
    // Posted: no reply; the next command is served after them.
    await c.regionWriteMulti([{ region: 0, offset: 0x400, count: 2, data: Buffer.from([1, 2]) }, { region: 0, offset: 0x402, count: 1, data: Buffer.from([3]) }], true);
    assert.deepEqual(await c.regionRead(0, 0x400, 3), Buffer.from([1, 2, 3]));
  });

  test('config space: ids, class, and BAR sizing through region 7', async () => {
    const cfg = await c.regionRead(7, 0, 64);
    assert.equal(cfg.readUInt16LE(0), 0x4d55);
    assert.equal(cfg.readUInt16LE(2), 0x0001);
    assert.equal(cfg.readUInt32LE(8) >>> 8, 0xff0000, 'class code');
    assert.equal(cfg.readUInt16LE(0x2c), 0x4d55, 'subsystem vendor');
    assert.ok(cfg.readUInt16LE(6) & 0x10, 'status: capability list');
    const sizeOf = async (bar: number): Promise<number> => {
      const off = 0x10 + 4 * bar;
      const old = (await c.regionRead(7, off, 4)).readUInt32LE(0);
      await c.regionWrite(7, off, le32(0xffffffff));
      const mask = (await c.regionRead(7, off, 4)).readUInt32LE(0);
      await c.regionWrite(7, off, le32(old));
      assert.equal((await c.regionRead(7, off, 4)).readUInt32LE(0), old, 'BAR restored');
      return mask;
    };
    assert.equal(await sizeOf(0), 0xfffff000, 'BAR0: 4 KiB 32-bit memory');
    assert.equal(await sizeOf(1), 0xfffff000, 'BAR1: 4 KiB');
    assert.equal(await sizeOf(2), 0xfffff000, 'BAR2: MSI-X, 4 KiB');
    assert.equal(await sizeOf(3), 0, 'BAR3: unimplemented');
    // The address written to a BAR reads back within the size mask.
    await c.regionWrite(7, 0x10, le32(0xfebc1234));
    assert.equal((await c.regionRead(7, 0x10, 4)).readUInt32LE(0), 0xfebc1000);
    await c.regionWrite(7, 0x10, le32(0));
  });

  test('IRQ_INFO: INTx is automasked, MSI-X has one vector', async () => {
    const intx = await c.irqInfo(INTX);
    assert.equal(intx.count, 1);
    assert.ok(intx.flags & IrqInfoFlag.AUTOMASKED);
    assert.ok(intx.flags & IrqInfoFlag.EVENTFD);
    const msix = await c.irqInfo(MSIX);
    assert.equal(msix.count, 1);
    assert.ok(msix.flags & IrqInfoFlag.NORESIZE);
    assert.equal((await c.irqInfo(1)).count, 0, 'no MSI');
    await rejectsWith(c.irqInfo(5), EINVAL);
  });

  test('doorbell: the MSI-X eventfd fired N times before the write was answered', async () => {
    const fd = native.eventfd(0);
    try {
      await c.setIrqEventfds(MSIX, 0, [fd]);
      for (const n of [1, 7, 100]) {
        await ring(c, n);
        // Read at once, synchronously: the signals must already be there.
        assert.equal(native.eventfdRead(fd), n);
      }
      await ring(c, 0);
      assert.equal(native.eventfdRead(fd), -11, 'no signal for N = 0');
    } finally {
      await c.disableIrqs(MSIX);
      native.close(fd);
    }
  });

  test('SET_IRQS mask/unmask: a masked vector is pending (PBA) and fires on unmask', async () => {
    const fd = native.eventfd(0);
    const pba = async (): Promise<number> => (await c.regionRead(2, 16, 8)).readUInt32LE(0);
    try {
      await c.setIrqEventfds(MSIX, 0, [fd]);
      await c.maskIrqs(MSIX, 0, 1, true);
      await ring(c, 3);
      assert.equal(native.eventfdRead(fd), -11, 'masked: nothing fired');
      assert.equal(await pba(), 1, 'pending bit set in the PBA');
      await c.maskIrqs(MSIX, 0, 1, false);
      assert.equal(native.eventfdRead(fd), 1, 'fired once on unmask');
      assert.equal(await pba(), 0, 'pending bit cleared');
      await c.maskIrqs(MSIX, 0, 1, false);
      assert.equal(native.eventfdRead(fd), -11, 'a second unmask fires nothing');
      // DATA_BOOL form: mask only where the bool is set.
      await c.setIrqs(MSIX, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK, 0, 1, Uint8Array.of(0));
      await ring(c, 1);
      assert.equal(native.eventfdRead(fd), 1, 'bool 0 masked nothing');
      await c.setIrqs(MSIX, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK, 0, 1, Uint8Array.of(1));
      await ring(c, 1);
      assert.equal(native.eventfdRead(fd), -11);
      await c.setIrqs(MSIX, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_UNMASK, 0, 1, Uint8Array.of(1));
      assert.equal(native.eventfdRead(fd), 1);
      // DATA_BOOL trigger from the client.
      await c.setIrqs(MSIX, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, 0, 1, Uint8Array.of(1));
      assert.equal(native.eventfdRead(fd), 1);
    } finally {
      await c.disableIrqs(MSIX);
      native.close(fd);
    }
  });

  test('INTx: without MSI-X eventfds the device raises INTx, automasked until unmasked', async () => {
    const fd = native.eventfd(0);
    try {
      await c.setIrqEventfds(INTX, 0, [fd]);
      await ring(c, 3);
      assert.equal(native.eventfdRead(fd), 1, 'first trigger fires, then INTx masks itself');
      await c.maskIrqs(INTX, 0, 1, false);
      assert.equal(native.eventfdRead(fd), 1, 'the pending trigger fires on unmask (and masks again)');
      await c.maskIrqs(INTX, 0, 1, false);
      assert.equal(native.eventfdRead(fd), -11, 'nothing left pending');
      await ring(c, 1);
      assert.equal(native.eventfdRead(fd), 1, 'unmasked again: fires');
      // MSI-X eventfds take over; removing them falls back to INTx.
      const mfd = native.eventfd(0);
      await c.maskIrqs(INTX, 0, 1, false);
      await c.setIrqEventfds(MSIX, 0, [mfd]);
      await ring(c, 2);
      assert.equal(native.eventfdRead(mfd), 2);
      assert.equal(native.eventfdRead(fd), -11);
      await c.disableIrqs(MSIX);
      native.close(mfd);
      await c.setIrqEventfds(INTX, 0, [fd]);
      await ring(c, 1);
      assert.equal(native.eventfdRead(fd), 1);
    } finally {
      await c.disableIrqs(INTX);
      native.close(fd);
    }
  });

  test('INTx resample: signalling the unmask eventfd unmasks and fires the pending trigger', async () => {
    const irq = new EventFd();
    const unmask = native.eventfd(0);
    try {
      await c.setIrqEventfds(INTX, 0, [irq.fd]);
      await c.setIrqs(INTX, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, 0, 1, undefined, [unmask]);
      await ring(c, 2);
      await irq.waitFor(1);
      native.eventfdWrite(unmask, 1); // the guest's EOI
      await irq.waitFor(2);
      await sleep(20);
      assert.equal(irq.total, 2, 'one trigger, one pending: two signals');
    } finally {
      await c.disableIrqs(INTX);
      irq.close();
      native.close(unmask);
    }
  });

  test('DMA_MAP with a memfd and without an fd; the server keeps no fd, only the mapping', async () => {
    const base = await server.stats();
    const mem = sharedMemory(64 * 1024);
    const priv = privateMemory(8192);
    try {
      await c.dmaMap(0x100000, mem);
      await c.dmaMap(0x400000, priv);
      const s = await server.stats();
      assert.equal(s.dmaMaps, 2);
      assert.equal(s.fds, base.fds, 'the server closed the memfd after mapping it');
      assert.equal(server.memfdMappings('muser-guest'), 1, 'the memfd is mapped in the server');
      await rejectsWith(c.dmaMapRaw(0x100000 + 4096, 4096, DmaMapFlag.READ, 0), EEXIST);
      await c.dmaUnmap(0x100000, 64 * 1024);
      await rejectsWith(c.dmaUnmap(0x100000, 64 * 1024), ENOENT);
      await c.dmaUnmap(0x400000, 8192);
      const e = await server.stats();
      assert.equal(e.dmaMaps, 0);
      assert.equal(e.fds, base.fds);
      assert.equal(server.memfdMappings('muser-guest'), 0, 'mapping released');
    } finally {
      mem.close();
    }
  });

  test('DEVICE_RESET: config space back to power-on, masks cleared', async () => {
    await c.regionWrite(7, 4, Buffer.from([0x06, 0x00])); // memory + bus master
    await c.regionWrite(7, 0x10, le32(0xfeb00000));
    assert.equal((await c.regionRead(7, 4, 2)).readUInt16LE(0), 0x0006);
    const fd = native.eventfd(0);
    try {
      await c.setIrqEventfds(MSIX, 0, [fd]);
      await c.maskIrqs(MSIX, 0, 1, true);
      await c.reset();
      assert.equal((await c.regionRead(7, 4, 2)).readUInt16LE(0), 0);
      assert.equal((await c.regionRead(7, 0x10, 4)).readUInt32LE(0), 0);
      assert.equal((await c.regionRead(7, 0, 4)).readUInt32LE(0), 0x00014d55, 'ids survive');
      await c.setIrqEventfds(MSIX, 0, [fd]);
      await ring(c, 1);
      assert.equal(native.eventfdRead(fd), 1, 'no mask survives the reset');
    } finally {
      await c.disableIrqs(MSIX);
      native.close(fd);
    }
  });

  test('a second client waits while one is connected; after disconnect it is served', async () => {
    let served = false;
    const second = Client.connect(server.path, { timeoutMs: 5000 }).then((client) => {
      served = true;
      return client;
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(served, false, 'the second client waits for the device');
    assert.ok(!c.isClosed, 'the first client is untouched');
    await c.regionWrite(0, 0, Buffer.from('kept'));
    c.close();
    c = await second;
    assert.equal((await c.deviceInfo()).numRegions, 9);
    // Region memory belongs to the device, not the connection.
    assert.equal((await c.regionRead(0, 0, 4)).toString(), 'kept');
    // Reconnect at once, many times.
    for (let i = 0; i < 20; i++) {
      c.close();
      c = await connectClient(server.path);
      assert.equal((await c.regionRead(0, 0, 4)).toString(), 'kept');
    }
  });

  test('the server holds no more fds than before any client; neither do we', async () => {
    c.close();
    const idle = await server.idle();
    const fresh = await ServerProcess.start({ device: 'bench' });
    try {
      const baseline = (await fresh.stats()).fds;
      assert.equal(idle.fds, baseline, 'same fd count as a server that never had a client');
    } finally {
      await fresh.stop();
    }
    c = await connectClient(server.path);
    assert.equal(selfFdCount(), testFds + 4, 'our side: the client socket, plus the server child stdio pipes');
  });
});

describe('the DMA engine of testdev in a child process', () => {
  let server: ServerProcess;
  let c: Client;
  const mem = sharedMemory(64 * 1024);
  const priv = privateMemory(16 * 1024);
  const ro = sharedMemory(4096);

  /** Programs BAR4: copy `len` bytes from `src` to `dst`, by messages (0x00) or views (0x20). */
  function copy(src: number, dst: number, len: number, mode: 0x00 | 0x20): Promise<void> {
    const b = Buffer.alloc(24);
    b.writeBigUInt64LE(BigInt(src), 0);
    b.writeBigUInt64LE(BigInt(dst), 8);
    b.writeBigUInt64LE(BigInt(len), 16);
    return c.regionWrite(4, mode, b);
  }

  before(async () => {
    server = await ServerProcess.start({ device: 'testdev' });
    // A small max_data_xfer_size makes the device split DMA_READ/WRITE.
    c = await Client.connect(server.path, { capabilities: { maxDataXferSize: 4096 } });
    await c.setBusMaster(); // DMA needs Bus Master Enable
    await c.dmaMap(0x100000, mem);
    await c.dmaMap(0x400000, priv);
    await c.dmaMap(0x800000, ro, DmaMapFlag.READ);
  });

  after(async () => {
    c?.close();
    await server?.stop();
    mem.close();
    ro.close();
  });

  test('device copies fd-backed memory into fd-less memory with DMA_WRITE messages', async () => {
    for (let i = 0; i < 10000; i++) mem.bytes[i] = (i * 13) & 0xff;
    const served = c.dmaRequestsServed;
    await copy(0x100000, 0x400000 + 100, 10000, 0x00);
    assert.deepEqual(Buffer.from(priv.bytes.subarray(100, 10100)), Buffer.from(mem.bytes.subarray(0, 10000)));
    assert.equal(c.dmaRequestsServed - served, 3, '10000 bytes in 4 KiB DMA_WRITE messages');
  });

  test('device copies fd-less memory into fd-backed memory with DMA_READ messages', async () => {
    for (let i = 0; i < 9000; i++) priv.bytes[i] = (i * 31 + 5) & 0xff;
    const served = c.dmaRequestsServed;
    await copy(0x400000, 0x100000 + 8192, 9000, 0x00);
    assert.deepEqual(Buffer.from(mem.bytes.subarray(8192, 8192 + 9000)), Buffer.from(priv.bytes.subarray(0, 9000)));
    assert.equal(c.dmaRequestsServed - served, 3);
  });

  test('device copies through zero-copy views of both processes\' shared memory', async () => {
    mem.bytes.set(Buffer.from('zero-copy source'), 0x8000);
    const served = c.dmaRequestsServed;
    await copy(0x100000 + 0x8000, 0x100000 + 0x9000, 16, 0x20);
    assert.equal(Buffer.from(mem.bytes.subarray(0x9000, 0x9010)).toString(), 'zero-copy source');
    assert.equal(c.dmaRequestsServed, served, 'no messages');
    ro.bytes.set(Buffer.from('read-only'), 0);
    await copy(0x800000, 0x100000 + 0xa000, 9, 0x20);
    assert.equal(Buffer.from(mem.bytes.subarray(0xa000, 0xa009)).toString(), 'read-only');
  });

  test('DMA faults reach the client as errnos: unmapped, read-only, no fd for a view', async () => {
    await rejectsWith(copy(0x200000, 0x100000, 16, 0x00), EFAULT);
    await rejectsWith(copy(0x100000, 0x100000 + 64 * 1024 - 8, 16, 0x00), EFAULT);
    await rejectsWith(copy(0x100000, 0x800000, 16, 0x20), EPERM);
    await rejectsWith(copy(0x100000, 0x800000, 16, 0x00), EPERM);
    await rejectsWith(copy(0x400000, 0x100000, 16, 0x20), EFAULT);
    // And the device still works.
    await copy(0x100000, 0x400000, 16, 0x00);
  });
});

describe('device-side views with the server in this process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-int-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a view of client memory sees client writes, and reads length 0 after DMA_UNMAP', async () => {
    const path = join(dir, 'v.sock');
    const server = serve(benchDevice(), path, { log: 'silent' });
    const c = await Client.connect(path);
    const mem = sharedMemory(8192);
    try {
      await c.setBusMaster(); // DMA needs Bus Master Enable
      await c.dmaMap(0x10000, mem);
      const view = server.device.dma.view(0x10000 + 4096, 16, true);
      mem.bytes[4096] = 0x5a;
      assert.equal(view[0], 0x5a, 'client write seen by the device');
      view[1] = 0xa5;
      assert.equal(mem.bytes[4097], 0xa5, 'device write seen by the client');
      assert.equal(server.device.dma.isDirect(0x10000, 8192), true);
      await c.dmaUnmap(0x10000, 8192);
      assert.equal(view.length, 0);
      assert.equal(view[0], undefined);
      assert.throws(() => server.device.dma.view(0x10000, 16), (e: { errno?: number }) => e.errno === EFAULT);
      // The client's own mapping is untouched.
      assert.equal(mem.bytes[4097], 0xa5);
      // Memory mapped again is reachable again.
      await c.dmaMap(0x10000, mem);
      assert.equal(server.device.dma.view(0x10000 + 4097, 1)[0], 0xa5);
      c.close();
      await c.whenClosed;
      for (let i = 0; i < 100 && server.session; i++) await sleep(5);
      assert.equal(server.session, undefined);
      assert.throws(() => server.device.dma, (e: { errno?: number }) => e.errno === 107, 'no client, no DMA');
    } finally {
      c.close();
      mem.close();
      server.close();
    }
  });
});

describe('the muser CLI serves in its own process', () => {
  test('`muser run bench <sock>` serves, and exits 0 removing the socket on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muser-cli-'));
    const path = join(dir, 'cli.sock');
    const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const child = spawn(process.execPath, [main, 'run', 'bench', path], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      for (let i = 0; i < 500 && !existsSync(path); i++) await sleep(10);
      const c = await Client.connect(path);
      await c.regionWrite(0, 0, Buffer.from('cli'));
      assert.equal((await c.regionRead(0, 0, 3)).toString(), 'cli');
      c.close();
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.ok(!existsSync(path), 'socket removed');
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
