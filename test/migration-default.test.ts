/**
 * The default (plain-data) migration image, in process: saved by one
 * device, loaded by another through any chunking; several images back to
 * back; malformed streams refused. Also the DMA gate and dirty-log report.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Device } from '../src/device/device.js';
import { DirtyLog } from '../src/migration/dirty-log.js';
import { DmaTable } from '../src/device/dma.js';
import { DmaGate } from '../src/device/gated-dma.js';
import { defaultLoader, saveDefault } from '../src/migration/default.js';
import type { DeviceSpec } from '../src/device/spec.js';
import { native } from '../src/native/index.js';
import { defineRegisters, registerMapOf } from '../src/device/registers.js';

function spec(size = 64 * 1024): DeviceSpec {
  return {
    identity: { vendorId: 0x1234, deviceId: 0x5678 },
    bars: { 0: { size, memory: true }, 2: { size: 8192, memory: true } },
    interrupts: { intx: true, msix: 4 },
    state: { n: 1, name: 'a', list: [1, 2] },
  };
}

function image(d: Device): Buffer {
  return Buffer.concat([...saveDefault(d)].map((c) => Buffer.from(c)));
}

function feed(d: Device, data: Buffer, pick: () => number): void {
  const l = defaultLoader(d);
  for (let at = 0; at < data.length; ) {
    const n = Math.max(1, Math.min(pick(), data.length - at));
    void l.write(data.subarray(at, at + n));
    at += n;
  }
  void l.end();
}

describe('default migration image', () => {
  it('loads through any chunking, byte for byte', () => {
    const a = new Device(spec());
    const b = new Device(spec());
    try {
      for (let i = 0; i < a.regionMemory(0).length; i++) a.regionMemory(0)[i] = (i * 7) & 0xff;
      a.regionMemory(2).fill(0x33);
      a.state.n = 99;
      a.state.extra = { deep: [true, null] };
      a.config.write(4, Buffer.from([0x06, 0x00]));
      const data = image(a);
      const keep = b.state;
      let seed = 1;
      const sizes = [1, 3, 15, 16, 17, 4096, 65536, 100000];
      feed(b, data, () => sizes[(seed = (seed * 1103515245 + 12345) >>> 0) % sizes.length]!);
      assert.deepEqual(Buffer.from(b.regionMemory(0)), Buffer.from(a.regionMemory(0)));
      assert.deepEqual(Buffer.from(b.regionMemory(2)), Buffer.from(a.regionMemory(2)));
      assert.deepEqual(b.state, { n: 99, name: 'a', list: [1, 2], extra: { deep: [true, null] } });
      assert.equal(b.state, keep, 'the state object keeps its identity');
      assert.deepEqual(b.config.read(0, 256), a.config.read(0, 256));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('takes several images back to back; the last one wins', () => {
    const a = new Device(spec());
    const b = new Device(spec());
    try {
      a.regionMemory(0).fill(1);
      a.state.n = 1;
      const first = image(a);
      a.regionMemory(0).fill(2);
      a.state.n = 2;
      feed(b, Buffer.concat([first, image(a)]), () => 5000);
      assert.ok(b.regionMemory(0).every((x) => x === 2));
      assert.equal(b.state.n, 2);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('refuses empty, truncated, foreign and mismatched streams', () => {
    const a = new Device(spec());
    const b = new Device(spec(128 * 1024));
    const c = new Device(spec());
    try {
      const data = image(a);
      assert.throws(() => feed(c, Buffer.alloc(0), () => 1), { errno: 22 });
      assert.throws(() => feed(c, data.subarray(0, data.length - 1), () => 4096), { errno: 22, message: /ends inside/ });
      assert.throws(() => feed(c, Buffer.from('not a migration image at all'), () => 64), { errno: 22 });
      assert.throws(() => feed(b, data, () => 4096), { errno: 22, message: /region 0/ });
      const bad = Buffer.from(data);
      bad.writeUInt32LE(2, 8);
      assert.throws(() => feed(c, bad, () => 4096), { errno: 22, message: /version/ });
    } finally {
      a.dispose();
      b.dispose();
      c.dispose();
    }
  });

  it('register values load into the maps they were saved from; a table that differs is refused', () => {
    const table = (extra: boolean): DeviceSpec => ({
      identity: { vendorId: 0x1234, deviceId: 0x5678 },
      bars: { 0: defineRegisters([{ name: 'a', offset: 0, width: 4 }, ...(extra ? [{ name: 'b', offset: 4, width: 4 as const }] : [])]).bar({ size: 4096 }) },
      migration: {},
    });
    const a = new Device(table(true));
    const b = new Device(table(true));
    const c = new Device(table(false));
    const plain = new Device(spec());
    try {
      registerMapOf(a.spec.bars![0])!.set('a', 7);
      registerMapOf(a.spec.bars![0])!.set('b', 9);
      feed(b, image(a), () => 5);
      assert.equal(registerMapOf(b.spec.bars![0])!.get('a'), 7);
      assert.equal(registerMapOf(b.spec.bars![0])!.get('b'), 9);
      assert.throws(() => feed(c, image(a), () => 4096), { errno: 22, message: /no register or memory block named b/ });
      assert.throws(() => feed(plain, image(a), () => 4096), { errno: 22, message: /register values for BAR0, which has no register map here/ });
      assert.equal(image(plain).readUInt32LE(12), 2 + 3, 'a device without maps writes no register section');
    } finally {
      a.dispose();
      b.dispose();
      c.dispose();
      plain.dispose();
    }
  });
});

describe('DMA gate', () => {
  it('holds new operations, waits for those in flight, releases', async () => {
    const gate = new DmaGate();
    let finish!: () => void;
    const inflight = gate.run(() => new Promise<void>((r) => (finish = r)));
    let held = false;
    const holding = gate.hold(1000).then((ok) => (held = ok));
    await new Promise((r) => setImmediate(r));
    assert.equal(held, false, 'waits for the operation in flight');
    assert.throws(() => gate.check(), { errno: 16 });
    let later = false;
    const queued = gate.run(async () => {
      later = true;
    });
    finish();
    await inflight;
    await holding;
    assert.equal(held, true);
    await new Promise((r) => setImmediate(r));
    assert.equal(later, false, 'new operations wait while held');
    gate.release();
    await queued;
    assert.equal(later, true);
    assert.equal(await gate.hold(10), true, 'nothing in flight: immediate');
    gate.release();
  });

  it('gives up waiting after the timeout', async () => {
    const gate = new DmaGate();
    void gate.run(() => new Promise<void>(() => {}));
    assert.equal(await gate.hold(20), false);
  });
});

describe('dirty log', () => {
  it('reports pages written directly at the requested page size, and clears them', () => {
    const table = new DmaTable({ pageSize: 4096, maxMaps: 16 });
    const fd = native.memfd('dirty', 8 * 4096);
    try {
      table.add(0x10000, 8 * 4096, 0, 3, native.dup(fd));
      const log = new DirtyLog(table);
      assert.throws(() => log.report(0x10000, 4096, 4096), { errno: 22 });
      assert.equal(log.start(4096, []), 4096);
      assert.throws(() => log.start(4096, []), { errno: 16 });
      const r = table.list()[0]!;
      table.markDirty(r, 0x1000, 1);
      table.markDirty(r, 0x5fff, 2);
      const bm = log.report(0x10000, 8 * 4096, 4096);
      assert.equal(bm.length, 8);
      assert.equal(bm[0], 0b0110_0010);
      assert.equal(log.report(0x10000, 8 * 4096, 4096)[0], 0, 'cleared by the report');
      table.markDirty(r, 0x3000, 1);
      // 16 KiB report pages: page 0x3000 is in report page 0.
      assert.equal(log.report(0x10000, 8 * 4096, 16384)[0], 0b01);
      assert.throws(() => log.report(0x10000, 4096, 3000), { errno: 22 });
      log.stop();
      assert.equal(log.active, false);
      // Logging only some ranges: reports outside them are refused.
      log.start(8192, [{ iova: 0x10000, length: 0x4000 }]);
      assert.equal(log.pageSize, 8192);
      assert.throws(() => log.report(0x14000, 0x1000, 4096), { errno: 22 });
      assert.equal(log.report(0x10000, 0x4000, 4096).length, 8);
      log.stop();
    } finally {
      table.clear();
      native.close(fd);
    }
  });
});
