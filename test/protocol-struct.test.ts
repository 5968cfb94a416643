/**
 * The struct field lists the codecs are built from: offsets follow the
 * order, reserved bytes are zeroed, bounds and u64 range are checked.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno, ProtocolError } from '../src/protocol/index.js';
import { defineStruct } from '../src/protocol/struct.js';

interface Sample {
  a: number;
  b: number;
  c: number;
  d: number;
  e: bigint;
}

const SAMPLE = defineStruct<Sample>('sample', { a: 'u8', b: 'u16', _gap: 1, c: 'u32', d: 'u64', e: 'u64big' });
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
});
