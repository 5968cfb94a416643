/**
 * Golden bytes for every message, both directions. Expected bytes are
 * written by hand from the spec / QEMU layouts (fields separated by spaces
 * or `|`), never produced by the encoder under test.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as P from '../src/protocol/index.js';
import {
  Command,
  DeviceFeatureFlag,
  FeatureId,
  HeaderFlag,
  MigrationState,
  RegionCapId,
  type DeviceFeature,
} from '../src/protocol/index.js';
import { hex } from './helpers/bytes.js';

/** Hex string (spaces and `|` ignored) to bytes. */

/** Asserts encode(m) is exactly `bytes` and decode(bytes) deep-equals m. */
function golden<T>(name: string, bytes: string, m: T, enc: (m: T) => Buffer, dec: (p: Buffer) => T): void {
  test(name, () => {
    assert.equal(enc(m).toString('hex'), hex(bytes).toString('hex'));
    assert.deepEqual(dec(hex(bytes)), m);
  });
}

/** Asserts decode(bytes) deep-equals m (for forms our encoder does not produce). */
function decodes<T>(name: string, bytes: string | Buffer, m: T, dec: (p: Buffer) => T): void {
  test(name, () => assert.deepEqual(dec(typeof bytes === 'string' ? hex(bytes) : bytes), m));
}

/** Empty payload both ways. */
function empty(name: string, enc: () => Buffer, dec: (p: Buffer) => void): void {
  test(name, () => {
    assert.equal(enc().length, 0);
    assert.equal(dec(Buffer.alloc(0)), undefined);
  });
}

const ascii = (s: string): string => Buffer.from(s, 'utf8').toString('hex');

describe('header', () => {
  golden(
    'error reply header',
    '3412 | 0900 | 20000000 | 21000000 | 16000000',
    { msgId: 0x1234, command: Command.REGION_READ, size: 32, flags: HeaderFlag.REPLY | HeaderFlag.ERROR, errno: 22 },
    (h) => {
      const b = Buffer.alloc(16);
      P.encodeHeader(h, b);
      return b;
    },
    (b) => P.decodeHeader(b),
  );
  test('decode at an offset', () => {
    const h = P.decodeHeader(hex('ffff | 0100 0d00 10000000 10000000 00000000'), 2);
    assert.deepEqual(h, { msgId: 1, command: 13, size: 16, flags: HeaderFlag.NO_REPLY, errno: 0 });
  });
  test('flag helpers', () => {
    assert.equal(P.isReply(0x21), true);
    assert.equal(P.isReply(0x10), false);
    assert.equal(P.noReply(0x10), true);
    assert.equal(P.isError(0x21), true);
    assert.equal(P.isError(0x01), false);
  });
  test('encodeMessage computes size', () => {
    const m = P.encodeMessage({ msgId: 1, command: Command.DEVICE_RESET });
    assert.equal(m.toString('hex'), hex('0100 0d00 10000000 00000000 00000000').toString('hex'));
    const r = P.encodeMessage({ msgId: 2, command: Command.DMA_MAP, flags: HeaderFlag.NO_REPLY }, hex('aabb'));
    assert.equal(r.toString('hex'), hex('0200 0200 12000000 10000000 00000000 aabb').toString('hex'));
  });
  test('encodeErrorReply / encodeReply', () => {
    assert.equal(P.encodeErrorReply(7, 5, 2).toString('hex'), hex('0700 0500 10000000 21000000 02000000').toString('hex'));
    assert.equal(P.encodeReply(7, 13).toString('hex'), hex('0700 0d00 10000000 01000000 00000000').toString('hex'));
  });
});

