// What the driver touches that the model lacks: guest accesses that hit no
// register (unused offsets of a register map, unclaimed config bytes, a BAR
// with nothing serving a direction) are counted per place, listed by
// `server.unmodeledAccesses()` and printed by `muser run` when it stops; a
// driver spinning on a register whose value never changes is warned about,
// once, naming the register.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineRegisters, serve, type Logger } from '../src/index.js';
import { Client } from '../src/client/index.js';
import { formatUnmodeled, MAX_UNMODELED_PLACES } from '../src/device/unmodeled.js';
import { SPIN_READS } from '../src/server/spin-watch.js';
import { MAIN, startServer } from './helpers/timer-process.js';

const CONFIG = 7;
const ESB = fileURLToPath(new URL('./fixtures/esb-watchdog.js', import.meta.url));

/** A logger that keeps warnings. */
function warnings(): Logger & { warns: string[] } {
  const warns: string[] = [];
  const none = (): void => undefined;
  return { warns, debug: none, info: none, error: none, warn: (m) => void warns.push(m) };
}

/** A device with a register map (a gap at 0x8-0xf), an unclaimed config area, a read-only BAR and a memory BAR. */
function device(): Parameters<typeof serve>[0] {
  const registers = defineRegisters([
    { name: 'id', offset: 0x0, width: 4, access: 'ro', reset: 0x1234 },
    { name: 'status', offset: 0x4, width: 2, access: 'ro' },
    { name: 'control', offset: 0x10, width: 4 },
  ]);
  return {
    name: 'gappy',
    identity: { vendorId: 0x1234, deviceId: 0x0042 },
    bars: {
      0: registers.bar({ size: 4096 }),
      1: { size: 16, read: () => 7 },
      2: { size: 4096, memory: true },
    },
  };
}

