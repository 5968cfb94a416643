/**
 * A reload of an isolated NVMe controller (`muser run --isolate ... nvme`,
 * IsolatedServer.reload) while commands are held in its backend: the old
 * child stops fetching and lets them finish (onQuiesce) before the
 * successor recovers from the in-flight log, so each completes exactly
 * once, by the old child, and the successor starts none of them again.
 * Commands the driver submits meanwhile wait for the successor. On the
 * main thread and on two queue threads; real processes, sockets and a
 * file backend that holds reads and writes until the test lets them go.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Client } from '../src/client/index.js';
import { IsolatedServer } from '../src/isolate/index.js';
import { pattern } from './helpers/bytes.js';
import { alive, CHILD_ENTRY, quiet, tempDir, until } from './helpers/isolated.js';
import { NvmeDriver, REG } from './helpers/nvme-driver.js';
import { COMPLETED, mapCounts, STARTED } from './helpers/slow-backend.js';
import type { SlowNvmeData } from './fixtures/slow-nvme-backend.js';

const INDEX = fileURLToPath(new URL('../src/index.js', import.meta.url));
const FIXTURE = fileURLToPath(new URL('./fixtures/slow-nvme-backend.js', import.meta.url));
const SLOW = fileURLToPath(new URL('./helpers/slow-backend.js', import.meta.url));
const MiB = 1024 * 1024;
/** Slots of the counts file beside SlowBackend's STARTED and COMPLETED: the test sets RELEASE, the child bumps QUIESCING. */
const RELEASE = 2;
const QUIESCING = 3;
/** Each command moves 16 KiB: 32 blocks, a PRP list. */
const BLOCKS = 32;
const BYTES = BLOCKS * 512;

/** The device file each child loads: the controller over the slow disk, and a mark in the counts when a reload quiesces it. */
function deviceFile(dir: string, data: SlowNvmeData, workers: number): string {
  const file = join(dir, 'slow-nvme.mjs');
  writeFileSync(
    file,
    `import { nvmeController } from ${JSON.stringify(INDEX)};
import { openBackend, slowShared } from ${JSON.stringify(FIXTURE)};
import { mapCounts } from ${JSON.stringify(SLOW)};
const data = ${JSON.stringify(data)};
export default async function () {
  const { counts } = mapCounts(data.counts);
  // With threads the main thread keeps the plain file (Identify), and each thread opens the slow one.
  const disk = ${workers} > 0 ? await slowShared(data) : await openBackend(data);
  const spec = nvmeController({ namespaces: [disk], queues: 2, workers: ${workers} });
  // The product has no hook saying a quiesce began: the test needs to know, to let the backend go only then.
  const quiesce = spec.onQuiesce;
  spec.onQuiesce = (d) => { Atomics.add(counts, ${QUIESCING}, 1); return quiesce(d); };
  return spec;
}
`,
  );
  return file;
}

/** A command in flight: where its data is and what it must hold. */
interface Op {
  qid: number;
  cid: number;
  write: boolean;
  lba: number;
  buf: number;
  /** A read: the bytes it must bring; a write: the bytes it wrote. */
  want: Buffer;
}

