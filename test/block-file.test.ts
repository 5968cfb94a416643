/**
 * What only the file backend has: holes really punched (the file's
 * allocated blocks shrink), data that survives close and reopen after
 * flush, requests that run off the event loop, the native fallocate's
 * argument checks, and files it must refuse.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BlockError, openFileBackend } from '../src/index.js';
import { FallocMode, native } from '../src/native/index.js';
import { pattern } from './helpers/bytes.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-blockfile-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 1 << 20;

test('discard punches holes: the allocated blocks of the file shrink and the range reads as zeros', async () => {
  const path = join(dir, 'punch.img');
  writeFileSync(path, pattern(4 * MiB, 1));
  const before = statSync(path).blocks;
  const disk = await openFileBackend(path);
  assert.equal(disk.size, 4 * MiB);
  await disk.discard(1 * MiB, 2 * MiB);
  await disk.flush();
  const after1 = statSync(path).blocks;
  assert.ok(after1 <= before - (2 * MiB) / 512, `blocks ${before} -> ${after1}`);
  assert.equal(statSync(path).size, 4 * MiB, 'the file keeps its size');
  const b = new Uint8Array(2 * MiB).fill(1);
  await disk.read(1 * MiB, [b]);
  assert.ok(b.every((v) => v === 0));
  // write-zeroes with unmap frees too; without it the range stays allocated but reads as zeros
  await disk.writeZeroes(3 * MiB, 1 * MiB, { unmap: true });
  const after2 = statSync(path).blocks;
  assert.ok(after2 <= after1 - MiB / 512, `blocks ${after1} -> ${after2}`);
  await disk.writeZeroes(0, 4096);
  const head = new Uint8Array(8192).fill(1);
  await disk.read(0, [head]);
  assert.ok(head.subarray(0, 4096).every((v) => v === 0));
  assert.deepEqual(Buffer.from(head.subarray(4096)), pattern(4 * MiB, 1).subarray(4096, 8192));
  await disk.close();
});

test('flushed and fua writes survive close and reopen', async () => {
  const path = join(dir, 'durable.img');
  truncateSync((closeSync(openSync(path, 'w')), path), MiB);
  const disk = await openFileBackend(path);
  await disk.write(512, [pattern(1000, 2), pattern(24, 3)]);
  await disk.flush();
  await disk.write(8192, [pattern(4096, 4)], { fua: true });
  await disk.close();
  const again = await openFileBackend(path, { readOnly: true });
  const a = new Uint8Array(1024);
  const b = new Uint8Array(4096);
  await again.read(512, [a]);
  await again.read(8192, [b]);
  assert.deepEqual(Buffer.from(a), Buffer.concat([pattern(1000, 2), pattern(24, 3)]));
  assert.deepEqual(Buffer.from(b), pattern(4096, 4));
  await again.close();
  assert.deepEqual(readFileSync(path).subarray(8192, 8192 + 4096), pattern(4096, 4), 'the bytes are in the file itself');
});

test('requests run off the event loop: a timer fires while a write waits for the thread pool', async () => {
  // Occupy every thread-pool thread with an open() of a FIFO that has no
  // writer yet; the disk's write must queue behind them, so it is in flight
  // while the loop keeps running timers. Opening the FIFOs for writing
  // releases the pool.
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const fifos = Array.from({ length: threads }, (_, i) => join(dir, `fifo-${i}`));
  for (const f of fifos) execFileSync('mkfifo', [f]);
  const path = join(dir, 'loop.img');
  truncateSync((closeSync(openSync(path, 'w')), path), 8 * MiB);
  const disk = await openFileBackend(path);
  const blockers = fifos.map((f) => open(f, 'r'));
  const events: string[] = [];
  const written = Promise.resolve(disk.write(0, [pattern(8 * MiB, 5)])).then(() => events.push('write done'));
  await new Promise<void>((resolve) =>
    setTimeout(() => {
      events.push('timer');
      resolve();
    }, 1),
  );
  assert.deepEqual(events, ['timer'], 'the timer fired while the write was in flight');
  const writers = fifos.map((f) => openSync(f, 'w'));
  for (const h of await Promise.all(blockers)) await h.close();
  for (const w of writers) closeSync(w);
  await written;
  assert.deepEqual(events, ['timer', 'write done']);
  const back = new Uint8Array(8 * MiB);
  await disk.read(0, [back]);
  assert.deepEqual(Buffer.from(back), pattern(8 * MiB, 5));
  await disk.close();
});

test('capacity is the size rounded down to 512; empty files, directories and missing paths are refused', async () => {
  const odd = join(dir, 'odd.img');
  writeFileSync(odd, Buffer.alloc(1500, 7));
  const disk = await openFileBackend(odd);
  assert.equal(disk.size, 1024);
  await assert.rejects(async () => disk.read(1024, [new Uint8Array(512)]), (e: unknown) => e instanceof BlockError && e.code === 'ERANGE');
  await disk.close();
  const empty = join(dir, 'empty.img');
  writeFileSync(empty, Buffer.alloc(100));
  const isEio = (e: unknown) => e instanceof BlockError && e.code === 'EIO';
  await assert.rejects(openFileBackend(empty), isEio);
  await assert.rejects(openFileBackend(dir), isEio);
  await assert.rejects(openFileBackend(join(dir, 'missing.img')), isEio);
});

test('a file opened read-only is refused writes even though the file itself is writable', async () => {
  const path = join(dir, 'ro.img');
  writeFileSync(path, Buffer.alloc(4096, 1));
  const disk = await openFileBackend(path, { readOnly: true });
  assert.equal(disk.readOnly, true);
  await assert.rejects(async () => disk.write(0, [new Uint8Array(512)]), (e: unknown) => e instanceof BlockError && e.code === 'EROFS');
  await disk.close();
  assert.ok(readFileSync(path).every((v) => v === 1));
});

test('native fallocate: bad arguments resolve to -errno, a real punch resolves to 0', async () => {
  const path = join(dir, 'native.img');
  writeFileSync(path, Buffer.alloc(MiB, 1));
  const fd = openSync(path, 'r+');
  try {
    const punch = FallocMode.PunchHole | FallocMode.KeepSize;
    assert.equal(await native.fallocate(-1, punch, 0, 4096), -9); // EBADF
    assert.equal(await native.fallocate(fd, punch, -1, 4096), -22); // EINVAL
    assert.equal(await native.fallocate(fd, punch, 0, 0), -22);
    assert.equal(await native.fallocate(fd, punch, 0, 64 * 1024), 0);
    assert.ok(readFileSync(path).subarray(0, 64 * 1024).every((v) => v === 0));
    assert.ok(native.blockDeviceSize(fd) < 0, 'a regular file is not a block device');
  } finally {
    closeSync(fd);
  }
});

const shm = '/dev/shm';
test('where the filesystem refuses ZERO_RANGE (tmpfs), write-zeroes still zeroes, and keeps doing so', { skip: !existsSync(shm) && 'no /dev/shm' }, async () => {
  const sub = mkdtempSync(join(shm, 'muser-block-'));
  try {
    const path = join(sub, 'zr.img');
    writeFileSync(path, pattern(MiB, 6));
    const disk = await openFileBackend(path);
    for (const [off, len] of [[4096, 8192], [100, 3000], [MiB - 512, 512]]) {
      await disk.writeZeroes(off, len);
      const b = new Uint8Array(len).fill(1);
      await disk.read(off, [b]);
      assert.ok(b.every((v) => v === 0), `${off}+${len} reads as zeros`);
    }
    const keep = new Uint8Array(512);
    await disk.read(20000, [keep]);
    assert.deepEqual(Buffer.from(keep), pattern(MiB, 6).subarray(20000, 20512), 'bytes outside the ranges are untouched');
    await disk.close();
  } finally {
    rmSync(sub, { recursive: true, force: true });
  }
});

test('a read the page cache holds is served at once (where the filesystem offers RWF_NOWAIT); one it cannot serve is declined', async (t) => {
  const path = join(dir, 'nowait.img');
  writeFileSync(path, Buffer.alloc(MiB));
  const fd = openSync(path, 'r');
  const rc = native.preadvNowait(fd, [new Uint8Array(512)], 0);
  closeSync(fd);
  if (rc < 0 && rc !== -11) {
    t.skip(`preadv2(RWF_NOWAIT) is refused here (errno ${-rc})`);
    return;
  }
  const disk = await openFileBackend(path);
  try {
    const data = pattern(8192, 5);
    await disk.write(4096, [data]);
    const parts = [new Uint8Array(512), new Uint8Array(7680)];
    assert.equal(disk.read(4096, parts), undefined, 'just written: in the page cache, read at once (no Promise)');
    assert.deepEqual(Buffer.concat(parts), Buffer.from(data));
    assert.equal(disk.read(0, []), undefined, 'nothing to read: done at once');
    assert.throws(() => disk.read(MiB - 512, [new Uint8Array(1024)]), (e: unknown) => e instanceof BlockError && e.code === 'ERANGE');
  } finally {
    await disk.close();
  }
});
