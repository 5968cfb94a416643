/**
 * preadvNowait: reads what the page cache holds without blocking (the file
 * backend's fast path for cached reads), and reports errors as -errno.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { native } from '../src/native/index.js';

test('preadvNowait fills a scatter list from a cached file, short at its end, -errno on a bad offset or fd', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-preadv-'));
  const path = join(dir, 'f');
  const data = Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7) & 0xff));
  writeFileSync(path, data);
  readFileSync(path); // cached
  const fd = openSync(path, 'r');
  try {
    const a = new Uint8Array(100);
    const b = new Uint8Array(4000);
    const n = native.preadvNowait(fd, [a, b], 1000);
    // A kernel or file system without RWF_NOWAIT says so; that path is then unused.
    if (n === -95) return;
    assert.equal(n, 4100);
    assert.deepEqual(Buffer.from(a), data.subarray(1000, 1100));
    assert.deepEqual(Buffer.from(b), data.subarray(1100, 5100));
    assert.equal(native.preadvNowait(fd, [new Uint8Array(100)], 8150), 42, 'short at the end of the file');
    assert.equal(native.preadvNowait(fd, [new Uint8Array(10)], 9000), 0, 'nothing past the end');
    assert.equal(native.preadvNowait(fd, [], 0), 0);
    assert.equal(native.preadvNowait(fd, [a], -1), -22);
    assert.throws(() => native.preadvNowait(fd, ['x' as unknown as Uint8Array], 0), TypeError, 'not a Uint8Array');
    assert.equal(native.preadvNowait(-1, [a], 0), -9);
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
