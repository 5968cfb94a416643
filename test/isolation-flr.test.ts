// A guest-initiated Function Level Reset (PCIe Device Control bit 15,
// written through config space) resets the device as VFIO does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type ResetReason } from '../src/index.js';
import { Client, EventFd } from '../src/client/index.js';
import { getMigrationState, MigrationState, setMigrationState } from '../src/client/migrate.js';
import { IrqIndex } from '../src/device/irqs.js';
import { le16 } from './helpers/bytes.js';

const CONFIG = 7;
const DEVCTL = 8;
const DEVCTL_BCR_FLR = 0x8000;
const COMMAND = 4;

test('FLR through config space: reset hook with reason flr, IRQ state cleared, migration back to RUNNING', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'flr.sock');
  const resets: ResetReason[] = [];
  const server = serve(
    {
      identity: { vendorId: 0x1af4, deviceId: 0x10f0, classCode: 0xff0000 },
      bars: { 0: { size: 4096, memory: true } },
      capabilities: [{ id: 'pcie', flr: true }],
      interrupts: { msix: 2 },
      migration: {},
      onReset: async (reason) => {
        await new Promise((r) => setImmediate(r));
        resets.push(reason);
      },
    },
    path,
    { log: 'silent' },
  );
  const client = await Client.connect(path);
  const irq = new EventFd();
  try {
    const device = server.device;
    const devctl = device.config.findCapability('pcie')!.offset + DEVCTL;
    await client.regionWrite(CONFIG, COMMAND, Buffer.from([0x06, 0x00])); // memory space + bus master
    await client.setIrqEventfds(IrqIndex.MSIX, 0, [irq.fd]);
    await client.maskIrqs(IrqIndex.MSIX, 0, 1, true);
    device.triggerIrq(IrqIndex.MSIX, 0);
    assert.equal(device.irqPending(IrqIndex.MSIX, 0), true, 'a masked vector keeps its interrupt pending');
    await setMigrationState(client, MigrationState.STOP);
    assert.equal(await getMigrationState(client), MigrationState.STOP);

    // A plain DEVCTL write (no FLR bit) resets nothing.
    const now = (await client.regionRead(CONFIG, devctl, 2)).readUInt16LE(0);
    await client.regionWrite(CONFIG, devctl, le16(now));
    assert.deepEqual(resets, []);

    await client.regionWrite(CONFIG, devctl, le16(now | DEVCTL_BCR_FLR));
    assert.deepEqual(resets, ['flr'], 'the write is answered once the reset hook finished');
    assert.equal(device.irqPending(IrqIndex.MSIX, 0), false, 'pending interrupts cleared');
    assert.equal(await getMigrationState(client), MigrationState.RUNNING);
    assert.equal((await client.regionRead(CONFIG, COMMAND, 2)).readUInt16LE(0) & 0x4, 0, 'bus master cleared');
    assert.equal((await client.regionRead(CONFIG, devctl, 2)).readUInt16LE(0) & DEVCTL_BCR_FLR, 0, 'the FLR bit reads 0');
  } finally {
    client.close();
    irq.close();
    server.close();
  }
});

test('FLR whose reset hook throws: the config write fails, the device keeps serving', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'flr2.sock');
  const server = serve(
    {
      identity: { vendorId: 0x1af4, deviceId: 0x10f0, classCode: 0xff0000 },
      capabilities: [{ id: 'pcie', flr: true }],
      onReset: () => {
        throw new Error('reset hook broke');
      },
    },
    path,
    { log: 'silent' },
  );
  const client = await Client.connect(path);
  try {
    const devctl = server.device.config.findCapability('pcie')!.offset + DEVCTL;
    await assert.rejects(client.regionWrite(CONFIG, devctl, le16(DEVCTL_BCR_FLR)), /errno 5|EIO/);
    assert.equal((await client.regionRead(CONFIG, 0, 2)).readUInt16LE(0), 0x1af4);
  } finally {
    client.close();
    server.close();
  }
});

