// DmaAccess.directView: the per-command view that the NVMe data path takes
// for each PRP data range. It must refuse exactly what sgl() and views()
// refuse (with the same errors), view the same bytes, say undefined where
// views() would give several views or none, and mark a written range dirty
// while migration logs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../src/index.js';
import { Client, dirtyReport, privateMemory, sharedMemory, startDirtyLogging } from '../src/client/index.js';
import { DmaMapFlag } from '../src/protocol/index.js';

const EFAULT = 14;
const EPERM = 1;
const EINVAL = 22;
const DIRECT = 0x10000;
const NEXT = DIRECT + 0x4000; // adjacent to DIRECT: a range across both spans two regions
const READ_ONLY = 0x40000;
const MESSAGE = 0x80000;
const errno = (n: number) => (e: unknown): boolean => (e as { errno?: number }).errno === n;

test('directView views one region zero-copy, refuses what sgl() refuses, and is undefined where views() would not give one view', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-dview-'));
  const server = serve({ identity: { vendorId: 0x1af4, deviceId: 0x10f1, classCode: 0xff0000 }, requireBusMaster: false }, join(dir, 'd.sock'), { log: 'silent' });
  const client = await Client.connect(server.path);
  const a = sharedMemory(0x4000);
  const b = sharedMemory(0x4000);
  const ro = sharedMemory(0x1000);
  try {
    await client.dmaMap(DIRECT, a);
    await client.dmaMap(NEXT, b);
    await client.dmaMap(READ_ONLY, ro, DmaMapFlag.READ);
    await client.dmaMap(MESSAGE, privateMemory(0x1000));
    const dma = server.device.dma;
    a.bytes[0x1004] = 0x5a;
    const v = dma.directView(DIRECT + 0x1000, 0x1000, true)!;
    assert.equal(v.length, 0x1000);
    assert.equal(v[4], 0x5a, 'the view reads guest memory');
    v[8] = 0xa5;
    assert.equal(a.bytes[0x1008], 0xa5, 'and writes it');
    // The same refusals as sgl(), with the same errno.
    for (const [iova, len, write, code] of [
      [0x7000_0000, 16, false, EFAULT],
      [DIRECT + 0x3ff0, 0x20 + 0x4000, false, EFAULT], // runs past NEXT's end into nothing
      [READ_ONLY, 16, true, EPERM],
      [DIRECT + 0.5, 16, false, EINVAL],
      [DIRECT, -1, false, EINVAL],
    ] as const) {
      assert.throws(() => dma.sgl(iova, len, write), errno(code), `sgl ${iova}+${len}`);
      assert.throws(() => dma.directView(iova, len, write), errno(code), `directView ${iova}+${len}`);
    }
    assert.equal(dma.directView(READ_ONLY, 16, false)?.length, 16, 'read-only memory views for reading');
    assert.equal(dma.directView(MESSAGE, 16, true), undefined, 'memory without an fd: no view (views() gives none either)');
    assert.equal(dma.directViews(MESSAGE, 16, true), undefined);
    assert.equal(dma.directView(NEXT - 8, 16, false), undefined, 'across two regions: not one view');
    assert.equal(dma.directViews(NEXT - 8, 16, false)?.length, 2);
    assert.equal(dma.directView(DIRECT, 0, false), undefined, 'an empty range has no view');
  } finally {
    await client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a view written through directView is in the dirty log, one for reading is not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-dview-'));
  const server = serve({ identity: { vendorId: 0x1af4, deviceId: 0x10f1, classCode: 0xff0000 }, requireBusMaster: false }, join(dir, 'd.sock'), { log: 'silent' });
  const client = await Client.connect(server.path);
  try {
    await client.dmaMap(DIRECT, sharedMemory(0x4000));
    await startDirtyLogging(client);
    assert.deepEqual(await dirtyReport(client, DIRECT, 0x4000), []);
    server.device.dma.directView(DIRECT + 0x1000, 16, false);
    server.device.dma.directView(DIRECT + 0x2000, 0x1000, true);
    assert.deepEqual(await dirtyReport(client, DIRECT, 0x4000), [DIRECT + 0x2000]);
  } finally {
    await client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
