// The timer sample does its DMA in the original sample's order: through the
// shared fd first, then by messages. The original client unmaps everything
// right after the last DMA message; a direct DMA after that would fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, EventFd, privateMemory, sharedMemory } from '../src/client/index.js';
import { startTimer } from './helpers/timer-process.js';

const PAGE = 4096;

test('timer: direct DMA first, then DMA messages; unmapping after the last message loses nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-timer-order-'));
  const server = await startTimer(join(dir, 't.sock'), { verbose: true });
  const byMessages = privateMemory(PAGE);
  const mapped = sharedMemory(PAGE);
  const irq = new EventFd();
  const client = await Client.connect(server.path);
  try {
    await client.setBusMaster(); // DMA needs Bus Master Enable
    await client.dmaMap(0x10000, byMessages);
    await client.dmaMap(0x20000, mapped);
    await client.setBusMaster();
    await client.setIrqEventfds(0, 0, [irq.fd]);
    const now = Buffer.alloc(8);
    now.writeBigInt64LE(BigInt(Math.floor(Date.now() / 1000)));
    await client.regionWrite(0, 0, now); // a deadline already reached: fires at once
    await irq.waitFor(1);
    while (client.dmaRequestsServed < 8) await new Promise((r) => setTimeout(r, 5));
    // What the original client does right after the last DMA message.
    await client.dmaUnmap(0, 0, true);
    while (!server.stderr.includes('DMA by messages')) await new Promise((r) => setTimeout(r, 5));
    const log = server.stderr;
    assert.doesNotMatch(log, /DMA failed/);
    const direct = log.indexOf('DMA through the shared fd (mapped) at 0x20000: ok');
    const messages = log.indexOf('DMA by messages at 0x10000: ok');
    assert.ok(direct >= 0 && messages > direct, `direct DMA logged before message DMA:\n${log}`);
    for (let i = 0; i < 4; i++) assert.equal(mapped.bytes[i * 1024], 0x61 + i, `mapped page quarter ${i}`);
    for (let i = 0; i < 4; i++) assert.equal(byMessages.bytes[i * 1024], 0x41 + i, `message page quarter ${i}`);
  } finally {
    client.close();
    irq.close();
    byMessages.close();
    mapped.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
