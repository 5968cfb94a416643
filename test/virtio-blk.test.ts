/**
 * The virtio-blk sample, served in-process over a RAM test backend and
 * driven by our client as the virtio driver: config and features, every
 * request type, every malformed-request class, out-of-order completion,
 * multiqueue, fd-less guest memory, reset during I/O, reconnect, and a
 * seeded fuzz of guest ring memory.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { Client } from '../src/client/index.js';
import { DmaMapFlag } from '../src/protocol/constants.js';
import { serve, virtioBlk, type Server } from '../src/index.js';
import { BlkFeature } from '../src/virtio/blk.js';
import { DescFlag, VirtioFeature, VirtioStatus, featureBit, hasFeature, virtioTransportOf } from '../src/virtio/index.js';
import { connectClient } from './helpers/raw.js';
import { probeRam, type ProbeBackend } from './helpers/probe-backend.js';
import { GUEST_BASE, VirtioDriver } from './helpers/virtio-driver.js';
import { fuzzRing } from './helpers/ring-fuzz.js';
import { waitUntil } from './helpers/slow-backend.js';
import { S_IOERR, S_OK, S_UNSUPP, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES, blk, buildBlk, rangeList } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-vblk-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

const MiB = 1024 * 1024;
const OK_STATUS = VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK;

interface Rig {
  backend: ProbeBackend;
  server: Server;
  client: Client;
  driver: VirtioDriver;
}

async function rig(o: { size?: number; readOnly?: boolean; queues?: number; memory?: 'shared' | 'private'; start?: boolean; caps?: { discard?: boolean }; resetTimeoutMs?: number } = {}): Promise<Rig> {
  const backend = probeRam(o.size ?? MiB, o.caps);
  const spec = virtioBlk({ backend, queues: o.queues, readOnly: o.readOnly, serial: 'muser-test-serial-01', queueSize: 64, resetTimeoutMs: o.resetTimeoutMs });
  const server = serve(spec, join(dir, `blk${serial++}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const driver = await VirtioDriver.open(client, { memory: o.memory });
  if (o.start ?? true) await driver.start(o.queues ?? 1);
  return { backend, server, client, driver };
}

function close(r: Rig | undefined): void {
  if (!r) return;
  r.driver.close();
  r.client.close();
  r.server.close();
}

describe('virtio-blk: config and features', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('config: capacity in sectors, limits, block size, queues', async () => {
    r = await rig({ size: 8 * MiB, queues: 2, start: false });
    const c = await r.driver.readConfig(0, 0x3c);
    assert.equal(c.readBigUInt64LE(0), BigInt((8 * MiB) / 512));
    assert.equal(c.readUInt32LE(0x08), 64 * 1024, 'size_max');
    assert.equal(c.readUInt32LE(0x0c), 62, 'seg_max');
    assert.equal(c.readUInt32LE(0x14), 512, 'blk_size');
    assert.equal(c.readUInt16LE(0x22), 2, 'num_queues');
    assert.ok(c.readUInt32LE(0x24) > 0, 'max_discard_sectors');
    assert.ok(c.readUInt32LE(0x28) > 0, 'max_discard_seg');
    assert.ok(c.readUInt32LE(0x30) > 0, 'max_write_zeroes_sectors');
    assert.equal(c[0x38], 1, 'write_zeroes_may_unmap');
  });

  test('features: SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH, TOPOLOGY, MQ, DISCARD, WRITE_ZEROES; RO only when read-only', async () => {
    r = await rig({ queues: 2, start: false });
    const f = await r.driver.deviceFeatures();
    for (const bit of [BlkFeature.SIZE_MAX, BlkFeature.SEG_MAX, BlkFeature.BLK_SIZE, BlkFeature.FLUSH, BlkFeature.TOPOLOGY, BlkFeature.MQ, BlkFeature.DISCARD, BlkFeature.WRITE_ZEROES, VirtioFeature.VERSION_1, VirtioFeature.INDIRECT_DESC, VirtioFeature.EVENT_IDX]) {
      assert.ok(hasFeature(f, bit), `feature ${bit}`);
    }
    assert.ok(!hasFeature(f, BlkFeature.RO));
    close(r);
    r = await rig({ readOnly: true, start: false });
    const ro = await r.driver.deviceFeatures();
    assert.ok(hasFeature(ro, BlkFeature.RO));
    assert.ok(!hasFeature(ro, BlkFeature.DISCARD) && !hasFeature(ro, BlkFeature.WRITE_ZEROES));
    assert.ok(!hasFeature(ro, BlkFeature.MQ));
  });
});

describe('virtio-blk: every request type', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('OUT then IN round-trips data, in many segments, direct and indirect, every doorbell', async () => {
    r = await rig();
    const d = r.driver;
    let seed = 1;
    for (const indirect of [false, true]) {
      for (const kick of ['message', 'posted', 'eventfd'] as const) {
        const data = pattern(12 * 1024, seed++);
        const sector = seed * 40;
        const w = await blk(d, 0, T_OUT, sector, { out: data, indirect, kick, segment: 4096 });
        assert.equal(w.status, S_OK);
        assert.equal(w.len, 1, 'OUT writes only the status byte');
        assert.deepEqual(await r.backend.peek(sector * 512, sector * 512 + data.length), data);
        const rd = await blk(d, 0, T_IN, sector, { inLen: data.length, indirect, kick, segment: 1536 });
        assert.equal(rd.status, S_OK);
        assert.equal(rd.len, data.length + 1);
        assert.deepEqual(rd.data, data);
      }
    }
  });

  test('FLUSH reaches the backend', async () => {
    r = await rig();
    const f = await blk(r.driver, 0, T_FLUSH, 0);
    assert.equal(f.status, S_OK);
    assert.equal(r.backend.calls.flush, 1);
  });

  test('GET_ID returns the serial (20 bytes)', async () => {
    r = await rig();
    const id = await blk(r.driver, 0, T_GET_ID, 0, { inLen: 20 });
    assert.equal(id.status, S_OK);
    assert.equal(id.data.toString(), 'muser-test-serial-01');
    assert.equal(id.len, 21);
  });

  test('DISCARD zeroes ranges through the backend; flags on a discard are UNSUPP', async () => {
    r = await rig();
    await r.backend.fill(7, 0, 64 * 1024);
    const res = await blk(r.driver, 0, T_DISCARD, 0, { out: rangeList([{ sector: 8, sectors: 8 }, { sector: 64, sectors: 16 }]) });
    assert.equal(res.status, S_OK);
    assert.equal(r.backend.calls.discard, 2);
    assert.ok((await r.backend.peek(8 * 512, 16 * 512)).every((b) => b === 0));
    assert.equal((await r.backend.peek(16 * 512, 16 * 512 + 1))[0], 7);
    const flagged = await blk(r.driver, 0, T_DISCARD, 0, { out: rangeList([{ sector: 0, sectors: 1, flags: 1 }]) });
    assert.equal(flagged.status, S_UNSUPP);
  });

  test('WRITE_ZEROES zeroes, passing the unmap flag on', async () => {
    r = await rig();
    await r.backend.fill(9, 0, 64 * 1024);
    const res = await blk(r.driver, 0, T_WRITE_ZEROES, 0, { out: rangeList([{ sector: 2, sectors: 2, flags: 1 }, { sector: 10, sectors: 1 }]) });
    assert.equal(res.status, S_OK);
    assert.deepEqual(r.backend.unmaps, [true, false]);
    assert.ok((await r.backend.peek(1024, 2048)).every((b) => b === 0));
    assert.equal((await r.backend.peek(4 * 512, 4 * 512 + 1))[0], 9);
  });

  test('an unknown request type is UNSUPP', async () => {
    r = await rig();
    assert.equal((await blk(r.driver, 0, 99, 0)).status, S_UNSUPP);
  });

  test('a read-only disk fails writes, discards and write-zeroes with IOERR, reads work', async () => {
    r = await rig({ readOnly: true });
    await r.backend.fill(3, 0, 512);
    assert.equal((await blk(r.driver, 0, T_OUT, 0, { out: Buffer.alloc(512, 1) })).status, S_IOERR);
    assert.equal((await blk(r.driver, 0, T_WRITE_ZEROES, 0, { out: rangeList([{ sector: 0, sectors: 1 }]) })).status, S_IOERR);
    assert.equal(r.backend.calls.write + r.backend.calls.writeZeroes, 0);
    const rd = await blk(r.driver, 0, T_IN, 0, { inLen: 512 });
    assert.equal(rd.status, S_OK);
    assert.ok(rd.data.every((b) => b === 3));
  });

  test('a backend failure is IOERR; ENOTSUP is UNSUPP', async () => {
    r = await rig();
    r.backend.failNext = 'EIO';
    assert.equal((await blk(r.driver, 0, T_IN, 0, { inLen: 512 })).status, S_IOERR);
    r.backend.failNext = 'ENOTSUP';
    assert.equal((await blk(r.driver, 0, T_FLUSH, 0)).status, S_UNSUPP);
    assert.equal((await blk(r.driver, 0, T_IN, 0, { inLen: 512 })).status, S_OK);
  });
});

describe('virtio-blk: malformed requests fail alone with IOERR', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  const cases: [string, (d: VirtioDriver) => ReturnType<typeof buildBlk>][] = [
    ['a header shorter than 16 bytes', (d) => {
      const b = buildBlk(d, T_IN, 0, { inLen: 512 });
      b.bufs[0].len = 8;
      return b;
    }],
    ['IN data in device-readable buffers', (d) => buildBlk(d, T_IN, 0, { out: Buffer.alloc(512) })],
    ['OUT data in device-writable buffers', (d) => buildBlk(d, T_OUT, 0, { inLen: 512 })],
    ['data that is not whole sectors', (d) => buildBlk(d, T_OUT, 0, { out: Buffer.alloc(100) })],
    ['sectors beyond the end of the disk', (d) => buildBlk(d, T_IN, 2047, { inLen: 1024 })],
    ['a sector number near 2^64', (d) => buildBlk(d, T_IN, 0xffff_ffff_ffff_fff0n, { inLen: 512 })],
    ['data in unmapped memory', (d) => {
      const b = buildBlk(d, T_IN, 0, { inLen: 512 });
      b.bufs[1].addr = 0x6000_0000;
      return b;
    }],
    ['a buffer whose address and length wrap around 2^64', (d) => {
      const b = buildBlk(d, T_IN, 0, { inLen: 512 });
      b.bufs[1] = { ...b.bufs[1], addr: 0xffff_ffff_ffff_fe00n as unknown as number };
      return b;
    }],
    ['a segment longer than size_max', (d) => buildBlk(d, T_OUT, 0, { out: Buffer.alloc(128 * 1024), segment: 128 * 1024 })],
    ['a range list that is not whole segments', (d) => buildBlk(d, T_DISCARD, 0, { out: Buffer.alloc(20) })],
    ['a range beyond the end of the disk', (d) => buildBlk(d, T_WRITE_ZEROES, 0, { out: rangeList([{ sector: 2040, sectors: 16 }]) })],
  ];

  for (const [what, build] of cases) {
    test(what, async () => {
      r = await rig();
      const d = r.driver;
      const { bufs, result } = build(d);
      const used = await d.roundTrip(0, bufs);
      assert.equal(result(used.len).status, S_IOERR);
      assert.equal(await d.status(), OK_STATUS, 'the device is not broken');
      assert.equal((await blk(d, 0, T_GET_ID, 0, { inLen: 20 })).status, S_OK, 'and serves the next request');
    });
  }

  test('a data buffer in memory the client mapped read-only, for an IN request', async () => {
    r = await rig();
    const d = r.driver;
    const { sharedMemory } = await import('../src/client/index.js');
    const ro = sharedMemory(4096);
    try {
      await r.client.dmaMap(0x2000_0000, ro, DmaMapFlag.READ);
      const b = buildBlk(d, T_IN, 0, { inLen: 512 });
      b.bufs[1].addr = 0x2000_0000;
      const used = await d.roundTrip(0, b.bufs);
      assert.equal(b.result(used.len).status, S_IOERR);
      assert.equal(await d.status(), OK_STATUS);
    } finally {
      ro.close();
    }
  });

  test('a status byte in memory mapped read-only, beside a header the device just read there, is not written', async () => {
    // The drain caches the region it last located: a read of the header must not vouch for a write to the same region.
    r = await rig();
    const d = r.driver;
    const { sharedMemory } = await import('../src/client/index.js');
    const ro = sharedMemory(4096);
    try {
      ro.bytes.fill(0xaa);
      const header = Buffer.alloc(16);
      header.writeUInt32LE(T_FLUSH);
      ro.bytes.set(header, 0);
      await r.client.dmaMap(0x2000_0000, ro, DmaMapFlag.READ);
      const seen = d.vectors[0].total;
      d.post(0, [
        { addr: 0x2000_0000, len: 16 },
        { addr: 0x2000_0000 + 512, len: 1, write: true },
      ]);
      await d.kick(0);
      await d.vectors[0].waitFor(seen + 1);
      assert.ok((await d.status()) & VirtioStatus.DEVICE_NEEDS_RESET, 'nowhere to write the status: the device asks for a reset');
      assert.ok(ro.bytes.subarray(16).every((b) => b === 0xaa), 'the read-only memory is unchanged');
    } finally {
      ro.close();
    }
  });

  test('a request without a status byte sets DEVICE_NEEDS_RESET; a reset recovers', async () => {
    r = await rig();
    const d = r.driver;
    const seen = d.vectors[0].total;
    const header = Buffer.alloc(16);
    header.writeUInt32LE(T_FLUSH);
    d.post(0, [{ addr: d.put(header), len: 16 }]);
    await d.kick(0);
    await d.vectors[0].waitFor(seen + 1);
    assert.ok((await d.status()) & VirtioStatus.DEVICE_NEEDS_RESET);
    await d.start(1);
    assert.equal((await blk(d, 0, T_FLUSH, 0)).status, S_OK);
  });
});

describe('virtio-blk: concurrency, queues, memory, resets', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('requests complete in the order the backend finishes them', async () => {
    r = await rig();
    const d = r.driver;
    r.backend.holding = true;
    const reqs = [0, 1, 2].map((i) => buildBlk(d, T_OUT, i * 8, { out: pattern(4096, 100 + i) }));
    const heads = reqs.map((q) => d.post(0, q.bufs));
    await d.kick(0);
    await r.backend.waitHeld(3);
    r.backend.release(2);
    const first = await d.waitUsed(0, 1);
    assert.equal(first[0].id, heads[2]);
    r.backend.release(0);
    r.backend.release(1);
    const rest = await d.waitUsed(0, 2);
    assert.deepEqual(rest.map((u) => u.id).sort(), [heads[0], heads[1]].sort());
    r.backend.holding = false;
    for (let i = 0; i < 3; i++) assert.deepEqual(await r.backend.peek(i * 4096, (i + 1) * 4096), pattern(4096, 100 + i));
  });

  test('with --queues 2 both queues carry I/O', async () => {
    r = await rig({ queues: 2 });
    const d = r.driver;
    for (const q of [0, 1]) {
      const data = pattern(2048, 7 + q);
      assert.equal((await blk(d, q, T_OUT, 100 * q, { out: data })).status, S_OK);
      assert.deepEqual((await blk(d, q, T_IN, 100 * q, { inLen: 2048 })).data, data);
    }
    const counts = virtioTransportOf(r.server.device.spec)!.requestCounts();
    assert.deepEqual(counts, [{ queue: 0, thread: 'main', requests: 2 }, { queue: 1, thread: 'main', requests: 2 }]);
  });

  test('guest memory without an fd: the same requests by DMA messages', async () => {
    r = await rig({ memory: 'private' });
    const d = r.driver;
    const data = pattern(8192, 42);
    assert.equal((await blk(d, 0, T_OUT, 16, { out: data })).status, S_OK);
    const rd = await blk(d, 0, T_IN, 16, { inLen: 8192, indirect: true });
    assert.equal(rd.status, S_OK);
    assert.deepEqual(rd.data, data);
    assert.equal((await blk(d, 0, T_GET_ID, 0, { inLen: 20 })).data.toString(), 'muser-test-serial-01');
  });

  /** Posts a read the backend holds and resets the device under it; returns the pending reset. */
  async function resetUnderHeldRead(r: Rig): Promise<{ reset: Promise<void> }> {
    r.backend.holding = true;
    r.driver.post(0, buildBlk(r.driver, T_IN, 0, { inLen: 4096 }).bufs);
    await r.driver.kick(0);
    await r.backend.waitHeld(1);
    const reset = r.driver.setStatus(0);
    const transport = virtioTransportOf(r.server.device.spec)!;
    await waitUntil(() => transport.status === 0, 'the device to take the reset');
    return { reset };
  }

  test('reset during I/O: answered once the read in flight ended, which never completes; the device works after setup', async () => {
    r = await rig();
    const d = r.driver;
    let released = false;
    const reset = (await resetUnderHeldRead(r)).reset.then(() => released);
    released = true;
    r.backend.releaseAll();
    assert.equal(await reset, true, 'the reset was answered after the held read ended');
    assert.equal(d.usedState(0).idx, 0);
    await d.start(1);
    assert.equal((await blk(d, 0, T_GET_ID, 0, { inLen: 20 })).status, S_OK);
  });

  test('a read that outlives the reset timeout: the reset completes, the read lands outside guest memory, its memory unmaps cleanly', async () => {
    r = await rig({ resetTimeoutMs: 200 });
    const d = r.driver;
    await (await resetUnderHeldRead(r)).reset; // answered after 200 ms, the read still held
    const snapshot = Buffer.from(d.mem.bytes);
    // The unmap waits for the read's pinned views; its data and status then go to scratch memory.
    const unmap = r.client.dmaUnmap(GUEST_BASE, d.mem.bytes.length);
    const device = r.server.device;
    await waitUntil(() => device.dma.mappedRegions().length === 0, 'the region to leave the table');
    r.backend.releaseAll();
    await unmap;
    assert.equal(Buffer.compare(snapshot, d.mem.bytes), 0, 'guest memory unchanged');
    assert.equal((await d.status()) & VirtioStatus.DEVICE_NEEDS_RESET, 0, 'no DEVICE_NEEDS_RESET on the reset device');
  });

  test('reconnect: a new client after a disconnect finds a fresh device and the same disk', async () => {
    r = await rig();
    const data = pattern(1024, 5);
    assert.equal((await blk(r.driver, 0, T_OUT, 4, { out: data })).status, S_OK);
    r.driver.close();
    r.client.close();
    const client = await connectClient(r.server.path);
    const driver = await VirtioDriver.open(client);
    r = { ...r, client, driver };
    assert.equal(await driver.status(), 0, 'the device was reset');
    await driver.start(1);
    assert.deepEqual((await blk(driver, 0, T_IN, 4, { inLen: 1024 })).data, data);
  });
});

