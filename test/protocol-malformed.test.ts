/**
 * Every malformed form is rejected with a ProtocolError carrying the right
 * errno (and nothing else is thrown).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as P from '../src/protocol/index.js';
import { Errno, ProtocolError } from '../src/protocol/index.js';
import { hex } from './helpers/bytes.js';

const ascii = (s: string): string => Buffer.from(s, 'utf8').toString('hex');

/** Each case: name, payload, expected errno. */
type Case = [string, string | Buffer, number];

function rejects(decoder: (p: Buffer) => unknown, cases: Case[]): void {
  for (const [name, bytes, errno] of cases) {
    test(name, () => {
      const payload = typeof bytes === 'string' ? hex(bytes) : bytes;
      assert.throws(
        () => decoder(payload),
        (e: unknown) => e instanceof ProtocolError && e.errno === errno,
      );
    });
  }
}

const { EINVAL, E2BIG } = Errno;
const version = (json: string | Buffer): Buffer =>
  Buffer.concat([hex('00000000'), typeof json === 'string' ? Buffer.from(json, 'utf8') : json]);

describe('header', () => {
  rejects((b) => P.decodeHeader(b), [
    ['truncated', '0100 0100 10000000 00000000 000000', EINVAL],
    ['size below 16', '0100 0100 0f000000 00000000 00000000', EINVAL],
    ['unknown type', '0100 0100 10000000 02000000 00000000', EINVAL],
  ]);
  rejects((b) => P.decodeHeader(b, 4), [['offset past the data', '0100 0100 10000000 00000000 00000000', EINVAL]]);
  rejects((b) => P.decodeHeader(b, -1), [['negative offset', '0100 0100 10000000 00000000 00000000 00', EINVAL]]);
  rejects((b) => P.decodeHeader(b, 0.5), [['fractional offset', '0100 0100 10000000 00000000 00000000 00', EINVAL]]);
});

describe('VERSION', () => {
  rejects(P.decodeVersion, [
    ['truncated', '000000', EINVAL],
    ['missing NUL', version('{"capabilities":{}}'), EINVAL],
    ['NUL inside', version('{"capabilities":{}}\0\0'), EINVAL],
    ['only a NUL', version('\0'), EINVAL],
    ['invalid JSON', version('{"capabilities":\0'), EINVAL],
    ['invalid UTF-8', version(hex(`7b22${'ff'}223a317d 00`)), EINVAL],
    ['top level not an object', version('[1]\0'), EINVAL],
    ['top level null', version('null\0'), EINVAL],
    ['capabilities not an object', version('{"capabilities":3}\0'), EINVAL],
    ['capabilities an array', version('{"capabilities":[]}\0'), EINVAL],
    ['max_msg_fds a string', version('{"capabilities":{"max_msg_fds":"8"}}\0'), EINVAL],
    ['max_data_xfer_size negative', version('{"capabilities":{"max_data_xfer_size":-1}}\0'), EINVAL],
    ['max_dma_maps fractional', version('{"capabilities":{"max_dma_maps":1.5}}\0'), EINVAL],
    ['max_msg_fds above 2^53', version('{"capabilities":{"max_msg_fds":9007199254740993}}\0'), EINVAL],
    ['pgsizes a string', version('{"capabilities":{"pgsizes":"4096"}}\0'), EINVAL],
    ['write_multiple a number', version('{"capabilities":{"write_multiple":1}}\0'), EINVAL],
    ['twin_socket not an object', version('{"capabilities":{"twin_socket":true}}\0'), EINVAL],
    ['twin_socket.supported not a boolean', version('{"capabilities":{"twin_socket":{"supported":"yes"}}}\0'), EINVAL],
    ['twin_socket.fd_index negative', version('{"capabilities":{"twin_socket":{"fd_index":-1}}}\0'), EINVAL],
    ['migration not an object', version('{"capabilities":{"migration":4096}}\0'), EINVAL],
    ['migration.pgsize a string', version('{"capabilities":{"migration":{"pgsize":"4k"}}}\0'), EINVAL],
    ['JSON over 64 KiB', version(`{"capabilities":{},"pad":"${'x'.repeat(65536)}"}\0`), E2BIG],
  ]);
  test('JSON of exactly 64 KiB is accepted', () => {
    const head = '{"capabilities":{},"pad":"';
    const json = head + 'x'.repeat(65536 - head.length - 2) + '"}';
    assert.equal(json.length, 65536);
    assert.deepEqual(P.decodeVersion(version(json + '\0')).capabilities, {});
  });
  test('error message names the errno', () => {
    assert.throws(() => P.decodeVersion(hex('00')), /^ProtocolError: EINVAL: VERSION/);
    assert.match(String(new ProtocolError(12345, 'x')), /errno 12345: x/);
  });
  test(`${ascii('x')} helper sanity`, () => assert.equal(ascii('x'), '78'));
});

