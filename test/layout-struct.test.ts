/**
 * The struct field lists the protocol codecs and the devices' layouts are
 * built from: offsets follow the order, reserved bytes are zeroed, bounds
 * and u64 range are checked, and bad input is refused the declarer's way
 * (EINVAL for the protocol's messages, RangeError by default).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno, ProtocolError } from '../src/protocol/index.js';
import { defineStruct } from '../src/layout/struct.js';
import { defineMessage } from '../src/protocol/wire.js';

interface Sample {
  a: number;
  b: number;
  c: number;
  d: number;
  e: bigint;
}

const SAMPLE = defineMessage<Sample>('sample', { a: 'u8', b: 'u16', _gap: 1, c: 'u32', d: 'u64', e: 'u64big' });
const value: Sample = { a: 0x11, b: 0x2233, c: 0x44556677, d: 2 ** 53 - 1, e: 0xfedcba9876543210n };
const bytes = '11 3322 00 77665544 ffffffffffff1f00 1032547698badcfe'.replace(/ /g, '');

const isEinval = (e: unknown): boolean => e instanceof ProtocolError && e.errno === Errno.EINVAL;

describe('defineStruct', () => {
  test('size counts every field and reserved byte', () => {
    assert.equal(SAMPLE.size, 24);
  });

  test('write puts fields at offsets that follow the order, zeroes reserved bytes, touches nothing else', () => {
    const b = Buffer.alloc(SAMPLE.size + 2, 0xff);
    SAMPLE.write(b, 1, value);
    assert.equal(b.toString('hex'), `ff${bytes}ff`);
  });

  test('read at an offset gives the fields back, in wire order', () => {
    const b = Buffer.concat([Buffer.of(0xaa), Buffer.from(bytes, 'hex')]);
    const m = SAMPLE.read(b, 1);
    assert.deepEqual(m, value);
    assert.deepEqual(Object.keys(m), ['a', 'b', 'c', 'd', 'e']);
  });

  test('encode allocates exactly the struct', () => {
    assert.equal(SAMPLE.encode(value).toString('hex'), bytes);
  });

  test('decode: EINVAL naming the message when the struct does not fit at the offset', () => {
    const b = Buffer.from(bytes, 'hex');
    assert.deepEqual(SAMPLE.decode(b, 'sample'), value);
    assert.throws(() => SAMPLE.decode(b, 'sample', 1), (e: unknown) => {
      return isEinval(e) && (e as Error).message === 'EINVAL: sample: need 25 bytes, have 24';
    });
  });

  test('a u64 above 2^53-1 is EINVAL to read and RangeError to write', () => {
    const b = Buffer.from(bytes, 'hex');
    b[14] = 0x20; // d's high word becomes 0x0020ffff
    assert.throws(() => SAMPLE.read(b, 0), isEinval);
    assert.throws(() => SAMPLE.encode({ ...value, d: 2 ** 53 }), RangeError);
    assert.throws(() => SAMPLE.encode({ ...value, c: 2 ** 32 }), RangeError);
  });

  test('arrays lay structs end to end', () => {
    const PAIR = defineStruct<{ x: number; y: number }>('pair', { x: 'u16', y: 'u32' });
    const list = [
      { x: 1, y: 2 },
      { x: 3, y: 4 },
    ];
    const b = Buffer.alloc(1 + 2 * PAIR.size);
    PAIR.writeArray(b, 1, list);
    assert.equal(b.toString('hex'), '00' + '0100 02000000 0300 04000000'.replace(/ /g, ''));
    assert.deepEqual(PAIR.readArray(b, 1, 2), list);
  });

  test('withData: data follows the fixed part, read returns the slice it is given', () => {
    const HEAD = defineStruct<{ n: number }>('head', { n: 'u32' }).withData();
    const m = { n: 3, data: Uint8Array.of(7, 8, 9) };
    const b = HEAD.encode(m);
    assert.equal(b.toString('hex'), '03000000070809');
    const decoded = HEAD.read(b, 0, b.subarray(HEAD.size));
    assert.deepEqual({ n: decoded.n, data: [...decoded.data] }, { n: 3, data: [7, 8, 9] });
    assert.equal(decoded.data.buffer, b.buffer); // zero-copy
  });

  test('a field name that is not an identifier is refused', () => {
    assert.throws(() => defineStruct<{ 'a-b': number }>('bad', { 'a-b': 'u32' }), TypeError);
  });

  test('offsets and fields: where each field and reserved run is, for hot paths that read one field', () => {
    assert.deepEqual(SAMPLE.offsets, { a: 0, b: 1, c: 4, d: 8, e: 16 });
    assert.deepEqual(
      SAMPLE.fields.map((f) => [f.name, f.type, f.offset, f.size]),
      [
        ['a', 'u8', 0, 1],
        ['b', 'u16', 1, 2],
        ['_gap', 'reserved', 3, 1],
        ['c', 'u32', 4, 4],
        ['d', 'u64', 8, 8],
        ['e', 'u64big', 16, 8],
      ],
    );
  });

  test('without an invalid of its own, a struct refuses with RangeError naming what is short', () => {
    const PLAIN = defineStruct<{ x: number; y: number }>('plain', { x: 'u32', y: 'u64' });
    assert.throws(() => PLAIN.decode(Buffer.alloc(11), 'a plain'), { name: 'RangeError', message: 'a plain: need 12 bytes, have 11' });
    assert.throws(() => PLAIN.read(Buffer.from('00000000ffffffffffffffff', 'hex'), 0), { name: 'RangeError', message: 'u64 at 4 exceeds 2^53-1' });
  });

  test('bytes fields: read as a copy, written zero-padded, refused when too long', () => {
    const NAMED = defineStruct<{ id: number; name: Uint8Array }>('named', { id: 'u8', name: { bytes: 4 }, _pad: 1 });
    assert.equal(NAMED.size, 6);
    const b = Buffer.alloc(NAMED.size, 0xee);
    NAMED.write(b, 0, { id: 9, name: Buffer.from('ab') });
    assert.equal(b.toString('hex'), '09' + '61620000' + '00');
    const read = NAMED.read(b, 0);
    assert.deepEqual([...read.name], [0x61, 0x62, 0, 0]);
    b[1] = 0x7a;
    assert.equal(read.name[0], 0x61, 'the read bytes are a copy');
    assert.throws(() => NAMED.encode({ id: 1, name: Buffer.from('abcde') }), { name: 'RangeError', message: 'named.name: 5 bytes do not fit in 4' });
  });

  test('a layout entry that is neither a type nor a reserved run is refused', () => {
    assert.throws(() => defineStruct<{ a: Uint8Array }>('zero', { a: { bytes: 0 } }), TypeError);
    assert.throws(() => defineStruct<{ a: number }>('nope', { a: 'u24' as 'u32' }), TypeError);
    assert.throws(() => defineStruct<{ a: number }>('count', { a: 4 as unknown as 'u32' }), TypeError);
  });
});
