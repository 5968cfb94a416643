/**
 * The property suite every block backend must pass: a seeded property test
 * of random reads, writes, discards and write-zeroes against an in-memory
 * model, concurrent requests, read-only refusal, range errors, and close()
 * waiting for requests in flight. Backends (RAM, file, NBD) run it from
 * their own test files.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { BlockError, type BlockBackend } from '../../src/index.js';

/** 320 KiB: spans several RAM chunks (64 KiB) and file blocks, and ends mid-chunk. */
export const SUITE_DISK_SIZE = 320 * 1024;
const SIZE = SUITE_DISK_SIZE;

/** A kind of backend under test. */
export interface BackendKind {
  name: string;
  /** A fresh, zero-filled disk of `size` bytes. */
  create(size: number, readOnly?: boolean): Promise<BlockBackend>;
  /** Fewer property runs for slow backends (default 40). */
  runs?: number;
}

/** Splits `len` bytes into a scatter list of 1-3 pieces of given proportions. */
function scatter(len: number, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => Math.floor(c * len)))].filter((p) => p > 0 && p < len).sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, len]) {
    out.push(new Uint8Array(p - prev));
    prev = p;
  }
  return out;
}

function concat(list: Uint8Array[]): Uint8Array {
  return Buffer.concat(list);
}

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE }), fc.integer({ min: 0, max: 70 * 1024 }))
  .map(([offset, len]) => ({ offset, length: Math.min(len, SIZE - offset) }));
const op = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), r: range, seed: fc.integer({ min: 0, max: 255 }), cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 2 }), fua: fc.boolean() }),
  fc.record({ kind: fc.constant('read' as const), r: range, cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 2 }) }),
  fc.record({ kind: fc.constant('discard' as const), r: range }),
  fc.record({ kind: fc.constant('zeroes' as const), r: range, unmap: fc.boolean() }),
  fc.record({ kind: fc.constant('flush' as const) }),
);

