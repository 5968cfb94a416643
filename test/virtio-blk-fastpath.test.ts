/**
 * virtio-blk's synchronous fast path (guest memory with views, a backend
 * that finishes at once) against its asynchronous path (memory reached by
 * DMA messages, a backend that waits): the same requests give the same
 * bytes, lengths and statuses either way; a faulty request in a batch
 * served at once fails alone; a chain or buffer that needs messages hands
 * over to the asynchronous path in the middle of a batch without losing
 * or reordering anything; a batch served at once is published with one
 * interrupt.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { privateMemory, sharedMemory, type Client, type GuestMemory } from '../src/client/index.js';
import { serve, virtioBlk, type Server } from '../src/index.js';
import { DescFlag, VirtioStatus } from '../src/virtio/index.js';
import { connectClient } from './helpers/raw.js';
import { probeRam, type ProbeBackend } from './helpers/probe-backend.js';
import { GUEST_BASE, VirtioDriver } from './helpers/virtio-driver.js';
import { S_IOERR, S_OK, S_UNSUPP, T_FLUSH, T_GET_ID, T_IN, T_OUT, blk, buildBlk, type BlkResult } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-vblk-fast-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

const MiB = 1024 * 1024;
const OK_STATUS = VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK;
/** Where tests map extra guest memory that has no fd (reached by DMA messages only). */
const MESSAGE_ONLY = 0x3000_0000;

interface Rig {
  backend: ProbeBackend;
  server: Server;
  client: Client;
  driver: VirtioDriver;
  extra?: GuestMemory;
}