describe('VERSION', () => {
  const qemuJson =
    '{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"max_dma_maps":65535,' +
    '"pgsizes":4096,"write_multiple":true,"migration":{"pgsize":4096,"max_bitmap_size":268435456}}}';
  const caps: P.VersionCapabilities = {
    maxMsgFds: 16,
    maxDataXferSize: 1048576,
    maxDmaMaps: 65535,
    pgsizes: 4096,
    writeMultiple: true,
    migration: { pgsize: 4096, maxBitmapSize: 268435456 },
  };
  golden('request with capabilities', `0000 0000 ${ascii(qemuJson)} 00`, { major: 0, minor: 0, capabilities: caps }, P.encodeVersionRequest, P.decodeVersionRequest);
  golden(
    'reply with twin socket',
    `0100 0200 ${ascii('{"capabilities":{"twin_socket":{"supported":true,"fd_index":0}}}')} 00`,
    { major: 1, minor: 2, capabilities: { twinSocket: { supported: true, fdIndex: 0 } } },
    P.encodeVersionReply,
    P.decodeVersionReply,
  );
  golden('empty capabilities', `0000 0000 ${ascii('{"capabilities":{}}')} 00`, { major: 0, minor: 0, capabilities: {} }, P.encodeVersion, P.decodeVersion);
  decodes('QEMU key order, unknown keys ignored', `0000 0000 ${ascii(
    '{"capabilities":{"migration":{"pgsize":4096,"max_bitmap_size":268435456},"max_msg_fds":16,' +
      '"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true,"x":[1]},"y":null}',
  )} 00`, { major: 0, minor: 0, capabilities: caps }, P.decodeVersion);
  decodes('no JSON at all', '0000 0100', { major: 0, minor: 1, capabilities: {} }, P.decodeVersion);
  decodes('JSON without capabilities', `0000 0000 ${ascii('{}')} 00`, { major: 0, minor: 0, capabilities: {} }, P.decodeVersion);
  decodes('pgsizes bitmask above 2^53', `0000 0000 ${ascii('{"capabilities":{"pgsizes":18446744073709547520}}')} 00`,
    { major: 0, minor: 0, capabilities: { pgsizes: 2 ** 64 - 4096 } }, P.decodeVersion);
});

describe('DMA_MAP / DMA_UNMAP', () => {
  golden(
    'DMA_MAP request',
    '20000000 | 03000000 | 0010000000000000 | 00000c0000000000 | 0000020000000000',
    { argsz: 32, flags: 3, offset: 0x1000, address: 0xc0000, size: 0x20000 },
    P.encodeDmaMapRequest,
    P.decodeDmaMapRequest,
  );
  empty('DMA_MAP reply', P.encodeDmaMapReply, P.decodeDmaMapReply);
  const unmap = { argsz: 24, flags: 0, address: 0xc0000, size: 0x20000 };
  const unmapHex = '18000000 | 00000000 | 00000c0000000000 | 0000020000000000';
  golden('DMA_UNMAP request', unmapHex, unmap, P.encodeDmaUnmapRequest, P.decodeDmaUnmapRequest);
  golden('DMA_UNMAP request, unmap all', '18000000 | 02000000 | 0000000000000000 | 0000000000000000',
    { argsz: 24, flags: P.DmaUnmapFlag.ALL, address: 0, size: 0 }, P.encodeDmaUnmapRequest, P.decodeDmaUnmapRequest);
  golden('DMA_UNMAP reply (echo)', unmapHex, unmap, P.encodeDmaUnmapReply, (p) => P.decodeDmaUnmapReply(p) as typeof unmap);
  decodes('DMA_UNMAP reply, empty', '', null, P.decodeDmaUnmapReply);
});

describe('DEVICE_GET_INFO', () => {
  golden('request', '10000000 00000000 00000000 00000000', { argsz: 16 }, P.encodeDeviceInfoRequest, P.decodeDeviceInfoRequest);
  decodes('request carrying only argsz', '10000000', { argsz: 16 }, P.decodeDeviceInfoRequest);
  golden('reply', '10000000 | 03000000 | 09000000 | 05000000', { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 },
    P.encodeDeviceInfoReply, P.decodeDeviceInfoReply);
});