describe('virtio-blk: seeded fuzz of guest ring memory', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('random descriptors, avail entries and indirect tables never crash or hang the device', async () => {
    r = await rig();
    const d = r.driver;
    const broken = await fuzzRing(d, 150);
    assert.ok(broken > 0, 'the fuzz broke the ring at least once');
    const data = pattern(4096, 3);
    assert.equal((await blk(d, 0, T_OUT, 0, { out: data })).status, S_OK);
    assert.deepEqual((await blk(d, 0, T_IN, 0, { inLen: 4096 })).data, data);
  });
});

describe('virtio-blk: features the driver picks', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('a driver without EVENT_IDX and INDIRECT_DESC still does I/O; RO is refused when not offered', async () => {
    r = await rig({ start: false });
    const d = r.driver;
    const n = await d.negotiate((o) => o | featureBit(BlkFeature.RO));
    assert.equal(n.status & VirtioStatus.FEATURES_OK, 0);
    await d.start(1, (o) => o & ~featureBit(VirtioFeature.EVENT_IDX) & ~featureBit(VirtioFeature.INDIRECT_DESC));
    const data = pattern(512, 9);
    assert.equal((await blk(d, 0, T_OUT, 1, { out: data })).status, S_OK);
    assert.deepEqual((await blk(d, 0, T_IN, 1, { inLen: 512 })).data, data);
  });
});
