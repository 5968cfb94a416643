/**
 * DMA pins (used by virtio for views handed to asynchronous I/O): a
 * DMA_UNMAP of pinned memory takes the region out of the table at once,
 * but unmaps it, and answers, only when the last pin drops.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { sharedMemory } from '../src/client/index.js';
import { serve, type Device, type Server } from '../src/index.js';
import { connectClient } from './helpers/raw.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-pin-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const BASE = 0x100000;

async function setup(): Promise<{ server: Server; device: Device; client: Awaited<ReturnType<typeof connectClient>>; mem: ReturnType<typeof sharedMemory> }> {
  const server = serve({ identity: { vendorId: 0x1234, deviceId: 0x1 }, bars: { 0: { size: 4096, memory: true } } }, join(dir, `pin${n++}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const mem = sharedMemory(2 * 4096);
  mem.bytes.fill(0x5a);
  await client.dmaMap(BASE, mem);
  return { server, device: server.device, client, mem };
}

test('DMA_UNMAP of a pinned region is answered after the release; the view stays valid until then', async () => {
  const { server, device, client, mem } = await setup();
  try {
    const view = device.dma.view(BASE, 8192, true);
    const release = device.dma.pin(BASE + 4096, 16);
    let released = false;
    const unmapped = client.dmaUnmap(BASE, 8192).then(() => released);
    // Once the server took the unmap, the region is gone from the table; its memory is not.
    while (server.session!.dmaTable.count !== 0) await new Promise((r) => setImmediate(r));
    assert.throws(() => device.dma.view(BASE, 16), (e: unknown) => (e as { errno?: number }).errno === 14);
    assert.equal(view[100], 0x5a);
    view[200] = 1;
    released = true;
    release();
    release(); // idempotent
    assert.equal(await unmapped, true);
    assert.equal(view.length, 0, 'unmapped after the release');
  } finally {
    client.close();
    mem.close();
    server.close();
  }
});

test('unmap ALL and a disconnect also wait for pins; no pin means an immediate unmap', async () => {
  const { server, device, client, mem } = await setup();
  try {
    let view = device.dma.view(BASE, 16);
    await client.dmaUnmap(BASE, 8192);
    assert.equal(view.length, 0, 'unpinned memory unmaps at once');

    await client.dmaMap(BASE, mem);
    view = device.dma.view(BASE, 16);
    let release = device.dma.pin(BASE, 16);
    let released = false;
    const all = client.dmaUnmap(0, 0, true).then(() => released);
    while (server.session!.dmaTable.count !== 0) await new Promise((r) => setImmediate(r));
    assert.equal(view[0], 0x5a);
    released = true;
    release();
    assert.equal(await all, true);
    assert.equal(view.length, 0);

    await client.dmaMap(BASE, mem);
    view = device.dma.view(BASE, 16);
    release = device.dma.pin(BASE, 16);
    client.close();
    await new Promise<void>((r) => server.once('disconnect', () => r()));
    assert.equal(view[0], 0x5a, 'still mapped while pinned after the client left');
    release();
    assert.equal(view.length, 0);
  } finally {
    client.close();
    mem.close();
    server.close();
  }
});
