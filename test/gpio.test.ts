// The gpio sample (ACCES PCI-IDIO-16): the register model, the console, and
// the device driven over a real socket by the client library, the way Linux's
// gpio-pci-idio-16 drives it (the e2e tests do it with the real driver).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { serve } from '../src/index.js';
import { Client, EventFd, privateMemory, sharedMemory } from '../src/client/index.js';
import { Gpio, GpioConsole, GpioReg, gpioDevice, gpioSample, GPIO_BAR } from '../src/samples/gpio.js';
import { DmaCmd, DmaReg, DmaStatus } from '../src/samples/gpio-dma.js';
import { le32 } from './helpers/bytes.js';

const IRQ_INTX = 0;
const IRQ_SET_ACTION_UNMASK = 1 << 4;
const IRQ_SET_DATA_NONE = 1 << 0;

function model(): { gpio: Gpio; lines: string[] } {
  const lines: string[] = [];
  return { gpio: new Gpio({ verbose: true, log: (l) => lines.push(l) }), lines };
}

describe('gpio model', () => {
  test('output latches read back; writes are logged', () => {
    const { gpio, lines } = model();
    gpio.writeReg(GpioReg.OUT0_7, 0x81);
    gpio.writeReg(GpioReg.OUT8_15, 0x02);
    assert.equal(gpio.outputs, 0x0281);
    assert.equal(gpio.readReg(GpioReg.OUT0_7), 0x81);
    assert.equal(gpio.readReg(GpioReg.OUT8_15), 0x02);
    assert.ok(lines.includes('gpio: write reg=0x0 name=out0_7 val=0x81'));
    assert.ok(lines.includes('gpio: out=0x0081 was=0x0000'));
    assert.ok(lines.includes('gpio: out=0x0281 was=0x0081'));
    assert.ok(lines.includes('gpio: read reg=0x4 name=out8_15 val=0x02'));
  });

  test('inputs: no status while the IRQ is disabled; read of 0x2 enables, write of 0x1 clears, write of 0x2 disables', () => {
    const { gpio } = model();
    gpio.setInputs(0x0101);
    assert.equal(gpio.readReg(GpioReg.IN0_7), 0x01);
    assert.equal(gpio.readReg(GpioReg.IN8_15), 0x01);
    assert.equal(gpio.readReg(GpioReg.IRQ_STATUS), 0);
    gpio.readReg(GpioReg.IRQ_CTL);
    assert.equal(gpio.irqEnabled, true);
    gpio.setInput(15, true);
    assert.equal(gpio.readReg(GpioReg.IRQ_STATUS), 0x06, 'pending + high group changed');
    gpio.setInput(0, false);
    assert.equal(gpio.readReg(GpioReg.IRQ_STATUS), 0x07);
    gpio.writeReg(GpioReg.IN0_7, 0);
    assert.equal(gpio.readReg(GpioReg.IRQ_STATUS), 0);
    gpio.setInputs(gpio.inputs); // no change, no interrupt
    assert.equal(gpio.status, 0);
    gpio.writeReg(GpioReg.IRQ_CTL, 0);
    assert.equal(gpio.irqEnabled, false);
    assert.equal(gpio.interrupts, 2);
  });

  test('filters, reset, unused offsets', () => {
    const { gpio } = model();
    gpio.readReg(GpioReg.FILTER_CTL);
    assert.equal(gpio.filters, true);
    gpio.writeReg(GpioReg.FILTER_CTL, 0);
    assert.equal(gpio.filters, false);
    gpio.writeReg(GpioReg.OUT0_7, 0xff);
    gpio.setInputs(0x00f0);
    gpio.readReg(GpioReg.IRQ_CTL);
    gpio.reset();
    assert.equal(gpio.outputs, 0);
    assert.equal(gpio.irqEnabled, false);
    assert.equal(gpio.inputs, 0x00f0, 'inputs are the outside world');
    assert.equal(gpio.readReg(0x7), 0);
    assert.equal(gpio.readReg(0x7f), 0);
    gpio.writeReg(0x40, 1); // ignored
  });

  test('console commands', () => {
    const { gpio } = model();
    const out: string[] = [];
    const c = new GpioConsole(gpio, (l) => out.push(l));
    assert.ok(c.command('input 0x00ff'));
    assert.equal(gpio.inputs, 0x00ff);
    assert.ok(c.command('set 15 1'));
    assert.equal(gpio.inputs, 0x80ff);
    assert.ok(c.command('toggle 0'));
    assert.equal(gpio.inputs, 0x80fe);
    assert.ok(c.command('inputs 0b11'));
    assert.equal(gpio.inputs, 0x0003);
    assert.ok(c.command('status'));
    assert.match(out.at(-1)!, /^gpio: out=0x0000 in=0x0003 irq=disabled status=0x00/);
    assert.ok(c.command('help'));
    assert.ok(c.command(''));
    assert.equal(c.command('set 16 1'), false);
    assert.equal(c.command('input zz'), false);
    assert.equal(c.command('frobnicate'), false);
    assert.equal(gpio.inputs, 0x0003);
  });

  test('the sample reads its console from a stream and does not keep the process alive', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const spec = gpioSample.create({ verbose: false }, input, output);
    assert.equal(spec.identity.vendorId, 0x494f);
    const said = new Promise<string>((resolve) => output.once('data', (b: Buffer) => resolve(b.toString())));
    input.write('input 0x1234\n');
    assert.match(await said, /in=0x1234/);
    input.end();
  });
});