test('accesses that hit no register are counted per place; registers, memory and dumps are not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-unmodeled-'));
  const server = serve(device(), join(dir, 'd.sock'), { log: 'silent' });
  const c = await Client.connect(server.path);
  try {
    // Registers, memory and a raw read callback: modeled.
    await c.regionRead(0, 0x0, 4);
    await c.regionWrite(0, 0x10, Buffer.alloc(4));
    await c.regionRead(2, 0x100, 8);
    await c.regionRead(1, 0, 4);
    await c.regionRead(CONFIG, 0, 4);
    assert.deepEqual(server.unmodeledAccesses(), { accesses: [], otherAccesses: 0 });

    for (let i = 0; i < 3; i++) await c.regionRead(0, 0x8, 4); // no register at 0x8
    await c.regionWrite(0, 0xc, Buffer.from([1])); // nor at 0xc
    await c.regionRead(0, 0x4, 4); // status is 2 bytes: 0x6-0x7 hit nothing
    await c.regionWrite(1, 0x0, Buffer.alloc(4)); // BAR1 has no write callback
    await c.regionRead(CONFIG, 0x90, 4); // unclaimed config bytes
    await c.regionRead(CONFIG, 0, 256); // a dump (QEMU's, lspci's) is not a register access
    await c.regionRead(0, 0x100, 16);

    const report = server.unmodeledAccesses();
    assert.equal(report.otherAccesses, 0);
    const seen = report.accesses.map(({ where, offset, width, op, count }) => `${where} 0x${offset.toString(16)} w${width} ${op} x${count}`);
    assert.deepEqual(seen, ['BAR0 0x6 w2 read x1', 'BAR0 0x8 w4 read x3', 'BAR0 0xc w1 write x1', 'BAR1 0x0 w4 write x1', 'config 0x90 w4 read x1']);
    for (const a of report.accesses) assert.ok(a.firstAtMs >= 0 && a.firstAtMs < 60_000, `first at ${a.firstAtMs} ms`);
    assert.equal(report.accesses[1].region, 0);
    assert.equal(report.accesses[4].region, CONFIG);
  } finally {
    c.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the report holds a bounded number of places and counts the accesses beyond them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-unmodeled-'));
  const server = serve(device(), join(dir, 'd.sock'), { log: 'silent' });
  const c = await Client.connect(server.path);
  try {
    const extra = 10;
    for (let i = 0; i < MAX_UNMODELED_PLACES + extra; i++) await c.regionRead(0, 0x400 + 4 * i, 4);
    await c.regionRead(0, 0x400, 4); // a place already listed is still counted
    const report = server.unmodeledAccesses();
    assert.equal(report.accesses.length, MAX_UNMODELED_PLACES);
    assert.equal(report.otherAccesses, extra);
    assert.equal(report.accesses[0].count, 2);
  } finally {
    c.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the printed report folds a sweep (a guest dumping config space a dword at a time) into one line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-unmodeled-'));
  const server = serve(device(), join(dir, 'd.sock'), { log: 'silent' });
  const c = await Client.connect(server.path);
  try {
    for (let off = 0x40; off < 0x100; off += 4) await c.regionRead(CONFIG, off, 4);
    await c.regionRead(CONFIG, 0x40, 4); // read twice: its own line
    await c.regionWrite(CONFIG, 0x80, Buffer.alloc(4));
    await c.regionWrite(CONFIG, 0x84, Buffer.alloc(4));
    const text = formatUnmodeled('gappy', server.unmodeledAccesses());
    assert.match(
      text,
      /^unmodeled accesses of gappy \(no register there: reads returned zero, writes were ignored\):\n  config 0x40 w4 read ×2 \(first at \+\d+\.\d s\)\n  config 0x44-0xff w4 read ×1 each \(47 places, first at \+\d+\.\d s\)\n  config 0x80-0x87 w4 write ×1 each \(2 places, first at \+\d+\.\d s\)\n$/,
    );
    assert.equal(formatUnmodeled('quiet', { accesses: [], otherAccesses: 0 }), '');
  } finally {
    c.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('muser run lists the unmodeled accesses of each device when it stops', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-unmodeled-'));
  const sock = join(dir, 'esb.sock');
  const server = await startServer([MAIN, 'run', ESB, sock], sock, 'serving esb-watchdog', 'muser run');
  try {
    const c = await Client.connect(sock);
    await c.regionRead(0, 0x0, 4); // the fixture's BAR0 has only esb_reload at 0xc
    await c.regionRead(0, 0x0, 4);
    await c.regionWrite(CONFIG, 0xa0, Buffer.from([0x11]));
    await c.regionRead(CONFIG, 0x68, 1); // esb_lock: a register
    c.close();
    await c.whenClosed;
  } finally {
    await server.stop();
  }
  const deadline = Date.now() + 5000;
  while (!server.stderr.includes('config 0xa0') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  try {
    assert.match(server.stderr, /muser: unmodeled accesses of esb-watchdog \(no register there: reads returned zero, writes were ignored\):\n  BAR0 0x0 w4 read ×2 \(first at \+\d+\.\d s\)\n  config 0xa0 w1 write ×1 \(first at \+\d+\.\d s\)\n/);
    assert.doesNotMatch(server.stderr, /0x68/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a driver reading one register over and over, always the same value, is warned about once, by register name', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-spin-'));
  const log = warnings();
  const server = serve(device(), join(dir, 'd.sock'), { log });
  const c = await Client.connect(server.path);
  try {
    // A poll broken by other accesses is no spin, however long.
    for (let i = 0; i < SPIN_READS + 100; i++) {
      await c.regionRead(0, 0x4, 2);
      if (i % 500 === 499) await c.regionWrite(0, 0x10, Buffer.alloc(4));
    }
    // Nor is one whose value changes.
    for (let i = 0; i < SPIN_READS + 100; i++) {
      if (i % 500 === 499) await c.regionWrite(0, 0x10, Buffer.from([i & 0xff, 0, 0, 0]));
      await c.regionRead(0, 0x10, 4);
    }
    assert.deepEqual(log.warns, []);

    for (let i = 0; i < SPIN_READS + 100; i++) await c.regionRead(0, 0x4, 2);
    assert.equal(log.warns.length, 1, log.warns.join('\n'));
    assert.match(log.warns[0], /^BAR0 status \(0x4\) read 1000 times in \d+ ms, always 0x0: is the driver waiting for a bit the model never sets\?$/);
    // Once per register and client.
    await c.regionWrite(0, 0x10, Buffer.alloc(4));
    for (let i = 0; i < SPIN_READS + 100; i++) await c.regionRead(0, 0x4, 2);
    assert.equal(log.warns.length, 1);
    // A place without a register name says where it is.
    for (let i = 0; i < SPIN_READS + 100; i++) await c.regionRead(1, 0x0, 4);
    assert.equal(log.warns.length, 2);
    assert.match(log.warns[1], /^BAR1 0x0 read 1000 times in \d+ ms, always 0x7: /);
  } finally {
    c.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
