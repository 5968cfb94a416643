// Memory a client can shrink: a client DMA-maps a memfd that is not sealed
// against shrinking, truncates it, and the device touches it. Mapped, that
// would SIGBUS the whole process; instead such memory is never mapped
// (pread/pwrite through the fd), the access fails with EFAULT, and the
// process and its other clients carry on. Sealed memfds stay zero-copy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSeal, native } from '../src/native/index.js';
import { MAX_KEPT_DMA_FDS } from '../src/device/dma.js';
import { serve } from '../src/index.js';
import { Client, sharedMemory } from '../src/client/index.js';
import { ClientError } from '../src/client/client.js';
import { ManyProcess } from './helpers/many-process.js';
import { connectClient, selfFdCount } from './helpers/raw.js';
import { le64 } from './helpers/bytes.js';

const EFAULT = 14;
const EPERM = 1;
const SIZE = 64 * 1024;
const SHRINKABLE = 0x10000;
const SEALED = 0x100000;

const failsWith = (errno: number) => (e: unknown) => e instanceof ClientError && e.errno === errno;

test('a truncated, unsealed memfd: device DMA gets EFAULT, the process and the other device carry on', async () => {
  const p = await ManyProcess.start(['dma', 'memory']);
  const fd = native.memfd('shrinkable', SIZE);
  const guest = sharedMemory(SIZE);
  try {
    const a = await connectClient(p.path(0));
    const b = await connectClient(p.path(1));
    await a.setBusMaster();
    const pattern = Buffer.from(Array.from({ length: 16 }, (_, i) => 0x30 + i));
    assert.equal(native.pwrite(fd, pattern, 0x100), 16);
    await a.dmaMapRaw(SHRINKABLE, SIZE, 3, 0, fd);
    await a.dmaMap(SEALED, guest);
    guest.bytes.set(pattern, 0x200);

    // Before the truncate: copies work through the fd, zero-copy views are refused.
    await a.regionWrite(0, 0, le64(SHRINKABLE + 0x100));
    assert.deepEqual(await a.regionRead(0, 0x100, 16), pattern);
    await assert.rejects(a.regionWrite(0, 8, le64(SHRINKABLE + 0x100)), failsWith(EFAULT), 'no view of memory that may shrink');
    await a.regionWrite(0, 0x10, le64(SHRINKABLE + 0x400));
    const back = Buffer.alloc(16);
    assert.equal(native.pread(fd, back, 0x400), 16);
    assert.deepEqual(back, pattern, 'dma.write reached the memfd');
    // The sealed memfd is mapped: views work, and it cannot be truncated.
    await a.regionWrite(0, 8, le64(SEALED + 0x200));
    assert.deepEqual(await a.regionRead(0, 0x100, 16), pattern);
    assert.equal(native.ftruncate(guest.fd!, 0), -EPERM, 'F_SEAL_SHRINK holds');

    // The attack: shrink the memory under the device, then make it touch it.
    assert.equal(native.ftruncate(fd, 0), 0);
    await assert.rejects(a.regionWrite(0, 0, le64(SHRINKABLE + 0x100)), failsWith(EFAULT), 'read of shrunk memory');
    await assert.rejects(a.regionWrite(0, 0x10, le64(SHRINKABLE + 0x100)), failsWith(EFAULT), 'write to shrunk memory');
    assert.equal(native.fdSize(fd), 0, 'a refused write does not grow the file back');
    assert.ok(p.alive, 'no SIGBUS');

    // Everyone carries on: the same client with its sealed memory, and the other device.
    await a.regionWrite(0, 0, le64(SEALED + 0x200));
    assert.deepEqual(await a.regionRead(0, 0x100, 16), pattern);
    await b.regionWrite(0, 0, Buffer.from('other'));
    assert.equal((await b.regionRead(0, 0, 5)).toString(), 'other');
    a.close();
    b.close();
    assert.ok(p.alive);
  } finally {
    native.close(fd);
    guest.close();
    await p.stop();
  }
});