describe('DEVICE_GET_REGION_INFO', () => {
  golden(
    'request',
    '20000000 | 00000000 | 07000000 | 00000000 | 0000000000000000 | 0000000000000000',
    { argsz: 32, flags: 0, index: 7, capOffset: 0, size: 0, offset: 0 },
    P.encodeRegionInfoRequest,
    P.decodeRegionInfoRequest,
  );
  const caps: P.RegionCap[] = [
    { id: RegionCapId.SPARSE_MMAP, areas: [{ offset: 0x1000, size: 0x3000 }] },
    { id: RegionCapId.TYPE, type: 3, subtype: 1 },
  ];
  const desc = { flags: 7, index: 0, size: 0x4000, offset: 0 };
  const fullHex =
    '50000000 | 0f000000 | 00000000 | 20000000 | 0040000000000000 | 0000000000000000' +
    '| 0100 0100 40000000 | 01000000 00000000 | 0010000000000000 0030000000000000' +
    '| 0200 0100 00000000 | 03000000 01000000';
  test('reply without caps', () => {
    const bytes = '20000000 | 03000000 | 07000000 | 00000000 | 0001000000000000 | 0000000000070000';
    assert.equal(P.encodeRegionInfoReply({ flags: 3, index: 7, size: 256, offset: 7 * 2 ** 40 }).toString('hex'), hex(bytes).toString('hex'));
    assert.deepEqual(P.decodeRegionInfoReply(hex(bytes)), {
      info: { argsz: 32, flags: 3, index: 7, capOffset: 0, size: 256, offset: 7 * 2 ** 40 },
      caps: [],
    });
  });
  test('reply with sparse mmap and type caps', () => {
    assert.equal(P.encodeRegionInfoReply(desc, caps, 80).toString('hex'), hex(fullHex).toString('hex'));
    assert.deepEqual(P.decodeRegionInfoReply(hex(fullHex)), {
      info: { argsz: 80, flags: 0xf, index: 0, capOffset: 32, size: 0x4000, offset: 0 },
      caps,
    });
  });
  test('reply truncated to the client argsz', () => {
    const bytes = '50000000 | 07000000 | 00000000 | 00000000 | 0040000000000000 | 0000000000000000';
    assert.equal(P.encodeRegionInfoReply(desc, caps, 32).toString('hex'), hex(bytes).toString('hex'));
    assert.deepEqual(P.decodeRegionInfoReply(hex(bytes)), {
      info: { argsz: 80, flags: 7, index: 0, capOffset: 0, size: 0x4000, offset: 0 },
      caps: [],
    });
  });
  decodes('unknown capability skipped', '30000000 | 08000000 | 00000000 | 20000000 | 0000000000000000 | 0000000000000000' +
    '| 0300 0100 28000000 | 0200 0100 00000000 | 05000000 06000000',
    { info: { argsz: 48, flags: 8, index: 0, capOffset: 32, size: 0, offset: 0 }, caps: [{ id: RegionCapId.TYPE, type: 5, subtype: 6 }] },
    P.decodeRegionInfoReply);
});

describe('DEVICE_GET_REGION_IO_FDS', () => {
  golden('request', '38000000 | 00000000 | 02000000 | 00000000', { argsz: 56, flags: 0, index: 2, count: 0 },
    P.encodeRegionIoFdsRequest, P.decodeRegionIoFdsRequest);
  const sub: P.SubRegionIoFd = { offset: 0x40, size: 4, fdIndex: 0, type: 0, flags: 1, datamatch: 0xfedcba9876543210n };
  const fullHex = '38000000 | 00000000 | 02000000 | 01000000' +
    '| 4000000000000000 | 0400000000000000 | 00000000 | 00000000 | 01000000 | 00000000 | 1032547698badcfe';
  test('reply with one ioeventfd', () => {
    assert.equal(P.encodeRegionIoFdsReply(2, [sub], 56).toString('hex'), hex(fullHex).toString('hex'));
    assert.deepEqual(P.decodeRegionIoFdsReply(hex(fullHex)), { argsz: 56, flags: 0, index: 2, count: 1, subRegions: [sub] });
  });
  test('reply truncated to the client argsz', () => {
    const bytes = '38000000 | 00000000 | 02000000 | 01000000';
    assert.equal(P.encodeRegionIoFdsReply(2, [sub], 16).toString('hex'), hex(bytes).toString('hex'));
    assert.deepEqual(P.decodeRegionIoFdsReply(hex(bytes)), { argsz: 56, flags: 0, index: 2, count: 1, subRegions: [] });
  });
});