describe('DMA_MAP / DMA_UNMAP', () => {
  const map = (argsz: string, flags: string, addrHi = '00000000'): string =>
    `${argsz} ${flags} 0000000000000000 00100000${addrHi} 0010000000000000`;
  rejects(P.decodeDmaMapRequest, [
    ['truncated', map('20000000', '03000000').slice(0, -2), EINVAL],
    ['argsz below 32', map('1f000000', '03000000'), EINVAL],
    ['unknown flag', map('20000000', '04000000'), EINVAL],
    ['address above 2^53', map('20000000', '03000000', '00002000'), EINVAL],
  ]);
  rejects(P.decodeDmaMapReply, [['reply with payload', '00', EINVAL]]);
  rejects(P.decodeDmaUnmapRequest, [
    ['truncated', '18000000 00000000 0000000000000000 00000000000000', EINVAL],
    ['argsz below 24', '17000000 00000000 0000000000000000 0000000000000000', EINVAL],
    ['dirty bitmap flag (removed)', '18000000 01000000 0000000000000000 0000000000000000', EINVAL],
    ['unknown flag', '18000000 04000000 0000000000000000 0000000000000000', EINVAL],
    ['size above 2^53', '18000000 00000000 0000000000000000 00000000ffffffff', EINVAL],
  ]);
  rejects(P.decodeDmaUnmapReply, [['reply truncated', '18000000 00000000 00', EINVAL]]);
});

describe('DEVICE_GET_INFO', () => {
  rejects(P.decodeDeviceInfoRequest, [
    ['truncated', '100000', EINVAL],
    ['argsz below 16', '0f000000', EINVAL],
  ]);
  rejects(P.decodeDeviceInfoReply, [['reply truncated', '10000000 03000000 09000000 050000', EINVAL]]);
});

describe('DEVICE_GET_REGION_INFO', () => {
  const info = (argsz: string, flags: string, capOffset: string): string =>
    `${argsz} ${flags} 00000000 ${capOffset} 0000000000000000 0000000000000000`;
  rejects(P.decodeRegionInfoRequest, [
    ['truncated', info('20000000', '00000000', '00000000').slice(0, -2), EINVAL],
    ['argsz below 32', info('1f000000', '00000000', '00000000'), EINVAL],
  ]);
  rejects(P.decodeRegionInfoReply, [
    ['truncated', info('20000000', '00000000', '00000000').slice(0, -2), EINVAL],
    ['argsz below 32', info('10000000', '00000000', '00000000'), EINVAL],
    ['size above 2^53', '20000000 00000000 00000000 00000000 00000000ffffffff 0000000000000000', EINVAL],
    ['cap offset past the payload', info('20000000', '08000000', '20000000'), EINVAL],
    ['cap offset inside the struct', info('30000000', '08000000', '08000000') + '0200 0100 00000000 00000000 00000000', EINVAL],
    ['cap header truncated', info('28000000', '08000000', '20000000') + '0200 0100 000000', EINVAL],
    ['type cap truncated', info('30000000', '08000000', '20000000') + '0200 0100 00000000 00000000', EINVAL],
    ['sparse areas overrun', info('40000000', '08000000', '20000000') + '0100 0100 00000000 02000000 00000000 0000000000000000 0010000000000000', EINVAL],
    ['sparse area size above 2^53', info('40000000', '08000000', '20000000') + '0100 0100 00000000 01000000 00000000 0000000000000000 00000000ffffffff', EINVAL],
    ['chain loops onto itself', info('30000000', '08000000', '20000000') + '0200 0100 20000000 00000000 00000000', EINVAL],
    ['chain points back into the previous cap', info('40000000', '08000000', '20000000') +
      '0200 0100 28000000 00000000 00000000 0200 0100 00000000 00000000 00000000', EINVAL],
  ]);
});

