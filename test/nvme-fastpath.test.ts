/**
 * The NVMe controller's synchronous fast path: I/O commands whose queues,
 * PRPs and data have zero-copy views and whose backend finishes at once are
 * served during their doorbell, their completions posted once per batch.
 * These tests hold it to the asynchronous path's results (the same batches
 * with guest memory reached by DMA messages), and check that a fault fails
 * only its own command, that commands handed to the asynchronous path in
 * the middle of a batch complete, that a batch raises one interrupt, and
 * that a full completion queue holds the rest of a batch until the driver
 * makes room.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { privateMemory, sharedMemory, type GuestMemory } from '../src/client/index.js';
import { nvmeController, nvmeControllerOf, ramBackend, serve, sliceBackend } from '../src/index.js';
import { NvmeDriver, PAGE, type Cmd, type Cqe } from './helpers/nvme-driver.js';
import { DmaMapFlag } from '../src/protocol/constants.js';
import { pattern } from './helpers/bytes.js';
import { close, rig, type Rig } from './helpers/nvme-rig.js';
import { connectClient } from './helpers/raw.js';

const READ = 0x02;
const WRITE = 0x01;
const FLUSH = 0x00;
const WRITE_ZEROES = 0x08;
const DSM = 0x09;
const NSID_ALL = 0xffffffff;

/** Puts every command in queue `qid`, makes the tail known once, and reaps one completion per command (head rung once at the end). */
async function batch(d: NvmeDriver, qid: number, cmds: Cmd[]): Promise<Map<number, Cqe>> {
  const q = d.queues.get(qid)!;
  const old = q.tail;
  const cids = cmds.map((c) => d.put(qid, c));
  await d.submit(qid, old);
  const out = new Map<number, Cqe>();
  for (let i = 0; i < cmds.length; i++) {
    const cqe = await d.reap(qid, { ringHead: false });
    out.set(cqe.cid, cqe);
  }
  await d.ringHead(qid, (q.head - cmds.length + q.cqSize) % q.cqSize);
  assert.deepEqual([...out.keys()].sort((a, b) => a - b), [...cids].sort((a, b) => a - b), 'one completion per command');
  return new Map(cids.map((cid, i) => [i, out.get(cid)!]));
}

/** A PRP list for the pages of [addr, addr+len) after the first, placed so that it chains from one list page to the next after `firstSlots` entries. */
function chainedList(d: NvmeDriver, addr: number, len: number, firstSlots: number): number {
  const pages = Math.ceil(len / PAGE) - 1;
  const a = d.alloc(2 * PAGE);
  const start = a + PAGE - (firstSlots + 1) * 8;
  for (let i = 0; i < firstSlots; i++) d.view(start + i * 8, 8).setBigUint64(0, BigInt(addr + (i + 1) * PAGE), true);
  const next = a + PAGE;
  d.view(start + firstSlots * 8, 8).setBigUint64(0, BigInt(next), true);
  for (let i = firstSlots; i < pages; i++) d.view(next + (i - firstSlots) * 8, 8).setBigUint64(0, BigInt(addr + (i + 1) * PAGE), true);
  return start;
}

interface Outcome {
  statuses: string[];
  reads: Buffer[];
  disk: Buffer;
  fast: number;
}

