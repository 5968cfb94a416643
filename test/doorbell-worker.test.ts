/**
 * A doorbell served on a worker thread (`ioeventfds: [{ worker }]`): it
 * rings by ioeventfd (watched by the thread) and by REGION_WRITE (forwarded
 * by the main thread), does DMA with memory the thread mapped itself, and
 * raises its MSI-X vector straight from the thread, or through the main
 * thread while the vector is masked (then it waits as pending).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, test } from 'node:test';
import { EventFd, sharedMemory, type Client, type GuestMemory } from '../src/client/index.js';
import { serve, type DeviceSpec, type Server } from '../src/index.js';
import { IrqIndex } from '../src/protocol/constants.js';
import type { CopyDoorbellData } from './fixtures/copy-doorbell.js';
import { connectClient } from './helpers/raw.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-dbw-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const BASE = 0x4000_0000;
const SIZE = 1 << 20;

interface Rig {
  server: Server;
  client: Client;
  mem: GuestMemory;
  vector: EventFd;
  counter: Int32Array;
}
let r: Rig | undefined;
afterEach(() => {
  if (!r) return;
  r.vector.close();
  r.client.close();
  r.server.close();
  r.mem.close();
  r = undefined;
});

async function rig(): Promise<Rig> {
  const counter = new SharedArrayBuffer(4);
  const data: CopyDoorbellData = { src: BASE + 0x1000, dst: BASE + 0x8000, length: 256, counter };
  const spec: DeviceSpec = {
    name: 'copier',
    identity: { vendorId: 0x1234, deviceId: 0x5678 },
    bars: { 0: { size: 4096, ioeventfds: [{ offset: 0x10, size: 4, worker: { module: new URL('./fixtures/copy-doorbell.js', import.meta.url), data } }] } },
    interrupts: { msix: 1 },
  };
  const server = serve(spec, join(dir, `d${Math.random().toString(36).slice(2)}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const mem = sharedMemory(SIZE, 'doorbell-guest');
  await client.dmaMap(BASE, mem);
  await client.regionWrite(7, 4, Buffer.from([0x06, 0x00])); // memory space + bus master
  const vector = new EventFd();
  await client.setIrqEventfds(IrqIndex.MSIX, 0, [vector.fd]);
  return { server, client, mem, vector, counter: new Int32Array(counter) };
}

function fillSource(m: GuestMemory, seed: number): Buffer {
  const src = Buffer.alloc(256);
  for (let i = 0; i < src.length; i++) src[i] = (i * 7 + seed) & 0xff;
  m.bytes.set(src, 0x1000);
  return src;
}

test('rung by ioeventfd: the thread copies guest memory and raises its vector itself', async () => {
  r = await rig();
  const src = fillSource(r.mem, 1);
  const { fds } = await r.client.regionIoFds(0);
  const { native } = await import('../src/native/index.js');
  native.eventfdWrite(fds[0], 1);
  await r.vector.waitFor(1);
  assert.deepEqual(Buffer.from(r.mem.bytes.subarray(0x8000, 0x8100)), src);
  assert.equal(Atomics.load(r.counter, 0), 1);
  assert.equal(r.server.device.irqs.signals, 0, 'the main thread signalled nothing');
  for (const fd of fds) native.close(fd);
});

test('rung by REGION_WRITE: the main thread forwards it; other offsets still reach the BAR', async () => {
  r = await rig();
  const src = fillSource(r.mem, 2);
  await r.client.regionWrite(0, 0x10, Buffer.from([1, 0, 0, 0]));
  await r.vector.waitFor(1);
  assert.deepEqual(Buffer.from(r.mem.bytes.subarray(0x8000, 0x8100)), src);
  // A write of another width is not the doorbell.
  await r.client.regionWrite(0, 0x10, Buffer.from([1, 0]));
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(Atomics.load(r.counter, 0), 1);
});

test('a masked vector: the thread asks the main thread, the vector waits as pending and fires on unmask', async () => {
  r = await rig();
  fillSource(r.mem, 3);
  await r.client.maskIrqs(IrqIndex.MSIX, 0, 1, true);
  await r.client.regionWrite(0, 0x10, Buffer.from([1, 0, 0, 0]));
  const deadline = Date.now() + 5000;
  while (Atomics.load(r.counter, 0) < 1 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(r.vector.total, 0, 'masked: not signalled');
  await r.client.maskIrqs(IrqIndex.MSIX, 0, 1, false);
  await r.vector.waitFor(1);
});

test('Bus Master Enable clear: the thread\'s DMA is refused and nothing is copied', async () => {
  r = await rig();
  fillSource(r.mem, 4);
  await r.client.regionWrite(7, 4, Buffer.from([0x02, 0x00])); // memory space only
  await r.client.regionWrite(0, 0x10, Buffer.from([1, 0, 0, 0]));
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(Atomics.load(r.counter, 0), 0);
  assert.ok(r.mem.bytes.subarray(0x8000, 0x8100).every((b) => b === 0));
});

test('a doorbell needs exactly one of onSignal and worker', () => {
  assert.throws(
    () => serve({ identity: { vendorId: 1, deviceId: 2 }, bars: { 0: { size: 4096, ioeventfds: [{ offset: 0, size: 4 }] } } }, join(dir, 'bad.sock'), { log: 'silent' }),
    /exactly one of onSignal and worker/,
  );
});