describe('DEVICE_GET_REGION_IO_FDS', () => {
  rejects(P.decodeRegionIoFdsRequest, [
    ['truncated', '10000000 00000000 02000000 000000', EINVAL],
    ['argsz below 16', '0f000000 00000000 02000000 00000000', EINVAL],
    ['non-zero flags', '10000000 01000000 02000000 00000000', EINVAL],
  ]);
  const sub = (type: string): string => `4000000000000000 0400000000000000 00000000 ${type} 01000000 00000000 0000000000000000`;
  rejects(P.decodeRegionIoFdsReply, [
    ['truncated head', '10000000 00000000 02000000 000000', EINVAL],
    ['count overruns', `60000000 00000000 02000000 02000000 ${sub('00000000')}`, EINVAL],
    ['count overruns with argsz that fits', `10000000 00000000 02000000 01000000`, EINVAL],
    ['huge count', `38000000 00000000 02000000 ffffffff ${sub('00000000')}`, EINVAL],
    ['unknown sub-region type', `38000000 00000000 02000000 01000000 ${sub('07000000')}`, EINVAL],
  ]);
});

describe('DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS', () => {
  rejects(P.decodeIrqInfoRequest, [
    ['truncated', '10000000 00000000 02000000 000000', EINVAL],
    ['argsz below 16', '0c000000 00000000 02000000 00000000', EINVAL],
  ]);
  rejects(P.decodeIrqInfoReply, [['reply truncated', '10000000 00000000', EINVAL]]);
  const set = (argsz: string, flags: string, count: string, data = ''): string =>
    `${argsz} ${flags} 02000000 00000000 ${count} ${data}`;
  rejects(P.decodeSetIrqsRequest, [
    ['truncated', '14000000 24000000 02000000 00000000 030000', EINVAL],
    ['argsz below 20', set('13000000', '24000000', '01000000'), EINVAL],
    ['no flags', set('14000000', '00000000', '01000000'), EINVAL],
    ['no DATA flag', set('14000000', '20000000', '01000000'), EINVAL],
    ['no ACTION flag', set('14000000', '04000000', '01000000'), EINVAL],
    ['two DATA flags', set('14000000', '25000000', '01000000'), EINVAL],
    ['two ACTION flags', set('14000000', '29000000', '01000000'), EINVAL],
    ['unknown flag', set('14000000', '61000000', '01000000'), EINVAL],
    ['bool data short', set('17000000', '22000000', '03000000', '0101'), EINVAL],
    ['bool data long', set('17000000', '22000000', '03000000', '01010101'), EINVAL],
    ['bool count overruns', set('17000000', '22000000', 'ffffffff', '01'), EINVAL],
    ['DATA_NONE with trailing bytes', set('15000000', '21000000', '01000000', '01'), EINVAL],
    ['DATA_EVENTFD with trailing fd numbers', set('18000000', '24000000', '01000000', '05000000'), EINVAL],
  ]);
  rejects(P.decodeSetIrqsReply, [['reply with payload', '00000000', EINVAL]]);
});

