// DMA needs Bus Master Enable: while the PCI command register's bit 2 is
// clear, device DMA fails with EPERM on both paths (zero-copy views and
// DMA_READ/DMA_WRITE messages), and no message reaches the client. A device
// may waive it (requireBusMaster: false), for test clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device, serve, type DeviceSpec } from '../src/index.js';
import { Client, privateMemory, sharedMemory } from '../src/client/index.js';

const EPERM = 1;
const DIRECT = 0x10000;
const MESSAGE = 0x40000;
const isBmeError = (e: unknown): boolean =>
  (e as { errno?: number }).errno === EPERM && /Bus Master Enable/.test((e as Error).message);

test('device DMA with Bus Master Enable clear fails with EPERM on views and messages; set, it works', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'bme.sock');
  const server = serve({ identity: { vendorId: 0x1af4, deviceId: 0x10f1, classCode: 0xff0000 } }, path, { log: 'silent' });
  const client = await Client.connect(path);
  const shared = sharedMemory(8192);
  const plain = privateMemory(8192);
  try {
    await client.dmaMap(DIRECT, shared);
    await client.dmaMap(MESSAGE, plain);
    shared.bytes[0] = 0x11;
    plain.bytes[0] = 0x22;
    const dma = server.device.dma;
    const refusedWithBmeClear = async (): Promise<void> => {
      assert.throws(() => dma.views(DIRECT, 16), isBmeError);
      assert.throws(() => dma.view(DIRECT, 16, true), isBmeError);
      assert.throws(() => dma.directView(DIRECT, 16, true), isBmeError);
      assert.throws(() => dma.sgl(DIRECT, 16), isBmeError);
      assert.equal(dma.isDirect(DIRECT, 16), false);
      await assert.rejects(dma.read(DIRECT, 16), isBmeError);
      await assert.rejects(dma.write(DIRECT, Buffer.alloc(4, 0xee)), isBmeError);
      await assert.rejects(dma.read(MESSAGE, 16), isBmeError);
      await assert.rejects(dma.write(MESSAGE, Buffer.alloc(4, 0xee)), isBmeError);
      await assert.rejects(dma.messageRead(DIRECT, 16), isBmeError);
      await assert.rejects(dma.messageWrite(MESSAGE, Buffer.alloc(4, 0xee)), isBmeError);
      assert.equal(shared.bytes[0], 0x11, 'nothing written');
      assert.equal(plain.bytes[0], 0x22, 'nothing written');
    };

    await refusedWithBmeClear(); // power-on: the command register is 0
    assert.equal(client.dmaRequestsServed, 0, 'no DMA_READ/DMA_WRITE reached the client');

    await client.setBusMaster(true);
    assert.equal(dma.isDirect(DIRECT, 16), true);
    assert.equal(dma.view(DIRECT, 1)[0], 0x11);
    assert.equal((await dma.read(MESSAGE, 1))[0], 0x22);
    await dma.write(MESSAGE, Buffer.from([0x33]));
    assert.equal(plain.bytes[0], 0x33);
    assert.ok(client.dmaRequestsServed >= 2);

    // The driver lets go of the bus: refused again.
    await client.setBusMaster(false);
    const served = client.dmaRequestsServed;
    shared.bytes[0] = 0x11;
    plain.bytes[0] = 0x22;
    await refusedWithBmeClear();
    assert.equal(client.dmaRequestsServed, served);
  } finally {
    client.close();
    shared.close();
    server.close();
  }
});

test('requireBusMaster: false lets the device DMA with Bus Master Enable clear; the default and true stay strict', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-'));
  const identity = { vendorId: 0x1af4, deviceId: 0x10f1, classCode: 0xff0000 };
  const relaxed = serve({ identity, requireBusMaster: false }, join(dir, 'relaxed.sock'), { log: 'silent' });
  const strict = serve({ identity, requireBusMaster: true }, join(dir, 'strict.sock'), { log: 'silent' });
  const shared = sharedMemory(8192);
  const plain = privateMemory(8192);
  const clients: Client[] = [];
  try {
    const a = await Client.connect(relaxed.path);
    const b = await Client.connect(strict.path);
    clients.push(a, b);
    for (const c of clients) {
      await c.dmaMap(DIRECT, shared);
      await c.dmaMap(MESSAGE, plain);
      assert.equal((await c.regionRead(7, 4, 2)).readUInt16LE(0) & 0x4, 0, 'Bus Master Enable is clear');
    }
    shared.bytes[0] = 0x11;
    plain.bytes[0] = 0x22;
    const dma = relaxed.device.dma;
    assert.equal(dma.accessible(), true);
    assert.equal(dma.isDirect(DIRECT, 16), true);
    assert.equal(dma.view(DIRECT, 1)[0], 0x11);
    await dma.write(MESSAGE, Buffer.from([0x33]));
    assert.equal(plain.bytes[0], 0x33, 'a DMA_WRITE message reached the client');
    assert.equal((await dma.messageRead(DIRECT, 1))[0], 0x11);

    assert.equal(strict.device.dma.accessible(), false);
    await assert.rejects(strict.device.dma.read(MESSAGE, 1), isBmeError);
    assert.throws(() => strict.device.dma.views(DIRECT, 1), isBmeError);
  } finally {
    for (const c of clients) c.close();
    shared.close();
    relaxed.close();
    strict.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('requireBusMaster that is not a boolean is a TypeError naming the field', () => {
  const identity = { vendorId: 0x1af4, deviceId: 0x10f1 };
  const bad: [unknown, RegExp][] = [
    ['no', /requireBusMaster: must be a boolean, got 'no'/],
    [0, /requireBusMaster: must be a boolean, got 0/],
    [null, /requireBusMaster: must be a boolean, got null/],
    [{}, /requireBusMaster: must be a boolean, got an object/],
  ];
  for (const [requireBusMaster, message] of bad) {
    assert.throws(() => new Device({ identity, requireBusMaster } as unknown as DeviceSpec), (e: unknown) => e instanceof TypeError && message.test((e as Error).message), String(JSON.stringify(requireBusMaster)));
  }
  for (const requireBusMaster of [undefined, true]) assert.equal(new Device({ identity, requireBusMaster }).requiresBusMaster, true);
  assert.equal(new Device({ identity, requireBusMaster: false }).requiresBusMaster, false);
  assert.equal(new Device({ identity, dma: true, requireBusMaster: false }).requiresBusMaster, false);
});