describe('DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS', () => {
  golden('IRQ_INFO request', '10000000 | 00000000 | 02000000 | 00000000', { argsz: 16, flags: 0, index: 2, count: 0 },
    P.encodeIrqInfoRequest, P.decodeIrqInfoRequest);
  golden('IRQ_INFO reply', '10000000 | 09000000 | 02000000 | 10000000', { argsz: 16, flags: 9, index: 2, count: 16 },
    P.encodeIrqInfoReply, P.decodeIrqInfoReply);
  golden('SET_IRQS eventfd trigger', '14000000 | 24000000 | 02000000 | 00000000 | 03000000',
    { argsz: 20, flags: 0x24, index: 2, start: 0, count: 3 }, P.encodeSetIrqsRequest, P.decodeSetIrqsRequest);
  golden('SET_IRQS bool unmask', '17000000 | 12000000 | 00000000 | 00000000 | 03000000 | 01 00 01',
    { argsz: 23, flags: 0x12, index: 0, start: 0, count: 3, data: hex('010001') }, P.encodeSetIrqsRequest, P.decodeSetIrqsRequest);
  golden('SET_IRQS none, disable all', '14000000 | 21000000 | 01000000 | 00000000 | 00000000',
    { argsz: 20, flags: 0x21, index: 1, start: 0, count: 0 }, P.encodeSetIrqsRequest, P.decodeSetIrqsRequest);
  empty('SET_IRQS reply', P.encodeSetIrqsReply, P.decodeSetIrqsReply);
});

describe('REGION_READ / REGION_WRITE', () => {
  golden('READ request', '1000000000000000 | 00000000 | 04000000', { offset: 0x10, region: 0, count: 4 },
    (m) => P.encodeRegionReadRequest(m), P.decodeRegionReadRequest);
  const readReply = { offset: 0x10, region: 0, count: 4, data: hex('78563412') };
  golden('READ reply', '1000000000000000 | 00000000 | 04000000 | 78563412', readReply,
    (m) => P.encodeRegionReadReply(m), P.decodeRegionReadReply);
  test('READ reply as a whole message', () => {
    const msg = P.encodeRegionReadReply(readReply, { msgId: 5, command: Command.REGION_READ, flags: HeaderFlag.REPLY });
    assert.equal(msg.toString('hex'), hex('0500 0900 24000000 01000000 00000000 | 1000000000000000 00000000 04000000 78563412').toString('hex'));
  });
  golden('WRITE request', '0400000000000000 | 07000000 | 02000000 | 0607', { offset: 4, region: 7, count: 2, data: hex('0607') },
    (m) => P.encodeRegionWriteRequest(m), P.decodeRegionWriteRequest);
  golden('WRITE reply', '0400000000000000 | 07000000 | 02000000', { offset: 4, region: 7, count: 2 },
    (m) => P.encodeRegionWriteReply(m), P.decodeRegionWriteReply);
  test('WRITE request as a no-reply message', () => {
    const msg = P.encodeRegionWriteRequest({ offset: 4, region: 7, count: 1, data: hex('aa') },
      { msgId: 0x102, command: Command.REGION_WRITE, flags: HeaderFlag.NO_REPLY });
    assert.equal(msg.toString('hex'), hex('0201 0a00 21000000 10000000 00000000 | 0400000000000000 07000000 01000000 aa').toString('hex'));
  });
});

