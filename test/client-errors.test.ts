// Client errors name the command, the request and the errno (papercut 6):
// `REGION_READ of region 0 at 0x5 (2 bytes) refused: EINVAL`, not
// `server refused command 9: errno 22`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, ClientError } from '../src/client/index.js';
import { defineRegisters, serve } from '../src/index.js';

test('client errors name the command, the access and the errno', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-clienterr-'));
  const registers = defineRegisters([{ name: 'id', offset: 0, width: 4, access: 'ro' }]);
  const server = serve({ identity: { vendorId: 0x1234, deviceId: 1 }, bars: { 0: registers.bar({ size: 4096 }) } }, join(dir, 's.sock'), { log: 'silent' });
  const c = await Client.connect(server.path);
  try {
    await assert.rejects(c.regionRead(0, 0x1, 2), (e: Error) => {
      assert.ok(e instanceof ClientError);
      assert.equal(e.message, 'REGION_READ of region 0 at 0x1 (2 bytes) refused: EINVAL');
      assert.equal(e.errno, 22);
      return true;
    });
    await assert.rejects(c.regionWrite(3, 0, Buffer.alloc(1)), { message: 'REGION_WRITE of region 3 at 0x0 (1 byte) refused: EINVAL' });
    await assert.rejects(c.regionInfo(42), { message: 'DEVICE_GET_REGION_INFO refused: EINVAL' });
    assert.equal(new ClientError(77, 4242).message, 'command 77 refused: errno 4242');
  } finally {
    c.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a refused guest access is warned about by default, with register, offset and width, rate-limited', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-clienterr-'));
  const warnings: string[] = [];
  const log = { debug: () => {}, info: () => {}, warn: (m: string) => void warnings.push(m), error: (m: string) => void warnings.push(`error: ${m}`) };
  const registers = defineRegisters([{ name: 'status', offset: 0x10, width: 4, access: 'ro' }]);
  const server = serve({ identity: { vendorId: 0x1234, deviceId: 1 }, bars: { 0: registers.bar({ size: 4096 }) } }, join(dir, 's.sock'), { log });
  const c = await Client.connect(server.path);
  try {
    await assert.rejects(c.regionRead(0, 0x11, 2));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /^REGION_READ of region 0 at 0x11 \(2 bytes\) refused \(the guest reads all-ones\): 2-byte read at 0x11 hits register status/);
    await assert.rejects(c.regionWrite(0, 0x1000, Buffer.alloc(4)));
    assert.match(warnings[1], /^REGION_WRITE of region 0 at 0x1000 \(4 bytes\) refused \(the write is lost\): region 0: access 4096\+4 outside/);
    for (let i = 0; i < 20; i++) await assert.rejects(c.regionRead(0, 0x11, 2));
    assert.equal(warnings.length, 5, 'at most 5 warnings per 10 s');
  } finally {
    c.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
