/**
 * Watched memory (memoryWatch, native watchStart): words of a mapping that
 * another party writes, seen without a message. The native tests write
 * through a second mapping of the same memfd, as a guest writes through
 * QEMU's; the device tests serve a device and write through the client's
 * mapping of the region fd it hands out with its sparse mmap capability.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { native, type MapHandle } from '../src/native/index.js';
import { Client, mapRegion, closeFd, RegionCapId, type RegionMapping, type SparseMmapCap } from '../src/client/index.js';
import { memoryWatch, serve, type DeviceSpec, type MemoryWatch } from '../src/index.js';
import { until, sleep } from './helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-watch-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** A memfd mapped twice: `watched` for the watch, `other` for the writer. */
function twoMappings(size = 4096): { watched: [ArrayBuffer, MapHandle]; other: DataView; close(): void } {
  const fd = native.memfd('watch-test', size, true);
  const a = native.mmap(fd, 0, size, true);
  const b = native.mmap(fd, 0, size, true);
  if (typeof a === 'number' || typeof b === 'number') throw new Error('mmap failed');
  return {
    watched: a,
    other: new DataView(b[0]),
    close() {
      native.munmap(a[1], a[0]);
      native.munmap(b[1], b[0]);
      native.close(fd);
    },
  };
}

