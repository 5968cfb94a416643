// Region info as a client sees it: sparse mmap areas, type capabilities,
// device-specific regions, region fds that really map the device's memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../src/index.js';
import { Client } from '../src/client/index.js';
import { native } from '../src/native/index.js';
import { RegionCapId, RegionInfoFlag } from '../src/protocol/constants.js';

test('sparse BAR and a typed device-specific region', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-regions-'));
  const server = serve(
    {
      identity: { vendorId: 0x1234, deviceId: 0x0002 },
      bars: { 1: { size: 16384, memory: { mmap: [{ offset: 0, size: 4096 }, { offset: 12288, size: 4096 }] } } },
      regions: { 9: { size: 8192, memory: true, type: { type: 0x80001234, subtype: 7 } } },
    },
    join(dir, 'r.sock'),
    { log: 'silent' },
  );
  const client = await Client.connect(server.path);
  const fds: number[] = [];
  try {
    assert.equal((await client.deviceInfo()).numRegions, 10);

    const bar1 = await client.regionInfo(1);
    assert.ok(bar1.info.flags & RegionInfoFlag.MMAP && bar1.info.flags & RegionInfoFlag.CAPS);
    assert.deepEqual(bar1.caps, [{ id: RegionCapId.SPARSE_MMAP, areas: [{ offset: 0, size: 4096 }, { offset: 12288, size: 4096 }] }]);
    assert.ok(bar1.fd !== undefined);
    fds.push(bar1.fd!);
    // The fd maps the very memory that messages reach.
    const m = native.mmap(bar1.fd!, 0, 16384, true);
    assert.ok(typeof m !== 'number');
    const mapped = new Uint8Array(m[0]);
    await client.regionWrite(1, 12288 + 5, Buffer.from('sparse'));
    assert.equal(Buffer.from(mapped.subarray(12288 + 5, 12288 + 11)).toString(), 'sparse');
    mapped.set(Buffer.from('back'), 8192); // the middle page is served by messages, same memory
    assert.equal((await client.regionRead(1, 8192, 4)).toString(), 'back');
    native.munmap(m[1], m[0]);

    const r9 = await client.regionInfo(9);
    assert.equal(r9.info.size, 8192);
    assert.deepEqual(r9.caps, [{ id: RegionCapId.TYPE, type: 0x80001234, subtype: 7 }]);
    if (r9.fd !== undefined) fds.push(r9.fd);
    await client.regionWrite(9, 100, Buffer.from([1, 2, 3]));
    assert.deepEqual([...(await client.regionRead(9, 100, 3))], [1, 2, 3]);
    assert.deepEqual([...server.device.regionMemory(9).subarray(100, 103)], [1, 2, 3]);

    // Indexes past the last region are refused; holes read as empty regions.
    await assert.rejects(client.regionInfo(10), /DEVICE_GET_REGION_INFO refused: EINVAL/);
    assert.equal((await client.regionInfo(8)).info.size, 0);
  } finally {
    fds.forEach((fd) => native.close(fd));
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('GET_REGION_IO_FDS: doorbells fire their callback; more fds than the client takes is E2BIG', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-iofds-'));
  const rung: number[] = [];
  const doorbell = (n: number) => ({ offset: n * 4, size: 4 as const, onSignal: () => void rung.push(n) });
  const server = serve(
    { identity: { vendorId: 0x1234, deviceId: 0x0004 }, bars: { 0: { size: 4096, ioeventfds: [doorbell(0), doorbell(1), doorbell(2)] } } },
    join(dir, 'io.sock'),
    { log: 'silent' },
  );
  const narrow = await Client.connect(server.path, { capabilities: { maxMsgFds: 2 } });
  try {
    await assert.rejects(narrow.regionIoFds(0), /DEVICE_GET_REGION_IO_FDS refused: E2BIG/);
    assert.equal((await narrow.deviceInfo()).numRegions, 9, 'the connection keeps serving');
    narrow.close();
    await new Promise((r) => setTimeout(r, 50));
    const wide = await Client.connect(server.path);
    const io = await wide.regionIoFds(0);
    assert.equal(io.fds.length, 3);
    assert.deepEqual(io.subRegions.map((r) => r.offset), [0, 4, 8]);
    native.eventfdWrite(io.fds[2], 1);
    for (let i = 0; i < 100 && rung.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(rung, [2]);
    io.fds.forEach((fd) => native.close(fd));
    wide.close();
  } finally {
    narrow.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