describe('REGION_READ / REGION_WRITE', () => {
  const head = (count: string): string => `1000000000000000 00000000 ${count}`;
  rejects(P.decodeRegionReadRequest, [
    ['truncated', head('040000'), EINVAL],
    ['trailing bytes', head('04000000') + '00', EINVAL],
    ['offset above 2^53', '00000000ffffffff 00000000 04000000', EINVAL],
  ]);
  const withData: Case[] = [
    ['truncated head', head('0400'), EINVAL],
    ['data short', head('04000000') + '010203', EINVAL],
    ['data long', head('04000000') + '0102030405', EINVAL],
    ['count overruns', head('ffffffff') + '01', EINVAL],
  ];
  rejects(P.decodeRegionReadReply, withData);
  rejects(P.decodeRegionWriteRequest, withData);
  rejects(P.decodeRegionWriteReply, [
    ['truncated', head('040000'), EINVAL],
    ['trailing bytes', head('04000000') + '00', EINVAL],
  ]);
});

describe('DMA_READ / DMA_WRITE', () => {
  rejects(P.decodeDmaReadRequest, [
    ['truncated (u32 count)', '00000c0000000000 08000000', EINVAL],
    ['count above 2^53', '00000c0000000000 0800000000002000', EINVAL],
    ['address above 2^53', '00000c0000002000 0800000000000000', EINVAL],
    ['bytes after the request', '00000c0000000000 0800000000000000 00', EINVAL],
  ]);
  const withData: Case[] = [
    ['truncated head', '00000c0000000000 08000000', EINVAL],
    ['data overruns', '00000c0000000000 0800000000000000 01020304', EINVAL],
    ['count above 2^53', '00000c0000000000 ffffffffffffffff 01', EINVAL],
    ['bytes after data', '00000c0000000000 0100000000000000 aa 00', EINVAL],
    ['old QEMU layout (u32 count, data at 12)', '00000c0000000000 04000000 01020304', EINVAL],
  ];
  rejects(P.decodeDmaReadReply, withData);
  rejects(P.decodeDmaWriteRequest, withData);
  rejects(P.decodeDmaWriteReply, [['reply truncated', '0010000000', EINVAL]]);
});

describe('DEVICE_RESET', () => {
  rejects(P.decodeDeviceResetRequest, [['request with payload', '00', EINVAL]]);
  rejects(P.decodeDeviceResetReply, [['reply with payload', '00', EINVAL]]);
});

describe('REGION_WRITE_MULTI', () => {
  const entry = (count: string): string => `0010000000000000 00000000 ${count} 0102030400000000`;
  rejects(P.decodeRegionWriteMultiRequest, [
    ['truncated wr_cnt', '01000000000000', EINVAL],
    ['wr_cnt overruns', `0200000000000000 ${entry('04000000')}`, EINVAL],
    ['entry truncated', `0100000000000000 ${entry('04000000').slice(0, -2)}`, EINVAL],
    ['huge wr_cnt', `0000000001000000 ${entry('04000000')}`, EINVAL],
    ['wr_cnt above 2^53', `ffffffffffffffff ${entry('04000000')}`, EINVAL],
    ['entry count 0', `0100000000000000 ${entry('00000000')}`, EINVAL],
    ['entry count 9', `0100000000000000 ${entry('09000000')}`, EINVAL],
  ]);
  rejects(P.decodeRegionWriteMultiReply, [['reply truncated', '02000000000000', EINVAL]]);
});