describe('native watch', () => {
  test('by value: a changed word is reported once with its offset and value; a repeated value is not', () => {
    const m = twoMappings();
    const seen: [number, number][] = [];
    m.other.setUint32(8, 7, true); // there before the watch: counts as seen
    const h = native.watchStart(m.watched[1], m.watched[0], 0, 64, 4, undefined, 1000, 0, (off, v) => seen.push([off, v]));
    try {
      assert.equal(native.watchScan(), 0);
      m.other.setUint32(8, 9, true);
      m.other.setUint32(60, 0xfffffffe, true);
      assert.equal(native.watchScan(), 2);
      assert.deepEqual(seen, [
        [8, 9],
        [60, 0xfffffffe],
      ]);
      m.other.setUint32(8, 9, true);
      assert.equal(native.watchScan(), 0, 'the same value again is no write, by value');
      // store: written and counted as seen, so not reported back.
      assert.equal(native.watchStore(h, 8, 0), 0);
      assert.equal(m.other.getUint32(8, true), 0);
      assert.equal(native.watchScan(), 0);
      m.other.setUint32(8, 9, true);
      assert.equal(native.watchScan(), 1);
      assert.deepEqual(seen.at(-1), [8, 9]);
    } finally {
      native.watchStop(h);
      m.close();
    }
  });

  test('rearm: every write is seen, a repeated value too, and the word is set back', () => {
    const m = twoMappings();
    const seen: [number, number][] = [];
    const h = native.watchStart(m.watched[1], m.watched[0], 16, 8, 2, 0xffff, 1000, 0, (off, v) => seen.push([off, v]));
    try {
      assert.equal(m.other.getUint16(16, true), 0xffff, 'words start at the rearm value');
      m.other.setUint16(18, 3, true);
      assert.equal(native.watchScan(), 1);
      assert.equal(m.other.getUint16(18, true), 0xffff, 'swapped back after the write was seen');
      m.other.setUint16(18, 3, true);
      assert.equal(native.watchScan(), 1);
      assert.deepEqual(seen, [
        [2, 3],
        [2, 3],
      ]);
      assert.equal(native.watchStore(h, 2, 1), -22, 'a rearming watch owns its words');
    } finally {
      native.watchStop(h);
      m.close();
    }
  });

  test('a successor\'s take-over: mmapReplace puts another memfd under the same views; keep reports the rearming words no one saw', () => {
    const own = native.memfd('own', 8192, true);
    const peer = native.memfd('peer', 4096, true);
    const short = native.memfd('short', 2048, true);
    const a = native.mmap(own, 0, 4096, true);
    const b = native.mmap(peer, 0, 4096, true);
    if (typeof a === 'number' || typeof b === 'number') throw new Error('mmap failed');
    const view = new DataView(a[0]);
    const other = new DataView(b[0]);
    const seen: [number, number][] = [];
    try {
      // The peer's memory: rearmed words, one of them stored into while no one watched, and some bytes.
      new Uint8Array(b[0], 0, 16).fill(0xff);
      other.setUint32(4, 9, true);
      other.setUint32(100, 0xabcd, true);
      assert.equal(native.mmapReplace(a[1], short), -22, 'a memfd shorter than the mapping is refused');
      assert.equal(view.getUint32(100, true), 0, 'nothing replaced');
      assert.equal(native.mmapReplace(a[1], peer), 0);
      assert.equal(view.getUint32(100, true), 0xabcd, 'the same views read the peer memory');
      view.setUint32(200, 7, true);
      assert.equal(other.getUint32(200, true), 7, 'and write it');
      const h = native.watchStart(a[1], a[0], 0, 16, 4, 0xffffffff, 1000, 0, (off, v) => seen.push([off, v]), true);
      try {
        assert.equal(other.getUint32(4, true), 9, 'keep: the word is left as it is');
        assert.equal(native.watchScan(), 1);
        assert.deepEqual(seen, [[4, 9]]);
        assert.equal(other.getUint32(4, true), 0xffffffff, 'then rearmed');
        other.setUint32(12, 9, true);
        assert.equal(native.watchScan(), 1);
      } finally {
        native.watchStop(h);
      }
    } finally {
      native.munmap(a[1], a[0]);
      native.munmap(b[1], b[0]);
      for (const fd of [own, peer, short]) native.close(fd);
    }
    assert.equal(native.mmapReplace(a[1], peer), -22, 'an unmapped mapping is refused');
  });

  test('paused: nothing is reported; what was written meanwhile is seen on resume', () => {
    const m = twoMappings();
    const seen: number[] = [];
    const h = native.watchStart(m.watched[1], m.watched[0], 0, 4, 4, undefined, 1000, 0, (_o, v) => seen.push(v));
    try {
      native.watchPause(h, true);
      m.other.setUint32(0, 5, true);
      assert.equal(native.watchScan(), 0);
      native.watchPause(h, false);
      assert.equal(native.watchScan(), 1);
      assert.deepEqual(seen, [5]);
    } finally {
      native.watchStop(h);
      m.close();
    }
  });

  test('the timer finds a write while the loop sleeps', async () => {
    const m = twoMappings();
    const seen: number[] = [];
    const h = native.watchStart(m.watched[1], m.watched[0], 0, 4, 4, undefined, 2, 0, (_o, v) => seen.push(v));
    try {
      m.other.setUint32(0, 42, true);
      await until(() => seen.length === 1, 'the timer scan');
      assert.deepEqual(seen, [42]);
    } finally {
      native.watchStop(h);
      m.close();
    }
  });

  test('a change with idleNs starts the busy poll; the callback may stop its own watch', async () => {
    const m = twoMappings();
    const starts = native.spinState()[1];
    let calls = 0;
    const h = native.watchStart(m.watched[1], m.watched[0], 0, 8, 4, undefined, 1, 5e6, () => {
      calls++;
      native.watchStop(h);
    });
    m.other.setUint32(0, 1, true);
    m.other.setUint32(4, 1, true);
    await until(() => calls > 0, 'the write');
    assert.equal(calls, 1, 'stopped inside its own callback: the second word is not reported');
    assert.ok(native.spinState()[1] > starts, 'the loop started busy-polling');
    m.close();
  });

  test('a watched mapping is not unmapped under the watch; bad arguments throw naming them', () => {
    const m = twoMappings();
    const h = native.watchStart(m.watched[1], m.watched[0], 0, 4, 4, undefined, 1, 0, () => undefined);
    assert.equal(native.munmap(m.watched[1], m.watched[0]), -16, 'EBUSY while watched');
    native.watchStop(h);
    native.watchStop(h); // idempotent
    const bad: [string, () => unknown][] = [
      ['width', () => native.watchStart(m.watched[1], m.watched[0], 0, 4, 3 as 4, undefined, 1, 0, () => undefined)],
      ['offset', () => native.watchStart(m.watched[1], m.watched[0], 2, 4, 4, undefined, 1, 0, () => undefined)],
      ['offset', () => native.watchStart(m.watched[1], m.watched[0], 4092, 8, 4, undefined, 1, 0, () => undefined)],
      ['rearm', () => native.watchStart(m.watched[1], m.watched[0], 0, 4, 2, 0x10000, 1, 0, () => undefined)],
      ['intervalMs', () => native.watchStart(m.watched[1], m.watched[0], 0, 4, 4, undefined, 0, 0, () => undefined)],
      ['callback', () => native.watchStart(m.watched[1], m.watched[0], 0, 4, 4, undefined, 1, 0, 'f' as never)],
      ['arrayBuffer', () => native.watchStart(m.watched[1], new ArrayBuffer(4096), 0, 4, 4, undefined, 1, 0, () => undefined)],
      ['keep', () => native.watchStart(m.watched[1], m.watched[0], 0, 4, 4, 0, 1, 0, () => undefined, 'yes' as never)],
      ['handle', () => native.watchStop({} as never)],
    ];
    for (const [name, call] of bad) assert.throws(call, (e: Error) => e.message.includes(name), name);
    m.close();
  });
});

