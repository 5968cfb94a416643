// Interrupt delivery through the public path: a client configures eventfds
// and masks over the socket, the device raises vectors, and pending state
// shows where the guest reads it (MSI-X PBA, MSI pending register).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type Server } from '../src/index.js';
import { Client, EventFd } from '../src/client/index.js';
import { IrqIndex } from '../src/device/irqs.js';
import { le16, le32 } from './helpers/bytes.js';

const CONFIG = 7;
const COMMAND = 4;
const MSIX_ENABLE = 0x8000;
const MSIX_MASKALL = 0x4000;
const MSI_ENABLE_4_VECTORS = 0x0021;
const ENTRY_SIZE = 16;
const VECTOR_CTRL = 12;

describe('device interrupts: one pending bit per vector, where the guest reads it', () => {
  let server: Server;
  let client: Client;
  const fds: EventFd[] = [];

  before(async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'irqs.sock');
    server = serve(
      {
        identity: { vendorId: 0x1af4, deviceId: 0x10f1, classCode: 0xff0000 },
        bars: { 0: { size: 4096, memory: true } },
        interrupts: { intx: true, msi: 4, msix: 4 },
      },
      path,
      { log: 'silent' },
    );
    client = await Client.connect(path);
    await client.regionWrite(CONFIG, COMMAND, Buffer.from([0x06, 0x00]));
  });

  after(() => {
    client.close();
    for (const fd of fds) fd.close();
    server.close();
  });

  const eventfds = async (index: number, n: number): Promise<EventFd[]> => {
    const list = Array.from({ length: n }, () => new EventFd());
    fds.push(...list);
    await client.setIrqEventfds(index, 0, list.map((e) => e.fd));
    return list;
  };

  it('MSI-X: a masked vector pends in the PBA and is sent once when the function or entry mask clears', async () => {
    const device = server.device;
    const p = device.msixPlacement!;
    const flags = device.config.findCapability('msix')!.offset + 2;
    const pba = async (): Promise<number> => (await client.regionRead(p.bar, p.pbaOffset, 8))[0]!;
    const entryCtrl = (v: number, masked: boolean): Promise<void> =>
      client.regionWrite(p.bar, p.tableOffset + v * ENTRY_SIZE + VECTOR_CTRL, le32(masked ? 1 : 0));
    const [, e1] = await eventfds(IrqIndex.MSIX, 2);

    // QEMU never writes our table: its reset mask bits do not hold vectors back.
    await client.regionWrite(CONFIG, flags, le16(MSIX_ENABLE));
    assert.equal(device.trigger(1), 'sent');
    await e1!.waitFor(1);

    await client.regionWrite(CONFIG, flags, le16(MSIX_ENABLE | MSIX_MASKALL));
    await entryCtrl(1, false);
    assert.equal(device.trigger(1), 'pending', 'function mask');
    assert.equal(device.trigger(1), 'pending', 'still one pending bit');
    assert.equal(await pba(), 0b10);
    const signals = device.irqs.signals;
    await client.regionWrite(CONFIG, flags, le16(MSIX_ENABLE));
    await e1!.waitFor(2);
    assert.equal(device.irqs.signals, signals + 1, 'sent once on unmask');
    assert.equal(await pba(), 0, 'pending cleared on delivery');

    await entryCtrl(1, true);
    assert.equal(device.trigger(1), 'pending', 'entry mask of a table the client wrote');
    assert.equal(await pba(), 0b10);
    await entryCtrl(1, false);
    await e1!.waitFor(3);
    assert.equal(await pba(), 0);

    await client.maskIrqs(IrqIndex.MSIX, 1, 1, true);
    assert.equal(device.trigger(1), 'pending', 'SET_IRQS mask');
    assert.ok(device.irqPending(IrqIndex.MSIX, 1));
    assert.equal(await pba(), 0b10, 'the guest sees it too');
    await client.maskIrqs(IrqIndex.MSIX, 1, 1, false);
    await e1!.waitFor(4);
    assert.equal(device.irqPending(IrqIndex.MSIX, 1), false);
    await client.regionWrite(CONFIG, flags, le16(0));
  });

  it('MSI: a masked vector pends in the MSI pending register and is sent when unmasked', async () => {
    const device = server.device;
    const msi = device.config.findCapability('msi')!.offset;
    const readReg = async (off: number): Promise<number> => (await client.regionRead(CONFIG, msi + off, 4)).readUInt32LE(0);
    const list = await eventfds(IrqIndex.MSI, 4);
    await client.regionWrite(CONFIG, msi + 2, le16(MSI_ENABLE_4_VECTORS));
    await client.regionWrite(CONFIG, msi + 16, le32(0b100));
    assert.equal(device.trigger(2), 'pending');
    assert.equal(await readReg(20), 0b100, 'pending register shows it');
    assert.equal(device.trigger(1), 'sent');
    await list[1]!.waitFor(1);
    await client.regionWrite(CONFIG, msi + 16, le32(0));
    await list[2]!.waitFor(1);
    assert.equal(await readReg(20), 0);
    assert.equal(device.irqPending(IrqIndex.MSI, 2), false);
    await client.regionWrite(CONFIG, msi + 2, le16(0));
  });

  it('INTx: automasked after each signal, pending until the client unmasks', async () => {
    const device = server.device;
    const [intx] = await eventfds(IrqIndex.INTX, 1);
    assert.equal(device.trigger(0), 'sent');
    await intx!.waitFor(1);
    assert.equal(device.trigger(0), 'pending', 'automasked');
    assert.ok(device.irqPending(IrqIndex.INTX, 0));
    await client.maskIrqs(IrqIndex.INTX, 0, 1, false);
    await intx!.waitFor(2);
    assert.equal(device.irqPending(IrqIndex.INTX, 0), false);
  });

  it('rejects a vector the index does not have', () => {
    assert.throws(() => server.device.triggerIrq(IrqIndex.MSIX, 4), (e: unknown) => (e as { errno?: number }).errno === 22);
  });
});
