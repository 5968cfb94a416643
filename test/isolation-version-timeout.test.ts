// A connection that never sends VERSION is closed after
// ServerLimits.versionTimeoutMs, so it cannot hold the device: the next
// client gets it. A negotiated client is not affected by the timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../src/index.js';
import { Client } from '../src/client/index.js';
import { DEFAULT_LIMITS } from '../src/server/session.js';
import { RawConn } from './helpers/raw.js';
import { sleep } from './helpers/wait.js';

test('the default VERSION timeout is a few seconds', () => {
  assert.ok(DEFAULT_LIMITS.versionTimeoutMs >= 5000 && DEFAULT_LIMITS.versionTimeoutMs <= 10_000);
});

test('silent or half-sent connections are closed after the VERSION timeout; the waiting client gets the device', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'version.sock');
  const server = serve({ identity: { vendorId: 0x1af4, deviceId: 0x10f6, classCode: 0xff0000 }, bars: { 0: { size: 4096, memory: true } } }, path, {
    log: 'silent',
    limits: { versionTimeoutMs: 150 },
  });
  try {
    const silent = RawConn.connect(path);
    // A real client queues behind the silent one (one client at a time) and is served once it is dropped.
    const waiting = Client.connect(path, { timeoutMs: 10_000 });
    assert.equal(await silent.waitClosed(5000), true, 'the silent connection was closed');
    const c = await waiting;
    // Negotiated: the timeout no longer applies.
    await sleep(400);
    await c.regionWrite(0, 0, Buffer.from([7]));
    assert.equal((await c.regionRead(0, 0, 1))[0], 7);
    c.close();
    await c.whenClosed;

    // Half a header, then nothing.
    const half = RawConn.connect(path);
    for (let i = 0; i < 100 && server.session === undefined; i++) await sleep(5);
    half.send(Buffer.from([1, 0, 1, 0, 64]));
    assert.equal(await half.waitClosed(5000), true, 'the half-sent connection was closed');
    const d = await Client.connect(path, { timeoutMs: 10_000 });
    assert.equal((await d.regionRead(0, 0, 1))[0], 7);
    d.close();
  } finally {
    server.close();
  }
});