async function rig(memory: 'shared' | 'private' = 'shared'): Promise<Rig> {
  const backend = probeRam(MiB);
  const server = serve(virtioBlk({ backend, serial: 'fast-path-serial', queueSize: 64 }), join(dir, `blk${serial++}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const driver = await VirtioDriver.open(client, { memory });
  await driver.start(1);
  return { backend, server, client, driver };
}

function close(r: Rig | undefined): void {
  if (!r) return;
  r.driver.close();
  r.client.close();
  r.extra?.close();
  r.server.close();
}

/** One request of the script below, and what it checks. */
type Step = [what: string, run: (d: VirtioDriver) => Promise<BlkResult>];

const script: Step[] = [
  ['OUT 12 KiB in 4 KiB segments', (d) => blk(d, 0, T_OUT, 8, { out: pattern(12 * 1024, 1) })],
  ['IN 12 KiB in 1.5 KiB segments, indirect', (d) => blk(d, 0, T_IN, 8, { inLen: 12 * 1024, segment: 1536, indirect: true })],
  ['IN of data the disk held before', (d) => blk(d, 0, T_IN, 100, { inLen: 4096 })],
  ['OUT across a 64 KiB chunk of the RAM disk', (d) => blk(d, 0, T_OUT, 120, { out: pattern(8192, 2), segment: 512 })],
  ['IN across it', (d) => blk(d, 0, T_IN, 120, { inLen: 8192, segment: 3072 })],
  ['OUT with its header split over two descriptors, data in 700-byte pieces', (d) => splitHeader(d, T_OUT, 200, { out: pattern(3072, 9), segment: 700 })],
  ['IN with its header split, data in 1000-byte pieces', (d) => splitHeader(d, T_IN, 200, { inLen: 3072, segment: 1000, indirect: true })],
  ['GET_ID, 20 bytes', (d) => blk(d, 0, T_GET_ID, 0, { inLen: 20 })],
  ['GET_ID into 8 bytes', (d) => blk(d, 0, T_GET_ID, 0, { inLen: 8 })],
  ['FLUSH', (d) => blk(d, 0, T_FLUSH, 0)],
  ['IN without data', (d) => blk(d, 0, T_IN, 0)],
  ['OUT without data', (d) => blk(d, 0, T_OUT, 0)],
  ['IN past the end of the disk', (d) => blk(d, 0, T_IN, 2047, { inLen: 1024 })],
  ['IN at a sector near 2^64', (d) => blk(d, 0, T_IN, 0xffff_ffff_ffff_fff0n, { inLen: 512 })],
  ['IN with device-readable data', (d) => blk(d, 0, T_IN, 0, { out: Buffer.alloc(512) })],
  ['OUT of part of a sector', (d) => blk(d, 0, T_OUT, 0, { out: Buffer.alloc(100) })],
  ['an unknown type', (d) => blk(d, 0, 99, 0)],
];

/** A request whose 16-byte header lies in two descriptors (5 + 11 bytes). */
async function splitHeader(d: VirtioDriver, type: number, sector: number, o: Parameters<typeof buildBlk>[3]): Promise<BlkResult> {
  const b = buildBlk(d, type, sector, o);
  const h = b.bufs[0];
  b.bufs.splice(0, 1, { addr: h.addr, len: 5 }, { addr: h.addr + 5, len: 11 });
  const used = await d.roundTrip(0, b.bufs, { indirect: o?.indirect });
  return b.result(used.len);
}

describe('virtio-blk fast path: views and messages agree', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('the same requests through views and through DMA messages give the same bytes, lengths and statuses', async () => {
    const outcomes: Record<string, { results: BlkResult[]; disk: Buffer; served: ProbeBackend['served'] }> = {};
    for (const memory of ['shared', 'private'] as const) {
      r = await rig(memory);
      await r.backend.poke(pattern(4096, 3), 100 * 512);
      const results: BlkResult[] = [];
      for (const [, run] of script) results.push(await run(r.driver));
      outcomes[memory] = { results, disk: await r.backend.peek(0, MiB), served: { ...r.backend.served } };
      close(r);
      r = undefined;
    }
    const { shared, private: messages } = outcomes;
    script.forEach(([what], i) => assert.deepEqual(shared.results[i], messages.results[i], what));
    assert.ok(shared.disk.equals(messages.disk), 'the disks end the same');
    // One request path: the backend finished every request at once either way; only the guest memory went by message.
    assert.equal(shared.served.async, 0, 'with views, every read, write and flush was served at once');
    assert.ok(shared.served.now >= 8);
    assert.deepEqual(messages.served, shared.served, 'the backend saw the same requests, none of them waiting');
    // And they are right, not merely equal.
    const byName = (what: string): BlkResult => shared.results[script.findIndex(([w]) => w === what)];
    assert.deepEqual(byName('IN 12 KiB in 1.5 KiB segments, indirect').data, pattern(12 * 1024, 1));
    assert.deepEqual(byName('IN of data the disk held before').data, pattern(4096, 3));
    assert.deepEqual(byName('IN across it').data, pattern(8192, 2));
    assert.deepEqual(byName('IN with its header split, data in 1000-byte pieces').data, pattern(3072, 9));
    assert.equal(byName('GET_ID, 20 bytes').data.toString(), 'fast-path-serial\0\0\0\0');
    assert.equal(byName('GET_ID into 8 bytes').len, 9);
    assert.equal(byName('IN without data').status, S_OK);
    assert.equal(byName('IN past the end of the disk').status, S_IOERR);
    assert.equal(byName('IN at a sector near 2^64').status, S_IOERR);
    assert.equal(byName('OUT of part of a sector').status, S_IOERR);
    assert.equal(byName('an unknown type').status, S_UNSUPP);
  });
});

describe('virtio-blk fast path: batches', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('in a batch served at once, a request with unmapped data and one the backend fails end alone; one interrupt publishes all', async () => {
    r = await rig();
    const d = r.driver;
    await r.backend.poke(pattern(4096, 4), 32 * 512);
    const reqs = [
      buildBlk(d, T_GET_ID, 0, { inLen: 20 }),
      buildBlk(d, T_IN, 0, { inLen: 4096 }),
      buildBlk(d, T_IN, 0, { inLen: 4096 }),
      buildBlk(d, T_OUT, 16, { out: pattern(4096, 5) }),
      buildBlk(d, T_IN, 32, { inLen: 4096 }),
    ];
    reqs[1].bufs[1].addr = 0x6000_0000; // not mapped
    const heads = reqs.map((q) => d.post(0, q.bufs));
    r.backend.failNext = 'EIO'; // the first request that reaches the backend: reqs[2]
    const vector = d.vectors[1];
    const before = vector.total;
    await d.kick(0);
    const used = await d.waitUsed(0, 5);
    const byHead = new Map(used.map((u) => [u.id, u.len]));
    const results = reqs.map((q, i) => q.result(byHead.get(heads[i])!));
    assert.deepEqual(results.map((x) => x.status), [S_OK, S_IOERR, S_IOERR, S_OK, S_OK]);
    assert.equal(results[0].data.toString(), 'fast-path-serial\0\0\0\0');
    assert.deepEqual(results[4].data, pattern(4096, 4));
    assert.deepEqual(await r.backend.peek(16 * 512, 16 * 512 + 4096), pattern(4096, 5));
    assert.equal(r.backend.served.async, 0, 'all at once');
    // The server runs in this process: the drain wrote the interrupt eventfd before this test could read it.
    assert.equal(await vector.waitFor(before + 1), before + 1, 'one interrupt for the batch');
    assert.equal(await d.status(), OK_STATUS, 'the device is not broken');
    assert.equal((await blk(d, 0, T_IN, 32, { inLen: 512 })).status, S_OK, 'and serves the next request');
  });

  test('buffers in a second region, and across the edge of two, are served at once in the right places', async () => {
    r = await rig();
    const d = r.driver;
    // A second zero-copy region right after the first: a buffer may straddle the two.
    const edge = GUEST_BASE + d.mem.bytes.length;
    r.extra = sharedMemory(64 * 1024, 'virtio-guest-2');
    await r.client.dmaMap(edge, r.extra);
    const extra = r.extra.bytes;
    await r.backend.poke(pattern(3 * 4096, 11), 0);

    // 1: IN whose 4 KiB data buffer is half in each region.
    const across = buildBlk(d, T_IN, 0, { inLen: 4096 });
    d.bytes(edge - 2048, 2048).fill(0xee);
    extra.fill(0xee, 0, 2048);
    across.bufs[1].addr = edge - 2048;
    // 2: OUT whose header, data and status byte all lie in the second region.
    const header = Buffer.alloc(16);
    header.writeUInt32LE(T_OUT);
    header.writeBigUInt64LE(40n, 8);
    extra.set(header, 4096);
    extra.set(pattern(1024, 12), 8192);
    extra[12288] = 0xff;
    const there = [
      { addr: edge + 4096, len: 16 },
      { addr: edge + 8192, len: 1024 },
      { addr: edge + 12288, len: 1, write: true },
    ];
    // 3: IN whose indirect table lies in the second region, its status byte across nothing but at the region's first byte.
    const tabled = buildBlk(d, T_IN, 8, { inLen: 4096 });
    tabled.bufs[tabled.bufs.length - 1].addr = edge + 16384;
    extra[16384] = 0xff;
    tabled.bufs.forEach((b, i) => {
      const v = new DataView(extra.buffer, extra.byteOffset + 20480 + 16 * i, 16);
      v.setBigUint64(0, BigInt(b.addr), true);
      v.setUint32(8, b.len, true);
      v.setUint16(12, (b.write ? DescFlag.WRITE : 0) | (i + 1 < tabled.bufs.length ? DescFlag.NEXT : 0), true);
      v.setUint16(14, i + 1, true);
    });

    const q = d.queues.get(0)!;
    const heads = [d.post(0, across.bufs), d.post(0, there)];
    const tableHead = d.post(0, [{ addr: 0, len: 0 }]);
    d.writeDesc(q.desc, tableHead, { addr: edge + 20480, len: 16 * tabled.bufs.length, flags: DescFlag.INDIRECT, next: 0 });
    heads.push(tableHead);
    await d.kick(0);
    const used = await d.waitUsed(0, 3);
    const byHead = new Map(used.map((u) => [u.id, u.len]));
    const len = (i: number): number => byHead.get(heads[i])!;

    assert.equal(len(0), 4097);
    assert.equal(d.bytes(across.bufs[2].addr, 1)[0], S_OK);
    const got = Buffer.concat([Buffer.from(d.bytes(edge - 2048, 2048)), Buffer.from(extra.subarray(0, 2048))]);
    assert.deepEqual(got, pattern(3 * 4096, 11).subarray(0, 4096), 'the straddling buffer got both halves');
    assert.equal(len(1), 1);
    assert.equal(extra[12288], S_OK, 'status byte in the second region');
    assert.deepEqual(await r.backend.peek(40 * 512, 42 * 512), pattern(1024, 12));
    assert.equal(len(2), 4097);
    assert.equal(extra[16384], S_OK);
    assert.deepEqual(Buffer.concat(tabled.bufs.slice(1, -1).map((b) => Buffer.from(d.bytes(b.addr, b.len)))), pattern(3 * 4096, 11).subarray(4096, 8192));
    assert.deepEqual(r.backend.served, { now: 3, async: 0 }, 'all at once');
    assert.equal(await d.status(), OK_STATUS);
  });

  test('a chain or buffer in memory without views hands the batch to the asynchronous path, which completes it whole', async () => {
    r = await rig();
    const d = r.driver;
    r.extra = privateMemory(64 * 1024);
    await r.client.dmaMap(MESSAGE_ONLY, r.extra);
    const extra = r.extra.bytes;
    await r.backend.poke(pattern(3 * 4096, 6), 0);

    // 1: all in memory with views.
    const plain = buildBlk(d, T_IN, 0, { inLen: 4096 });
    // 2: its indirect table lies in message-only memory (the walk itself needs a copy).
    const tabled = buildBlk(d, T_IN, 8, { inLen: 4096 });
    tabled.bufs.forEach((b, i) => {
      const v = new DataView(extra.buffer, extra.byteOffset + 16 * i, 16);
      v.setBigUint64(0, BigInt(b.addr), true);
      v.setUint32(8, b.len, true);
      v.setUint16(12, (b.write ? DescFlag.WRITE : 0) | (i + 1 < tabled.bufs.length ? DescFlag.NEXT : 0), true);
      v.setUint16(14, i + 1, true);
    });
    // 3: its data buffer lies there (the request needs a copy, the ring does not).
    const dataThere = buildBlk(d, T_IN, 16, { inLen: 4096 });
    dataThere.bufs[1].addr = MESSAGE_ONLY + 4096;
    // 4: its status byte lies there.
    const statusThere = buildBlk(d, T_OUT, 40, { out: pattern(1024, 7) });
    const statusAt = statusThere.bufs.length - 1;
    statusThere.bufs[statusAt].addr = MESSAGE_ONLY + 8192;
    extra[8192] = 0xff;
    // 5: all in memory with views again.
    const last = buildBlk(d, T_GET_ID, 0, { inLen: 20 });

    const q = d.queues.get(0)!;
    const heads = [d.post(0, plain.bufs)];
    const tableHead = d.post(0, [{ addr: 0, len: 0 }]);
    d.writeDesc(q.desc, tableHead, { addr: MESSAGE_ONLY, len: 16 * tabled.bufs.length, flags: DescFlag.INDIRECT, next: 0 });
    heads.push(tableHead, d.post(0, dataThere.bufs), d.post(0, statusThere.bufs), d.post(0, last.bufs));
    await d.kick(0);
    const used = await d.waitUsed(0, 5);
    const byHead = new Map(used.map((u) => [u.id, u.len]));
    const len = (i: number): number => byHead.get(heads[i])!;

    const first = plain.result(len(0));
    assert.equal(first.status, S_OK);
    assert.deepEqual(first.data, pattern(3 * 4096, 6).subarray(0, 4096));
    const second = tabled.result(len(1));
    assert.equal(second.status, S_OK);
    assert.deepEqual(second.data, pattern(3 * 4096, 6).subarray(4096, 8192));
    assert.equal(len(2), 4097);
    assert.equal(dataThere.result(len(2)).status, S_OK);
    assert.deepEqual(Buffer.from(extra.subarray(4096, 8192)), pattern(3 * 4096, 6).subarray(8192));
    assert.equal(len(3), 1);
    assert.equal(extra[8192], S_OK, 'the status byte went by message');
    assert.deepEqual(await r.backend.peek(40 * 512, 42 * 512), pattern(1024, 7));
    assert.equal(last.result(len(4)).status, S_OK);
    assert.equal(last.result(len(4)).data.toString(), 'fast-path-serial\0\0\0\0');
    assert.deepEqual(r.backend.served, { now: 4, async: 0 }, 'the backend never waited: only memory went by message');
    assert.equal(d.usedState(0).idx, 5);
    assert.equal(await d.status(), OK_STATUS);
  });

  test('a backend that must wait takes the asynchronous path; requests behind it in the batch are served at once and complete first', async () => {
    r = await rig();
    const d = r.driver;
    await r.backend.poke(pattern(8192, 8), 0);
    const reqs = [buildBlk(d, T_IN, 0, { inLen: 4096 }), buildBlk(d, T_IN, 8, { inLen: 4096 })];
    r.backend.holding = true;
    const heldHead = d.post(0, reqs[0].bufs);
    await d.kick(0);
    await r.backend.waitHeld(1);
    r.backend.holding = false;
    const quickHead = d.post(0, reqs[1].bufs);
    await d.kick(0);
    const quick = await d.waitUsed(0, 1);
    assert.equal(quick[0].id, quickHead);
    assert.deepEqual(reqs[1].result(quick[0].len).data, pattern(8192, 8).subarray(4096));
    r.backend.releaseAll();
    const slow = await d.waitUsed(0, 1);
    assert.equal(slow[0].id, heldHead);
    assert.deepEqual(reqs[0].result(slow[0].len).data, pattern(8192, 8).subarray(0, 4096));
    assert.deepEqual(r.backend.served, { now: 1, async: 1 });
  });
});
