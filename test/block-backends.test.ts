/**
 * The block backends (RAM, memfd RAM, raw file) against the shared backend suite
 * (test/helpers/block-suite.ts), plus what is particular to each.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { memfdBackend, openFileBackend, openSharedBackend, ramBackend } from '../src/index.js';
import { blockBackendSuite, type BackendKind } from './helpers/block-suite.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-block-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;

const kinds: BackendKind[] = [
  { name: 'ram', create: async (size, readOnly) => ramBackend(size, { readOnly }) },
  { name: 'memfd', create: async (size, readOnly) => memfdBackend(size, { readOnly }) },
  {
    // What a worker thread opens: a second backend over the first one's memfd.
    name: 'memfd, opened from a shared handle',
    create: async (size, readOnly) => {
      const first = memfdBackend(size, { readOnly });
      const second = await openSharedBackend(first.share());
      await first.close();
      return second;
    },
  },
  {
    name: 'file',
    create: async (size, readOnly) => {
      const path = join(dir, `disk-${files++}.img`);
      writeFileSync(path, Buffer.alloc(0));
      const { truncateSync } = await import('node:fs');
      truncateSync(path, size);
      return openFileBackend(path, { readOnly });
    },
  },
];

for (const kind of kinds) blockBackendSuite(kind);

test('ram: a large disk costs nothing until written, and discard frees its chunks', async () => {
  const disk = ramBackend(1 << 30);
  assert.equal(disk.allocatedBytes, 0);
  const b = new Uint8Array(4096);
  await disk.read((1 << 30) - 4096, [b]);
  assert.equal(disk.allocatedBytes, 0, 'reading allocates nothing');
  await disk.write(1 << 20, [new Uint8Array(256 * 1024).fill(3)]);
  const used = disk.allocatedBytes;
  assert.ok(used >= 256 * 1024 && used <= 512 * 1024, `allocated ${used}`);
  await disk.discard((1 << 20) + 4096, 256 * 1024 - 8192);
  assert.ok(disk.allocatedBytes < used, `discard freed chunks: ${used} -> ${disk.allocatedBytes}`);
  await disk.writeZeroes(1 << 20, 256 * 1024);
  assert.equal(disk.allocatedBytes, 0);
  // The last chunk of the disk, far from the first (its index table is made on first use).
  const end = new Uint8Array(4096).fill(7);
  await disk.write((1 << 30) - 4096, [end]);
  assert.equal(disk.allocatedBytes, 64 * 1024, 'one chunk');
  const back = new Uint8Array(8192);
  await disk.read((1 << 30) - 8192, [back]);
  assert.deepEqual(back, new Uint8Array(8192).fill(7, 4096));
  await disk.discard((1 << 30) - 64 * 1024, 64 * 1024);
  assert.equal(disk.allocatedBytes, 0);
  await disk.read((1 << 30) - 8192, [back]);
  assert.deepEqual(back, new Uint8Array(8192), 'a freed chunk reads as zeros');
  await disk.close();
});

test('ram: chunks far apart on a very large sparse disk keep their bytes, each counted once', async () => {
  // 4 PiB: beyond the chunk pages listed up front, so the page list grows as written.
  const size = 2 ** 52;
  const disk = ramBackend(size);
  const places = [0, 64 * 1024 * 1024, 2 ** 42 + 512, size - 4096];
  for (const [i, at] of places.entries()) await disk.write(at, [new Uint8Array(4096).fill(i + 1)]);
  await disk.write(places[1], [new Uint8Array(4096).fill(2)]); // the same chunk again
  assert.equal(disk.allocatedBytes, places.length * 64 * 1024);
  for (const [i, at] of places.entries()) {
    const b = new Uint8Array(4096);
    await disk.read(at, [b]);
    assert.ok(b.every((x) => x === i + 1), `bytes at ${at}`);
  }
  const between = new Uint8Array(4096).fill(9);
  await disk.read(2 ** 40, [between]);
  assert.ok(between.every((x) => x === 0), 'unwritten space reads as zeros');
  await disk.discard(places[2] - 512, 64 * 1024);
  assert.equal(disk.allocatedBytes, (places.length - 1) * 64 * 1024, 'a whole chunk discarded is freed');
  await disk.close();
});

test('ram: capacities that are not positive multiples of 512 are refused', () => {
  for (const bad of [0, -512, 1000, 1.5 * 512, Number.NaN, 2 ** 60]) {
    assert.throws(() => ramBackend(bad), TypeError, String(bad));
  }
});

test('ram: every request finishes at once, across chunks and scatter lists', async () => {
  const disk = ramBackend(1 << 20);
  const data = new Uint8Array(200 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
  // 200 KiB from 60 KiB on: four 64 KiB chunks, written as three unequal pieces.
  assert.equal(disk.write(60 * 1024, [data.subarray(0, 1000), data.subarray(1000, 70_000), data.subarray(70_000)]), undefined);
  const back = new Uint8Array(data.length);
  await disk.read(60 * 1024, [back]);
  assert.deepEqual(back, data);
  await disk.write(0, [data.subarray(0, 4096)]);
  const parts = [new Uint8Array(1), new Uint8Array(4095), new Uint8Array(64 * 1024)];
  assert.equal(disk.read(0, parts), undefined);
  assert.deepEqual(Buffer.concat(parts).subarray(0, 4096), Buffer.from(data.subarray(0, 4096)));
  assert.deepEqual(Buffer.concat(parts).subarray(60 * 1024, 60 * 1024 + 4096), Buffer.from(data.subarray(0, 4096)));
  const unwritten = new Uint8Array(4096).fill(1);
  assert.equal(disk.read((1 << 20) - 4096, [unwritten]), undefined);
  assert.ok(unwritten.every((b) => b === 0), 'never written: zeros');
  assert.equal(disk.allocatedBytes, 5 * 64 * 1024, 'reads allocate nothing');
  assert.equal(disk.flush(), undefined);
  await disk.close();
});

test('memfd: two backends over one shared memfd see each other\'s writes; the handle is sealed and sized', async () => {
  const a = memfdBackend(1 << 20);
  const b = await openSharedBackend(a.share());
  try {
    const data = Buffer.alloc(4096, 0x3c);
    await a.write(8192, [data]);
    const back = Buffer.alloc(4096);
    await b.read(8192, [back]);
    assert.deepEqual(back, data);
    await b.discard(8192, 4096);
    await a.read(8192, [back]);
    assert.ok(back.every((x) => x === 0), 'discarded through the other backend');
  } finally {
    await a.close();
    await b.close();
  }
  const { native } = await import('../src/native/index.js');
  const fd = native.memfd('unsealed', 1 << 20, true);
  await assert.rejects(openSharedBackend({ kind: 'memfd', fd, size: 1 << 20, readOnly: false }), /not sealed/);
});
