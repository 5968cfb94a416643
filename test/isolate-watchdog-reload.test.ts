// An isolated device's child that hangs is killed by the watchdog and
// replaced, while another device keeps answering; a reload hands the
// device over to the code on disk, and a broken new version changes nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { alive, startIsolated, tempDir, u32, until, writeDeviceFile } from './helpers/isolated.js';

test('isolate: a callback in an endless loop is killed by the watchdog; another device answers throughout', async () => {
  const dir = tempDir();
  const stuck = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir, { watchdogMs: 300 }, 'stuck.sock');
  // The other device's own watchdog is loose: a loaded machine can stall a healthy child for 300 ms.
  const other = await startIsolated('counter', dir, { watchdogMs: 5000 }, 'other.sock');
  const a = await Client.connect(stuck.path);
  const b = await Client.connect(other.path);
  try {
    await a.regionWrite(0, 4, u32(2));
    const hung = a.regionWrite(0, 8, u32(1)).then(
      () => 'answered',
      (e: Error) => e.message,
    );
    let settled = false;
    void hung.then(() => (settled = true));
    // While the first device hangs, dies, hangs again in its successor and
    // has the request failed, the other one answers every read promptly.
    let reads = 0;
    let slowest = 0;
    const start = performance.now();
    while (!settled) {
      const t0 = performance.now();
      await b.regionRead(0, 0, 4);
      slowest = Math.max(slowest, performance.now() - t0);
      reads++;
    }
    const hungMs = performance.now() - start;
    assert.match(await hung, /errno 5|EIO/);
    // Two watchdog periods at least. Had the other device waited for the stuck one, a read would have taken
    // nearly all of it and few would have been answered (the bound is loose: a loaded machine stalls processes).
    assert.ok(hungMs >= 600, `hung for ${hungMs} ms`);
    assert.ok(reads > 50 && slowest < hungMs * 0.75, `${reads} reads, the slowest ${slowest.toFixed(0)} ms of ${hungMs.toFixed(0)} ms`);
    assert.equal(stuck.restarts, 2, 'the hung child, then its successor that hung on the same request');
    assert.equal(other.restarts, 0);
    // The stuck device is back, with its state.
    assert.equal((await a.regionRead(0, 4, 4)).readUInt32LE(0), 2);
  } finally {
    a.close();
    b.close();
    stuck.close();
    other.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate: reload runs the code on disk with the state intact; a version that fails to load or to take over leaves the old one serving', async () => {
  const dir = tempDir();
  const file = writeDeviceFile(dir, { version: 1, step: 1 });
  const server = await startIsolated(file, dir);
  const client = await Client.connect(server.path);
  try {
    await client.regionWrite(0, 4, u32(3));
    const oldPid = server.childPid;
    writeDeviceFile(dir, { version: 2, step: 10 });
    await server.reload();
    assert.notEqual(server.childPid, oldPid);
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 2, 'the new code answers');
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 3, 'with the old state');
    await client.regionWrite(0, 4, u32(1));
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 13, 'the new behaviour');

    const v2 = server.childPid;
    writeFileSync(file, 'export default function () { syntax error here');
    await assert.rejects(server.reload(), /did not load/);
    assert.equal(server.childPid, v2);
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 2, 'the old version serves on');

    writeDeviceFile(dir, { version: 3, extra: 'migration: { save: () => new Uint8Array(1), load() { throw new Error("cannot read this state"); } },' });
    await assert.rejects(server.reload(), /failed to take over: cannot read this state/);
    assert.equal(server.childPid, v2);
    await client.regionWrite(0, 4, u32(1));
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 23, 'the old version serves on, state and all');
  } finally {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate: close() during a reload ends the child the reload started too', async () => {
  const dir = tempDir();
  const server = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir);
  const client = await Client.connect(server.path);
  const pidFile = join(dir, 'incoming-pid');
  let reloading: Promise<unknown> | undefined;
  try {
    await client.regionWrite(0, 4, u32(1));
    // The new version takes over forever: the reload stays under way until close().
    writeDeviceFile(dir, { version: 2, extra: `async onRecover(d, reason) { if (reason === 'reload') { writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); await new Promise(() => {}); } },` });
    reloading = server.reload().then(
      () => assert.fail('the reload cannot have finished: its child never took over'),
      (e: Error) => e,
    );
    await until(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8') !== '', 8000, 'the new child taking over');
    const incoming = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(alive(incoming));
    client.close();
    server.close();
    // Well inside the 10 s the reload would wait for the new child before dropping it itself.
    await until(() => !alive(incoming), 3000, `the reload's child ${incoming} to end with the server`);
    assert.match(String(await reloading), /failed to take over/);
  } finally {
    client.close();
    server.close();
    await reloading;
    rmSync(dir, { recursive: true, force: true });
  }
});
