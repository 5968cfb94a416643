/**
 * Live migration of virtio-blk between two servers sharing one disk (as
 * two hosts share an image): the driver keeps its guest memory and rings;
 * queue state, features and status move; requests in flight finish before
 * the source stops; I/O runs during pre-copy.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { dirtyReport, migrate, getMigrationState, setMigrationState, startDirtyLogging, stopDirtyLogging, MigrationState } from '../src/client/index.js';
import { serve, virtioBlk } from '../src/index.js';
import { VirtioStatus } from '../src/virtio/index.js';
import { connectClient } from './helpers/raw.js';
import { probeRam } from './helpers/probe-backend.js';
import { VirtioProcess } from './helpers/virtio-process.js';
import { GUEST_BASE, VirtioDriver } from './helpers/virtio-driver.js';
import { S_OK, T_IN, T_OUT, blk, buildBlk } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';
import { closeEach } from './helpers/close.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-vmig-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const OK_STATUS = VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK;

test('virtio-blk migrates with requests in flight and I/O during pre-copy', async () => {
  const disk = probeRam(4 * 1024 * 1024);
  const source = serve(virtioBlk({ backend: disk, queues: 2, queueSize: 64 }), join(dir, 'src.sock'), { log: 'silent' });
  const destination = serve(virtioBlk({ backend: disk, queues: 2, queueSize: 64 }), join(dir, 'dst.sock'), { log: 'silent' });
  const a = await connectClient(source.path);
  const b = await connectClient(destination.path);
  const d = await VirtioDriver.open(a);
  try {
    const features = await d.start(2);
    assert.equal((await blk(d, 0, T_OUT, 0, { out: pattern(4096, 1) })).status, S_OK);

    // Two writes held by the backend: in flight when migration starts.
    disk.holding = true;
    const held = [buildBlk(d, T_OUT, 64, { out: pattern(4096, 2) }), buildBlk(d, T_OUT, 72, { out: pattern(4096, 3) })];
    const heldHeads = held.map((r) => d.post(1, r.bufs));
    await d.kick(1);
    await disk.waitHeld(2);

    await d.attachTo(b);
    let releasedBeforeStop = false;
    let preCopyIo: Promise<number> | undefined;
    const migration = migrate(a, b, {
      onStep(step) {
        if (step === 'source: PRE_COPY') {
          // I/O while pre-copy runs: a write on queue 0, served by the source.
          disk.holding = false;
          preCopyIo = blk(d, 0, T_OUT, 128, { out: pattern(8192, 4) }).then((r) => r.status);
          // The held writes finish a little later; STOP must wait for them.
          setImmediate(() => {
            releasedBeforeStop = true;
            disk.releaseAll();
          });
        }
      },
    });
    await migration;
    assert.ok(releasedBeforeStop, 'the source stopped only after its requests finished');
    assert.equal(await preCopyIo, S_OK);
    assert.equal(await getMigrationState(b), MigrationState.RUNNING);

    // The held requests completed on the source, before it stopped.
    const done = await d.waitUsed(1, 2);
    assert.deepEqual(done.map((u) => u.id).sort(), [...heldHeads].sort());
    for (const r of held) assert.equal(r.result(1).status, S_OK);

    // The destination carries on with the same rings, features and status.
    d.useClient(b);
    assert.equal(await d.status(), OK_STATUS);
    const after = await d.deviceFeatures();
    assert.equal(after & features, features);
    for (const q of [0, 1]) {
      for (const kick of ['message', 'eventfd'] as const) {
        const data = pattern(2048, 10 + q);
        assert.equal((await blk(d, q, T_OUT, 200 + q * 8, { out: data, kick })).status, S_OK);
        assert.deepEqual((await blk(d, q, T_IN, 200 + q * 8, { inLen: 2048, kick })).data, data);
      }
    }
    // Everything written before and during migration is on the disk.
    assert.deepEqual((await blk(d, 0, T_IN, 0, { inLen: 4096 })).data, pattern(4096, 1));
    assert.deepEqual((await blk(d, 0, T_IN, 64, { inLen: 4096 })).data, pattern(4096, 2));
    assert.deepEqual((await blk(d, 0, T_IN, 72, { inLen: 4096 })).data, pattern(4096, 3));
    assert.deepEqual((await blk(d, 1, T_IN, 128, { inLen: 8192 })).data, pattern(8192, 4));
  } finally {
    closeEach(d, a, b, source, destination);
  }
});

test('a kick that arrives while the source is stopped is served by the destination', async () => {
  const disk = probeRam(1024 * 1024);
  const source = serve(virtioBlk({ backend: disk, queueSize: 32 }), join(dir, 'src2.sock'), { log: 'silent' });
  const destination = serve(virtioBlk({ backend: disk, queueSize: 32 }), join(dir, 'dst2.sock'), { log: 'silent' });
  const a = await connectClient(source.path);
  const b = await connectClient(destination.path);
  const d = await VirtioDriver.open(a);
  try {
    await d.start(1);
    await d.attachTo(b);
    // Posted but not yet noticed by the source: the destination takes it when it runs.
    const req = buildBlk(d, T_OUT, 8, { out: pattern(1024, 6) });
    await migrate(a, b, {
      onStep(step) {
        if (step === 'source: STOP_COPY') d.post(0, req.bufs);
      },
    });
    d.useClient(b);
    await d.kick(0);
    const used = await d.waitUsed(0, 1);
    assert.equal(req.result(used[0].len).status, S_OK);
    assert.deepEqual(await disk.peek(8 * 512, 8 * 512 + 1024), pattern(1024, 6));
  } finally {
    closeEach(d, a, b, source, destination);
  }
});

test('STOP waits for the requests in flight; they complete before it answers', async () => {
  const disk = probeRam(1024 * 1024);
  const source = serve(virtioBlk({ backend: disk, queueSize: 32 }), join(dir, 'src3.sock'), { log: 'silent' });
  const a = await connectClient(source.path);
  const d = await VirtioDriver.open(a);
  try {
    await d.start(1);
    disk.holding = true;
    const req = buildBlk(d, T_OUT, 0, { out: pattern(4096, 8) });
    d.post(0, req.bufs);
    await d.kick(0);
    await disk.waitHeld(1);
    let stopped = false;
    const stop = setMigrationState(a, MigrationState.STOP).then(() => (stopped = true));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.equal(stopped, false, 'STOP cannot finish while a request is in flight');
    assert.equal(d.usedState(0).idx, 0);
    disk.releaseAll();
    await stop;
    assert.equal(d.usedState(0).idx, 1, 'the request completed before STOP answered');
    assert.equal(req.result(1).status, S_OK);
    // Stopped: a new kick waits; RUNNING serves it.
    const next = buildBlk(d, T_IN, 0, { inLen: 4096 });
    d.post(0, next.bufs);
    d.takeUsed(0);
    await setMigrationState(a, MigrationState.RUNNING);
    await d.kick(0);
    const used = await d.waitUsed(0, 1);
    assert.deepEqual(next.result(used[0].len).data, pattern(4096, 8));
  } finally {
    d.close();
    a.close();
    source.close();
  }
});

test('pages that I/O writes after a dirty report are reported again when it finishes', async () => {
  const disk = probeRam(1024 * 1024);
  await disk.fill(0x42, 0, 4096);
  const server = serve(virtioBlk({ backend: disk, queueSize: 32 }), join(dir, 'dirty.sock'), { log: 'silent' });
  const a = await connectClient(server.path);
  const d = await VirtioDriver.open(a);
  try {
    await d.start(1);
    const size = d.mem.bytes.length;
    await startDirtyLogging(a, 4096, [{ iova: GUEST_BASE, length: size }]);
    disk.holding = true;
    // The data buffer alone on its page: nothing else the device writes shares it.
    const header = Buffer.alloc(16);
    header.writeUInt32LE(T_IN);
    const data = d.alloc(4096, 4096);
    const status = d.alloc(1, 4096);
    d.post(0, [{ addr: d.put(header, 16), len: 16 }, { addr: data, len: 4096, write: true }, { addr: status, len: 1, write: true }]);
    await d.kick(0);
    await disk.waitHeld(1);
    const before = await dirtyReport(a, GUEST_BASE, size); // clears what was marked so far
    assert.ok(before.includes(data), 'marked when the views were made');
    disk.releaseAll();
    await d.waitUsed(0, 1);
    assert.equal(d.bytes(status, 1)[0], S_OK);
    assert.ok(d.bytes(data, 4096).every((b) => b === 0x42));
    const pages = await dirtyReport(a, GUEST_BASE, size);
    assert.ok(pages.includes(data), `page 0x${data.toString(16)}, written by the read after the last report, is dirty again`);
    await stopDirtyLogging(a);
  } finally {
    d.close();
    a.close();
    server.close();
  }
});

test('a request served at once logs the pages it wrote in place (data and status byte) dirty', async () => {
  const disk = probeRam(1024 * 1024);
  await disk.fill(0x42, 0, 4096);
  const server = serve(virtioBlk({ backend: disk, queueSize: 32 }), join(dir, 'dirty-now.sock'), { log: 'silent' });
  const a = await connectClient(server.path);
  const d = await VirtioDriver.open(a);
  try {
    await d.start(1);
    const size = d.mem.bytes.length;
    // Header, data and status each alone on a page: only the device's own writes can dirty the last two.
    const header = Buffer.alloc(16);
    header.writeUInt32LE(T_IN);
    const headerAt = d.put(header, 4096);
    const data = d.alloc(4096, 4096);
    const status = d.alloc(1, 4096);
    d.alloc(1, 4096);
    await startDirtyLogging(a, 4096, [{ iova: GUEST_BASE, length: size }]);
    await dirtyReport(a, GUEST_BASE, size); // clears what setup marked
    d.post(0, [{ addr: headerAt, len: 16 }, { addr: data, len: 4096, write: true }, { addr: status, len: 1, write: true }]);
    await d.kick(0);
    await d.waitUsed(0, 1);
    assert.equal(disk.served.async, 0, 'served at once');
    assert.equal(d.bytes(status, 1)[0], S_OK);
    const pages = await dirtyReport(a, GUEST_BASE, size);
    assert.ok(pages.includes(data), 'the data page is dirty');
    assert.ok(pages.includes(status), 'the status byte\'s page is dirty');
    assert.ok(!pages.includes(headerAt), 'the header, only read, is not');
    await stopDirtyLogging(a);
  } finally {
    d.close();
    a.close();
    server.close();
  }
});

test('between two processes sharing a disk file, with I/O during pre-copy', async () => {
  const file = join(dir, 'shared.img');
  writeFileSync(file, '');
  truncateSync(file, 4 * 1024 * 1024);
  const src = await VirtioProcess.start('blk', { file, queues: 2 });
  const dst = await VirtioProcess.start('blk', { file, queues: 2 });
  const a = await connectClient(src.path);
  const b = await connectClient(dst.path);
  const d = await VirtioDriver.open(a);
  try {
    await d.start(2);
    for (let i = 0; i < 8; i++) assert.equal((await blk(d, i % 2, T_OUT, i * 16, { out: pattern(8192, 20 + i) })).status, S_OK);
    await d.attachTo(b);
    const during: Promise<number>[] = [];
    await migrate(a, b, {
      onStep(step) {
        // Requests in flight on both queues while pre-copy runs; STOP waits for them.
        if (step === 'source: PRE_COPY') for (let q = 0; q < 2; q++) during.push(blk(d, q, T_OUT, 512 + q * 32, { out: pattern(16384, 40 + q) }).then((r) => r.status));
      },
    });
    assert.deepEqual(await Promise.all(during), [S_OK, S_OK]);
    d.useClient(b);
    assert.equal(await d.status(), OK_STATUS);
    for (let i = 0; i < 8; i++) assert.deepEqual((await blk(d, (i + 1) % 2, T_IN, i * 16, { inLen: 8192, kick: 'eventfd' })).data, pattern(8192, 20 + i));
    for (let q = 0; q < 2; q++) assert.deepEqual((await blk(d, q, T_IN, 512 + q * 32, { inLen: 16384 })).data, pattern(16384, 40 + q));
    assert.ok(src.alive && dst.alive);
  } finally {
    d.close();
    a.close();
    b.close();
    await src.stop();
    await dst.stop();
  }
});
