/**
 * The descriptor-chain walker on its own: the same chains give the same
 * buffers, and the same broken chains the same RingError, whether guest
 * memory has views (the synchronous path) or every read needs a copy (the
 * message path, where the walk stops and resumes with the bytes).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChainWalker, RingError } from '../src/virtio/chain.js';
import { DescFlag } from '../src/virtio/index.js';

const BASE = 0x1000;
const QUEUE = 16;
const TABLE = BASE; // the queue's descriptor table
const FAR = BASE + 0x1000; // indirect tables

interface Desc {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

function guest(): Uint8Array {
  return new Uint8Array(0x4000);
}

function put(mem: Uint8Array, at: number, d: Desc): void {
  const v = new DataView(mem.buffer, at - BASE, 16);
  v.setBigUint64(0, BigInt(d.addr), true);
  v.setUint32(8, d.len >>> 0, true);
  v.setUint16(12, d.flags, true);
  v.setUint16(14, d.next, true);
}

type Outcome = { readable: { addr: number; len: number }[]; writable: { addr: number; len: number }[]; copies: number } | { error: string };

/** Walks from `head` with views of everything, or with none (every read a copy). */
function walk(mem: Uint8Array, head: number, views: boolean, indirect = true): Outcome {
  const inside = (addr: number, length: number): boolean => addr >= BASE && addr + length <= BASE + mem.length;
  const w = new ChainWalker((addr, length, out) => {
    if (!inside(addr, length)) throw new Error(`EFAULT at 0x${addr.toString(16)}`);
    if (!views) return false;
    out.memory = mem;
    out.offset = addr - BASE;
    return true;
  });
  let copies = 0;
  try {
    w.start(head, TABLE, QUEUE, indirect, views ? mem.subarray(0, 16 * QUEUE) : undefined);
    let copy: Uint8Array | undefined;
    while (!w.step(copy)) {
      copies++;
      if (!inside(w.needAt, w.needLength)) throw new Error(`EFAULT at 0x${w.needAt.toString(16)}`);
      copy = mem.slice(w.needAt - BASE, w.needAt - BASE + w.needLength);
    }
    const pairs = (from: number, to: number): { addr: number; len: number }[] => Array.from({ length: to - from }, (_, i) => ({ addr: w.chain[2 * (from + i)], len: w.chain[2 * (from + i) + 1] }));
    const readable = pairs(0, w.readableCount);
    const writable = pairs(w.readableCount, w.chain.length / 2);
    const sum = (l: { len: number }[]): number => l.reduce((n, d) => n + d.len, 0);
    if (sum(readable) !== w.readableLength || sum(writable) !== w.writableLength) throw new Error('area lengths disagree with the buffers');
    return { readable, writable, copies };
  } catch (e) {
    return { error: `${e instanceof RingError ? 'RingError' : 'Error'}: ${(e as Error).message}` };
  }
}

/** Both ways; asserts they agree and returns the outcome with views. */
function both(mem: Uint8Array, head: number, indirect = true): Outcome {
  const viewed = walk(mem, head, true, indirect);
  const copied = walk(mem, head, false, indirect);
  if ('error' in viewed) assert.deepEqual(copied, viewed);
  else {
    assert.ok(!('error' in copied), `copies failed: ${JSON.stringify(copied)}`);
    assert.deepEqual({ ...copied, copies: 0 }, viewed);
    assert.equal(viewed.copies, 0);
    assert.ok(copied.copies > 0, 'the copy walk really asked for copies');
  }
  return viewed;
}

test('a direct chain and an indirect one: the same buffers with views and with copies', () => {
  const mem = guest();
  put(mem, TABLE + 16 * 2, { addr: 0x2000, len: 16, flags: DescFlag.NEXT, next: 7 });
  put(mem, TABLE + 16 * 7, { addr: 0x2100, len: 4096, flags: DescFlag.NEXT | DescFlag.WRITE, next: 3 });
  put(mem, TABLE + 16 * 3, { addr: 0x3100, len: 1, flags: DescFlag.WRITE, next: 0 });
  assert.deepEqual(both(mem, 2), {
    readable: [{ addr: 0x2000, len: 16 }],
    writable: [{ addr: 0x2100, len: 4096 }, { addr: 0x3100, len: 1 }],
    copies: 0,
  });
  put(mem, TABLE + 16 * 5, { addr: FAR, len: 48, flags: DescFlag.INDIRECT, next: 0 });
  put(mem, FAR, { addr: 0x2000, len: 16, flags: DescFlag.NEXT, next: 1 });
  put(mem, FAR + 16, { addr: 0x2200, len: 512, flags: DescFlag.NEXT, next: 2 });
  put(mem, FAR + 32, { addr: 0x3000, len: 1, flags: DescFlag.WRITE, next: 0 });
  assert.deepEqual(both(mem, 5), {
    readable: [{ addr: 0x2000, len: 16 }, { addr: 0x2200, len: 512 }],
    writable: [{ addr: 0x3000, len: 1 }],
    copies: 0,
  });
});

