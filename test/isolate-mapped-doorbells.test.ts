// NVMe and virtio-blk under --isolate with their doorbells in a page the
// client maps (`mmapDoorbells`): the driver rings only by stores into the
// page it mapped from the first child. A successor serves that same memory
// (the parent kept the memfd the client was given), so every doorbell stored
// before, during and after a kill (before any successor exists, too), and
// after the takeover through the same old mapping, reaches the device. Every
// request completes once, with verified data; a doorbell that goes unseen
// leaves its request hanging and the test failing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { IsolatedServer } from '../src/isolate/index.js';
import { killUnderIo, nvmeIsolated, prng, pump, VerifiedIo, type NvmeIsolated } from './helpers/nvme-isolated.js';
import { CHILD_ENTRY, quiet, tempDir, until } from './helpers/isolated.js';
import { VirtioDriver } from './helpers/virtio-driver.js';
import { BlkWorkload } from './helpers/blk-workload.js';

/** Mapped doorbells are served with a poll window, as `--mmap-doorbells` is meant to be. */
const POLL_MS = 2;

function start(): Promise<NvmeIsolated> {
  // No shadow doorbells: every doorbell is a store into the mapped page.
  return nvmeIsolated({ mib: 8, shadow: false, mmapDoorbells: true, pollIdleMs: POLL_MS });
}

/**
 * Waits, without yielding to the event loop, until process `pid` is dead
 * (a zombie, or gone): it runs no more, and this process (its parent's
 * supervisor too) cannot have noticed yet, so nothing has taken over.
 */
function waitDeadSync(pid: number, timeoutMs = 5000): void {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let state: string;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return; // reaped already
    }
    if (state === 'Z' || state === 'X') return;
    if (Date.now() > deadline) throw new Error(`process ${pid} still runs (${state}) ${timeoutMs} ms after SIGKILL`);
  }
}

/** Only the page carried doorbells; the successors answered every one. */
function assertAllStored(n: NvmeIsolated, io: VerifiedIo): void {
  assert.equal(io.failure, undefined);
  assert.equal(n.driver.doorbellMessages, 0, 'no doorbell went by message');
  assert.ok(n.driver.doorbellStores > 50, `${n.driver.doorbellStores} doorbells stored into the page`);
}

test('isolate nvme, mapped doorbells: SIGKILLs idle, with commands in flight and at random moments; the old mapping keeps ringing the successors', async () => {
  const n = await start();
  const io = new VerifiedIo(n, [1, 2], 8, 256, prng(11));
  try {
    await pump(io, () => io.completed >= 64);
    let restarts = 0;

    // Idle: nothing in flight, the next doorbells go to a successor through the page mapped from the first child.
    await n.server.standby();
    process.kill(n.server.childPid!, 'SIGKILL');
    await until(() => n.server.restarts === restarts + 1, 8000, 'a successor');
    restarts++;
    let before = io.completed;
    await pump(io, () => io.completed >= before + 64);

    // Inside a doorbell's work: a command taken (its SQ tail stored into the page and seen), its data moved, its CQE written.
    for (const [point, passes] of [['taken', 5], ['data-moved', 9], ['cqe-written', 3]] as const) await killUnderIo(n, io, point, passes, ++restarts, 48);

    // At random moments while the driver keeps storing doorbells.
    const random = prng(2026);
    for (let k = 0; k < 4; k++) {
      await n.server.standby();
      let stop = false;
      const driving = pump(io, () => stop, 15_000);
      await new Promise((r) => setTimeout(r, 5 + random() * 30));
      process.kill(n.server.childPid!, 'SIGKILL');
      await until(() => n.server.restarts === restarts + 1 || io.failure !== undefined, 8000, 'a successor');
      restarts++;
      before = io.completed;
      await until(() => io.completed >= before + 32 || io.failure !== undefined, 8000, 'commands completed by the successor');
      stop = true;
      await driving;
    }
    // A reload under the same I/O: the old child stops looking at the page, the new one serves it.
    let stop = false;
    const driving = pump(io, () => stop, 15_000);
    await n.server.reload();
    before = io.completed;
    await until(() => io.completed >= before + 32 || io.failure !== undefined, 8000, 'commands completed by the reloaded child');
    stop = true;
    await driving;
    assertAllStored(n, io);
    assert.equal(n.server.restarts, restarts);
    assert.equal((await n.driver.identify(1)).cqe.status, 0, 'the admin queue, rung through the page, is in sync');
  } finally {
    n.close();
  }
});

test('isolate nvme, mapped doorbells: a doorbell stored after the kill, before any successor exists, is served once', async () => {
  const n = await start();
  const io = new VerifiedIo(n, [1, 2], 8, 64, prng(5));
  try {
    await pump(io, () => io.completed >= 32);
    for (let round = 1; round <= 3; round++) {
      await n.server.standby();
      const pid = n.server.childPid!;
      process.kill(pid, 'SIGKILL');
      waitDeadSync(pid);
      // Nothing serves the device now: the SQ tails stored below wait in the page.
      await io.submit();
      assert.equal(n.server.restarts, round - 1, 'the stores came before the supervisor heard of the death');
      assert.ok(io.outstanding > 0);
      await io.finish();
      assert.equal(n.server.restarts, round);
      const before = io.completed;
      await pump(io, () => io.completed >= before + 32);
    }
    assertAllStored(n, io);
  } finally {
    n.close();
  }
});

test('isolate virtio-blk, mapped notify: kicks stored into the first child\'s page reach every successor, with requests in flight and stored after the kill', async () => {
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(8 * 1024 * 1024));
  // No polling of the avail ring (poll-us 0): every request needs its kick.
  const device = { device: 'virtio-blk', options: { image, 'mmap-doorbells': true, 'poll-us': '0' }, pollIdleMs: POLL_MS };
  const server = await IsolatedServer.start(device, join(dir, 'blk.sock'), { entry: CHILD_ENTRY, log: quiet });
  const client = await Client.connect(server.path);
  const d = await VirtioDriver.open(client, { memorySize: 16 * 1024 * 1024 });
  const w = new BlkWorkload(d, { blocks: 256, depth: 4, maxBlocks: 8, kicks: ['mapped'] });
  try {
    await d.start(1);
    const rounds = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        await w.fill();
        await w.drain();
      }
    };
    await rounds(10);
    for (let kill = 1; kill <= 4; kill++) {
      await server.standby();
      const pid = server.childPid!;
      if (kill % 2 === 1) {
        // Requests in flight, kicked into the page, when the child dies.
        await w.fill();
        process.kill(pid, 'SIGKILL');
      } else {
        process.kill(pid, 'SIGKILL');
        waitDeadSync(pid);
        // Kicked while no process serves the device.
        await w.fill();
        assert.equal(server.restarts, kill - 1, 'the kick came before the supervisor heard of the death');
      }
      await w.drain();
      assert.equal(server.restarts, kill);
      await rounds(5);
    }
    w.checkExactlyOnce();
    assert.ok(w.posted > 100, `${w.posted} requests`);
  } finally {
    d.close();
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