describe('gpio device over a socket', () => {
  test('identity, BAR 2 as a 256-byte I/O BAR, INTx only', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'muser-gpio-')), 'gpio.sock');
    const server = serve(gpioDevice(new Gpio({ log: () => {} })), path, { log: 'silent' });
    const client = await Client.connect(path);
    try {
      const cfg = await client.regionRead(7, 0, 64);
      assert.equal(cfg.readUInt16LE(0), 0x494f);
      assert.equal(cfg.readUInt16LE(2), 0x0dc8);
      assert.equal(cfg.readUInt32LE(0x18) & 1, 1, 'BAR 2 is I/O');
      assert.equal(cfg[0x3d], 1, 'interrupt pin A');
      assert.equal(cfg[6] & 0x10, 0, 'no capabilities');
      assert.equal(Number((await client.regionInfo(GPIO_BAR)).info.size), 256);
      for (const i of [0, 1, 3, 4, 5]) assert.equal(Number((await client.regionInfo(i)).info.size), 0);
      assert.equal((await client.irqInfo(0)).count, 1);
      assert.equal((await client.irqInfo(1)).count, 0);
    } finally {
      client.close();
      server.close();
    }
  });

  test('the driver sequence: outputs, IRQ enable, input change raises INTx, status, clear, unmask', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'muser-gpio-')), 'gpio.sock');
    const lines: string[] = [];
    const gpio = new Gpio({ verbose: true, log: (l) => lines.push(l) });
    const server = serve(gpioDevice(gpio), path, { log: 'silent' });
    const client = await Client.connect(path);
    const irq = new EventFd();
    const byte = (v: number): Buffer => Buffer.from([v]);
    try {
      await client.setIrqEventfds(IRQ_INTX, 0, [irq.fd]);
      await client.regionWrite(GPIO_BAR, GpioReg.IRQ_CTL, byte(0)); // disable
      await client.regionWrite(GPIO_BAR, GpioReg.FILTER_CTL, byte(0));
      await client.regionWrite(GPIO_BAR, GpioReg.OUT0_7, byte(0x01));
      await client.regionWrite(GPIO_BAR, GpioReg.OUT8_15, byte(0x02));
      assert.equal(gpio.outputs, 0x0201);
      assert.deepEqual([...(await client.regionRead(GPIO_BAR, 0, 8))], [0x01, 0, 0, 0, 0x02, 0, 0, 0]);
      assert.equal(gpio.irqEnabled, true, 'reading 0..7 read the enable register too');
      await client.regionWrite(GPIO_BAR, GpioReg.IRQ_CTL, byte(0));
      gpio.setInputs(0x8001);
      assert.equal(irq.total, 0, 'no interrupt while disabled');

      await client.regionWrite(GPIO_BAR, GpioReg.IN0_7, byte(0)); // clear
      await client.regionRead(GPIO_BAR, GpioReg.IRQ_CTL, 1); // enable
      gpio.setInputs(0x0001);
      assert.equal(await irq.waitFor(1), 1);
      assert.equal((await client.regionRead(GPIO_BAR, GpioReg.IRQ_STATUS, 1))[0], 0x06);
      assert.equal((await client.regionRead(GPIO_BAR, GpioReg.IN8_15, 1))[0], 0x00);
      await client.regionWrite(GPIO_BAR, GpioReg.IN0_7, byte(0)); // clear
      assert.equal((await client.regionRead(GPIO_BAR, GpioReg.IRQ_STATUS, 1))[0], 0);

      // INTx is automasked after firing: the next change stays pending until unmasked.
      gpio.setInputs(0x0000);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(irq.total, 1);
      await client.setIrqs(IRQ_INTX, IRQ_SET_ACTION_UNMASK | IRQ_SET_DATA_NONE, 0, 1);
      assert.equal(await irq.waitFor(2), 2);
      assert.ok(lines.includes('gpio: irq enabled'));
      assert.ok(lines.includes('gpio: in=0x0001 was=0x8001 irq=sent'));
      assert.ok(lines.includes('gpio: in=0x0000 was=0x0001 irq=pending'));
      assert.ok(lines.some((l) => l.startsWith('gpio: irq cleared')));
    } finally {
      client.close();
      irq.close();
      server.close();
    }
  });

  test('the test DMA engine: fd-backed and fd-less memory, errors', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'muser-gpio-')), 'gpio.sock');
    const lines: string[] = [];
    const gpio = new Gpio({ log: (l) => lines.push(l) });
    const server = serve(gpioDevice(gpio), path, { log: 'silent' });
    const client = await Client.connect(path);
    const shared = sharedMemory(1 << 16);
    const plain = privateMemory(1 << 16);
    const run = async (cmd: number, addr: number, len: number): Promise<number> => {
      await client.regionWrite(GPIO_BAR, DmaReg.ADDR_LO, le32(addr));
      await client.regionWrite(GPIO_BAR, DmaReg.ADDR_HI, le32(0));
      await client.regionWrite(GPIO_BAR, DmaReg.LEN, le32(len));
      await client.regionWrite(GPIO_BAR, DmaReg.CMD, Buffer.from([cmd]));
      for (let i = 0; i < 200; i++) {
        const s = (await client.regionRead(GPIO_BAR, DmaReg.STATUS, 1))[0];
        if (s !== DmaStatus.BUSY) return s;
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error('DMA never finished');
    };
    try {
      await client.setBusMaster(); // DMA needs Bus Master Enable
      await client.dmaMap(0x10000, shared);
      await client.dmaMap(0x40000, plain);
      for (const [base, mem, via] of [[0x10000, shared, 'direct'], [0x40000, plain, 'message']] as const) {
        mem.bytes.set([1, 2, 3, 4, 5, 6, 7, 8], 0x100);
        assert.equal(await run(DmaCmd.READ, base + 0x100, 8), DmaStatus.DONE);
        assert.deepEqual([...(await client.regionRead(GPIO_BAR, DmaReg.WINDOW, 8))], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert.equal((await client.regionRead(GPIO_BAR, DmaReg.SUM, 4)).readUInt32LE(0), 36);
        await client.regionWrite(GPIO_BAR, DmaReg.WINDOW, Buffer.from([9, 8, 7]));
        assert.equal(await run(DmaCmd.WRITE, base + 0x200, 3), DmaStatus.DONE);
        assert.deepEqual([...mem.bytes.subarray(0x200, 0x203)], [9, 8, 7]);
        assert.equal(await run(DmaCmd.SELFTEST, base + 0x1000, 4096), DmaStatus.DONE);
        assert.ok(lines.some((l) => l.startsWith(`gpio: dma selftest addr=0x${(base + 0x1000).toString(16)} len=4096 via=${via} ok`)), lines.join('\n'));
      }
      assert.ok(client.dmaRequestsServed >= 4, 'fd-less memory was reached through DMA_READ/DMA_WRITE');
      assert.equal(await run(DmaCmd.READ, 0x90000, 8), DmaStatus.FAILED, 'unmapped address');
      assert.equal((await client.regionRead(GPIO_BAR, DmaReg.ERRNO, 4)).readUInt32LE(0), 14);
      assert.equal(await run(DmaCmd.READ, 0x10000, 0), DmaStatus.FAILED, 'zero length');
      assert.equal(await run(9, 0x10000, 8), DmaStatus.FAILED, 'unknown command');
      assert.equal((await client.regionRead(GPIO_BAR, DmaReg.DONE, 4)).readUInt32LE(0), 6);
    } finally {
      client.close();
      shared.close();
      server.close();
    }
  });
});
