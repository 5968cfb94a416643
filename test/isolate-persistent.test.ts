// Persistent device memory: areas that outlive an isolated child, and the
// onRecover hook a successor runs before it reads the client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { PersistentBlock } from '../src/device/persistent.js';
import { startIsolated, tempDir, u32 } from './helpers/isolated.js';

test('persistent block: a name is the same bytes every time, new areas are zeroed and aligned', () => {
  const raw = new Uint8Array(64 * 1024);
  const block = new PersistentBlock(raw, 8);
  block.clear();
  const a = block.area('a', 5);
  a.set([1, 2, 3, 4, 5]);
  const b = block.area('queue 0 inflight', 100);
  assert.equal(b.byteOffset % 8, 0, 'areas start 8-byte aligned');
  assert.ok(b.every((x) => x === 0));
  // Another view of the same memory (as a successor process would map it) finds both.
  const again = new PersistentBlock(raw, 8);
  assert.deepEqual([...again.area('a', 5)], [1, 2, 3, 4, 5]);
  again.area('queue 0 inflight', 100)[0] = 9;
  assert.equal(b[0], 9);
  assert.throws(() => again.area('a', 6), (e: Error) => e instanceof RangeError && /'a' exists with 5 bytes, asked for 6/.test(e.message));
  assert.throws(() => again.area('', 1), RangeError);
  assert.throws(() => again.area('x'.repeat(49), 1), /1\.\.48 UTF-8 bytes/);
  assert.throws(() => again.area('z', 0), /size must be a positive integer, got 0/);
  assert.throws(() => again.area('big', 1 << 20), /persistent memory is full: 'big' needs 1048576 bytes/);
  for (let i = 0; i < 6; i++) again.area(`n${i}`, 8);
  assert.throws(() => again.area('one too many', 8), /all 8 areas are in use/);
  again.clear();
  assert.ok(new PersistentBlock(raw, 8).area('a', 5).every((x) => x === 0), 'cleared: a new connection starts empty');
});

/**
 * A device with no checkpoint (migration: false) whose count lives in
 * persistent memory, and which records each recovery there.
 */
function persistentDevice(dir: string): string {
  const file = join(dir, 'persistent-dev.mjs');
  writeFileSync(
    file,
    `export default function () {
  const area = (d) => new DataView(d.persistent.area('counts', 16).buffer, d.persistent.area('counts', 16).byteOffset, 16);
  return {
    name: 'persistent-dev',
    identity: { vendorId: 0x1234, deviceId: 0x4243, classCode: 0xff0000 },
    migration: false,
    bars: {
      0: {
        size: 4096,
        read(offset, length, d) { return offset === 0 ? area(d).getUint32(0, true) : offset === 4 ? area(d).getUint32(4, true) : area(d).getUint32(8, true); },
        write(offset, data, d) { if (offset === 0) area(d).setUint32(0, area(d).getUint32(0, true) + data.readUInt32LE(0), true); },
      },
    },
    onRecover(d, reason) {
      const v = area(d);
      v.setUint32(4, v.getUint32(4, true) + 1, true);
      v.setUint32(8, reason === 'crash' ? 1 : 2, true);
    },
  };
}
`,
  );
  return file;
}

test('isolate: persistent memory outlives the child, onRecover runs in the successor, a new connection starts empty', async () => {
  const dir = tempDir();
  const server = await startIsolated(persistentDevice(dir), dir);
  try {
    let client = await Client.connect(server.path);
    await client.regionWrite(0, 0, u32(7));
    await client.regionWrite(0, 0, u32(5));
    for (let kill = 1; kill <= 2; kill++) {
      await server.standby();
      process.kill(server.childPid!, 'SIGKILL');
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 12, `the count after kill ${kill}, with no checkpoint`);
      assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), kill, 'onRecover ran once per successor');
      assert.equal((await client.regionRead(0, 8, 4)).readUInt32LE(0), 1, "onRecover's reason is 'crash'");
    }
    client.close();
    client = await Client.connect(server.path);
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 0, 'a new connection gets fresh persistent memory');
    client.close();
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate: writes inside checkpointFreeWrites take no checkpoint (a doorbell), other writes do', async () => {
  const dir = tempDir();
  const file = join(dir, 'doorbell-dev.mjs');
  writeFileSync(
    file,
    `export default function () {
  const state = { registers: 0, doorbells: 0 };
  return {
    name: 'doorbell-dev',
    identity: { vendorId: 0x1234, deviceId: 0x4245, classCode: 0xff0000 },
    state,
    checkpointFreeWrites: [{ region: 0, offset: 0x100, length: 0x100 }],
    bars: {
      0: {
        size: 4096,
        read(offset) { return offset === 0 ? state.registers : state.doorbells; },
        write(offset) { if (offset >= 0x100 && offset < 0x200) state.doorbells++; else state.registers++; },
      },
    },
  };
}
`,
  );
  const server = await startIsolated(file, dir);
  const client = await Client.connect(server.path);
  try {
    await client.regionWrite(0, 0, u32(1));
    await client.regionWrite(0, 0x100, u32(1));
    await client.regionWrite(0, 0x1fc, u32(1));
    // Straddling the range's end: not wholly inside, so checkpointed (with the doorbells counted so far).
    await client.regionWrite(0, 0x1fe, u32(1));
    await client.regionWrite(0, 0x104, u32(1));
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 4, 'four writes in the doorbell range counted');
    await server.standby();
    process.kill(server.childPid!, 'SIGKILL');
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 1, 'the register write was checkpointed');
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 3, 'the last doorbell write took no checkpoint: the successor has the count of the straddling write\'s checkpoint');
  } finally {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