/** The same batches, byte for byte, on a controller whose guest memory is `memory`. */
async function workload(memory: 'shared' | 'private', rigs: Rig[]): Promise<Outcome> {
  const r = await rig({ ioQueues: 1, memory, size: 1024 * 1024 });
  rigs.push(r);
  const d = r.driver;
  const outside = 0x7000_0000;
  // Writes of every data-pointer shape, then commands that must fail, then the other opcodes.
  const shapes: { lba: number; blocks: number; offset: number; chain?: number }[] = [
    { lba: 0, blocks: 1, offset: 0 },
    { lba: 8, blocks: 16, offset: 0 },
    { lba: 40, blocks: 9, offset: 512 },
    { lba: 64, blocks: 64, offset: 0 },
    { lba: 160, blocks: 128, offset: 0, chain: 3 },
    { lba: 300, blocks: 8, offset: 3584 },
  ];
  const writes: Cmd[] = [];
  const bufs: { addr: number; len: number }[] = [];
  for (const [i, s] of shapes.entries()) {
    const len = s.blocks * 512;
    const addr = d.alloc(len + s.offset + PAGE) + s.offset;
    d.bytes(addr, len).set(pattern(len, 10 + i));
    const p = s.chain ? { prp1: addr, prp2: chainedList(d, addr, len, s.chain) } : d.prps(addr, len);
    writes.push({ opcode: WRITE, nsid: 1, ...p, cdw10: s.lba, cdw12: s.blocks - 1 });
    bufs.push({ addr, len });
  }
  const good = d.alloc(PAGE);
  const ranges = d.alloc(PAGE);
  d.view(ranges, 16).setUint32(4, 8, true);
  d.view(ranges, 16).setBigUint64(8, 1600n, true);
  const loop = d.alloc(PAGE);
  d.view(loop + PAGE - 16, 8).setBigUint64(0, BigInt(d.alloc(PAGE)), true);
  d.view(loop + PAGE - 8, 8).setBigUint64(0, BigInt(loop), true);
  const others: Cmd[] = [
    { opcode: FLUSH, nsid: 1 },
    { opcode: FLUSH, nsid: NSID_ALL },
    { opcode: FLUSH, nsid: 3 },
    { opcode: READ, nsid: 1, prp1: good, cdw10: 2047, cdw12: 1 },
    { opcode: READ, nsid: 1, prp1: good, cdw10: 0, cdw11: 1, cdw12: 0 },
    { opcode: READ, nsid: 2, prp1: good, cdw12: 0 },
    { opcode: READ, nsid: 1, prp1: outside, cdw12: 0 },
    { opcode: READ, nsid: 1, prp1: 1n << 60n, cdw12: 0 },
    { opcode: WRITE, nsid: 1, prp1: good + 2, cdw12: 0 },
    { opcode: READ, nsid: 1, prp1: good, prp2: outside, cdw12: 15 },
    { opcode: READ, nsid: 1, prp1: good, prp2: good + 512, cdw12: 15 },
    { opcode: READ, nsid: 1, prp1: good, prp2: outside, cdw12: 63 },
    { opcode: READ, nsid: 1, prp1: d.alloc(64 * PAGE), prp2: loop + PAGE - 16, cdw12: 63 },
    { opcode: READ, nsid: 1, prp1: good, cdw12: 511 },
    { opcode: READ, nsid: 1, flags: 0x40, prp1: good, cdw12: 0 },
    { opcode: READ, nsid: 1, flags: 0x01, prp1: good, cdw12: 0 },
    { opcode: 0x7f, nsid: 1 },
    { opcode: WRITE_ZEROES, nsid: 1, cdw10: 1500, cdw12: 1 },
    { opcode: DSM, nsid: 1, prp1: ranges, cdw10: 0, cdw11: 4 },
  ];
  const statuses: string[] = [];
  const record = (m: Map<number, Cqe>): void => {
    for (const c of [...m.keys()].sort((a, b) => a - b)) statuses.push(`${m.get(c)!.sct}/${m.get(c)!.sc}`);
  };
  record(await batch(d, 1, writes));
  record(await batch(d, 1, others));
  // Read everything back, in the same shapes, into fresh buffers.
  const reads: Cmd[] = [];
  const into: { addr: number; len: number }[] = [];
  for (const [i, s] of shapes.entries()) {
    const len = s.blocks * 512;
    const addr = d.alloc(len + s.offset + PAGE) + s.offset;
    d.bytes(addr, len).fill(0xee);
    const p = s.chain ? { prp1: addr, prp2: chainedList(d, addr, len, s.chain) } : d.prps(addr, len);
    reads.push({ opcode: READ, nsid: 1, ...p, cdw10: shapes[i].lba, cdw12: s.blocks - 1 });
    into.push({ addr, len });
  }
  record(await batch(d, 1, reads));
  for (const [i, b] of bufs.entries()) assert.deepEqual(Buffer.from(d.bytes(into[i].addr, b.len)), Buffer.from(pattern(b.len, 10 + i)), `${memory}: shape ${i} read back`);
  return { statuses, reads: into.map((b) => Buffer.from(d.bytes(b.addr, b.len))), disk: await r.backends[0].peek(0, 1024 * 1024), fast: r.controller.stats.fastCommands };
}

