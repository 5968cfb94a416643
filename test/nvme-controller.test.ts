/**
 * The NVMe controller served in-process over a RAM test backend, driven by
 * our client acting as the NVMe driver: registers, enable, Identify, queue
 * creation, Read / Write / Flush / Write Zeroes / Dataset Management, PRP
 * lists, fd-less guest memory, features and log pages, asynchronous
 * events, shadow doorbells with EventIdx, full completion queues,
 * controller reset and shutdown.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { EventFd } from '../src/client/index.js';
import { IrqIndex, type BlockBackend } from '../src/index.js';
import { PAGE, REG } from './helpers/nvme-driver.js';
import { pattern } from './helpers/bytes.js';
import { MiB, close, rig, type Rig } from './helpers/nvme-rig.js';

const ascii = (b: Uint8Array, at: number, len: number): string => Buffer.from(b.subarray(at, at + len)).toString('latin1').trimEnd();

describe('nvme: registers and enable', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('CAP, VS, class code, BAR0 and MSI-X vectors', async () => {
    r = await rig({ enable: false, queues: 3 });
    const cap = await r.driver.read64(REG.CAP);
    assert.equal(Number(cap & 0xffffn), 1023, 'MQES');
    assert.equal(Number((cap >> 16n) & 1n), 1, 'CQR');
    assert.ok(Number((cap >> 24n) & 0xffn) > 0, 'TO');
    assert.equal(Number((cap >> 32n) & 0xfn), 0, 'DSTRD');
    assert.equal(Number((cap >> 37n) & 1n), 1, 'CSS NVM');
    assert.equal(await r.driver.read32(REG.VS), 0x00010400);
    const cfg = await r.client.regionRead(7, 0, 12);
    assert.equal(cfg.readUIntLE(9, 3), 0x010802);
    assert.equal(r.driver.vectors.length, 4);
    assert.equal(await r.driver.read32(REG.CSTS), 0);
  });

  test('enable sets CSTS.RDY; disable clears it; a second enable works', async () => {
    r = await rig({ enable: false });
    assert.equal((await r.driver.enable()) & 3, 1);
    await r.driver.write32(REG.CC, 0);
    assert.equal((await r.driver.waitCsts(1, 0)) & 3, 0);
    assert.equal((await r.driver.enable()) & 3, 1);
    const { cqe } = await r.driver.identify(1);
    assert.equal(cqe.status, 0);
  });

  test('enable with a bad AQA, misaligned ASQ or unmapped queues sets CSTS.CFS, and a reset clears it', async () => {
    r = await rig({ enable: false });
    const csts = await r.driver.enable({ aqa: 0, wait: false });
    assert.equal(csts & 3, 2, 'CFS set, RDY clear');
    assert.match(r.controller.fatalReason ?? '', /AQA/);
    await r.driver.write32(REG.CC, 0);
    await r.driver.waitCsts(3, 0);
    // ASQ outside every mapping.
    await r.driver.write32(REG.AQA, (7 << 16) | 7);
    await r.driver.write64(REG.ASQ, 0x9000_0000);
    await r.driver.write64(REG.ACQ, r.driver.alloc(PAGE));
    await r.driver.write32(REG.CC, 1 | (6 << 16) | (4 << 20));
    assert.equal((await r.driver.read32(REG.CSTS)) & 3, 2);
    await r.driver.write32(REG.CC, 0);
    await r.driver.waitCsts(3, 0);
    assert.equal((await r.driver.enable()) & 3, 1, 'a good enable after the reset');
  });

  test('INTMS / INTMC set and clear the mask', async () => {
    r = await rig({ enable: false });
    await r.driver.write32(REG.INTMS, 0x5);
    assert.equal(await r.driver.read32(REG.INTMS), 5);
    await r.driver.write32(REG.INTMC, 0x1);
    assert.equal(await r.driver.read32(REG.INTMC), 4);
  });

  test('BAR0 follows the register table: narrow CC writes merge, admin queue registers hold while enabled, misaligned accesses are refused', async () => {
    r = await rig({ enable: false });
    const asq = r.driver.alloc(PAGE);
    assert.equal((await r.driver.enable()) & 3, 1);
    const cc = await r.driver.read32(REG.CC);
    // One byte into CC.IOCQES/IOSQES keeps EN and the rest.
    await r.client.regionWrite(0, REG.CC + 2, Buffer.from([0x46]));
    assert.equal(await r.driver.read32(REG.CC), ((cc & 0xff00ffff) | 0x460000) >>> 0);
    assert.equal((await r.driver.read32(REG.CSTS)) & 3, 1, 'still enabled');
    const aqa = await r.driver.read32(REG.AQA);
    await r.driver.write32(REG.AQA, 0x00010001);
    await r.driver.write64(REG.ASQ, asq);
    assert.equal(await r.driver.read32(REG.AQA), aqa, 'AQA is read-only while enabled');
    assert.notEqual(Number(await r.driver.read64(REG.ASQ)), asq, 'ASQ is read-only while enabled');
    assert.equal(await r.driver.read32(0x38), 0, 'CMBLOC');
    assert.equal(await r.driver.read32(0x3c), 0, 'CMBSZ');
    await assert.rejects(r.client.regionRead(0, REG.CC + 1, 2), { errno: 22 });
    await assert.rejects(r.client.regionWrite(0, REG.CC + 1, Buffer.alloc(2)), { errno: 22 });
    assert.equal((await r.driver.read32(REG.CSTS)) & 3, 1, 'the refused accesses changed nothing');
  });
});

describe('nvme: Identify', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('controller: ids, serial, model, firmware, MDTS, SQES/CQES, NN, ONCS, VWC, OACS dbbuf', async () => {
    r = await rig({ namespaces: 2 });
    const { cqe, data } = await r.driver.identify(1);
    assert.equal(cqe.status, 0);
    const v = Buffer.from(data);
    assert.equal(v.readUInt16LE(0), 0x4d55);
    assert.equal(ascii(data, 4, 20), 'SN-TEST-0001');
    assert.equal(ascii(data, 24, 40), 'muser test NVMe');
    assert.equal(ascii(data, 64, 8), 'FW1.2');
    assert.equal(v[77], 5, 'MDTS');
    assert.equal(v.readUInt32LE(80), 0x00010400);
    assert.equal(v.readUInt16LE(256) & 0x100, 0x100, 'OACS doorbell buffer config');
    assert.equal(v[512], 0x66);
    assert.equal(v[513], 0x44);
    assert.equal(v.readUInt32LE(516), 2, 'NN');
    assert.equal(v.readUInt16LE(520) & 0xc, 0xc, 'ONCS DSM and Write Zeroes');
    assert.equal(v[525], 1, 'VWC');
  });

  test('namespace, active list, descriptors, and invalid namespaces', async () => {
    r = await rig({ namespaces: 2, size: 2 * MiB });
    const ns = await r.driver.identify(0, 1);
    const v = Buffer.from(ns.data);
    assert.equal(v.readBigUInt64LE(0), BigInt((2 * MiB) / 512), 'NSZE');
    assert.equal((v.readUInt32LE(128) >> 16) & 0xff, 9, 'LBADS 512');
    const list = Buffer.from((await r.driver.identify(2, 0)).data);
    assert.deepEqual([list.readUInt32LE(0), list.readUInt32LE(4), list.readUInt32LE(8)], [1, 2, 0]);
    const after1 = Buffer.from((await r.driver.identify(2, 1)).data);
    assert.deepEqual([after1.readUInt32LE(0), after1.readUInt32LE(4)], [2, 0]);
    const desc = Buffer.from((await r.driver.identify(3, 1)).data);
    assert.deepEqual([desc[0], desc[1]], [1, 8], 'EUI-64 first');
    assert.deepEqual([desc[12], desc[13]], [2, 16], 'then NGUID');
    assert.deepEqual([desc[32], desc[33], desc[36]], [4, 1, 0], 'then CSI NVM');
    for (const nsid of [0, 3, 0xffffffff]) {
      const bad = await r.driver.identify(0, nsid);
      assert.equal(bad.cqe.sc, 0x0b, `nsid ${nsid}: Invalid Namespace or Format`);
    }
    assert.equal((await r.driver.identify(0x42)).cqe.sc, 0x02, 'unknown CNS: Invalid Field');
    assert.equal((await r.driver.identify(6, 0, 0)).cqe.status, 0, 'CNS 06h CSI NVM');
  });
});

describe('nvme: I/O', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('write then read back through one page, two pages and a PRP list', async () => {
    r = await rig({ ioQueues: 2 });
    for (const [lba, blocks, seed] of [
      [0, 1, 1],
      [8, 16, 2],
      [100, 64, 3],
      [1000, 256, 4],
    ] as const) {
      const data = pattern(blocks * 512, seed);
      const w = await r.driver.rw(1, true, lba, blocks, data);
      assert.equal(w.cqe.status, 0, `write ${blocks}`);
      assert.equal(w.cqe.sqId, 1);
      assert.deepEqual(await r.backends[0].peek(lba * 512, (lba + blocks) * 512), Buffer.from(data));
      const rd = await r.driver.rw(2, false, lba, blocks);
      assert.equal(rd.cqe.status, 0);
      assert.deepEqual(rd.data, Buffer.from(data));
    }
  });

  test('a transfer starting mid-page, and a chained PRP list across list pages', async () => {
    r = await rig({ ioQueues: 1, size: 4 * MiB });
    const d = r.driver;
    // 8 KiB starting 512 bytes into a page: three pages.
    const buf = d.alloc(4 * PAGE) + 512;
    const data = pattern(8192, 9);
    d.bytes(buf, 8192).set(data);
    const { prp1, prp2 } = d.prps(buf, 8192);
    assert.equal((await d.run(1, { opcode: 1, nsid: 1, prp1, prp2, cdw10: 5, cdw12: 15 })).status, 0);
    assert.deepEqual(await r.backends[0].peek(5 * 512, 5 * 512 + 8192), Buffer.from(data));
    // 128 KiB read: 32 pages; the list starts 8 bytes before its page end so it chains at once.
    const big = d.alloc(33 * PAGE);
    await r.backends[0].poke(pattern(128 * 1024, 10), 0);
    const listPage = d.alloc(2 * PAGE);
    const first = listPage + PAGE - 16; // two slots: one entry, one chain pointer
    const second = listPage + PAGE;
    const view = (a: number): DataView => d.view(a, 8);
    view(first).setBigUint64(0, BigInt(big + PAGE), true);
    view(first + 8).setBigUint64(0, BigInt(second), true);
    for (let i = 0; i < 30; i++) view(second + i * 8).setBigUint64(0, BigInt(big + (i + 2) * PAGE), true);
    const cqe = await d.run(1, { opcode: 2, nsid: 1, prp1: big, prp2: first, cdw10: 0, cdw12: 255 });
    assert.equal(cqe.status, 0);
    assert.deepEqual(Buffer.from(d.bytes(big, 128 * 1024)), Buffer.from(pattern(128 * 1024, 10)));
  });

  test('flush, write zeroes (with deallocate), dataset management deallocate', async () => {
    r = await rig({ ioQueues: 1 });
    const b = r.backends[0];
    await b.fill(0xaa);
    assert.equal((await r.driver.run(1, { opcode: 0x00, nsid: 1 })).status, 0);
    assert.equal(b.calls.flush, 1);
    assert.equal((await r.driver.run(1, { opcode: 0x00, nsid: 0xffffffff })).status, 0, 'flush all namespaces');
    assert.equal((await r.driver.run(1, { opcode: 0x08, nsid: 1, cdw10: 4, cdw12: (1 << 25) | 3 })).status, 0);
    assert.deepEqual(b.unmaps, [true]);
    assert.ok((await b.peek(4 * 512, 8 * 512)).every((x) => x === 0));
    assert.equal((await b.peek(8 * 512, 8 * 512 + 1))[0], 0xaa);
    const ranges = r.driver.alloc(PAGE);
    const rv = r.driver.view(ranges, 32);
    rv.setUint32(4, 8, true);
    rv.setBigUint64(8, 16n, true);
    rv.setUint32(16 + 4, 2, true);
    rv.setBigUint64(16 + 8, 40n, true);
    assert.equal((await r.driver.run(1, { opcode: 0x09, nsid: 1, prp1: ranges, cdw10: 1, cdw11: 1 << 2 })).status, 0);
    assert.equal(b.calls.discard, 2);
    assert.ok((await b.peek(16 * 512, 24 * 512)).every((x) => x === 0));
    assert.ok((await b.peek(40 * 512, 42 * 512)).every((x) => x === 0));
    assert.equal((await b.peek(42 * 512, 42 * 512 + 1))[0], 0xaa);
  });

  test('fd-less guest memory: data moves by DMA messages', async () => {
    r = await rig({ ioQueues: 1, memory: 'private' });
    const data = pattern(8192, 5);
    assert.equal((await r.driver.rw(1, true, 3, 16, data)).cqe.status, 0);
    const rd = await r.driver.rw(1, false, 3, 16);
    assert.deepEqual(rd.data, Buffer.from(data));
  });

  test('read-only namespace: writes are refused with Namespace Write Protected, reads work', async () => {
    r = await rig({ ioQueues: 1, readOnly: true });
    const w = await r.driver.rw(1, true, 0, 1, pattern(512, 1));
    assert.equal(w.cqe.sc, 0x20);
    assert.equal((await r.driver.rw(1, false, 0, 1)).cqe.status, 0);
    const ns = Buffer.from((await r.driver.identify(0, 1)).data);
    assert.equal(ns[99] & 1, 1, 'NSATTR write protected');
  });

  test('completions carry SQ head, SQ id, cid and flip phase on wrap', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    const heads: number[] = [];
    let phaseFlipped = false;
    for (let i = 0; i < 70; i++) {
      const cqe = await d.run(1, { opcode: 0x00, nsid: 1, cid: 0x100 + i });
      assert.equal(cqe.cid, 0x100 + i);
      heads.push(cqe.sqHead);
      if (cqe.phase === 0) phaseFlipped = true;
    }
    assert.equal(heads[0], 1);
    assert.equal(heads[63], 0, 'head wraps with the 64-entry queue');
    assert.ok(phaseFlipped);
  });

  test('a full completion queue holds completions until the host frees entries', async () => {
    r = await rig({ enable: true });
    const d = r.driver;
    await d.admin({ opcode: 0x09, cdw10: 7, cdw11: 0 });
    assert.equal((await d.createCq(1, 4)).status, 0);
    assert.equal((await d.createSq(1, 16, 1)).status, 0);
    for (let i = 0; i < 10; i++) d.put(1, { opcode: 0x00, nsid: 1, cid: i });
    await d.submit(1);
    // Three fit in a 4-entry CQ; reap them without ringing the head.
    const got: number[] = [];
    for (let i = 0; i < 3; i++) got.push((await d.reap(1, { ringHead: false })).cid);
    await new Promise((res) => setTimeout(res, 20));
    assert.ok(d.cqEmpty(1), 'nothing overwrote unconsumed entries');
    await d.ringHead(1);
    while (got.length < 10) got.push((await d.reap(1)).cid);
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

describe('nvme: features, logs, events', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('Number of Queues, write cache, interrupt coalescing, async event config; not saveable', async () => {
    r = await rig({ queues: 3 });
    const d = r.driver;
    const nq = await d.admin({ opcode: 0x09, cdw10: 7, cdw11: (7 << 16) | 7 });
    assert.equal(nq.dw0, (2 << 16) | 2, 'three of each allocated');
    assert.equal((await d.admin({ opcode: 0x09, cdw10: 7, cdw11: 0xffff })).sc, 0x02);
    assert.equal((await d.admin({ opcode: 0x09, cdw10: 6, cdw11: 0 })).status, 0);
    assert.equal((await d.admin({ opcode: 0x0a, cdw10: 6 })).dw0, 0);
    assert.equal((await d.admin({ opcode: 0x09, cdw10: 8, cdw11: 0x0a05 })).status, 0);
    assert.equal((await d.admin({ opcode: 0x0a, cdw10: 8 })).dw0, 0x0a05);
    assert.equal((await d.admin({ opcode: 0x09, cdw10: 0x0b, cdw11: 0x1ff })).status, 0);
    assert.equal((await d.admin({ opcode: 0x0a, cdw10: 0x0b })).dw0, 0x1ff);
    const sv = await d.admin({ opcode: 0x09, cdw10: (1 << 31) | 8, cdw11: 1 });
    assert.deepEqual([sv.sct, sv.sc], [1, 0x0d]);
    assert.equal((await d.admin({ opcode: 0x0a, cdw10: 0x77 })).sc, 0x02);
  });

  test('FUA reaches the backend, and every write is FUA once the volatile write cache is turned off', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    const b = r.backends[0];
    const seen: boolean[] = [];
    const write = b.write.bind(b) as BlockBackend['write'];
    b.write = (offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }) => {
      seen.push(options?.fua === true);
      return write(offset, buffers, options);
    };
    const buf = d.alloc(PAGE);
    assert.equal((await d.run(1, { opcode: 1, nsid: 1, prp1: buf, cdw10: 0, cdw12: 0 })).status, 0);
    assert.equal((await d.run(1, { opcode: 1, nsid: 1, prp1: buf, cdw10: 0, cdw12: 1 << 30 })).status, 0);
    assert.equal((await d.admin({ opcode: 0x09, cdw10: 6, cdw11: 0 })).status, 0);
    assert.equal((await d.run(1, { opcode: 1, nsid: 1, prp1: buf, cdw10: 0, cdw12: 0 })).status, 0);
    assert.deepEqual(seen, [false, true, true]);
  });

  test('log pages: SMART counts I/O, firmware slot names the revision, error log records failures, unknown page refused', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    await d.rw(1, true, 0, 8, pattern(4096, 1));
    await d.rw(1, false, 0, 8);
    await d.run(1, { opcode: 0x55, nsid: 1 });
    const log = async (lid: number, bytes: number): Promise<Buffer> => {
      const buf = d.alloc(PAGE);
      const cqe = await d.admin({ opcode: 0x02, nsid: 0xffffffff, prp1: buf, cdw10: (((bytes / 4 - 1) & 0xffff) << 16) | lid });
      assert.equal(cqe.status, 0, `log 0x${lid.toString(16)}`);
      return Buffer.from(d.bytes(buf, bytes));
    };
    const smart = await log(2, 512);
    assert.equal(smart.readBigUInt64LE(64), 1n, 'host read commands');
    assert.equal(smart.readBigUInt64LE(80), 1n, 'host write commands');
    assert.equal(smart[3], 100);
    const fw = await log(3, 512);
    assert.equal(fw[0], 1);
    assert.equal(ascii(fw, 8, 8), 'FW1.2');
    const err = await log(1, 64);
    assert.ok(err.readBigUInt64LE(0) >= 1n);
    assert.equal(err.readUInt16LE(8), 1, 'SQ id of the failed command');
    assert.equal((err.readUInt16LE(12) >> 1) & 0xff, 0x01, 'Invalid Opcode recorded');
    const bad = await d.admin({ opcode: 0x02, prp1: d.alloc(PAGE), cdw10: (127 << 16) | 0x70 });
    assert.deepEqual([bad.sct, bad.sc], [1, 0x09]);
  });

  test('an invalid doorbell write completes a waiting Asynchronous Event Request', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    d.put(0, { opcode: 0x0c, cid: 0xaeae });
    await d.submit(0);
    await d.ring(2 * 1, 1000); // SQ 1 tail beyond its 64 entries
    const ev = await d.reap(0);
    assert.equal(ev.cid, 0xaeae);
    assert.equal(ev.status, 0);
    assert.equal(ev.dw0 & 7, 0, 'error status event');
    assert.equal((ev.dw0 >> 8) & 0xff, 1, 'invalid doorbell write value');
    assert.equal((ev.dw0 >> 16) & 0xff, 1, 'error log page');
    // Keep Alive and Abort answer; the controller lives on.
    assert.equal((await d.admin({ opcode: 0x18 })).status, 0);
    assert.equal((await d.admin({ opcode: 0x08, cdw10: (5 << 16) | 1 })).dw0 & 1, 1);
    assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
  });
});

describe('nvme: shadow doorbells', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('with Doorbell Buffer Config, I/O rings far fewer doorbells and data stays right', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    const count = 32;
    const run = async (): Promise<number> => {
      const before = r!.controller.stats.doorbellWrites;
      // Queue depth 8: submissions while earlier ones are in flight.
      for (let i = 0; i < count; i += 8) {
        const old = d.queues.get(1)!.tail;
        const bufs: number[] = [];
        for (let j = 0; j < 8; j++) {
          const buf = d.alloc(PAGE);
          d.bytes(buf, 512).set(pattern(512, i + j));
          bufs.push(buf);
          d.put(1, { opcode: 1, nsid: 1, prp1: buf, cdw10: i + j, cdw12: 0 });
        }
        await d.submit(1, old);
        for (let j = 0; j < 8; j++) await d.reap(1);
      }
      return r!.controller.stats.doorbellWrites - before;
    };
    const plain = await run();
    assert.equal((await d.configureShadowDoorbells()).status, 0);
    const shadow = await run();
    assert.ok(shadow < plain, `shadow ${shadow} < plain ${plain}`);
    for (let i = 0; i < count; i++) assert.deepEqual(await r.backends[0].peek(i * 512, (i + 1) * 512), Buffer.from(pattern(512, i)));
    assert.ok(r.controller.stats.shadowReads > 0);
    const ei = d.view(d.dbbuf!.eis + 8, 4).getUint32(0, true);
    assert.equal(ei, d.queues.get(1)!.tail, 'SQ EventIdx follows the consumed tail');
  });

  test('polling the shadow doorbells: one submission after another rings (almost) no doorbell', async () => {
    // A window far longer than the test: the controller polls until the client leaves.
    r = await rig({ ioQueues: 1, pollMicroseconds: 10_000_000 });
    const d = r.driver;
    assert.equal((await d.configureShadowDoorbells()).status, 0);
    assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0, 'the first I/O starts the polling');
    const before = r.controller.stats.ioDoorbellWrites;
    for (let i = 0; i < 32; i++) {
      const data = pattern(512, 100 + i);
      assert.equal((await d.rw(1, true, i, 1, data)).cqe.status, 0);
      assert.deepEqual(await r.backends[0].peek(i * 512, (i + 1) * 512), Buffer.from(data));
    }
    const rings = r.controller.stats.ioDoorbellWrites - before;
    assert.ok(rings <= 2, `${rings} doorbell messages for 32 I/Os`);
    const ei = d.view(d.dbbuf!.eis + 8, 4).getUint32(0, true);
    assert.equal(ei, (d.queues.get(1)!.tail - 1) & 0xffff, 'EventIdx one behind the tail while polling');
  });

  test('with shadow doorbells a late (posted) doorbell register write with an old tail or head moves nothing back', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    assert.equal((await d.configureShadowDoorbells()).status, 0);
    const q = d.queues.get(1)!;
    const dbs = d.dbbuf!.dbs;
    for (let i = 0; i < 3; i++) d.put(1, { opcode: 0, nsid: 1, cid: 0x10 + i });
    d.view(dbs + 8, 4).setUint32(0, q.tail, true);
    await d.ring(2, q.tail);
    const cids = [];
    for (let i = 0; i < 3; i++) cids.push((await d.reap(1)).cid);
    assert.deepEqual(cids, [0x10, 0x11, 0x12]);
    // The register writes of a while ago arrive now: SQ tail 1, CQ head 1.
    await d.ring(2, 1);
    await d.ring(3, 1);
    d.put(1, { opcode: 0, nsid: 1, cid: 0x99 });
    d.view(dbs + 8, 4).setUint32(0, q.tail, true);
    await d.ring(2, q.tail);
    const next = await d.reap(1);
    assert.deepEqual([next.cid, next.status], [0x99, 0], 'no stale entry was fetched again');
    assert.equal(r.controller.sqs.get(1)!.head, 4);
  });

  test('a controller built without shadow doorbells clears OACS bit 8 and refuses the command', async () => {
    r = await rig({ shadowDoorbells: false });
    const id = Buffer.from((await r.driver.identify(1)).data);
    assert.equal(id.readUInt16LE(256) & 0x100, 0);
    assert.equal((await r.driver.configureShadowDoorbells()).sc, 0x01, 'Invalid Command Opcode');
  });

  test('misaligned doorbell buffers are refused', async () => {
    r = await rig();
    const c = await r.driver.admin({ opcode: 0x7c, prp1: r.driver.alloc(PAGE) + 8, prp2: r.driver.alloc(PAGE) });
    assert.equal(c.sc, 0x02);
  });
});

describe('nvme: interrupts', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  test('MSI-X: each I/O queue completes on its own vector', async () => {
    r = await rig({ ioQueues: 2 });
    const d = r.driver;
    for (const q of [1, 2]) {
      const before = d.vectors[q].total;
      const waiting = d.vectors[q].waitFor(before + 1);
      assert.equal((await d.rw(q, false, 0, 1)).cqe.status, 0);
      assert.ok((await waiting) > before, `vector ${q}`);
    }
  });

  test('INTx when MSI-X is off; INTMS masks it and INTMC unmasks it', async () => {
    r = await rig({ msix: false, enable: false });
    const d = r.driver;
    const intx = new EventFd();
    try {
      await r.client.setIrqEventfds(IrqIndex.INTX, 0, [intx.fd]);
      // Masked from the start: admin and I/O completions raise nothing.
      await d.write32(REG.INTMS, 1);
      await d.enable();
      // Without MSI-X only vector 0 exists.
      assert.equal((await d.createCq(1, 16, { vector: 1 })).sc, 0x08);
      assert.equal((await d.createCq(1, 16, { vector: 0 })).status, 0);
      assert.equal((await d.createSq(1, 16, 1)).status, 0);
      for (let i = 0; i < 3; i++) assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
      assert.ok(r.controller.stats.interrupts > 0, 'the controller had interrupts to raise');
      assert.equal(intx.total, 0);
      assert.equal(r.server.device.irqPending(IrqIndex.INTX, 0), false, 'nothing reached the INTx line');
      await d.write32(REG.INTMC, 1);
      const waiting = intx.waitFor(1);
      assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
      assert.equal(await waiting, 1, 'the first completion after unmasking raises INTx');
    } finally {
      intx.close();
    }
  });
});

describe('nvme: reset and shutdown', () => {
  let r: Rig | undefined;
  afterEach(() => close(r));

  /** A controller with one I/O queue and one read the backend holds in flight. */
  async function heldRead(extra: { cid?: number } = {}): Promise<{ d: Rig['driver']; b: Rig['backends'][number] }> {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    const b = r.backends[0];
    b.holding = true;
    d.put(1, { opcode: 2, nsid: 1, prp1: d.alloc(PAGE), cdw10: 0, cdw12: 0, ...extra });
    await d.submit(1);
    await b.waitHeld(1);
    return { d, b };
  }

  test('shutdown: SHST reaches complete after a flush; commands after it are not executed; a reset brings it back', async () => {
    r = await rig({ ioQueues: 1 });
    const d = r.driver;
    await d.write32(REG.CC, 0x00460001 | (1 << 14));
    await d.waitCsts(0xc, 0x8);
    assert.ok(r.backends[0].calls.flush >= 1);
    d.put(1, { opcode: 1, nsid: 1, prp1: d.alloc(PAGE), cdw10: 0, cdw12: 0 });
    await d.submit(1);
    await new Promise((res) => setTimeout(res, 20));
    assert.ok(d.cqEmpty(1), 'no command ran after shutdown');
    assert.equal(r.backends[0].calls.write, 0);
    await d.enable();
    await d.createIoQueues(1);
    assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
  });

  test('a host that re-enables before CSTS.RDY cleared starts a fresh session; the old command is dropped', async () => {
    const { d, b } = await heldRead();
    await d.write32(REG.CC, 0);
    // Not waiting for RDY to clear (a driver bug), straight back to enabled.
    await d.write32(REG.AQA, (31 << 16) | 31);
    const asq = d.alloc(32 * 64);
    const acq = d.alloc(32 * 16);
    await d.write64(REG.ASQ, asq);
    await d.write64(REG.ACQ, acq);
    d.queues.set(0, { id: 0, sq: asq, cq: acq, size: 32, cqSize: 32, tail: 0, head: 0, phase: 1, nextCid: 0 });
    await d.write32(REG.CC, 0x00460001);
    await d.waitCsts(3, 1);
    await d.createIoQueues(1);
    b.releaseAll();
    assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
    assert.equal(r!.controller.sqs.size, 2);
  });

  test('Delete I/O SQ waits for its command in flight, which completes first', async () => {
    const { d, b } = await heldRead({ cid: 0x77 });
    d.put(0, { opcode: 0x00, cdw10: 1, cid: 0x55 });
    await d.submit(0);
    b.releaseAll();
    const io = await d.reap(1);
    assert.deepEqual([io.cid, io.status], [0x77, 0]);
    const del = await d.reap(0);
    assert.deepEqual([del.cid, del.status], [0x55, 0]);
    assert.equal(r!.controller.sqs.has(1), false);
  });

  test('a reset while Delete I/O SQ waits ends the wait; the controller comes back', async () => {
    const { d, b } = await heldRead();
    d.put(0, { opcode: 0x00, cdw10: 1 });
    await d.submit(0);
    await d.write32(REG.CC, 0);
    b.releaseAll();
    await d.waitCsts(1, 0);
    await d.enable();
    await d.createIoQueues(1);
    assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
  });

  test('disable waits for I/O in flight before CSTS.RDY clears, and drops its completion', async () => {
    const { d, b } = await heldRead();
    await d.write32(REG.CC, 0);
    assert.equal((await d.read32(REG.CSTS)) & 1, 1, 'still ready while the read holds guest memory');
    b.releaseAll();
    await d.waitCsts(1, 0);
    assert.ok(d.cqEmpty(1));
    await d.enable();
    await d.createIoQueues(1);
    assert.equal((await d.rw(1, false, 0, 1)).cqe.status, 0);
  });
});
