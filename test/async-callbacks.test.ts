// Async device callbacks: replies wait for them, in order, and they see their own data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../src/index.js';
import { Client } from '../src/client/index.js';
import { le32 } from './helpers/bytes.js';

test('async write callbacks keep their data across awaits and complete in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-async-'));
  const seen: number[] = [];
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const server = serve(
    {
      identity: { vendorId: 0x1234, deviceId: 0x0001 },
      bars: {
        0: {
          size: 4096,
          async write(_offset, data) {
            await new Promise((r) => setTimeout(r, 10));
            seen.push(data.readUInt32LE(0));
          },
          read: async () => seen.length,
        },
      },
    },
    join(dir, 'a.sock'),
    { log: 'silent' },
  );
  const client = await Client.connect(server.path);
  try {
    for (let i = 1; i <= 5; i++) {
      client.postRegionWrite(0, 0, le32(i * 11));
      // Separate arrivals: the next message lands while the callback still awaits.
      await new Promise((r) => setTimeout(r, 2));
    }
    const count = await client.regionRead(0, 0, 4);
    assert.equal(count.readUInt32LE(0), 5, 'the read waited for the posted writes before it');
    assert.deepEqual(seen, [11, 22, 33, 44, 55], 'each write saw its own bytes, in order');
    assert.ok(ticks > 10, 'the event loop kept running while callbacks waited');
  } finally {
    clearInterval(timer);
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