describe('nvme fast path', () => {
  let rigs: Rig[] = [];
  afterEach(() => {
    for (const r of rigs) close(r);
    rigs = [];
  });

  test('the same batches give the same statuses and bytes with views (fast path) and by DMA messages', async () => {
    const views = await workload('shared', rigs);
    const messages = await workload('private', rigs);
    assert.deepEqual(views.statuses, messages.statuses);
    assert.ok(views.statuses.some((s) => s !== '0/0') && views.statuses.filter((s) => s === '0/0').length >= 12, 'both successes and failures were compared');
    assert.deepEqual(views.reads, messages.reads);
    assert.ok(views.disk.equals(messages.disk), 'the disks hold the same bytes');
    assert.ok(views.fast >= 20, `the fast path served the views run (${views.fast} commands)`);
    // One path for both: without views, only commands refused by their checks and the two Flushes that
    // succeed (they move no guest data) finish without waiting.
    const refused = messages.statuses.filter((s) => s !== '0/0').length;
    assert.ok(messages.fast <= refused + 2, `memory without views moves no data without waiting (${messages.fast} fast, ${refused} refused)`);
  });

  test('a fault in one command of a batch fails only that command', async () => {
    const r = await rig({ ioQueues: 1 });
    rigs.push(r);
    const d = r.driver;
    const data = pattern(16 * 512, 5);
    await r.backends[0].poke(data, 0);
    const cmds: Cmd[] = [];
    const bufs: number[] = [];
    for (let i = 0; i < 8; i++) {
      const buf = d.alloc(2 * PAGE);
      bufs.push(buf);
      cmds.push({ opcode: READ, nsid: 1, prp1: buf, prp2: buf + PAGE, cdw10: i * 2, cdw12: 1 });
    }
    cmds[3] = { ...cmds[3], prp1: 0x7000_0000 };
    cmds[5] = { ...cmds[5], prp1: bufs[5] + PAGE - 512, prp2: bufs[5] + 8 };
    // The first command reaching the backend fails there.
    r.backends[0].failNext = 'EIO';
    const before = r.controller.stats.fastCommands;
    const res = await batch(d, 1, cmds);
    const sc = (i: number): [number, number] => [res.get(i)!.sct, res.get(i)!.sc];
    assert.deepEqual(sc(0), [2, 0x81], 'the backend failure: Unrecovered Read Error');
    assert.deepEqual(sc(3), [0, 0x04], 'PRP1 outside the maps: Data Transfer Error');
    assert.deepEqual(sc(5), [0, 0x13], 'misaligned PRP2: PRP Offset Invalid');
    for (const i of [1, 2, 4, 6, 7]) {
      assert.deepEqual(sc(i), [0, 0], `command ${i} succeeded`);
      assert.deepEqual(Buffer.from(d.bytes(bufs[i], 1024)), Buffer.from(data.subarray(i * 1024, i * 1024 + 1024)), `command ${i} read its data`);
    }
    assert.equal(r.controller.stats.fastCommands - before, 8, 'all eight finished during the doorbell');
    const logged = r.controller.errors.map((e) => e.cid).sort((x, y) => x - y);
    assert.deepEqual(logged, [0, 3, 5].map((i) => res.get(i)!.cid).sort((x, y) => x - y), 'each failure is in the error log');
  });

  test('in one doorbell, a Write from memory mapped read-only does not let the next Read write into it', async () => {
    // The fetch loop caches the region it last located: a Write (the controller reads) must not vouch for a Read (it writes).
    const r = await rig({ ioQueues: 1 });
    rigs.push(r);
    const d = r.driver;
    const ro = sharedMemory(2 * PAGE);
    try {
      ro.bytes.fill(0x5a);
      await r.client.dmaMap(0x2000_0000, ro, DmaMapFlag.READ);
      await r.backends[0].poke(pattern(4096, 9), 0);
      const res = await batch(d, 1, [
        { opcode: WRITE, nsid: 1, prp1: 0x2000_0000, cdw10: 16, cdw12: 7 },
        { opcode: READ, nsid: 1, prp1: 0x2000_0000 + PAGE, cdw10: 0, cdw12: 7 },
      ]);
      assert.deepEqual([res.get(0)!.sct, res.get(0)!.sc], [0, 0], 'the Write read the read-only memory');
      assert.deepEqual([res.get(1)!.sct, res.get(1)!.sc], [0, 0x04], 'the Read into it: Data Transfer Error');
      assert.ok(ro.bytes.every((b) => b === 0x5a), 'the read-only memory is unchanged');
    } finally {
      ro.close();
    }
  });

  test('commands refused by their checks (an unknown opcode, a fused pair) complete during the doorbell, like a Read', async () => {
    const r = await rig({ ioQueues: 1 });
    rigs.push(r);
    const d = r.driver;
    const buf = d.alloc(PAGE);
    const before = r.controller.stats.fastCommands;
    const res = await batch(d, 1, [
      { opcode: 0x7f, nsid: 1 },
      { opcode: READ, nsid: 1, flags: 0x01, prp1: buf, cdw12: 0 },
      { opcode: READ, nsid: 1, prp1: buf, cdw12: 0 },
    ]);
    assert.deepEqual([res.get(0)!.sct, res.get(0)!.sc], [0, 0x01], 'Invalid Command Opcode');
    assert.deepEqual([res.get(1)!.sct, res.get(1)!.sc], [0, 0x02], 'fused: Invalid Field');
    assert.deepEqual([res.get(2)!.sct, res.get(2)!.sc], [0, 0]);
    assert.equal(r.controller.stats.fastCommands - before, 3, 'one path: all three finished without a Promise');
  });

  test('commands handed to the asynchronous path in the middle of a batch complete, and the fast ones do not wait for them', async () => {
    const r = await rig({ ioQueues: 1, namespaces: 2 });
    rigs.push(r);
    const d = r.driver;
    // A region without views: a PRP list and a data buffer there go by DMA messages.
    const slowBase = 0x2000_0000;
    const slow: GuestMemory = privateMemory(4 * PAGE);
    await d.client.dmaMap(slowBase, slow);
    const [ns1, ns2] = r.backends;
    await ns1.poke(pattern(64 * 1024, 1), 0);
    await ns2.poke(pattern(4096, 2), 0);
    // Namespace 2's backend never finishes at once, and holds its requests until released.
    ns2.offerNow = false;
    ns2.holding = true;
    const a = d.alloc(PAGE);
    const b = d.alloc(PAGE);
    const c = d.alloc(PAGE);
    const w = d.alloc(PAGE);
    d.bytes(w, PAGE).set(pattern(PAGE, 3));
    const big = d.alloc(8 * PAGE);
    for (let i = 0; i < 7; i++) new DataView(slow.bytes.buffer, slow.bytes.byteOffset).setBigUint64(i * 8, BigInt(big + (i + 1) * PAGE), true);
    const ranges = d.alloc(PAGE);
    d.view(ranges, 16).setUint32(4, 8, true);
    d.view(ranges, 16).setBigUint64(8, 1000n, true);
    const cmds: Cmd[] = [
      { opcode: READ, nsid: 1, prp1: a, cdw10: 0, cdw12: 7 },
      { opcode: READ, nsid: 2, prp1: b, cdw10: 0, cdw12: 7 },
      { opcode: WRITE, nsid: 1, prp1: w, cdw10: 512, cdw12: 7 },
      { opcode: READ, nsid: 1, prp1: big, prp2: slowBase, cdw10: 8, cdw12: 63 },
      { opcode: READ, nsid: 1, prp1: slowBase + PAGE, cdw10: 16, cdw12: 7 },
      { opcode: DSM, nsid: 1, prp1: ranges, cdw10: 0, cdw11: 4 },
      { opcode: WRITE_ZEROES, nsid: 1, cdw10: 1100, cdw12: 7 },
      { opcode: READ, nsid: 1, prp1: c, cdw10: 24, cdw12: 7 },
    ];
    const q = d.queues.get(1)!;
    const old = q.tail;
    const before = r.controller.stats.fastCommands;
    const cids = cmds.map((cmd) => d.put(1, cmd));
    await d.submit(1, old);
    const seen = new Map<number, Cqe>();
    for (let i = 0; i < 7; i++) {
      const cqe = await d.reap(1, { ringHead: false });
      seen.set(cqe.cid, cqe);
    }
    assert.ok(!seen.has(cids[1]) && d.cqEmpty(1), 'the held command is still in flight');
    assert.equal(r.controller.stats.fastCommands - before, 3, 'three commands went the fast way');
    ns2.releaseAll();
    const last = await d.reap(1, { ringHead: false });
    assert.equal(last.cid, cids[1]);
    seen.set(last.cid, last);
    await d.ringHead(1, (q.head - 8 + q.cqSize) % q.cqSize);
    for (const [i, cid] of cids.entries()) assert.equal(seen.get(cid)!.status, 0, `command ${i}`);
    assert.deepEqual(Buffer.from(d.bytes(a, PAGE)), Buffer.from(pattern(64 * 1024, 1).subarray(0, PAGE)));
    assert.deepEqual(Buffer.from(d.bytes(b, PAGE)), Buffer.from(pattern(4096, 2)));
    assert.deepEqual(Buffer.from(d.bytes(big, 8 * PAGE)), Buffer.from(pattern(64 * 1024, 1).subarray(8 * 512, 8 * 512 + 8 * PAGE)), 'read through a PRP list copied by message');
    assert.deepEqual(Buffer.from(slow.bytes.subarray(PAGE, 2 * PAGE)), Buffer.from(pattern(64 * 1024, 1).subarray(16 * 512, 16 * 512 + PAGE)), 'read into memory without views');
    assert.deepEqual(Buffer.from(d.bytes(c, PAGE)), Buffer.from(pattern(64 * 1024, 1).subarray(24 * 512, 24 * 512 + PAGE)));
    assert.deepEqual(await ns1.peek(512 * 512, 512 * 512 + PAGE), Buffer.from(pattern(PAGE, 3)));
    assert.deepEqual(await ns1.peek(1100 * 512, 1108 * 512), Buffer.alloc(PAGE));
    assert.equal(ns1.calls.discard, 1);
  });

  for (const shadow of [false, true]) {
    test(`a batch raises one interrupt${shadow ? ' (shadow doorbells)' : ''}`, async () => {
      const r = await rig({ ioQueues: 1 });
      rigs.push(r);
      const d = r.driver;
      if (shadow) assert.equal((await d.configureShadowDoorbells()).status, 0);
      await r.backends[0].poke(pattern(64 * 1024, 9), 0);
      const cmds: Cmd[] = [];
      const bufs: number[] = [];
      for (let i = 0; i < 16; i++) {
        bufs.push(d.alloc(PAGE));
        cmds.push({ opcode: READ, nsid: 1, prp1: bufs[i], cdw10: i * 8, cdw12: 7 });
      }
      const irqs = r.controller.stats.interrupts;
      const fast = r.controller.stats.fastCommands;
      const signals = d.vectors[1].total;
      const res = await batch(d, 1, cmds);
      for (let i = 0; i < 16; i++) assert.equal(res.get(i)!.status, 0);
      assert.deepEqual(Buffer.from(d.bytes(bufs[15], PAGE)), Buffer.from(pattern(64 * 1024, 9).subarray(15 * PAGE, 16 * PAGE)));
      assert.equal(r.controller.stats.fastCommands - fast, 16);
      assert.equal(r.controller.stats.interrupts - irqs, 1, 'one interrupt for the 16 completions');
      assert.equal(await d.vectors[1].waitFor(signals + 1), signals + 1, 'one signal on the queue vector');
    });

    test(`a completion queue too small for the batch posts the rest as the driver frees entries${shadow ? ' (shadow doorbells)' : ''}`, async () => {
      const r = await rig({ ioQueues: 0 });
      rigs.push(r);
      const d = r.driver;
      assert.equal((await d.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0 })).status, 0);
      assert.equal((await d.createCq(1, 4)).status, 0);
      assert.equal((await d.createSq(1, 16, 1)).status, 0);
      if (shadow) assert.equal((await d.configureShadowDoorbells()).status, 0);
      await r.backends[0].poke(pattern(64 * 1024, 4), 0);
      const q = d.queues.get(1)!;
      const old = q.tail;
      const bufs: number[] = [];
      const cids: number[] = [];
      for (let i = 0; i < 10; i++) {
        bufs.push(d.alloc(PAGE));
        cids.push(d.put(1, { opcode: READ, nsid: 1, prp1: bufs[i], cdw10: i * 8, cdw12: 7 }));
      }
      await d.submit(1, old);
      const got: number[] = [];
      for (let i = 0; i < 10; i++) {
        const cqe = await d.reap(1);
        assert.equal(cqe.status, 0);
        got.push(cqe.cid);
      }
      assert.deepEqual(got.sort((x, y) => x - y), [...cids].sort((x, y) => x - y));
      for (let i = 0; i < 10; i++) assert.deepEqual(Buffer.from(d.bytes(bufs[i], PAGE)), Buffer.from(pattern(64 * 1024, 4).subarray(i * PAGE, (i + 1) * PAGE)));
      assert.ok(r.controller.stats.fastCommands >= 10);
    });

    test(`a batch that fills its completion queue interrupts for the entries it posted, before the driver frees any${shadow ? ' (shadow doorbells)' : ''}`, async () => {
      const r = await rig({ ioQueues: 0 });
      rigs.push(r);
      const d = r.driver;
      assert.equal((await d.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0 })).status, 0);
      assert.equal((await d.createCq(1, 4)).status, 0);
      assert.equal((await d.createSq(1, 16, 1)).status, 0);
      if (shadow) assert.equal((await d.configureShadowDoorbells()).status, 0);
      const q = d.queues.get(1)!;
      const old = q.tail;
      for (let i = 0; i < 10; i++) d.put(1, { opcode: READ, nsid: 1, prp1: d.alloc(PAGE), cdw10: i * 8, cdw12: 7 });
      const signals = d.vectors[1].total;
      const irqs = r.controller.stats.interrupts;
      await d.submit(1, old);
      // The queue holds 3: they are written during the doorbell, the other 7 wait for room. A driver
      // sleeping on its interrupt must be woken for the 3 (it frees nothing before it is).
      assert.equal(await d.vectors[1].waitFor(signals + 1), signals + 1, 'one signal for the entries posted');
      assert.equal(r.controller.stats.interrupts - irqs, 1);
      for (let i = 0; i < 3; i++) assert.equal((await d.reap(1, { ringHead: false })).status, 0);
      assert.ok(d.cqEmpty(1), 'no more than the queue holds');
    });
  }

  test('a submission queue whose memory is unmapped and mapped again is read from the new mapping (its cached view and words are taken again)', async () => {
    const r = await rig({ ioQueues: 1 });
    rigs.push(r);
    const d = r.driver;
    const extra = sharedMemory(64 * 1024, 'nvme-sq-remap');
    const base = 0x4000_0000;
    try {
      await r.client.dmaMap(base, extra);
      assert.equal((await d.createCq(2, 8)).status, 0);
      assert.equal((await d.createSq(2, 8, 2, { base })).status, 0);
      await r.backends[0].poke(pattern(2 * PAGE, 8), 0);
      const buf = d.alloc(PAGE);
      // The driver's helpers write only their own memory: this queue's entries are written here.
      let tail = 0;
      const read = async (lba: number): Promise<number> => {
        const e = new DataView(extra.bytes.buffer, extra.bytes.byteOffset + tail * 64, 64);
        for (let i = 0; i < 64; i += 4) e.setUint32(i, 0);
        e.setUint8(0, READ);
        e.setUint16(2, tail, true);
        e.setUint32(4, 1, true);
        e.setBigUint64(24, BigInt(buf), true);
        e.setUint32(40, lba, true);
        e.setUint32(48, 7, true);
        tail++;
        await d.ring(2 * 2, tail);
        return (await d.reap(2)).status;
      };
      const fast = r.controller.stats.fastCommands;
      assert.equal(await read(0), 0);
      assert.equal(r.controller.stats.fastCommands - fast, 1, 'read through the cached view of the queue');
      await r.client.dmaUnmap(base, 64 * 1024);
      await r.client.dmaMap(base, extra);
      assert.equal(await read(8), 0);
      assert.deepEqual(Buffer.from(d.bytes(buf, PAGE)), Buffer.from(pattern(2 * PAGE, 8).subarray(PAGE)));
      assert.equal(r.controller.fatalReason, undefined);
      assert.equal(r.controller.stats.fastCommands - fast, 2, 'and through the new one');
    } finally {
      extra.close();
    }
  });

  test('namespaces sliced from one backend take the fast path, each in its own range', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muser-nvme-fast-'));
    const disk = ramBackend(2 * 1024 * 1024);
    const spec = nvmeController({ namespaces: sliceBackend(disk, 2), queues: 1 });
    const server = serve(spec, join(dir, 'nvme.sock'), { log: 'silent' });
    const client = await connectClient(server.path);
    const d = await NvmeDriver.open(client);
    try {
      await d.enable();
      await d.createIoQueues(1);
      const data = pattern(PAGE, 6);
      assert.equal((await d.rw(1, true, 8, 8, data, 2)).cqe.status, 0);
      assert.deepEqual((await d.rw(1, false, 8, 8, undefined, 2)).data, Buffer.from(data));
      assert.equal((await d.run(1, { opcode: FLUSH, nsid: NSID_ALL })).status, 0);
      const stored = Buffer.alloc(PAGE);
      await disk.read(1024 * 1024 + 8 * 512, [stored]);
      assert.deepEqual(stored, Buffer.from(data), 'namespace 2 wrote into the second half');
      assert.equal(nvmeControllerOf(spec)!.stats.fastCommands, 3);
    } finally {
      d.close();
      client.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