for (const workers of [0, 2]) {
  test(`isolate: a reload of NVMe with reads and writes held in the backend${workers ? ' of two queue threads' : ''}: the old child finishes them, each completes once, the successor serves on`, async () => {
    const dir = tempDir();
    const image = join(dir, 'disk.img');
    const disk = pattern(4 * MiB, 7);
    writeFileSync(image, disk);
    const countsFile = join(dir, 'counts');
    writeFileSync(countsFile, Buffer.alloc(4096));
    const shared = mapCounts(countsFile);
    const counts = shared.counts;
    const said: string[] = [];
    const data: SlowNvmeData = { path: image, delayMs: 60_000, counts: countsFile, writes: true, releaseSlot: RELEASE };
    const log = { ...quiet, warn: (m: string) => said.push(m), error: (m: string) => said.push(m) };
    const server = await IsolatedServer.start({ device: deviceFile(dir, data, workers), options: {} }, join(dir, 'nvme.sock'), { entry: CHILD_ENTRY, log });
    const client = await Client.connect(server.path);
    const d = await NvmeDriver.open(client, { memorySize: 16 * MiB });
    const inflight = new Map<string, Op>();
    /** What the disk holds now, block-addressed as the image. */
    const expected = Buffer.from(disk);
    let region = 0;

    /** Puts a read of the next region (checked against what it holds now), or a write of a new pattern there; rings nothing. */
    const put = (qid: number, write: boolean): void => {
      const lba = region++ * BLOCKS;
      const buf = d.alloc(BYTES);
      const want = write ? pattern(BYTES, 1000 + lba) : Buffer.from(expected.subarray(lba * 512, lba * 512 + BYTES));
      if (write) d.bytes(buf, BYTES).set(want);
      else d.bytes(buf, BYTES).fill(0xee);
      const cid = d.put(qid, { opcode: write ? 0x01 : 0x02, nsid: 1, ...d.prps(buf, BYTES), cdw10: lba, cdw12: BLOCKS - 1 });
      inflight.set(`${qid}:${cid}`, { qid, cid, write, lba, buf, want });
    };
    const submit = async (): Promise<void> => {
      for (const qid of [1, 2]) await d.submit(qid);
    };
    /** Reaps until nothing is in flight (bounded): a completion nothing waits for, a failed one, or wrong data fails here. */
    const reapAll = async (what: string): Promise<void> => {
      const deadline = Date.now() + 8000;
      while (inflight.size > 0) {
        let got = 0;
        for (const qid of [1, 2]) {
          while (!d.cqEmpty(qid)) {
            const cqe = await d.reap(qid);
            got++;
            const op = inflight.get(`${qid}:${cqe.cid}`);
            assert.ok(op, `${what}: queue ${qid} completed cid ${cqe.cid}, which is not in flight (a completion twice)`);
            inflight.delete(`${qid}:${cqe.cid}`);
            assert.equal(cqe.status, 0, `${what}: queue ${qid} cid ${cqe.cid} failed`);
            if (op.write) op.want.copy(expected, op.lba * 512);
            else assert.ok(Buffer.from(d.bytes(op.buf, BYTES)).equals(op.want), `${what}: the read of LBA ${op.lba} brought wrong data`);
          }
        }
        if (got > 0) continue;
        if (Date.now() > deadline) throw new Error(`${what}: ${inflight.size} command(s) never completed: ${[...inflight.keys()].join(', ')}`);
        await new Promise((r) => setTimeout(r, 1));
      }
    };

    try {
      await d.enable();
      await d.createIoQueues(2);
      // Two reads and two writes on each queue, held in the backend.
      for (const qid of [1, 2]) for (const write of [false, true, false, true]) put(qid, write);
      await submit();
      const held = inflight.size;
      await until(() => Atomics.load(counts, STARTED) === held, 8000, 'every command in the backend');

      const oldPid = server.childPid!;
      let reloaded = false;
      const reload = server.reload().then(() => (reloaded = true));
      await until(() => Atomics.load(counts, QUIESCING) === 1, 8000, 'the old child to begin quiescing');
      assert.equal(Atomics.load(counts, COMPLETED), 0, 'the commands are still held while the old child quiesces');
      // The driver goes on meanwhile: these wait for the successor (the quiescing child fetches nothing).
      for (const qid of [1, 2]) for (const write of [true, false]) put(qid, write);
      await submit();
      assert.equal(Atomics.load(counts, STARTED), held, 'the quiescing child took no new command');
      assert.equal(reloaded, false, 'the hand-over waits for the commands held in the backend');
      Atomics.store(counts, RELEASE, 1);

      await reapAll('across the reload');
      await reload;
      assert.notEqual(server.childPid, oldPid, 'a new child serves');
      await until(() => !alive(oldPid), 5000, 'the old child to exit');
      const total = held + 4;
      assert.equal(Atomics.load(counts, STARTED), total, 'each command entered the backend once: the successor started none again');
      assert.equal(Atomics.load(counts, COMPLETED), total);

      // The successor serves every block as the completed commands left it.
      const written = region;
      region = 0;
      for (let r = 0; r < written; r++) put(1 + (r % 2), false);
      await submit();
      await reapAll('read back after the reload');
      assert.ok(d.cqEmpty(1) && d.cqEmpty(2), 'no completion came late, twice');
      const csts = await d.read32(REG.CSTS);
      assert.equal(csts & 3, 1, `CSTS.RDY set, CFS clear (CSTS 0x${csts.toString(16)})`);
      assert.equal((await d.identify(1)).cqe.status, 0, 'the admin queue is in sync');
      assert.equal(server.restarts, 0, 'no child died');
      assert.deepEqual(said, [], 'the supervisor had nothing to warn about');
    } finally {
      Atomics.store(counts, RELEASE, 1);
      d.close();
      client.close();
      server.close();
      shared.unmap();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
