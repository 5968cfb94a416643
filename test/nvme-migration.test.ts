/**
 * Live migration of the NVMe controller between two servers sharing one
 * disk: registers, queues with their heads, tails and phases, shadow
 * doorbells and held Asynchronous Event Requests move; I/O in flight
 * finishes (and posts its completion) before the source stops; the driver
 * keeps its guest memory and carries on with the destination. A malformed
 * saved state is refused by the destination.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { getMigrationState, migrate, MigrationState } from '../src/client/index.js';
import { nvmeController, nvmeControllerOf, serve } from '../src/index.js';
import { connectClient } from './helpers/raw.js';
import { NvmeDriver, PAGE, REG } from './helpers/nvme-driver.js';
import { pattern } from './helpers/bytes.js';
import { probeRam } from './helpers/probe-backend.js';
import { closeEach } from './helpers/close.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-nvmig-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the controller migrates with I/O in flight, shadow doorbells and a held AER', async () => {
  const disk = probeRam(4 * 1024 * 1024);
  const make = () => nvmeController({ namespaces: [disk], queues: 2, serial: 'MIG' });
  const srcSpec = make();
  const dstSpec = make();
  const source = serve(srcSpec, join(dir, 'src.sock'), { log: 'silent' });
  const destination = serve(dstSpec, join(dir, 'dst.sock'), { log: 'silent' });
  const a = await connectClient(source.path);
  const b = await connectClient(destination.path);
  const d = await NvmeDriver.open(a);
  try {
    await d.enable();
    await d.createIoQueues(2, 32);
    assert.equal((await d.configureShadowDoorbells()).status, 0);
    assert.equal((await d.rw(1, true, 0, 8, pattern(4096, 1))).cqe.status, 0);
    // Move queue 2's phase past a wrap, so the phase tag must migrate.
    for (let i = 0; i < 40; i++) assert.equal((await d.run(2, { opcode: 0, nsid: 1 })).status, 0);
    // An AER the source holds.
    d.put(0, { opcode: 0x0c, cid: 0xae });
    await d.submit(0);

    // Two writes held by the backend: in flight when migration starts.
    disk.holding = true;
    const held = [d.alloc(PAGE), d.alloc(PAGE)];
    d.bytes(held[0], 4096).set(pattern(4096, 2));
    d.bytes(held[1], 4096).set(pattern(4096, 3));
    const old = d.queues.get(1)!.tail;
    d.put(1, { opcode: 1, nsid: 1, prp1: held[0], cdw10: 64, cdw12: 7, cid: 0x101 });
    d.put(1, { opcode: 1, nsid: 1, prp1: held[1], cdw10: 72, cdw12: 7, cid: 0x102 });
    await d.submit(1, old);
    await disk.waitHeld(2);

    await d.attachTo(b);
    let releasedBeforeStop = false;
    await migrate(a, b, {
      onStep(step) {
        if (step === 'source: PRE_COPY') {
          setImmediate(() => {
            releasedBeforeStop = true;
            disk.releaseAll();
          });
        }
      },
    });
    assert.ok(releasedBeforeStop);
    assert.equal(await getMigrationState(b), MigrationState.RUNNING);
    // The held writes completed on the source before it stopped.
    const done = [await d.reap(1), await d.reap(1)].map((c) => [c.cid, c.status]);
    assert.deepEqual(done.sort(), [
      [0x101, 0],
      [0x102, 0],
    ]);

    d.useClient(b);
    const dst = nvmeControllerOf(dstSpec)!;
    assert.equal((await d.read32(REG.CSTS)) & 3, 1, 'the destination is ready');
    assert.equal(dst.sqs.get(2)!.cq.phase, 0, 'queue 2 kept its wrapped phase');
    assert.ok(dst.dbbuf, 'shadow doorbells moved');
    // I/O on both queues through the destination, shadow doorbells and all.
    for (const q of [1, 2]) {
      const data = pattern(8192, 10 + q);
      assert.equal((await d.rw(q, true, 200 + q * 16, 16, data)).cqe.status, 0);
      assert.deepEqual((await d.rw(q, false, 200 + q * 16, 16)).data, Buffer.from(data));
      assert.equal((await d.run(q, { opcode: 0, nsid: 1 })).status, 0);
    }
    assert.ok(dst.stats.ioCommands >= 6, 'the destination served them');
    assert.deepEqual(await disk.peek(64 * 512, 72 * 512), Buffer.from(pattern(4096, 2)));
    // The AER the source held now completes from the destination.
    await d.ring(0x3f0, 0);
    const ev = await d.reap(0);
    assert.deepEqual([ev.cid, ev.status], [0xae, 0]);
  } finally {
    closeEach(d, a, b, source, destination);
  }
});

test('a malformed saved state is refused and leaves the controller reset', () => {
  const spec = nvmeController({ namespaces: [probeRam(1024 * 1024)], queues: 2 });
  const c = nvmeControllerOf(spec)!;
  const good = c.save();
  assert.doesNotThrow(() => c.restore(JSON.parse(JSON.stringify(good))));
  const bad: unknown[] = [
    null,
    { ...good, cc: -1 },
    { ...good, asq: 'x' },
    { ...good, cqs: [{ id: 1, base: 0, size: 1, head: 0, tail: 0, phase: 1, interruptsEnabled: true, vector: 0 }] },
    { ...good, cqs: [{ id: 9, base: 0, size: 8, head: 0, tail: 0, phase: 1, interruptsEnabled: true, vector: 0 }] },
    { ...good, sqs: [{ id: 1, base: 0, size: 8, head: 0, tail: 0, cqid: 1, outstanding: 0 }] },
    { ...good, csts: 1 },
    { ...good, features: 'no' },
  ];
  for (const s of bad) {
    assert.throws(() => c.restore(s), /nvme state/, JSON.stringify(s)?.slice(0, 80));
    assert.equal(c.status, 0);
    assert.equal(c.sqs.size, 0);
  }
});
