/**
 * NVMe: a reset is complete for the host (CSTS.RDY reads 0 after CC.EN
 * was cleared; the reply to DEVICE_RESET; the next client served after a
 * disconnect) only when none of the commands it abandoned can still write
 * guest memory. Many 64 KiB reads sit in a slow file backend with
 * zero-copy views of guest memory; after the reset the test snapshots
 * guest memory, waits until every read has finished, and finds it
 * byte-identical. A backend that never answers: the reset completes after
 * its timeout and the late reads land outside guest memory.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import type { Client } from '../src/client/index.js';
import { nvmeController, openFileBackend, serve, type Server } from '../src/index.js';
import { connectClient } from './helpers/raw.js';
import { NvmeDriver, REG } from './helpers/nvme-driver.js';
import { pattern } from './helpers/bytes.js';
import { changedPages, closeSlowRig, SlowBackend, waitUntil, type SlowRig } from './helpers/slow-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-nvreset-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

const MiB = 1024 * 1024;
const READS = 32;
const READ_BYTES = 64 * 1024;

interface Rig extends SlowRig {
  server: Server;
  client: Client;
  driver: NvmeDriver;
}

let r: Rig | undefined;
afterEach(async () => {
  if (r) await closeSlowRig(r);
  r = undefined;
});

async function nvmeRig(o: { delayMs?: number; resetTimeoutMs?: number } = {}): Promise<Rig> {
  const path = join(dir, `disk${serial++}.img`);
  writeFileSync(path, pattern(4 * MiB, 91));
  const backend = new SlowBackend(await openFileBackend(path), { delayMs: o.delayMs ?? 150 });
  const spec = nvmeController({ namespaces: [backend], queues: 1, resetTimeoutMs: o.resetTimeoutMs });
  const server = serve(spec, join(dir, `nvme${serial++}.sock`), { log: 'silent' });
  const client = await connectClient(server.path);
  const driver = await NvmeDriver.open(client);
  await driver.enable();
  await driver.createIoQueues(1);
  r = { server, client, driver, backend };
  return r;
}

/** Submits READS reads of READ_BYTES each (PRP lists) and waits until the backend has them all. */
async function readsInFlight(rig: Rig): Promise<void> {
  const d = rig.driver;
  for (let i = 0; i < READS; i++) {
    const buf = d.alloc(READ_BYTES);
    d.bytes(buf, READ_BYTES).fill(0xee);
    d.put(1, { opcode: 0x02, nsid: 1, ...d.prps(buf, READ_BYTES), cdw10: i * (READ_BYTES / 512), cdw11: 0, cdw12: READ_BYTES / 512 - 1 });
  }
  await d.submit(1);
  await waitUntil(() => rig.backend.started === READS, `${READS} reads in the backend`);
}

/** Once `reset` is done for the host, guest memory does not change while the abandoned reads finish. */
async function assertUntouched(rig: Rig, reset: () => Promise<unknown>): Promise<void> {
  const mem = rig.driver.mem.bytes;
  await reset();
  const snapshot = Buffer.from(mem);
  await waitUntil(() => rig.backend.completed === READS, 'the abandoned reads to finish');
  await rig.client.regionRead(0, REG.CSTS, 4); // a round trip: whatever followed the reads on the server has run
  const changed = changedPages(snapshot, mem);
  assert.equal(changed, 0, `${changed} guest pages changed after the reset was done`);
}

describe('nvme: a reset is done only when its abandoned reads cannot write guest memory', () => {
  test('CC.EN cleared: CSTS.RDY reads 0 only then', async () => {
    const rig = await nvmeRig();
    await readsInFlight(rig);
    await assertUntouched(rig, async () => {
      await rig.driver.write32(REG.CC, 0);
      await rig.driver.waitCsts(1, 0);
    });
    assert.ok(rig.driver.cqEmpty(1), 'no abandoned command completed');
  });

  test('DEVICE_RESET from the client', async () => {
    const rig = await nvmeRig();
    await readsInFlight(rig);
    await assertUntouched(rig, () => rig.client.reset());
    // The controller comes back on the same memory (a reset clears Bus Master Enable).
    rig.backend.delayMs = 0;
    await rig.client.setBusMaster();
    await rig.driver.enable();
    await rig.driver.createIoQueues(1);
    assert.equal((await rig.driver.rw(1, false, 8, 8)).cqe.status, 0);
  });

  test('a client that leaves: the next one is served once the reads it left behind are done', async () => {
    const rig = await nvmeRig({ delayMs: 300 });
    await readsInFlight(rig);
    const mem = rig.driver.mem.bytes;
    rig.client.close();
    const next = await connectClient(rig.server.path);
    try {
      await next.regionRead(0, REG.CSTS, 4);
      const snapshot = Buffer.from(mem);
      await waitUntil(() => rig.backend.completed === READS, 'the abandoned reads to finish');
      await next.regionRead(0, REG.CSTS, 4);
      assert.equal(changedPages(snapshot, mem), 0, "the old client's memory changed after the next client was served");
    } finally {
      next.close();
    }
  });

  test('a backend that never answers: DEVICE_RESET completes after its timeout, and the late reads land outside guest memory', async () => {
    const rig = await nvmeRig({ delayMs: Infinity, resetTimeoutMs: 300 });
    await readsInFlight(rig);
    const t0 = Date.now();
    await rig.client.reset();
    assert.ok(Date.now() - t0 >= 250, 'the reset waited for its timeout');
    const snapshot = Buffer.from(rig.driver.mem.bytes);
    rig.backend.delayMs = 0;
    rig.backend.release();
    await waitUntil(() => rig.backend.completed === READS, 'the reads let go after the reset');
    await rig.client.regionRead(0, REG.CSTS, 4);
    assert.equal(changedPages(snapshot, rig.driver.mem.bytes), 0, 'a late read wrote guest memory');
    await rig.client.setBusMaster();
    await rig.driver.enable();
    await rig.driver.createIoQueues(1);
    const got = await rig.driver.rw(1, false, 8, 8);
    assert.equal(got.cqe.status, 0);
    assert.deepEqual(got.data, Buffer.from(pattern(4 * MiB, 91).subarray(8 * 512, 16 * 512)));
  });
});
