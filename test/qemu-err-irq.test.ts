// QEMU warns "Could not enable error recovery for the device" unless the ERR
// IRQ index (3) has exactly one vector (papercut 8, documented in qemu.md):
// `interrupts: { err: true }` is what silences it, and nothing else offers it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { IrqIndex, serve } from '../src/index.js';

test('the ERR IRQ has one vector exactly when the device declares interrupts.err, as QEMU checks', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-err-'));
  try {
    for (const err of [false, true]) {
      const server = serve({ identity: { vendorId: 0x1234, deviceId: 1 }, interrupts: { intx: true, err } }, join(dir, `${err}.sock`), { log: 'silent' });
      const c = await Client.connect(server.path);
      assert.equal((await c.irqInfo(IrqIndex.ERR)).count, err ? 1 : 0);
      c.close();
      server.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
