// The README's example device, driven by the client library over a real socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../src/index.js';
import { Client, EventFd, privateMemory, sharedMemory } from '../src/client/index.js';
import { counterDevice } from '../src/samples/counter.js';

const IRQ_MSIX = 2;

test('counter: increments, interrupts and DMA through shared and fd-less memory', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'counter.sock');
  const server = serve(counterDevice(), path, { log: 'silent' });
  const client = await Client.connect(path);
  const irq = new EventFd();
  const shared = sharedMemory(1 << 16);
  const plain = privateMemory(1 << 16);
  try {
    await client.setIrqEventfds(IRQ_MSIX, 0, [irq.fd]);
    const inc = Buffer.alloc(4);
    inc.writeUInt32LE(5);
    await client.regionWrite(0, 4, inc);
    await client.regionWrite(0, 4, inc);
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 10);
    assert.equal(await irq.waitFor(2), 2);

    await client.setBusMaster(); // DMA needs Bus Master Enable
    await client.dmaMap(0x10000, shared);
    await client.dmaMap(0x40000, plain);
    for (const [base, mem] of [[0x10000, shared], [0x40000, plain]] as const) {
      mem.bytes.set(Array.from({ length: 16 }, (_, i) => i + 1), 0x100);
      const addr = Buffer.alloc(8);
      addr.writeBigUInt64LE(BigInt(base + 0x100));
      await client.regionWrite(0, 8, addr);
      assert.deepEqual([...mem.bytes.subarray(0x110, 0x120)], Array.from({ length: 16 }, (_, i) => 16 - i));
    }
    assert.ok(client.dmaRequestsServed >= 2, 'fd-less memory was reached through DMA_READ/DMA_WRITE');
  } finally {
    client.close();
    irq.close();
    shared.close();
    server.close();
  }
});