describe('DMA_READ / DMA_WRITE (spec layout, as QEMU 11.1 sends it: u64 count, data at 16)', () => {
  golden('DMA_READ request', '00000c0000000000 | 0800000000000000', { address: 0xc0000, count: 8 },
    (m) => P.encodeDmaReadRequest(m), P.decodeDmaReadRequest);
  golden('DMA_READ reply', '00000c0000000000 | 0800000000000000 | 0102030405060708',
    { address: 0xc0000, count: 8, data: hex('0102030405060708') }, (m) => P.encodeDmaReadReply(m), P.decodeDmaReadReply);
  golden('DMA_WRITE request', '0010000000000000 | 0300000000000000 | aabbcc', { address: 0x1000, count: 3, data: hex('aabbcc') },
    (m) => P.encodeDmaWriteRequest(m), P.decodeDmaWriteRequest);
  golden('DMA_WRITE reply', '0010000000000000 | 0300000000000000', { address: 0x1000, count: 3 },
    (m) => P.encodeDmaWriteReply(m), (p) => P.decodeDmaWriteReply(p) as P.DmaAccess);
  decodes('DMA_WRITE reply, QEMU empty form', '', null, P.decodeDmaWriteReply);
  test('DMA_READ request as a whole message', () => {
    const msg = P.encodeDmaReadRequest({ address: 0x2000, count: 1 }, { msgId: 3, command: Command.DMA_READ });
    assert.equal(msg.toString('hex'), hex('0300 0b00 20000000 00000000 00000000 | 0020000000000000 0100000000000000').toString('hex'));
  });
});

describe('DEVICE_RESET', () => {
  empty('request', P.encodeDeviceResetRequest, P.decodeDeviceResetRequest);
  empty('reply', P.encodeDeviceResetReply, P.decodeDeviceResetReply);
});

describe('REGION_WRITE_MULTI', () => {
  const m = {
    writes: [
      { offset: 0x1000, region: 0, count: 4, data: hex('01020304') },
      { offset: 8, region: 2, count: 1, data: hex('ff') },
    ],
  };
  const bytes = '0200000000000000' +
    '| 0010000000000000 | 00000000 | 04000000 | 0102030400000000' +
    '| 0800000000000000 | 02000000 | 01000000 | ff00000000000000';
  golden('request with wr_cnt entries only', bytes, m, P.encodeRegionWriteMultiRequest, P.decodeRegionWriteMultiRequest);
  decodes('request with the full 200-slot array', Buffer.concat([hex(bytes), Buffer.alloc(198 * 24)]), m, P.decodeRegionWriteMultiRequest);
  golden('reply', '0200000000000000', { wrCnt: 2 }, P.encodeRegionWriteMultiReply, P.decodeRegionWriteMultiReply);
});

