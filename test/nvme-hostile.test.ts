/**
 * Hostile NVMe drivers: malformed commands, PRP lists that loop or leave the
 * DMA maps, bad queue ids and sizes, doorbells beyond their queues,
 * submission queues in memory the client unmapped, and a seeded fuzz of
 * I/O commands. Each gets the status code (or CSTS.CFS) the spec names, and
 * the controller goes on serving.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { sharedMemory } from '../src/client/index.js';
import { PAGE, REG } from './helpers/nvme-driver.js';
import { pattern } from './helpers/bytes.js';
import { close, rig, type Rig } from './helpers/nvme-rig.js';
import { recordingLogger } from './helpers/logs.js';

const SCT_SPECIFIC = 1;

async function stillServes(r: Rig): Promise<void> {
  const data = pattern(512, 77);
  assert.equal((await r.driver.rw(1, true, 7, 1, data)).cqe.status, 0, 'a good write after the hostile command');
  assert.deepEqual((await r.driver.rw(1, false, 7, 1)).data, Buffer.from(data));
}

describe('nvme hostile: data pointers', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('a PRP list whose chain pointer loops back is refused with Invalid Field', async () => {
    r = await rig({ ioQueues: 1, size: 4 * 1024 * 1024 });
    const d = r.driver;
    const data = d.alloc(64 * PAGE);
    const list = d.alloc(PAGE);
    // 511 entries then a chain to the same page: a 1 MiB + transfer would walk it forever.
    for (let i = 0; i < 511; i++) d.view(list + i * 8, 8).setBigUint64(0, BigInt(data + (i % 64) * PAGE), true);
    d.view(list + 511 * 8, 8).setBigUint64(0, BigInt(list), true);
    // MDTS is 128 KiB, so use the loop within it: chain after the first entry.
    const small = d.alloc(PAGE);
    d.view(small + PAGE - 16, 8).setBigUint64(0, BigInt(data), true);
    d.view(small + PAGE - 8, 8).setBigUint64(0, BigInt(small), true);
    const cqe = await d.run(1, { opcode: 2, nsid: 1, prp1: data, prp2: small + PAGE - 16, cdw10: 0, cdw12: 63 });
    assert.equal(cqe.sc, 0x02, 'Invalid Field in Command');
    await stillServes(r);
  });

  test('PRPs outside the maps: Data Transfer Error; misaligned entries: PRP Offset Invalid', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    const outside = 0x7000_0000;
    const cases: [string, { prp1: number | bigint; prp2: number | bigint; blocks: number }, number][] = [
      ['PRP1 outside', { prp1: outside, prp2: 0, blocks: 1 }, 0x04],
      ['PRP1 beyond 2^53', { prp1: 1n << 60n, prp2: 0, blocks: 1 }, 0x04],
      ['PRP1 not dword aligned', { prp1: d.alloc(PAGE) + 2, prp2: 0, blocks: 1 }, 0x13],
      ['PRP2 data page outside', { prp1: d.alloc(PAGE), prp2: outside, blocks: 16 }, 0x04],
      ['PRP2 data page misaligned', { prp1: d.alloc(PAGE), prp2: d.alloc(PAGE) + 512, blocks: 16 }, 0x13],
      ['PRP list outside', { prp1: d.alloc(PAGE), prp2: outside, blocks: 64 }, 0x04],
    ];
    for (const [what, c, sc] of cases) {
      for (const opcode of [1, 2]) {
        const cqe = await d.run(1, { opcode, nsid: 1, prp1: c.prp1, prp2: c.prp2, cdw10: 0, cdw12: c.blocks - 1 });
        assert.equal(cqe.sc, sc, `${what} (opcode ${opcode})`);
      }
    }
    // A list whose entries leave the maps or are not page aligned.
    const list = d.alloc(PAGE);
    d.view(list, 8).setBigUint64(0, BigInt(d.alloc(PAGE)), true);
    d.view(list + 8, 8).setBigUint64(0, BigInt(outside), true);
    assert.equal((await d.run(1, { opcode: 2, nsid: 1, prp1: d.alloc(PAGE), prp2: list, cdw10: 0, cdw12: 23 })).sc, 0x04);
    d.view(list + 8, 8).setBigUint64(0, BigInt(d.alloc(PAGE) + 8), true);
    assert.equal((await d.run(1, { opcode: 2, nsid: 1, prp1: d.alloc(PAGE), prp2: list, cdw10: 0, cdw12: 23 })).sc, 0x13);
    // SGLs are not offered.
    assert.equal((await d.run(1, { opcode: 2, nsid: 1, flags: 0x40, prp1: d.alloc(PAGE), cdw12: 0 })).sc, 0x02);
    assert.equal(r.backends[0].calls.read + r.backends[0].calls.write, 0, 'no refused command reached the backend');
    await stillServes(r);
  });

  test('LBA out of range, transfers beyond MDTS, bad namespaces, unknown opcodes, DSM ranges past the end', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    const buf = d.alloc(PAGE);
    assert.equal((await d.run(1, { opcode: 2, nsid: 1, prp1: buf, cdw10: 2047, cdw12: 1 })).sc, 0x80, 'last LBA + 1');
    assert.equal((await d.run(1, { opcode: 2, nsid: 1, prp1: buf, cdw10: 0, cdw11: 1, cdw12: 0 })).sc, 0x80, 'SLBA above 2^32');
    assert.equal((await d.run(1, { opcode: 8, nsid: 1, cdw10: 2040, cdw12: 8 })).sc, 0x80, 'write zeroes past the end');
    assert.equal((await d.run(1, { opcode: 2, nsid: 1, prp1: buf, cdw10: 0, cdw12: 511 })).sc, 0x02, '256 KiB exceeds MDTS');
    for (const nsid of [0, 2, 0xffffffff]) assert.equal((await d.run(1, { opcode: 2, nsid, prp1: buf, cdw12: 0 })).sc, 0x0b, `nsid ${nsid}`);
    assert.equal((await d.run(1, { opcode: 0x7f, nsid: 1 })).sc, 0x01);
    assert.equal((await d.admin({ opcode: 0xee })).sc, 0x01);
    const ranges = d.alloc(PAGE);
    d.view(ranges, 16).setUint32(4, 16, true);
    d.view(ranges, 16).setBigUint64(8, 2040n, true);
    assert.equal((await d.run(1, { opcode: 9, nsid: 1, prp1: ranges, cdw10: 0, cdw11: 4 })).sc, 0x80);
    assert.equal(r.backends[0].calls.discard, 0);
    await stillServes(r);
  });
});

describe('nvme hostile: queues', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('queue ids out of range, a CQ created twice, an SQ on a missing CQ, bad sizes and bases, deleting in use', async () => {
    r = await rig({ queues: 2 });
    const d = r.driver;
    const expect = async (what: string, p: Promise<{ sct: number; sc: number }>, sct: number, sc: number): Promise<void> => {
      const c = await p;
      assert.deepEqual([c.sct, c.sc], [sct, sc], what);
    };
    await expect('CQ id 0', d.createCq(0, 8), SCT_SPECIFIC, 0x01);
    await expect('CQ id 3 of 2', d.createCq(3, 8), SCT_SPECIFIC, 0x01);
    await expect('CQ id 0xffff', d.createCq(0xffff, 8), SCT_SPECIFIC, 0x01);
    await expect('CQ size 1', d.createCq(1, 1), SCT_SPECIFIC, 0x02);
    await expect('CQ size above MQES', d.createCq(1, 2048), SCT_SPECIFIC, 0x02);
    await expect('CQ not contiguous', d.createCq(1, 8, { pc: false }), 0, 0x02);
    await expect('CQ base misaligned', d.createCq(1, 8, { base: d.alloc(PAGE) + 64 }), 0, 0x13);
    await expect('CQ base unmapped', d.createCq(1, 8, { base: 0x7000_0000 }), 0, 0x02);
    await expect('CQ vector beyond the MSI-X table', d.createCq(1, 8, { vector: 9 }), SCT_SPECIFIC, 0x08);
    await expect('CQ 1', d.createCq(1, 8), 0, 0);
    await expect('CQ 1 again', d.createCq(1, 8), SCT_SPECIFIC, 0x01);
    await expect('SQ on missing CQ 2', d.createSq(1, 8, 2), SCT_SPECIFIC, 0x00);
    await expect('SQ on CQ 0 (admin)', d.createSq(1, 8, 0), SCT_SPECIFIC, 0x00);
    await expect('SQ id 3 of 2', d.createSq(3, 8, 1), SCT_SPECIFIC, 0x01);
    await expect('SQ 1', d.createSq(1, 8, 1), 0, 0);
    await expect('SQ 1 again', d.createSq(1, 8, 1), SCT_SPECIFIC, 0x01);
    await expect('delete CQ 1 while SQ 1 uses it', d.admin({ opcode: 0x04, cdw10: 1 }), SCT_SPECIFIC, 0x0c);
    await expect('delete SQ 0', d.admin({ opcode: 0x00, cdw10: 0 }), SCT_SPECIFIC, 0x01);
    await expect('delete SQ 2 (missing)', d.admin({ opcode: 0x00, cdw10: 2 }), SCT_SPECIFIC, 0x01);
    await expect('delete CQ 0', d.admin({ opcode: 0x04, cdw10: 0 }), SCT_SPECIFIC, 0x01);
    assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0, 'the queue pair works');
    await expect('Number of Queues once queues exist', d.admin({ opcode: 0x09, cdw10: 7, cdw11: 0 }), 0, 0x0c);
    await expect('delete SQ 1', d.admin({ opcode: 0x00, cdw10: 1 }), 0, 0);
    await expect('delete CQ 1', d.admin({ opcode: 0x04, cdw10: 1 }), 0, 0);
  });

  for (const mapped of [false, true]) {
    test(`doorbells beyond a queue, for missing queues, and CQ heads past the tail raise error events; the controller lives on${mapped ? ' (stored into the mapped doorbell page)' : ''}`, async () => {
      r = await rig({ ioQueues: 1, queues: 2, mmapDoorbells: mapped });
      const d = r.driver;
      const events: number[] = [];
      const aer = async (doorbell: number, value: number): Promise<void> => {
        d.put(0, { opcode: 0x0c });
        await d.submit(0);
        await d.ring(doorbell, value);
        const e = await d.reap(0);
        assert.equal(e.status, 0);
        events.push((e.dw0 >> 8) & 0xff);
        // Reading the error log unmasks the error event type for the next one.
        const log = await d.admin({ opcode: 0x02, prp1: d.alloc(PAGE), cdw10: (15 << 16) | 1 });
        assert.equal(log.status, 0);
      };
      await aer(2, 64); // SQ 1 tail == its size
      await aer(3, 60); // CQ 1 head beyond what was posted
      await aer(2 * 2, 1); // SQ 2 does not exist
      await aer(0x3f0, 0); // far beyond every queue
      assert.deepEqual(events, [1, 1, 0, 0]);
      assert.equal(mapped ? d.doorbellMessages : d.doorbellStores, 0, mapped ? 'every doorbell went through the page' : 'every doorbell was a message');
      // A fifth AER beyond the limit of 4 outstanding.
      for (let i = 0; i < 4; i++) d.put(0, { opcode: 0x0c });
      d.put(0, { opcode: 0x0c, cid: 0x5555 });
      await d.submit(0);
      const over = await d.reap(0);
      assert.deepEqual([over.cid, over.sct, over.sc], [0x5555, SCT_SPECIFIC, 0x05]);
      await stillServes(r);
    });
  }

  test('a submission queue in memory the client unmapped sets CSTS.CFS and logs why; the process lives and a reset recovers', async () => {
    const { log, lines } = recordingLogger();
    r = await rig({ ioQueues: 1, log });
    const d = r.driver;
    const extra = sharedMemory(64 * 1024, 'nvme-extra');
    const base = 0x4000_0000;
    try {
      await r.client.dmaMap(base, extra);
      assert.equal((await d.createCq(2, 8)).status, 0);
      assert.equal((await d.createSq(2, 8, 2, { base })).status, 0);
      await r.client.dmaUnmap(base, 64 * 1024);
      await d.ring(4, 1);
      const csts = await d.waitCsts(2, 2);
      assert.equal(csts & 2, 2, 'CSTS.CFS');
      assert.match(r.controller.fatalReason ?? '', /SQ 2/);
      assert.ok(lines.some((l) => /^error: controller fatal status \(CSTS\.CFS\): .*SQ 2/.test(l)), `the server's log says why: ${JSON.stringify(lines)}`);
    } finally {
      extra.close();
    }
    await d.write32(REG.CC, 0);
    await d.waitCsts(3, 0);
    await d.enable();
    await d.createIoQueues(1);
    await stillServes(r);
  });

  test('a seeded fuzz of I/O commands: every one completes with some status, and good I/O still works', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    let x = 12345;
    const rnd = (): number => (x = (x * 1103515245 + 12345) >>> 0);
    const bufs = [d.alloc(PAGE), d.alloc(PAGE) + 4, 0, 0x7000_0000, d.alloc(2 * PAGE)];
    for (let i = 0; i < 300; i++) {
      const opcodes = [0, 1, 2, 8, 9, rnd() & 0xff];
      const cqe = await d.run(1, {
        opcode: opcodes[rnd() % opcodes.length],
        nsid: rnd() % 4 === 0 ? rnd() : 1,
        flags: rnd() % 8 === 0 ? rnd() & 0xff : 0,
        prp1: bufs[rnd() % bufs.length],
        prp2: rnd() % 2 ? bufs[rnd() % bufs.length] : rnd() * PAGE,
        cdw10: rnd() % 3 === 0 ? rnd() : rnd() % 2048,
        cdw11: rnd() % 5 === 0 ? rnd() : 0,
        cdw12: rnd() % 3 === 0 ? rnd() : rnd() % 64,
        cid: i,
      });
      assert.equal(cqe.cid, i);
    }
    assert.equal((await d.read32(REG.CSTS)) & 3, 1, 'still ready, no fatal status');
    await stillServes(r);
  });
});