test('broken chains: the same RingError with views and with copies', () => {
  const cases: [string, (mem: Uint8Array) => void, RegExp, boolean?][] = [
    ['a next index outside the queue', (m) => put(m, TABLE, { addr: 0x2000, len: 1, flags: DescFlag.NEXT, next: QUEUE }), /outside a table of 16/],
    ['a loop', (m) => {
      put(m, TABLE, { addr: 0x2000, len: 1, flags: DescFlag.NEXT, next: 1 });
      put(m, TABLE + 16, { addr: 0x2000, len: 1, flags: DescFlag.NEXT, next: 0 });
    }, /loops/],
    ['readable after writable', (m) => {
      put(m, TABLE, { addr: 0x2000, len: 1, flags: DescFlag.NEXT | DescFlag.WRITE, next: 1 });
      put(m, TABLE + 16, { addr: 0x2000, len: 1, flags: 0, next: 0 });
    }, /device-readable descriptor after a device-writable one/],
    ['indirect without INDIRECT_DESC', (m) => put(m, TABLE, { addr: FAR, len: 16, flags: DescFlag.INDIRECT, next: 0 }), /without INDIRECT_DESC/, false],
    ['indirect with NEXT', (m) => put(m, TABLE, { addr: FAR, len: 16, flags: DescFlag.INDIRECT | DescFlag.NEXT, next: 1 }), /with NEXT/],
    ['an empty indirect table', (m) => put(m, TABLE, { addr: FAR, len: 0, flags: DescFlag.INDIRECT, next: 0 }), /indirect table of 0 bytes/],
    ['an indirect table of part of a descriptor', (m) => put(m, TABLE, { addr: FAR, len: 24, flags: DescFlag.INDIRECT, next: 0 }), /indirect table of 24 bytes/],
    ['an indirect table longer than the largest queue', (m) => put(m, TABLE, { addr: FAR, len: 16 * 32769, flags: DescFlag.INDIRECT, next: 0 }), /indirect table of 524304 bytes/],
    ['an indirect table beyond 2^53', (m) => put(m, TABLE, { addr: 1n << 60n, len: 16, flags: DescFlag.INDIRECT, next: 0 }), /address out of range/],
    ['an indirect descriptor inside an indirect table', (m) => {
      put(m, TABLE, { addr: FAR, len: 32, flags: DescFlag.INDIRECT, next: 0 });
      put(m, FAR, { addr: 0x2000, len: 1, flags: DescFlag.NEXT, next: 1 });
      put(m, FAR + 16, { addr: FAR, len: 16, flags: DescFlag.INDIRECT, next: 0 });
    }, /inside an indirect table/],
    ['a loop inside an indirect table', (m) => {
      put(m, TABLE, { addr: FAR, len: 32, flags: DescFlag.INDIRECT, next: 0 });
      put(m, FAR, { addr: 0x2000, len: 1, flags: DescFlag.NEXT, next: 1 });
      put(m, FAR + 16, { addr: 0x2000, len: 1, flags: DescFlag.NEXT, next: 0 });
    }, /loops/],
    ['a next index outside an indirect table', (m) => {
      put(m, TABLE, { addr: FAR, len: 32, flags: DescFlag.INDIRECT, next: 0 });
      put(m, FAR, { addr: 0x2000, len: 1, flags: DescFlag.NEXT, next: 2 });
    }, /outside a table of 2/],
  ];
  for (const [what, build, message, indirect] of cases) {
    const mem = guest();
    build(mem);
    const out = both(mem, 0, indirect ?? true);
    assert.ok('error' in out && out.error.startsWith('RingError') && message.test(out.error), `${what}: ${JSON.stringify(out)}`);
  }
});

test('an indirect table in unmapped memory fails the walk either way, not with a RingError', () => {
  const mem = guest();
  put(mem, TABLE, { addr: 0x9000_0000, len: 32, flags: DescFlag.INDIRECT, next: 0 });
  const out = both(mem, 0);
  assert.ok('error' in out && out.error.startsWith('Error: EFAULT'), JSON.stringify(out));
});

test('a resumed walk takes only the bytes it asked for', () => {
  const w = new ChainWalker(() => false);
  w.start(0, TABLE, QUEUE, true, undefined);
  assert.equal(w.step(), false);
  assert.equal(w.needAt, TABLE);
  assert.equal(w.needLength, 16);
  assert.throws(() => w.step(), TypeError);
  assert.throws(() => w.step(new Uint8Array(8)), TypeError);
});
