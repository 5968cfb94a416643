// Device registers in config space (`configRegisters`): a register table at
// absolute config-space offsets, the i6300esb watchdog's two registers as
// the example; clashes refused at construction; unclaimed bytes documented
// and traced; `muser run -v` traces every register map without wiring.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '../src/client/index.js';
import { Device, defineRegisters, serve } from '../src/index.js';
import esbWatchdog, { WDT_ENABLE, WDT_LOCK } from './fixtures/esb-watchdog.js';
import { MAIN, startServer } from './helpers/timer-process.js';

const CONFIG = 7;
const FIXTURE = fileURLToPath(new URL('./fixtures/esb-watchdog.js', import.meta.url));

async function withDevice(fn: (c: Client, device: Device) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'muser-cfgreg-'));
  const server = serve(esbWatchdog(), join(dir, 's.sock'));
  const c = await Client.connect(server.path);
  try {
    await fn(c, server.device);
  } finally {
    c.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const u16 = async (c: Client, offset: number): Promise<number> => (await c.regionRead(CONFIG, offset, 2)).readUInt16LE(0);
const u8 = async (c: Client, offset: number): Promise<number> => (await c.regionRead(CONFIG, offset, 1))[0];

test('config registers: the i6300esb config register keeps its writable bits, at its own widths only', async () => {
  await withDevice(async (c) => {
    assert.equal(await u16(c, 0x60), 0);
    await c.regionWrite(CONFIG, 0x60, Buffer.from([0xff, 0xff]));
    assert.equal(await u16(c, 0x60), 0x27, 'only bits 5, 2 and 1:0 are writable');
    // A dword read at 0x60 covers the register and two unclaimed bytes.
    assert.equal((await c.regionRead(CONFIG, 0x60, 4)).readUInt32LE(0), 0x27);
    // widths: [2]: a byte write is refused, and changes nothing.
    await assert.rejects(c.regionWrite(CONFIG, 0x60, Buffer.from([0])), (e: { errno?: number }) => e.errno === 22);
    assert.equal(await u16(c, 0x60), 0x27);
    // The standard header still answers around it.
    assert.equal(await u16(c, 0), 0x8086);
  });
});

test('config registers: the lock register hook gets the Device, and locking holds until reset', async () => {
  await withDevice(async (c, device) => {
    await c.regionWrite(CONFIG, 0x68, Buffer.from([WDT_LOCK | WDT_ENABLE]));
    assert.equal(await u8(c, 0x68), WDT_LOCK | WDT_ENABLE);
    assert.equal(device.state.enabled, true, 'the hook set device state');
    await c.regionWrite(CONFIG, 0x68, Buffer.from([0]));
    assert.equal(await u8(c, 0x68), WDT_LOCK | WDT_ENABLE, 'locked');
    await c.regionWrite(CONFIG, 0x60, Buffer.from([0x20, 0]));
    await c.reset();
    assert.equal(await u8(c, 0x68), 0);
    assert.equal(await u16(c, 0x60), 0, 'the table is reset with config space');
    assert.equal(device.state.enabled, false);
  });
});

test('config registers: unclaimed config bytes read zero and ignore writes', async () => {
  await withDevice(async (c) => {
    await c.regionWrite(CONFIG, 0x90, Buffer.from([1, 2, 3, 4]));
    assert.deepEqual([...(await c.regionRead(CONFIG, 0x90, 4))], [0, 0, 0, 0]);
  });
});

test('config registers: a register on the header or on a capability is refused at construction, naming both', () => {
  const identity = { vendorId: 0x1234, deviceId: 1 };
  const onCap = defineRegisters([{ name: 'mine', offset: 0x44, width: 4 }]);
  assert.throws(
    () => new Device({ identity, capabilities: [{ id: 'pm' }], configRegisters: onCap }),
    (e: Error) => e instanceof RangeError && /register mine \(0x44-0x47\)/.test(e.message) && /capability pm \(0x40-0x47\)/.test(e.message),
  );
  const onHeader = defineRegisters([{ name: 'early', offset: 0x3c, width: 1 }]);
  assert.throws(() => new Device({ identity, configRegisters: onHeader }), /register early .* overlaps the standard header/);
  const beyond = defineRegisters([{ name: 'far', offset: 0x100, width: 4 }]);
  assert.throws(() => new Device({ identity, configRegisters: beyond }), /register far .* outside the 256-byte config space/);
  // The same register beside the capability is fine.
  new Device({ identity, capabilities: [{ id: 'pm' }], configRegisters: defineRegisters([{ name: 'mine', offset: 0x48, width: 4 }]) }).dispose();
});

test('muser run -v traces BAR and config registers by name, and unclaimed config bytes, without any wiring', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-cfgreg-'));
  const sock = join(dir, 'esb.sock');
  const server = await startServer([MAIN, 'run', '-v', FIXTURE, sock], sock, 'serving esb-watchdog', 'muser run');
  try {
    const c = await Client.connect(sock);
    await c.regionWrite(CONFIG, 0x68, Buffer.from([WDT_ENABLE]));
    await c.regionRead(CONFIG, 0x60, 2);
    await c.regionRead(CONFIG, 0x90, 4);
    await c.regionWrite(CONFIG, 0xa0, Buffer.from([0x11]));
    await c.regionWrite(0, 0x0c, Buffer.from([0x80, 0x86]));
    c.close();
    const wanted = [
      /config write reg=0x68 name=esb_lock val=0x02/,
      /config read reg=0x60 name=esb_config val=0x0000/,
      /config read reg=0x90 name=unclaimed val=0x00000000 \(reads as zero/,
      /config write reg=0xa0 name=unclaimed val=0x11 \(ignored/,
      /BAR0 write reg=0xc name=esb_reload val=0x8680/,
    ];
    const deadline = Date.now() + 5000;
    while (!wanted.every((w) => w.test(server.stderr)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const w of wanted) assert.match(server.stderr, w);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