test('DmaAccess: memory that may shrink is not direct; read()/write() use the fd; fds are released on unmap', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'shrink.sock');
  const server = serve({ identity: { vendorId: 0x1af4, deviceId: 0x10f3, classCode: 0xff0000 } }, path, { log: 'silent' });
  const client = await Client.connect(path);
  const loose = native.memfd('loose', SIZE);
  const sealedOnlyGrow = native.memfd('grow-sealed', SIZE, true);
  assert.equal(native.addSeals(sealedOnlyGrow, FileSeal.GROW), 0);
  try {
    await client.setBusMaster();
    const fdsBefore = selfFdCount();
    await client.dmaMapRaw(SHRINKABLE, SIZE, 3, 0, loose);
    await client.dmaMapRaw(SHRINKABLE + SIZE, SIZE, 3, 0, sealedOnlyGrow);
    const dma = server.device.dma;
    assert.equal(dma.isDirect(SHRINKABLE, 16), false);
    assert.equal(dma.isDirect(SHRINKABLE + SIZE, 16), false, 'sealed against growing only: it may still shrink');
    assert.deepEqual(dma.regions().map((r) => r.direct), [false, false]);
    assert.throws(() => dma.views(SHRINKABLE, 16), (e: { errno?: number }) => e.errno === EFAULT);
    // A copy spanning both regions goes through both fds.
    await dma.write(SHRINKABLE + SIZE - 4, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]));
    assert.deepEqual([...(await dma.read(SHRINKABLE + SIZE - 4, 8))], [1, 2, 3, 4, 5, 6, 7, 8]);
    native.ftruncate(loose, 4096);
    await assert.rejects(dma.read(SHRINKABLE + 4000, 200), (e: { errno?: number }) => e.errno === EFAULT);
    assert.deepEqual([...(await dma.read(SHRINKABLE, 4))], [0, 0, 0, 0], 'what is still there reads');
    assert.equal(selfFdCount(), fdsBefore + 2, 'the server keeps a dup of each fd it does not map');
    await client.dmaUnmap(0, 0, true);
    assert.equal(selfFdCount(), fdsBefore, 'and closes them on unmap');
    // An fd that is not a file covering the region (an eventfd) is refused at DMA_MAP.
    const efd = native.eventfd(0);
    await assert.rejects(client.dmaMapRaw(SHRINKABLE, SIZE, 3, 0, efd), (e) => e instanceof ClientError && e.errno === 22);
    native.close(efd);
    assert.equal(selfFdCount(), fdsBefore, 'the refused fd is closed too');
  } finally {
    native.close(loose);
    native.close(sealedOnlyGrow);
    client.close();
    server.close();
  }
});

test("a client cannot shrink the device's own shared memory it was handed for mmap", async () => {
  const p = await ManyProcess.start(['memory']);
  try {
    const c = await connectClient(p.path(0));
    const info = await c.regionInfo(0);
    assert.ok(info.fd !== undefined, 'BAR0 is mmappable: its memfd comes with the reply');
    assert.equal(native.ftruncate(info.fd, 0), -EPERM, 'sealed against shrinking');
    assert.equal(native.ftruncate(info.fd, 1 << 20), -EPERM, 'and against growing');
    native.close(info.fd);
    await c.regionWrite(0, 4000, Buffer.from([9]));
    assert.equal((await c.regionRead(0, 4000, 1))[0], 9);
    assert.ok(p.alive);
    c.close();
  } finally {
    await p.stop();
  }
});

test('a connection may keep at most MAX_KEPT_DMA_FDS unmapped fds open in the server', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'kept.sock');
  const server = serve({ identity: { vendorId: 0x1af4, deviceId: 0x10f3, classCode: 0xff0000 } }, path, { log: 'silent' });
  const client = await Client.connect(path);
  const loose = native.memfd('loose', 4096);
  const sealed = sharedMemory(4096);
  try {
    const before = selfFdCount();
    for (let i = 0; i < MAX_KEPT_DMA_FDS; i++) await client.dmaMapRaw(0x100000 + i * 4096, 4096, 3, 0, loose);
    assert.equal(selfFdCount(), before + MAX_KEPT_DMA_FDS);
    const next = 0x100000 + MAX_KEPT_DMA_FDS * 4096;
    await assert.rejects(client.dmaMapRaw(next, 4096, 3, 0, loose), (e) => e instanceof ClientError && e.errno === 28);
    await client.dmaMap(next, sealed); // sealed memory is mapped, no fd kept: still welcome
    assert.equal(selfFdCount(), before + MAX_KEPT_DMA_FDS);
    await client.dmaUnmap(0x100000, 4096);
    await client.dmaMapRaw(0x100000, 4096, 3, 0, loose);
    client.close();
    await client.whenClosed;
    for (let i = 0; i < 200 && server.session; i++) await new Promise((r) => setTimeout(r, 5));
    // Both ends of the connection are gone too.
    assert.equal(selfFdCount(), before - 2, 'all released when the client leaves');
  } finally {
    native.close(loose);
    sealed.close();
    client.close();
    server.close();
  }
});