describe('DEVICE_FEATURE', () => {
  const { GET, SET, PROBE } = DeviceFeatureFlag;
  const cases: Array<[string, string, DeviceFeature, 'request' | 'reply']> = [
    ['GET MIGRATION request', '10000000 | 01000100', { argsz: 16, flags: GET | FeatureId.MIGRATION, data: { kind: 'none' } }, 'request'],
    ['GET MIGRATION reply', '10000000 | 01000100 | 0500000000000000',
      { argsz: 16, flags: GET | FeatureId.MIGRATION, data: { kind: 'migration', flags: 5 } }, 'reply'],
    ['SET MIG_DEVICE_STATE request', '10000000 | 02000200 | 01000000 | 00000000',
      { argsz: 16, flags: SET | FeatureId.MIG_DEVICE_STATE, data: { kind: 'mig-state', deviceState: MigrationState.STOP, dataFd: 0 } }, 'request'],
    ['GET MIG_DEVICE_STATE reply', '10000000 | 02000100 | 02000000 | ffffffff',
      { argsz: 16, flags: GET | FeatureId.MIG_DEVICE_STATE, data: { kind: 'mig-state', deviceState: MigrationState.RUNNING, dataFd: 0xffffffff } }, 'reply'],
    ['PROBE DMA_LOGGING_START request', '08000000 | 06000400', { argsz: 8, flags: PROBE | FeatureId.DMA_LOGGING_START, data: { kind: 'none' } }, 'request'],
    ['SET DMA_LOGGING_START request', '28000000 | 06000200 | 0010000000000000 | 01000000 | 00000000 | 0000000000000000 | 0000008000000000',
      { argsz: 40, flags: SET | FeatureId.DMA_LOGGING_START,
        data: { kind: 'dma-logging-start', pageSize: 4096, ranges: [{ iova: 0, length: 0x80000000 }] } }, 'request'],
    ['SET DMA_LOGGING_STOP request', '08000000 | 07000200', { argsz: 8, flags: SET | FeatureId.DMA_LOGGING_STOP, data: { kind: 'none' } }, 'request'],
    ['GET DMA_LOGGING_REPORT request', '28000000 | 08000100 | 0000100000000000 | 0000040000000000 | 0010000000000000',
      { argsz: 40, flags: GET | FeatureId.DMA_LOGGING_REPORT,
        data: { kind: 'dma-logging-report', iova: 0x100000, length: 0x40000, pageSize: 4096 } }, 'request'],
    ['GET DMA_LOGGING_REPORT reply', '28000000 | 08000100 | 0000100000000000 | 0000040000000000 | 0010000000000000 | 0300000000000000',
      { argsz: 40, flags: GET | FeatureId.DMA_LOGGING_REPORT,
        data: { kind: 'dma-logging-bitmap', iova: 0x100000, length: 0x40000, pageSize: 4096, bitmap: hex('0300000000000000') } }, 'reply'],
    ['unknown feature kept raw', '0c000000 | 09000100 | deadbeef', { argsz: 12, flags: GET | 9, data: { kind: 'raw', bytes: hex('deadbeef') } }, 'request'],
  ];
  for (const [name, bytes, m, dir] of cases) {
    if (dir === 'request') golden(name, bytes, m, P.encodeDeviceFeatureRequest, P.decodeDeviceFeatureRequest);
    else golden(name, bytes, m, P.encodeDeviceFeatureReply, P.decodeDeviceFeatureReply);
  }
  test('featureId', () => assert.equal(P.featureId(GET | FeatureId.DMA_LOGGING_REPORT), 8));
});

describe('MIG_DATA_READ / MIG_DATA_WRITE', () => {
  golden('READ request', '08010000 | 00010000', { argsz: 0x108, size: 256 }, P.encodeMigDataReadRequest, P.decodeMigDataReadRequest);
  golden('READ reply', '0b000000 | 03000000 | 010203', { argsz: 11, size: 3, data: hex('010203') },
    P.encodeMigDataReadReply, P.decodeMigDataReadReply);
  golden('WRITE request', '0a000000 | 02000000 | abcd', { argsz: 10, size: 2, data: hex('abcd') },
    P.encodeMigDataWriteRequest, P.decodeMigDataWriteRequest);
  empty('WRITE reply', P.encodeMigDataWriteReply, P.decodeMigDataWriteReply);
});

describe('decoder tables', () => {
  test('every command has a request and a reply decoder', () => {
    const commands = Object.values(Command).filter((v): v is Command => typeof v === 'number');
    assert.equal(commands.length, 17);
    for (const c of commands) {
      assert.equal(typeof P.requestDecoders[c], 'function');
      assert.equal(typeof P.replyDecoders[c], 'function');
      assert.equal(P.isKnownCommand(c), true);
    }
    assert.equal(P.isKnownCommand(14), false);
    assert.deepEqual(P.requestDecoders[Command.REGION_READ](hex('1000000000000000 00000000 04000000')), { offset: 16, region: 0, count: 4 });
  });
});
