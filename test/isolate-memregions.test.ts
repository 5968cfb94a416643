// Memory-backed regions the client maps, under --isolate: a successor serves
// the memfd the client was given (the parent keeps a copy), not one of its
// own. So the client's mapping keeps reaching the device, the bytes stored
// into it since the last checkpoint are not replaced by the checkpoint's
// older copy, and a watched word stored while no child watched is seen once
// by the successor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, closeFd, mapRegion } from '../src/client/index.js';
import { startIsolated, tempDir, u32, until } from './helpers/isolated.js';

const INDEX = fileURLToPath(new URL('../src/index.js', import.meta.url));

/**
 * BAR0 (callbacks): a write adds its value to `state.count` (a request:
 * checkpointed), a read at 0 returns it, at 4 the doorbells seen while
 * `onRecover` (which takes a while) ran. BAR2: 8 KiB of memory the client
 * maps whole; its word at 0x1000 is a doorbell watched with rearming, whose
 * stores add to the count too.
 */
function deviceFile(dir: string): string {
  const file = join(dir, 'mem-dev.mjs');
  writeFileSync(
    file,
    `import { memoryWatch } from ${JSON.stringify(INDEX)};
export default function () {
  const state = { count: 0 };
  let recovering = false;
  let early = 0;
  const go = memoryWatch({ name: 'go', offset: 0x1000, length: 4, rearm: 0xffffffff, onWrite: (_offset, value) => { if (recovering) early++; state.count += value; } });
  return {
    name: 'mem-dev',
    identity: { vendorId: 0x1234, deviceId: 0x4244, classCode: 0xff0000 },
    state,
    async onRecover() {
      recovering = true;
      await new Promise((r) => setTimeout(r, 30));
      recovering = false;
    },
    bars: {
      0: { size: 4096, read: (offset) => (offset === 0 ? state.count : early), write(_offset, data) { state.count += data.readUInt32LE(0); } },
      2: { size: 8192, memory: true, watches: [go] },
    },
  };
}
`,
  );
  return file;
}

/** Waits, without yielding to the event loop (so the supervisor here cannot react), until `pid` runs no more. */
function waitDeadSync(pid: number): void {
  const deadline = Date.now() + 5000;
  for (;;) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return;
    }
    if ('ZX'.includes(stat[stat.lastIndexOf(')') + 2])) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} still runs after SIGKILL`);
  }
}

test('isolate: the successor serves the memory the client mapped: bytes stored since the checkpoint stay, a doorbell stored while no child watched is seen once', async () => {
  const dir = tempDir();
  const server = await startIsolated(deviceFile(dir), dir);
  const client = await Client.connect(server.path);
  const info = await client.regionInfo(2);
  assert.ok(info.fd !== undefined, 'BAR2 comes with its memfd');
  const page = mapRegion(info.fd, info.info.offset, 8192);
  closeFd(info.fd);
  const mapped = Buffer.from(page.bytes.buffer, page.bytes.byteOffset, 8192);
  const count = async (): Promise<number> => (await client.regionRead(0, 0, 4)).readUInt32LE(0);
  const ring = (v: number): void => void mapped.writeUInt32LE(v, 0x1000);
  try {
    // A checkpoint (the region's bytes in it: zeros), then bytes stored after it.
    await client.regionWrite(0, 0, u32(1));
    mapped.write('stored after the checkpoint', 0);
    ring(10);
    await until(() => mapped.readUInt32LE(0x1000) === 0xffffffff, 5000, 'the first child to see the doorbell');
    // Its effect needs a request to be checkpointed.
    await client.regionWrite(0, 0, u32(0));
    assert.equal(await count(), 11);

    for (let kill = 1; kill <= 2; kill++) {
      await server.standby();
      const pid = server.childPid!;
      process.kill(pid, 'SIGKILL');
      waitDeadSync(pid);
      // No process serves the device: the store waits in the memory.
      ring(100 * kill);
      mapped.write(`kill ${kill}`, 64);
      assert.equal(server.restarts, kill - 1);
      await until(() => server.restarts === kill, 8000, 'a successor');
      // Served by the successor: the checkpoint's count, plus the doorbell it found in the page.
      assert.equal(await count(), 11 + (kill === 1 ? 100 : 300));
      assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 0, 'watched only once the device recovered');
      assert.equal((await client.regionRead(2, 0, 27)).toString(), 'stored after the checkpoint', 'not the checkpoint\'s older copy');
      assert.equal((await client.regionRead(2, 64, 6)).toString(), `kill ${kill}`);
      // Its own writes reach the client's mapping, and the client's stores reach it.
      await client.regionWrite(2, 128, Buffer.from(`successor ${kill}`));
      assert.equal(mapped.toString('utf8', 128, 139), `successor ${kill}`);
      await client.regionWrite(0, 0, u32(0));
    }
    ring(5);
    await until(() => mapped.readUInt32LE(0x1000) === 0xffffffff, 5000, 'the last successor to see the doorbell');
    assert.equal(await count(), 316);
  } finally {
    page.unmap();
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
