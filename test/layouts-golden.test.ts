/**
 * Golden bytes for every device layout declared with the struct tool: known
 * values encoded, compared against bytes written here by hand at the
 * specifications' byte offsets (NVMe 1.4 figures 105, 121, 194, 247, 249;
 * virtio 1.2 sections 2.7.5, 5.2.4 and 5.2.6). A field moved, resized or
 * dropped fails here, and so does a device path that stops using the
 * declared layout correctly (the CQE writers, the SQE decoder, Identify, the
 * descriptor walk, the virtio-blk config).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ramBackend } from '../src/block/ram.js';
import { parseCommand } from '../src/nvme/command.js';
import { errorLog, identifyController, identifyNamespace, identifyNamespaceIndependent } from '../src/nvme/identify.js';
import { CQE, ERROR_LOG_ENTRY, IDENTIFY_CONTROLLER, IDENTIFY_NAMESPACE, IDENTIFY_NAMESPACE_INDEPENDENT, SQE } from '../src/nvme/layouts.js';
import { Namespace } from '../src/nvme/namespace.js';
import { CompletionQueue, encodeCompletion, SubmissionQueue, writeCompletion } from '../src/nvme/queues.js';
import { ChainWalker } from '../src/virtio/chain.js';
import { configFieldsOf, VirtioConfig } from '../src/virtio/config.js';
import { BLK_CONFIG, BLK_RANGE, BLK_REQUEST_HEADER, DESCRIPTOR, VIRTIO_PCI_CAP, type BlkConfigFields } from '../src/virtio/layouts.js';
import { virtioCapabilities } from '../src/virtio/pci-caps.js';

/** Hex with spaces for readability. */
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A zeroed `size`-byte page with each [offset, hex] written at its offset (the spec's offsets, by hand). */
function page(size: number, parts: ReadonlyArray<[number, string | Buffer]>): Buffer {
  const b = Buffer.alloc(size);
  for (const [at, bytes] of parts) (typeof bytes === 'string' ? hex(bytes) : bytes).copy(b, at);
  return b;
}

/** Names each differing byte, so a wrong offset says where. */
function sameBytes(actual: Buffer, expected: Buffer): void {
  assert.equal(actual.length, expected.length, 'size');
  const wrong: string[] = [];
  for (let i = 0; i < expected.length; i++) if (actual[i] !== expected[i]) wrong.push(`@${i}: ${actual[i].toString(16)} != ${expected[i].toString(16)}`);
  assert.deepEqual(wrong.slice(0, 16), []);
}

describe('NVMe layouts', () => {
  const sqeBytes = hex(`
    02 41 3412 01000000
    00000000 00000000 0000000000000000
    0010203040506070 0020203040506080
    0a000000 0b000000 0c000000 0d000000 0e000000 0f000000`);
  const sqe = {
    opcode: 0x02,
    flags: 0x41,
    cid: 0x1234,
    nsid: 1,
    prp1: 0x7060504030201000n,
    prp2: 0x8060504030202000n,
    cdw10: 10,
    cdw11: 11,
    cdw12: 12,
    cdw13: 13,
    cdw14: 14,
    cdw15: 15,
  };

  test('SQE: 64 bytes, CDW0 / NSID / PRP1 at 24 / PRP2 at 32 / CDW10-15 from 40', () => {
    assert.equal(SQE.size, 64);
    sameBytes(SQE.encode(sqe), sqeBytes);
    assert.deepEqual(SQE.read(sqeBytes, 0), sqe);
  });

  test('parseCommand reads a golden SQE: FUSE and PSDT out of the flags byte', () => {
    const cmd = parseCommand(new Uint8Array(sqeBytes));
    assert.deepEqual(cmd, { opcode: 2, fuse: 1, psdt: 1, cid: 0x1234, nsid: 1, prp1: sqe.prp1, prp2: sqe.prp2, cdw10: 10, cdw11: 11, cdw12: 12, cdw13: 13, cdw14: 14, cdw15: 15 });
    assert.throws(() => parseCommand(sqeBytes.subarray(0, 63)), RangeError);
  });

  test('CQE: 16 bytes, DW0, DW1, SQ head and id in DW2, cid and status|phase in DW3', () => {
    const golden = hex('78563412 00000000 0500 0300 3412 0540');
    assert.equal(CQE.size, 16);
    sameBytes(CQE.encode({ dw0: 0x12345678, dw1: 0, sqHead: 5, sqId: 3, cid: 0x1234, status: 0x4005 }), golden);
    // The controller's writers: through a queue's view (dword stores) and as a copy.
    const cq = new CompletionQueue(1, 0, 4, true, 0);
    const sq = new SubmissionQueue(3, 0, 8, cq);
    sq.head = 5;
    const completion = { sq, cid: 0x1234, status: 0x2002, dw0: 0x12345678, slot: -1 };
    const ring = Buffer.alloc(2 * CQE.size, 0xee);
    writeCompletion(new DataView(ring.buffer, ring.byteOffset, ring.length), CQE.size, sq, completion.cid, completion.status, completion.dw0, 1);
    sameBytes(ring, Buffer.concat([Buffer.alloc(16, 0xee), golden]));
    sameBytes(encodeCompletion(completion, 1), golden);
  });

  const serial = 'SN-0001';
  const identity = {
    vendorId: 0x1b36,
    subsystemVendorId: 0x1af4,
    serial,
    model: 'muser NVMe',
    firmware: '1.0',
    mdts: 5,
    controllerId: 0x0102,
    version: 0x00010400,
    namespaces: 2,
    volatileWriteCache: true,
    dsm: true,
    aerl: 3,
    elpe: 63,
    maxCommands: 1024,
    shadowDoorbells: true,
  };
  const space = (text: string, n: number): Buffer => Buffer.from(text.padEnd(n, ' '), 'latin1');

  test('Identify Controller: 4096 bytes, every field muser fills at its spec offset', () => {
    assert.equal(IDENTIFY_CONTROLLER.size, 4096);
    const golden = page(4096, [
      [0, '361b f41a'], // VID, SSVID
      [4, space(serial, 20)], // SN
      [24, space('muser NVMe', 40)], // MN
      [64, space('1.0', 8)], // FR
      [72, '06'], // RAB
      [77, '05 0201 00040100'], // MDTS, CNTLID, VER 1.4.0
      [111, '01'], // CNTRLTYPE: I/O controller
      [256, '0001 03 03 03 00 3f 00'], // OACS (DBBUF), ACL, AERL, FRMW, LPA, ELPE, NPSS
      [266, '5701 7501'], // WCTEMP, CCTEMP
      [512, '66 44 0004 02000000 0c00'], // SQES, CQES, MAXCMD, NN, ONCS (DSM, Write Zeroes)
      [525, '01'], // VWC
      [768, Buffer.from(`nqn.2026-11.io.muser:nvme:${serial}`, 'latin1')], // SUBNQN
      [2048, 'c409'], // PSD0 MP: 2500 centiwatts
    ]);
    sameBytes(identifyController(identity), golden);
  });

  test('Identify Namespace: 4096 bytes, sizes, features, NGUID at 104, EUI-64 at 120, LBAF0 at 128', () => {
    assert.equal(IDENTIFY_NAMESPACE.size, 4096);
    const ns = new Namespace(1, ramBackend(1 << 20), { serial, lbaSize: 4096 });
    const golden = page(4096, [
      [0, '0001000000000000 0001000000000000 0001000000000000'], // NSZE, NCAP, NUSE: 256 blocks
      [24, '01 00 00'], // NSFEAT (thin), NLBAF, FLBAS
      [33, '09'], // DLFEAT: zeros, Write Zeroes may deallocate
      [99, '00'], // NSATTR
      [104, ns.nguid],
      [120, ns.eui64],
      [128, '0000 0c 00'], // LBAF0: MS 0, LBADS 12, RP 0
    ]);
    sameBytes(identifyNamespace(ns), golden);
  });

  test('I/O Command Set Independent Identify Namespace: NSFEAT at 0, NSATTR at 8, NSTAT at 14', () => {
    assert.equal(IDENTIFY_NAMESPACE_INDEPENDENT.size, 4096);
    const ns = new Namespace(1, ramBackend(1 << 20), { serial, readOnly: true });
    sameBytes(identifyNamespaceIndependent(ns), page(4096, [[0, '01'], [8, '01'], [14, '01']]));
  });

  test('Error Information log entry: 64 bytes, count, SQID, CID, status, location, LBA, NSID', () => {
    assert.equal(ERROR_LOG_ENTRY.size, 64);
    const entry = (count: string, cid: string): string => `${count} 0100 ${cid} 0480 ffff 0000000000000000 01000000`;
    const golden = page(128, [
      [0, entry('0200000000000000', '0900')], // newest first
      [64, entry('0100000000000000', '0800')],
    ]);
    const errors = [
      { count: 1, sqid: 1, cid: 8, status: 0x4002, nsid: 1 },
      { count: 2, sqid: 1, cid: 9, status: 0x4002, nsid: 1 },
    ];
    sameBytes(errorLog(errors, 2), golden);
  });
});

describe('virtio layouts', () => {
  test('descriptor: 16 bytes, addr, len, flags, next', () => {
    const golden = hex('0010000000000100 00020000 0300 0700');
    assert.equal(DESCRIPTOR.size, 16);
    sameBytes(DESCRIPTOR.encode({ addr: 0x1000000001000n, len: 0x200, flags: 3, next: 7 }), golden);
  });

  test('the chain walker reads golden descriptors: address, length, WRITE and NEXT at their offsets', () => {
    const table = hex(`
      0010000000000000 10000000 0100 0100
      0020000000000000 00020000 0300 0200
      0030000000000000 01000000 0200 0000`);
    const walker = new ChainWalker(() => false);
    walker.start(0, 0, 3, false, table);
    assert.equal(walker.step(), true);
    assert.deepEqual(walker.chain, [0x1000, 16, 0x2000, 512, 0x3000, 1]);
    assert.equal(walker.readableCount, 1);
    assert.equal(walker.readableLength, 16);
    assert.equal(walker.writableLength, 513);
  });

  test('virtio-pci capabilities: cfg_type, bar, id, offset at 8, length at 12 (from the PCI header), notify_off_multiplier at 16', () => {
    assert.equal(VIRTIO_PCI_CAP.size, 13);
    const caps = virtioCapabilities({
      bar: 4,
      common: { offset: 0x0, length: 0x38 },
      isr: { offset: 0x1000, length: 4 },
      device: { offset: 0x2000, length: 60 },
      notify: { offset: 0x3000, length: 0x1000, multiplier: 4 },
    });
    // Each capability's data starts after cap_vndr, cap_next and cap_len (config-space bytes 3.. of the capability).
    assert.deepEqual(
      caps.map((c) => (c.id === 'vendor' ? Buffer.from(c.data).toString('hex') : c.id)),
      [
        '01 04 00 0000 00000000 38000000',
        '02 04 00 0000 00300000 00100000 04000000',
        '03 04 00 0000 00100000 04000000',
        '04 04 00 0000 00200000 3c000000',
        '05 00 00 0000 00000000 00000000 00000000',
      ].map((h) => h.replace(/ /g, '')),
    );
  });

  test('virtio-blk request header: type at 0, sector at 8; range segment: sector, count, flags', () => {
    assert.equal(BLK_REQUEST_HEADER.size, 16);
    sameBytes(BLK_REQUEST_HEADER.encode({ type: 1, sector: 0x0102030405060708n }), hex('01000000 00000000 0807060504030201'));
    assert.equal(BLK_RANGE.size, 16);
    const ranges = hex('0800000000000000 10000000 01000000 2000000000000000 08000000 00000000');
    assert.deepEqual(BLK_RANGE.readArray(ranges, 0, 2), [
      { sector: 8n, numSectors: 16, flags: 1 },
      { sector: 32n, numSectors: 8, flags: 0 },
    ]);
  });

  test('virtio-blk config: 60 bytes at the spec offsets, the same through VirtioConfig', () => {
    const values: BlkConfigFields = {
      capacity: 0x200000n,
      size_max: 0x10000,
      seg_max: 254,
      cylinders: 0x0102,
      heads: 3,
      sectors: 4,
      blk_size: 4096,
      physical_block_exp: 1,
      alignment_offset: 2,
      min_io_size: 8,
      opt_io_size: 16,
      writeback: 1,
      num_queues: 2,
      max_discard_sectors: 0x400000,
      max_discard_seg: 32,
      discard_sector_alignment: 8,
      max_write_zeroes_sectors: 0x400000,
      max_write_zeroes_seg: 32,
      write_zeroes_may_unmap: 1,
    };
    const golden = hex(`
      0000200000000000 00000100 fe000000
      0201 03 04 00100000
      01 02 0800 10000000
      01 00 0200
      00004000 20000000 08000000 00004000 20000000
      01 000000`);
    assert.equal(BLK_CONFIG.size, 60);
    sameBytes(BLK_CONFIG.encode(values), golden);
    const config = new VirtioConfig(configFieldsOf(BLK_CONFIG), { ...values });
    sameBytes(config.bytes, golden);
    assert.equal(config.get('num_queues'), 2);
    assert.equal(config.get('capacity'), 0x200000n);
  });
});