describe('DEVICE_FEATURE', () => {
  rejects(P.decodeDeviceFeatureRequest, [
    ['truncated', '08000000 010001', EINVAL],
    ['argsz below 8', '07000000 01000100', EINVAL],
    ['unknown flag bit', '08000000 01000800', EINVAL],
    ['no operation', '08000000 01000000', EINVAL],
    ['GET and SET without PROBE', '08000000 01000300', EINVAL],
    ['MIG_DEVICE_STATE SET truncated', '10000000 02000200 01000000', EINVAL],
    ['MIG_DEVICE_STATE unknown state', '10000000 02000200 08000000 00000000', EINVAL],
    ['LOGGING_START truncated', '10000000 06000200 0010000000000000', EINVAL],
    ['LOGGING_START ranges overrun', '28000000 06000200 0010000000000000 02000000 00000000 0000000000000000 0010000000000000', EINVAL],
    ['LOGGING_START page size above 2^53', '18000000 06000200 00000000ffffffff 00000000 00000000', EINVAL],
    ['LOGGING_REPORT truncated', '20000000 08000100 0000100000000000 0000040000000000', EINVAL],
  ]);
  rejects(P.decodeDeviceFeatureReply, [
    ['truncated', '0800', EINVAL],
    ['GET MIGRATION without data', '08000000 01000100', EINVAL],
    ['GET MIG_DEVICE_STATE without data', '08000000 02000100', EINVAL],
    ['SET LOGGING_START without data', '08000000 06000200', EINVAL],
    ['LOGGING_REPORT reply truncated', '20000000 08000100 0000100000000000 0000040000000000', EINVAL],
  ]);
  test('GET|SET|PROBE is accepted', () => {
    assert.deepEqual(P.decodeDeviceFeatureRequest(hex('08000000 06000700')), {
      argsz: 8, flags: 0x70006, data: { kind: 'none' },
    });
  });
});

describe('MIG_DATA_READ / MIG_DATA_WRITE', () => {
  rejects(P.decodeMigDataReadRequest, [
    ['truncated', '08010000 000100', EINVAL],
    ['trailing bytes', '08010000 00010000 00', EINVAL],
    ['argsz below 8', '07000000 00010000', EINVAL],
  ]);
  const withData: Case[] = [
    ['truncated head', '0b000000 0300', EINVAL],
    ['argsz below 8', '07000000 03000000 010203', EINVAL],
    ['data short', '0b000000 03000000 0102', EINVAL],
    ['data long', '0b000000 03000000 01020304', EINVAL],
    ['size overruns', '0b000000 ffffffff 010203', EINVAL],
  ];
  rejects(P.decodeMigDataReadReply, withData.filter(([name]) => name !== 'data long'));
  rejects(P.decodeMigDataWriteRequest, withData);
  test('a MIG_DATA_READ reply may be zero-padded past its data (libvfio-user pads)', () => {
    const m = P.decodeMigDataReadReply(hex('0b000000 03000000 010203 0000000000'));
    assert.deepEqual([m.argsz, m.size, [...m.data]], [11, 3, [1, 2, 3]]);
    assert.deepEqual(P.encodeMigDataReadReply({ argsz: 11, size: 3, data: Buffer.from([1, 2, 3]) }, 8), hex('0b000000 03000000 010203 0000000000'));
  });
  rejects(P.decodeMigDataWriteReply, [['reply with payload', '00', EINVAL]]);
});

describe('encoders refuse what the wire cannot carry', () => {
  test('u64 above 2^53', () => {
    assert.throws(() => P.encodeDmaMapRequest({ argsz: 32, flags: 0, offset: 0, address: 2 ** 53, size: 1 }), RangeError);
  });
  test('data length differs from count', () => {
    assert.throws(() => P.encodeRegionWriteRequest({ offset: 0, region: 0, count: 2, data: Buffer.alloc(1) }), RangeError);
    assert.throws(() => P.encodeDmaReadReply({ address: 0, count: 2, data: Buffer.alloc(3) }), RangeError);
    assert.throws(() => P.encodeMigDataWriteRequest({ argsz: 8, size: 1, data: Buffer.alloc(0) }), RangeError);
  });
  test('write-multi entry count outside 1..8', () => {
    const w = { offset: 0, region: 0, count: 9, data: Buffer.alloc(9) };
    assert.throws(() => P.encodeRegionWriteMultiRequest({ writes: [w] }), RangeError);
  });
});
