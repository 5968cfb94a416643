// Many devices in one process: each has its own socket, state and client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../src/index.js';
import { Client, EventFd } from '../src/client/index.js';
import { benchDevice } from '../src/samples/bench.js';

test('16 devices in one process serve 16 concurrent clients independently', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-multi-'));
  const servers = Array.from({ length: 16 }, (_, i) => serve(benchDevice(), join(dir, `d${i}.sock`), { log: 'silent' }));
  const clients = await Promise.all(servers.map((s) => Client.connect(s.path)));
  const irqs = clients.map(() => new EventFd());
  try {
    await Promise.all(clients.map((c, i) => c.setIrqEventfds(2, 0, [irqs[i].fd])));
    await Promise.all(clients.map((c, i) => c.regionWrite(0, 0, Buffer.from([i, i, i, i]))));
    const doorbell = (n: number): Buffer => Buffer.from([n, 0, 0, 0]);
    await Promise.all(clients.map((c, i) => c.regionWrite(1, 0, doorbell(i + 1))));
    for (let i = 0; i < clients.length; i++) {
      assert.deepEqual([...(await clients[i].regionRead(0, 0, 4))], [i, i, i, i], `device ${i} kept its own memory`);
      assert.equal(await irqs[i].waitFor(i + 1), i + 1, `device ${i} raised only its own interrupts`);
    }
    // One device going away leaves the others serving.
    clients[0].close();
    servers[0].close();
    assert.equal((await clients[1].deviceInfo()).numRegions, 9);
  } finally {
    clients.forEach((c) => c.close());
    irqs.forEach((e) => e.close());
    servers.forEach((s) => s.close());
    rmSync(dir, { recursive: true, force: true });
  }
});
