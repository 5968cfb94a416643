/**
 * Virtio 1.2, 2.4: once a reset is answered, the device never again writes
 * the guest memory of the requests it abandoned. Many 64 KiB reads sit in
 * a slow backend (a file whose reads finish late, an NBD server that
 * answers late) with zero-copy views of guest memory; the driver resets
 * (status 0, DEVICE_RESET; an FLR runs the same device reset as DEVICE_RESET); after the reply the
 * test snapshots guest memory, waits until every read has finished, and
 * finds guest memory byte-identical. Likewise a client that leaves: the
 * next client is served only once nothing of the last one's requests can
 * write its memory. And a backend that never answers: after the reset
 * timeout the reset completes, and the read, let go later, lands nowhere
 * in guest memory.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Buffer } from 'node:buffer';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import type { Client } from '../src/client/index.js';
import { openFileBackend, openNbdBackend, serve, virtioBlk, virtioDevice, type BlockBackend, type Server } from '../src/index.js';
import { connectClient } from './helpers/raw.js';
import { changedPages, closeSlowRig, SlowBackend, waitUntil, type SlowRig } from './helpers/slow-backend.js';
import { T_IN, buildBlk } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';
import { VirtioDriver } from './helpers/virtio-driver.js';
import { CommonCfg } from '../src/virtio/index.js';
import { fakeNbdServer, simpleReply } from './helpers/fake-nbd-server.js';
import { COMPLETED, mkfifo, PipeBackend, STARTED } from './helpers/slow-backend.js';
import type { SlowBlkQueueData } from './fixtures/slow-blk-queue.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-reset-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

const MiB = 1024 * 1024;
const READS = 32;
const READ_BYTES = 64 * 1024;

/** A disk image of `size` bytes of a non-zero pattern (so reads change guest memory). */
export function imageFile(size = 4 * MiB): string {
  const path = join(dir, `disk${serial++}.img`);
  writeFileSync(path, pattern(size, 77));
  return path;
}

interface Rig extends SlowRig {
  server: Server;
  client: Client;
  driver: VirtioDriver;
}

let r: Rig | undefined;
afterEach(async () => {
  if (r) await closeSlowRig(r);
  r = undefined;
});