/** Registers the suite for one backend kind. */
export function blockBackendSuite(kind: BackendKind): void {
  describe(`${kind.name} backend`, () => {
    test('random reads, writes, discards and write-zeroes agree with a model', async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
          const disk = await kind.create(SIZE);
          const model = new Uint8Array(SIZE);
          try {
            for (const o of ops) {
              if (o.kind === 'write') {
                const bufs = scatter(o.r.length, o.cuts);
                let i = 0;
                for (const b of bufs) for (let k = 0; k < b.length; k++) b[k] = (o.seed + 7 * i++) & 0xff;
                await disk.write(o.r.offset, bufs, { fua: o.fua });
                model.set(concat(bufs), o.r.offset);
              } else if (o.kind === 'read') {
                const bufs = scatter(o.r.length, o.cuts);
                for (const b of bufs) b.fill(0xee);
                await disk.read(o.r.offset, bufs);
                assert.deepEqual(concat(bufs), Buffer.from(model.subarray(o.r.offset, o.r.offset + o.r.length)));
              } else if (o.kind === 'discard') {
                await disk.discard(o.r.offset, o.r.length);
                model.fill(0, o.r.offset, o.r.offset + o.r.length);
              } else if (o.kind === 'zeroes') {
                await disk.writeZeroes(o.r.offset, o.r.length, { unmap: o.unmap });
                model.fill(0, o.r.offset, o.r.offset + o.r.length);
              } else {
                await disk.flush();
              }
            }
            const all = new Uint8Array(SIZE);
            await disk.read(0, [all]);
            assert.deepEqual(Buffer.from(all), Buffer.from(model));
          } finally {
            await disk.close();
          }
        }),
        { seed: 0x5eed, numRuns: kind.runs ?? 40 },
      );
    });

    test('a request either finishes at once (its effect visible on return) or returns a Promise; refusals come either way', async () => {
      const disk = await kind.create(SIZE);
      const ro = await kind.create(SIZE, true);
      try {
        const data = new Uint8Array(4096).fill(0x5a);
        const wrote = disk.write(8192, [data.subarray(0, 1000), data.subarray(1000)]);
        if (!(wrote instanceof Promise)) {
          const back = new Uint8Array(4096);
          const read = disk.read(8192, [back]);
          if (!(read instanceof Promise)) assert.deepEqual(back, data, 'a write finished at once is seen by a read finished at once');
          else await read;
        } else await wrote;
        const is = (c: string) => (e: unknown) => e instanceof BlockError && e.code === c;
        // A refusal is thrown when the call finishes at once, else rejected: `async () =>` takes both.
        await assert.rejects(async () => disk.read(SIZE - 512, [new Uint8Array(1024)]), is('ERANGE'));
        await assert.rejects(async () => disk.write(2 ** 60, [new Uint8Array(512)]), is('ERANGE'));
        await assert.rejects(async () => ro.write(0, [new Uint8Array(512)]), is('EROFS'));
        await disk.close();
        await assert.rejects(async () => disk.read(0, [new Uint8Array(512)]), is('EIO'));
        await assert.rejects(async () => disk.write(0, [new Uint8Array(512)]), is('EIO'));
        await assert.rejects(async () => disk.flush(), is('EIO'));
      } finally {
        await disk.close();
        await ro.close();
      }
    });

    test('concurrent requests on disjoint ranges all complete with the right data', async () => {
      const disk = await kind.create(SIZE);
      const piece = SIZE / 16;
      const done: number[] = [];
      await Promise.all(
        Array.from({ length: 16 }, (_, i) =>
          Promise.resolve(disk.write(i * piece, [new Uint8Array(piece).fill(i + 1)])).then(() => done.push(i)),
        ),
      );
      assert.equal(done.length, 16);
      const reads = Array.from({ length: 16 }, () => new Uint8Array(piece));
      await Promise.all(reads.map((b, i) => (i % 3 === 0 ? disk.discard(i * piece, piece) : disk.read(i * piece, [b]))));
      for (let i = 0; i < 16; i++) {
        if (i % 3 === 0) continue;
        assert.ok(reads[i].every((v) => v === i + 1), `piece ${i}`);
      }
      const z = new Uint8Array(piece).fill(9);
      await disk.read(3 * piece, [z]);
      assert.ok(z.every((v) => v === 0), 'a discarded piece reads as zeros');
      await disk.close();
    });

    test('a read-only disk refuses writes, discards and write-zeroes with EROFS, and still reads', async () => {
      const disk = await kind.create(SIZE, true);
      assert.equal(disk.readOnly, true);
      const isErofs = (e: unknown) => e instanceof BlockError && e.code === 'EROFS';
      await assert.rejects(async () => disk.write(0, [new Uint8Array(512)]), isErofs);
      await assert.rejects(async () => disk.discard(0, 512), isErofs);
      await assert.rejects(async () => disk.writeZeroes(0, 512), isErofs);
      const b = new Uint8Array(512).fill(1);
      await disk.read(0, [b]);
      assert.ok(b.every((v) => v === 0));
      await disk.flush();
      await disk.close();
    });

    test('ranges outside the disk fail with ERANGE', async () => {
      const disk = await kind.create(SIZE);
      const isErange = (e: unknown) => e instanceof BlockError && e.code === 'ERANGE';
      await assert.rejects(async () => disk.read(SIZE - 512, [new Uint8Array(1024)]), isErange);
      await assert.rejects(async () => disk.read(SIZE + 512, [new Uint8Array(0)]), isErange);
      await assert.rejects(async () => disk.write(-512, [new Uint8Array(512)]), isErange);
      await assert.rejects(async () => disk.write(0.5, [new Uint8Array(512)]), isErange);
      await assert.rejects(async () => disk.discard(0, SIZE + 1), isErange);
      await assert.rejects(async () => disk.writeZeroes(Number.NaN, 512), isErange);
      await assert.rejects(async () => disk.discard(2 ** 60, 512), isErange);
      await disk.read(SIZE, [new Uint8Array(0)]); // empty range at the end is fine
      await disk.close();
    });

    test('close() waits for requests in flight; later requests fail with EIO', async () => {
      const disk = await kind.create(SIZE);
      const order: string[] = [];
      const writes = Array.from({ length: 8 }, (_, i) =>
        Promise.resolve(disk.write(i * 4096, [new Uint8Array(4096).fill(i + 1)])).then(() => order.push(`write${i}`)),
      );
      const closed = disk.close().then(() => order.push('close'));
      await Promise.all([...writes, closed]);
      assert.equal(order.length, 9);
      assert.equal(order.at(-1), 'close', `close settled last: ${order.join(' ')}`);
      await assert.rejects(async () => disk.read(0, [new Uint8Array(512)]), (e: unknown) => e instanceof BlockError && e.code === 'EIO');
      await disk.close(); // idempotent
    });
  });
}

