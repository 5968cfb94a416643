/**
 * Live migration between two `muser run timer` processes, driven from this
 * process: a full migration with a pending interrupt delivered by the
 * destination, data larger than max_data_xfer_size, dirty-page reports,
 * and state equal byte for byte on both sides.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Client, EventFd, sharedMemory, type GuestMemory } from '../src/client/index.js';
import {
  getMigrationState,
  migrate,
  MigrationState,
  readMigrationData,
  setMigrationState,
  type DirtyReport,
} from '../src/client/migrate.js';
import { IrqSetFlag } from '../src/protocol/constants.js';
import { le64 } from './helpers/bytes.js';
import { startTimer, type ChildServer } from './helpers/timer-process.js';
import { until } from './helpers/wait.js';

const BAR1 = 16 * 1024;

/** Reads the whole STOP_COPY stream of a device (from RUNNING or STOP), then leaves it in STOP. */
async function saveState(c: Client, chunk = 1024): Promise<Buffer> {
  await setMigrationState(c, MigrationState.STOP_COPY);
  const parts: Buffer[] = [];
  await readMigrationData(c, chunk, (d) => parts.push(Buffer.from(d)));
  await setMigrationState(c, MigrationState.STOP);
  return Buffer.concat(parts);
}

describe('live migration between two timer servers', () => {
  let dir: string;
  let src: ChildServer;
  let dst: ChildServer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muser-mig-'));
    [src, dst] = await Promise.all([
      startTimer(join(dir, 'src.sock'), { verbose: true }),
      startTimer(join(dir, 'dst.sock'), { verbose: true }),
    ]);
    for (const p of [src, dst]) assert.ok(existsSync(p.path));
  });

  after(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('migrates a pending timer: the destination fires it, state is equal byte for byte', async (tc) => {
    // 1 KiB chunks, like the C sample client: 16 KiB + 8 bytes needs 17 of them.
    const caps = { maxDataXferSize: 1024 };
    const a = await Client.connect(src.path, { capabilities: caps });
    const msgMem: GuestMemory = sharedMemory(4 * 4096);
    const directMem: GuestMemory = sharedMemory(4096);
    const srcIrq = new EventFd();
    const dstIrq = new EventFd();
    let b: Client | undefined;
    try {
      await a.setBusMaster(); // DMA needs Bus Master Enable
      await a.dmaMap(0x10000, msgMem);
      await a.dmaMap(0x20000, directMem);
      await a.setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, undefined, [srcIrq.fd]);
      const bar1 = randomBytes(BAR1);
      await a.regionWrite(1, 0, bar1);
      const t = Math.ceil(Date.now() / 1000) + 2;
      await a.regionWrite(0, 0, le64(t));
      const delta = (await a.regionRead(0, 0, 8)).readBigInt64LE(0);
      assert.ok(delta <= 0n && delta >= -3n, `BAR0 reads now - T: ${delta}`);

      b = await Client.connect(dst.path, { capabilities: caps });
      const reports: DirtyReport[] = [];
      const result = await migrate(a, b, {
        chunkSize: 1024,
        dirtyLog: { ranges: [{ iova: 0x10000, length: 0x20000 }] },
        onDirty: (r) => reports.push(r),
      });
      assert.equal(result.preCopyBytes, BAR1);
      assert.equal(result.stopCopyBytes, BAR1 + 8);
      assert.equal(result.chunks, 16 + 17);
      tc.diagnostic(`timer, 1 KiB chunks: ${result.preCopyBytes} + ${result.stopCopyBytes} bytes in ${result.chunks} chunks, ${result.totalMs.toFixed(1)} ms total, ${result.downtimeMs.toFixed(1)} ms downtime`);
      assert.deepEqual(reports.map((r) => r.phase), ['pre-copy', 'stop-copy']);
      assert.equal(await getMigrationState(a), MigrationState.STOP);
      assert.equal(await getMigrationState(b), MigrationState.RUNNING);

      // The destination's client sets up DMA and the interrupt, then waits for T.
      const dstMsg = sharedMemory(4 * 4096);
      const dstDirect = sharedMemory(4096);
      await b.setBusMaster(); // DMA needs Bus Master Enable
      await b.dmaMap(0x10000, dstMsg);
      await b.dmaMap(0x20000, dstDirect);
      await b.setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, undefined, [dstIrq.fd]);
      await dstIrq.waitFor(1, 6000);
      assert.ok(Date.now() / 1000 >= t - 0.01, 'fired no earlier than T');
      assert.equal(srcIrq.total, 0, 'the stopped source never fires');
      // The interrupt's DMA: 'A'..'D' by messages into the first region, 'a'..'d' through the mapping.
      // Through the mapping first, then by messages (the original sample's order): 8 messages end it.
      await until(() => dstDirect.bytes[4095] === 0x64 && b!.dmaRequestsServed >= 8, 'the DMA to land on the destination', 3000);
      for (let i = 0; i < 4; i++) {
        assert.ok(dstMsg.bytes.subarray(i * 1024, (i + 1) * 1024).every((x) => x === 0x41 + i));
        assert.ok(dstDirect.bytes.subarray(i * 1024, (i + 1) * 1024).every((x) => x === 0x61 + i));
      }
      assert.ok(b.dmaRequestsServed >= 8, 'DMA_WRITE and DMA_READ messages were served');

      // Nothing lost: BAR1 by region read, and the whole device state (BAR1 + BAR0's T) by saving both again.
      assert.deepEqual(await b.regionRead(1, 0, BAR1), bar1);
      assert.deepEqual(await a.regionRead(1, 0, BAR1), bar1);
      const srcState = await saveState(a);
      const dstState = await saveState(b);
      assert.equal(srcState.length, BAR1 + 8);
      assert.deepEqual(dstState, srcState);
      assert.equal(dstState.readBigInt64LE(BAR1), BigInt(t));
      assert.ok(dst.stderr.includes('fired'), dst.stderr);
      dstMsg.close();
      dstDirect.close();
    } finally {
      a.close();
      b?.close();
      srcIrq.close();
      dstIrq.close();
      msgMem.close();
      directMem.close();
    }
  });
});