async function blkRig(inner: BlockBackend, o: { delayMs?: number; resetTimeoutMs?: number } = {}): Promise<Rig> {
  const backend = new SlowBackend(inner, { delayMs: o.delayMs ?? 150 });
  const spec = virtioBlk({ backend, queueSize: 64, resetTimeoutMs: o.resetTimeoutMs });
  const server = serve(spec, join(dir, `blk${serial++}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const driver = await VirtioDriver.open(client, { memorySize: 8 * MiB });
  await driver.start(1);
  r = { server, client, driver, backend };
  return r;
}

/** Posts READS reads of READ_BYTES each and waits until the backend has them all. */
export async function readsInFlight(d: VirtioDriver, started: () => number): Promise<void> {
  for (let i = 0; i < READS; i++) d.post(0, buildBlk(d, T_IN, i * (READ_BYTES / 512), { inLen: READ_BYTES, segment: READ_BYTES }).bufs, { indirect: true });
  await d.kick(0);
  await waitUntil(() => started() === READS, `${READS} reads in the backend`);
}

/**
 * After `reset` was answered: guest memory does not change while the
 * abandoned reads finish.
 */
export async function assertUntouched(mem: Uint8Array, reset: () => Promise<void>, completed: () => number, settle: () => Promise<unknown>): Promise<void> {
  await reset();
  const snapshot = Buffer.from(mem);
  await waitUntil(() => completed() === READS, 'the abandoned reads to finish');
  await settle(); // a round trip: whatever followed the reads on the server has run
  const changed = changedPages(snapshot, mem);
  assert.equal(changed, 0, `${changed} guest pages changed after the reset was answered`);
}

describe('virtio-blk: a reset is answered only when its abandoned reads cannot write guest memory', () => {
  test('driver reset (status 0) on the main thread, file backend', async () => {
    const { driver: d, backend: b, client } = await blkRig(await openFileBackend(imageFile()));
    await readsInFlight(d, () => b.started);
    await assertUntouched(d.mem.bytes, () => d.setStatus(0), () => b.completed, () => d.status());
    assert.equal(d.usedState(0).idx, 0, 'no abandoned request completed');
    // The device serves the driver's new setup.
    b.release();
    await d.start(1);
    await client.regionRead(0, 0, 4);
  });

  test('DEVICE_RESET from the client', async () => {
    const { driver: d, backend: b, client } = await blkRig(await openFileBackend(imageFile()));
    await readsInFlight(d, () => b.started);
    await assertUntouched(d.mem.bytes, () => client.reset(), () => b.completed, () => d.status());
  });

  test('driver reset through the PCI config access capability', async () => {
    const { driver: d, backend: b, client } = await blkRig(await openFileBackend(imageFile()));
    await readsInFlight(d, () => b.started);
    const at = d.caps.pciCfg;
    const window = Buffer.alloc(8);
    window.writeUInt32LE(CommonCfg.DEVICE_STATUS, 0);
    window.writeUInt32LE(1, 4);
    await client.regionWrite(7, at + 4, Buffer.from([d.caps.bar]));
    await client.regionWrite(7, at + 8, window.subarray(0, 4));
    await client.regionWrite(7, at + 12, window.subarray(4));
    await assertUntouched(d.mem.bytes, () => client.regionWrite(7, at + 16, Buffer.from([0])), () => b.completed, () => d.status());
  });

  test('a client that leaves: the next one is served once the reads it left behind are done', async () => {
    const { driver: d, backend: b, server } = await blkRig(await openFileBackend(imageFile()), { delayMs: 300 });
    await readsInFlight(d, () => b.started);
    const mem = d.mem.bytes;
    d.client.close();
    const next = await connectClient(server.path);
    try {
      // The new client's first answer comes after the old client's reset.
      await next.regionRead(7, 0, 4);
      const snapshot = Buffer.from(mem);
      await waitUntil(() => b.completed === READS, 'the abandoned reads to finish');
      await next.regionRead(7, 0, 4);
      assert.equal(changedPages(snapshot, mem), 0, 'the old client\'s memory changed after the next client was served');
    } finally {
      next.close();
    }
  });

  test('a backend that never answers: the reset completes after its timeout, and the late read lands outside guest memory', async () => {
    const { driver: d, backend: b } = await blkRig(await openFileBackend(imageFile()), { delayMs: Infinity, resetTimeoutMs: 300 });
    await readsInFlight(d, () => b.started);
    const t0 = Date.now();
    await d.setStatus(0);
    assert.ok(Date.now() - t0 >= 250, 'the reset waited for its timeout');
    const snapshot = Buffer.from(d.mem.bytes);
    b.release();
    await waitUntil(() => b.completed === READS, 'the reads let go after the reset');
    await d.status();
    assert.equal(changedPages(snapshot, d.mem.bytes), 0, 'a late read wrote guest memory');
    // The driver's new setup works on the same memory: the mapping was replaced, not lost.
    b.delayMs = 0;
    await d.start(1);
    const req = buildBlk(d, T_IN, 8, { inLen: 4096 });
    const used = await d.roundTrip(0, req.bufs);
    const got = req.result(used.len);
    assert.equal(got.status, 0);
    assert.deepEqual(got.data, Buffer.from(pattern(4 * MiB, 77).subarray(8 * 512, 8 * 512 + 4096)));
  });

  test('an NBD server that answers late', async () => {
    const image = Buffer.from(pattern(4 * MiB, 78));
    const nbd = await fakeNbdServer({
      size: image.length,
      structured: false,
      reply: (socket, req) => {
        const data = req.type === 0 ? image.subarray(req.offset, req.offset + req.length) : Buffer.alloc(0);
        setTimeout(() => socket.write(Buffer.concat([simpleReply(req.cookie), data])), 150);
      },
    });
    try {
      const { driver: d, backend: b } = await blkRig(await openNbdBackend(nbd.uri), { delayMs: 0 });
      await readsInFlight(d, () => b.started);
      await assertUntouched(d.mem.bytes, () => d.setStatus(0), () => b.completed, () => d.status());
    } finally {
      nbd.server.close();
    }
  });
});

describe('virtio-blk on a worker thread: a reset is answered only when its abandoned reads cannot write guest memory', () => {
  test('driver reset (status 0), file backend read late on the thread', async () => {
    const counts = new Int32Array(new SharedArrayBuffer(8));
    const data: SlowBlkQueueData = { path: imageFile(), delayMs: 150, counts: counts.buffer as SharedArrayBuffer };
    const spec = virtioDevice({ type: 2, queues: [{ size: 64, worker: { module: new URL('./fixtures/slow-blk-queue.js', import.meta.url), data } }] });
    const server = serve(spec, join(dir, `w${serial++}.sock`), { log: 'silent' });
    const client = await connectClient(server.path);
    const d = await VirtioDriver.open(client, { memorySize: 8 * MiB });
    try {
      await d.start(1);
      await readsInFlight(d, () => Atomics.load(counts, STARTED));
      await assertUntouched(d.mem.bytes, () => d.setStatus(0), () => Atomics.load(counts, COMPLETED), () => d.status());
    } finally {
      d.close();
      client.close();
      server.close();
    }
  });
});

/**
 * Writes one byte more than a pipe holds into `fifo`: returns once the
 * blocked read took bytes (its copy into its buffers is done). EPIPE: it
 * did, and then its thread, ended meanwhile, closed the last reader.
 */
function feedPipe(fifo: string): void {
  try {
    writeFileSync(fifo, Buffer.from(pattern(64 * 1024 + 1, 79)));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPIPE') throw e;
  }
}

describe('past the reset timeout: a read blocked in the kernel that ends later lands outside guest memory', () => {
  test('main thread: the region is remapped, the old views cover scratch memory', async () => {
    const fifo = join(dir, `fifo${serial++}`);
    mkfifo(fifo);
    const inner = await PipeBackend.open(fifo, 4 * MiB);
    const { driver: d } = await blkRig(inner, { delayMs: 0, resetTimeoutMs: 200 });
    d.post(0, buildBlk(d, T_IN, 0, { inLen: READ_BYTES, segment: READ_BYTES }).bufs, { indirect: true });
    await d.kick(0);
    await waitUntil(() => inner.started === 1, 'the read to block on the pipe');
    await d.setStatus(0); // answered after the timeout, the read still blocked
    const snapshot = Buffer.from(d.mem.bytes);
    feedPipe(fifo);
    await waitUntil(() => inner.completed === 1, 'the read to return');
    await d.status();
    assert.equal(changedPages(snapshot, d.mem.bytes), 0, 'the late read wrote guest memory');
  });

  test('worker thread: the thread is ended and its mappings revoked first', async () => {
    const fifo = join(dir, `fifo${serial++}`);
    mkfifo(fifo);
    const counts = new Int32Array(new SharedArrayBuffer(8));
    const data: SlowBlkQueueData = { path: fifo, fifo: true, counts: counts.buffer as SharedArrayBuffer };
    const spec = virtioDevice({ type: 2, queues: [{ size: 64, worker: { module: new URL('./fixtures/slow-blk-queue.js', import.meta.url), data, resetTimeoutMs: 1000 } }] });
    const server = serve(spec, join(dir, `w${serial++}.sock`), { log: 'silent' });
    const client = await connectClient(server.path);
    const d = await VirtioDriver.open(client, { memorySize: 8 * MiB });
    try {
      await d.start(1);
      d.post(0, buildBlk(d, T_IN, 0, { inLen: READ_BYTES, segment: READ_BYTES }).bufs, { indirect: true });
      await d.kick(0);
      await waitUntil(() => Atomics.load(counts, STARTED) === 1, 'the read to block on the pipe');
      await d.setStatus(0); // after the timeout the thread is ended, its read still blocked
      const snapshot = Buffer.from(d.mem.bytes);
      feedPipe(fifo);
      await d.status();
      assert.equal(changedPages(snapshot, d.mem.bytes), 0, 'the late read wrote guest memory');
    } finally {
      d.close();
      client.close();
      server.close();
    }
  });
});