/** A device whose BAR0 page 1 is a sparse mmap area with watched words. */
function watchedDevice(watch: MemoryWatch): DeviceSpec {
  return {
    identity: { vendorId: 0x1234, deviceId: 0x77 },
    bars: { 0: { size: 0x2000, memory: { mmap: [{ offset: 0x1000, size: 0x1000 }] }, watches: [watch] } },
  };
}

/** Maps BAR0's sparse area the way QEMU does: the region fd, at the area's offset. */
async function mapDoorbellPage(c: Client): Promise<RegionMapping> {
  const info = await c.regionInfo(0);
  assert.ok(info.fd !== undefined, 'the region fd came with the reply');
  const sparse = info.caps.find((x) => x.id === RegionCapId.SPARSE_MMAP) as SparseMmapCap | undefined;
  assert.deepEqual(sparse?.areas, [{ offset: 0x1000, size: 0x1000 }]);
  const m = mapRegion(info.fd, info.info.offset + 0x1000, 0x1000);
  closeFd(info.fd);
  return m;
}

describe('memoryWatch on a served device', () => {
  for (const poll of [false, true]) {
    test(`writes into the client's mapping reach onWrite without a message${poll ? ' (--poll)' : ''}`, async () => {
      const seen: [number, number][] = [];
      const watch = memoryWatch({ offset: 0x1000, length: 64, onWrite: (off, v) => void seen.push([off, v]) });
      const server = serve(watchedDevice(watch), join(dir, `d${n++}.sock`), { log: 'silent', ...(poll ? { poll: { idleMs: 5 } } : {}) });
      const c = await Client.connect(server.path);
      const page = await mapDoorbellPage(c);
      const doorbells = new DataView(page.bytes.buffer, page.bytes.byteOffset, 64);
      try {
        await until(() => watch.watching, 'watching to start');
        const before = server.session!.dropped;
        doorbells.setUint32(8, 5, true);
        await until(() => seen.length === 1, 'the first write');
        doorbells.setUint32(8, 6, true);
        doorbells.setUint32(12, 1, true);
        await until(() => seen.length === 3, 'two more writes');
        assert.deepEqual(seen, [
          [0x1008, 5],
          [0x1008, 6],
          [0x100c, 1],
        ]);
        assert.equal(watch.writes, 3);
        assert.equal(server.session!.dropped, before);
        // store() writes the word for the device and is not reported back.
        watch.store(0x1008, 0);
        assert.equal(doorbells.getUint32(8, true), 0);
        await sleep(10);
        assert.equal(seen.length, 3);
      } finally {
        page.unmap();
        c.close();
        await until(() => !watch.watching, 'the watch to stop with the client');
        server.close();
      }
    });
  }

  test('while migration keeps the device quiesced, writes wait; they are seen when it runs again', async () => {
    const seen: number[] = [];
    const watch = memoryWatch({ offset: 0x1000, length: 4, rearm: 0xffffffff, onWrite: (_o, v) => void seen.push(v) });
    const server = serve(watchedDevice(watch), join(dir, `d${n++}.sock`), { log: 'silent', poll: { idleMs: 2 } });
    const c = await Client.connect(server.path);
    const page = await mapDoorbellPage(c);
    const word = new DataView(page.bytes.buffer, page.bytes.byteOffset, 4);
    try {
      await until(() => watch.watching, 'watching to start');
      assert.equal(word.getUint32(0, true), 0xffffffff, 'rearmed when watching started');
      server.session!.quiesced = true;
      word.setUint32(0, 9, true);
      await sleep(30);
      assert.deepEqual(seen, [], 'not seen while quiesced');
      server.session!.quiesced = false;
      await until(() => seen.length === 1, 'the write once running again');
      assert.deepEqual(seen, [9]);
      assert.equal(word.getUint32(0, true), 0xffffffff);
    } finally {
      page.unmap();
      c.close();
      server.close();
    }
  });

  test('a throwing onWrite is logged and watching goes on', async () => {
    const seen: number[] = [];
    const watch = memoryWatch({
      offset: 0x1000,
      length: 4,
      onWrite: (_o, v) => {
        seen.push(v);
        if (v === 1) throw new Error('boom');
      },
    });
    const server = serve(watchedDevice(watch), join(dir, `d${n++}.sock`), { log: 'silent' });
    const c = await Client.connect(server.path);
    const page = await mapDoorbellPage(c);
    const word = new DataView(page.bytes.buffer, page.bytes.byteOffset, 4);
    try {
      word.setUint32(0, 1, true);
      await until(() => seen.length === 1, 'the throwing write');
      word.setUint32(0, 2, true);
      await until(() => seen.length === 2, 'the next write');
      assert.equal(await c.regionRead(0, 0x1000, 4).then((b) => b.readUInt32LE(0)), 2, 'messages still served, the same memory');
    } finally {
      page.unmap();
      c.close();
      server.close();
    }
  });

  test('a spec whose watched words the client cannot map is refused, naming the watch', () => {
    const outside = memoryWatch({ name: 'db', offset: 0, length: 4, onWrite: () => undefined });
    assert.throws(() => serve(watchedDevice(outside), join(dir, `d${n++}.sock`)), /db .*must lie inside one mmap area/);
    const noMemory = memoryWatch({ offset: 0, length: 4, onWrite: () => undefined });
    assert.throws(() => serve({ identity: { vendorId: 1, deviceId: 2 }, bars: { 0: { size: 4096, read: () => 0, watches: [noMemory] } } }, join(dir, `d${n++}.sock`)), /bars\[0\]\.watches: .*memory-backed/);
    assert.throws(() => memoryWatch({ offset: 2, length: 4, onWrite: () => undefined }), /offset must be .* multiple of width 4/);
    assert.throws(() => memoryWatch({ offset: 0, length: 4, width: 2, rearm: 0x10000, onWrite: () => undefined }), /rearm/);
    assert.throws(() => memoryWatch({ offset: 0, length: 4 } as never), /onWrite/);
    const twice = memoryWatch({ offset: 0x1000, length: 4, onWrite: () => undefined });
    const s = serve(watchedDevice(twice), join(dir, `d${n++}.sock`), { log: 'silent' });
    try {
      assert.throws(() => serve(watchedDevice(twice), join(dir, `d${n++}.sock`)), /already serves device/);
    } finally {
      s.close();
    }
  });
});
