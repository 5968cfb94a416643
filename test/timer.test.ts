/**
 * The `timer` sample against what the original C sample client
 * (libvfio-user samples/client.c) sends and expects, message by message,
 * over two real `muser run timer` processes: 1 KiB max_data_xfer_size, no
 * pgsizes, 9 regions, one fd for BAR1's two sparse areas, 32 one-page DMA
 * regions backed by one unlinked temporary file (a file that could shrink,
 * so the device reaches it by pread/pwrite, not a mapping), DMA logging
 * with 0 ranges, exactly 4 DMA_WRITE and 4 DMA_READ messages of 1 KiB per
 * interrupt, a dirty page in the second DMA region, and the interrupt and
 * DMA delivered by a destination started mid-way and connected to as soon
 * as its socket exists. Like client.c it never sets Bus Master Enable: the
 * timer's DMA policy does not require it.
 *
 * Where client.c hard-codes its own server's sizes (a 12 KiB BAR1, so 12
 * PRE_COPY and 13 STOP_COPY reads, and a stream that restarts at
 * STOP_COPY), this follows the timer's BAR1 from region info, as its FIXME
 * asks: 16 PRE_COPY reads take the whole PRE_COPY image, 17 STOP_COPY
 * reads the state. Plus: a deadline that is already past fires at once on
 * resume, without failing it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { crc32 } from 'node:zlib';

import { Client, ClientError, EventFd, type GuestMemory } from '../src/client/index.js';
import { MigrationState as S, setMigrationState } from '../src/client/migrate.js';
import { native } from '../src/native/index.js';
import { Command, DeviceFeatureFlag, FeatureId, IrqSetFlag, RegionCapId } from '../src/protocol/constants.js';
import { decodeDeviceInfoReply, encodeDeviceInfoRequest } from '../src/protocol/device-info.js';
import { decodeIrqInfoReply, encodeIrqInfoRequest } from '../src/protocol/irq.js';
import { decodeRegionInfoReply, encodeRegionInfoRequest } from '../src/protocol/region-info.js';
import { le64 } from './helpers/bytes.js';
import { startTimer, type ChildServer } from './helpers/timer-process.js';

const PAGE = 4096;
const BAR1 = 16 * 1024;
const CONFIG = 7;
const PCI_COMMAND = 4;
const BUS_MASTER = 0x4;
/** What samples/client.c offers in VERSION: no pgsizes, 1 KiB transfers. */
const C_CAPS = { maxMsgFds: 32, maxDataXferSize: 1024, pgsizes: undefined, maxDmaMaps: undefined, writeMultiple: undefined };

/** DEVICE_FEATURE exactly as client.c builds it; returns the raw reply payload. */
async function feature(c: Client, flags: number, data: Buffer, argsz: number): Promise<Buffer> {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(argsz, 0);
  head.writeUInt32LE(flags, 4);
  return (await c.request(Command.DEVICE_FEATURE, Buffer.concat([head, data]))).payload;
}

/** client.c's set_migration_state: the reply must equal the request (data_fd -1). */
async function setStateLikeC(c: Client, state: S): Promise<void> {
  const data = Buffer.alloc(8);
  data.writeUInt32LE(state, 0);
  data.writeInt32LE(-1, 4);
  const req = Buffer.concat([Buffer.from([16, 0, 0, 0]), Buffer.alloc(4), data]);
  req.writeUInt32LE(DeviceFeatureFlag.SET | FeatureId.MIG_DEVICE_STATE, 4);
  const r = await c.request(Command.DEVICE_FEATURE, req);
  assert.deepEqual(r.payload, req);
}

/** Like handle_dma_io(): the 8 DMA messages of one interrupt, each carrying 1 KiB. */
async function waitForDmaIo(c: Client, before: number): Promise<void> {
  const end = Date.now() + 3000;
  while (c.dmaRequestsServed < before + 8) {
    if (Date.now() > end) throw new Error(`${c.dmaRequestsServed - before} DMA messages, want 8`);
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(c.dmaRequestsServed, before + 8);
}

/**
 * client.c's DMA backing: a temporary file, truncated to `size` and
 * unlinked, not sealed. Mapped here too, so the client can serve DMA
 * messages from it.
 */
function temporaryFile(dir: string, size: number): GuestMemory {
  const path = join(dir, 'libvfio-user.dma');
  const fd = openSync(path, 'w+', 0o600);
  ftruncateSync(fd, size);
  unlinkSync(path);
  const m = native.mmap(fd, 0, size, true);
  assert.ok(typeof m !== 'number', 'mmap of the DMA file');
  return {
    bytes: new Uint8Array(m[0]),
    fd,
    close() {
      native.munmap(m[1], m[0]);
      closeSync(fd);
    },
  };
}

/** One client.c-style DMA region: a page of the shared file at offset = address. */
function page(backing: GuestMemory, i: number): GuestMemory {
  return { bytes: backing.bytes.subarray(i * PAGE, (i + 1) * PAGE), fd: backing.fd, close() {} };
}

/** Reads a page of the file itself (not the mapping): what the device wrote is in the file. */
function filePage(file: GuestMemory, i: number): Buffer {
  const b = Buffer.alloc(PAGE);
  assert.equal(readSync(file.fd!, b, 0, PAGE, i * PAGE), PAGE);
  return b;
}

/** What the timer's DMA leaves: 'A'..'D' by messages in `messages`, 'a'..'d' through the fd in `direct`. */
function assertTimerDma(file: GuestMemory, messages: number, direct: number): void {
  const m = filePage(file, messages);
  const d = filePage(file, direct);
  for (let i = 0; i < PAGE; i++) {
    assert.equal(m[i], 0x41 + (i >> 10), `page ${messages} (DMA messages), byte ${i}`);
    assert.equal(d[i], 0x61 + (i >> 10), `page ${direct} (through the fd), byte ${i}`);
  }
}

async function assertBusMasterClear(c: Client): Promise<void> {
  const command = (await c.regionRead(CONFIG, PCI_COMMAND, 2)).readUInt16LE(0);
  assert.equal(command & BUS_MASTER, 0, 'like client.c, the client never set Bus Master Enable');
}

/** client.c's configure_irqs(): GET_IRQ_INFO of every index, then INTx -> eventfd. */
async function configureIrqs(c: Client, irq: EventFd): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const r = decodeIrqInfoReply((await c.request(Command.DEVICE_GET_IRQ_INFO, encodeIrqInfoRequest({ argsz: 16, flags: 0, index: i, count: 0 }))).payload);
    assert.equal(r.count, i === 0 ? 1 : 0);
  }
  await c.setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, undefined, [irq.fd]);
}

describe('timer sample with the C sample client sequence', () => {
  let dir: string;
  let src: ChildServer;
  let dst: ChildServer | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muser-timer-'));
    src = await startTimer(join(dir, 'src.sock'), { verbose: true });
  });

  after(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves every step of samples/client.c without Bus Master Enable, migration included', async () => {
    const sock = await Client.connect(src.path, { capabilities: C_CAPS });
    const maxFds = sock.server.maxMsgFds ?? 1;
    const nrDma = maxFds * 2;
    const backing = temporaryFile(dir, nrDma * PAGE);
    const irq = new EventFd();
    const dstIrq = new EventFd();
    let sock2: Client | undefined;
    try {
      // A bogus region is EINVAL.
      await assert.rejects(sock.regionRead(0xdeadbeef, 0, 4), (e: unknown) => e instanceof ClientError && e.errno === 22);

      const info = decodeDeviceInfoReply((await sock.request(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 }))).payload);
      assert.equal(info.numRegions, 9);
      assert.equal(info.numIrqs, 5);

      for (let i = 0; i < info.numRegions; i++) {
        const first = await sock.request(Command.DEVICE_GET_REGION_INFO, encodeRegionInfoRequest({ argsz: 32, flags: 0, index: i, capOffset: 0, size: 0, offset: 0 }));
        assert.equal(first.fds.length, 0, `region ${i}: no fd with a short argsz`);
        const argsz = first.payload.readUInt32LE(0);
        if (argsz <= 32) {
          assert.notEqual(i, 1, 'BAR1 has a sparse mmap capability');
          continue;
        }
        const full = await sock.request(Command.DEVICE_GET_REGION_INFO, encodeRegionInfoRequest({ argsz, flags: 0, index: i, capOffset: 0, size: 0, offset: 0 }));
        const reply = decodeRegionInfoReply(full.payload);
        assert.equal(reply.info.argsz, argsz);
        assert.equal(i, 1, 'only BAR1 has capabilities');
        assert.equal(full.fds.length, 1);
        assert.equal(reply.info.size, BAR1);
        const sparse = reply.caps.find((cap) => cap.id === RegionCapId.SPARSE_MMAP);
        assert.ok(sparse && sparse.id === RegionCapId.SPARSE_MMAP);
        assert.deepEqual(sparse.areas, [{ offset: 0, size: PAGE }, { offset: BAR1 - PAGE, size: PAGE }]);
        // Both areas map; what is written through a mapping is what REGION_READ returns.
        for (const a of sparse.areas) {
          const m = native.mmap(full.fds[0]!, reply.info.offset + a.offset, a.size, true);
          assert.ok(typeof m !== 'number');
          new Uint8Array(m[0]).fill(0x5a, 0, 16);
          assert.deepEqual([...(await sock.regionRead(1, a.offset, 16))], new Array(16).fill(0x5a));
          native.munmap(m[1], m[0]);
        }
        native.close(full.fds[0]!);
      }

      const config = await sock.regionRead(CONFIG, 0, 64);
      assert.equal(config.readUInt16LE(0), 0xdead);
      assert.equal(config.readUInt16LE(2), 0xbeef);
      assert.equal(config.readUInt16LE(0x2c), 0xcafe);
      assert.equal(config.readUInt16LE(0x2e), 0xbabe);

      await sock.reset();
      for (let i = 0; i < nrDma; i++) await sock.dmaMap(i * PAGE, page(backing, i), 3, i * PAGE);
      await configureIrqs(sock, irq);

      // Dirty logging: page size 4096, no ranges; the reply is the request.
      const control = Buffer.alloc(16);
      control.writeUInt32LE(PAGE, 0);
      const started = await feature(sock, FeatureId.DMA_LOGGING_START | DeviceFeatureFlag.SET, control, 24);
      assert.equal(started.length, 24);
      assert.equal(started.readUInt32LE(8), PAGE);

      await assertBusMasterClear(sock);
      const t = Math.floor(Date.now() / 1000) + 1;
      await sock.regionWrite(0, 0, le64(t));
      assert.ok((await sock.regionRead(0, 0, 8)).readBigInt64LE(0) <= 0n);
      await irq.waitFor(1, 3000);
      await waitForDmaIo(sock, 0);
      // The timer's DMA is in the file: by messages into page 0, by pwrite into page 1.
      assertTimerDma(backing, 0, 1);
      assert.match(src.stderr, /DMA through the shared fd \(pread\/pwrite\) at 0x1000: ok/);
      assert.doesNotMatch(src.stderr, /DMA failed/);

      // One bitmap per DMA region: region 1 was written by the device itself.
      for (let i = 0; i < nrDma; i++) {
        const report = Buffer.alloc(24);
        report.writeUInt32LE(i * PAGE, 0);
        report.writeUInt32LE(PAGE, 8);
        report.writeUInt32LE(PAGE, 16);
        const r = await feature(sock, FeatureId.DMA_LOGGING_REPORT | DeviceFeatureFlag.GET, report, 8 + 24 + 8);
        assert.equal(r.length, 8 + 24 + 8);
        assert.equal(r[32], i === 1 ? 1 : 0, `dirty bit of DMA region ${i}`);
      }
      await feature(sock, FeatureId.DMA_LOGGING_STOP | DeviceFeatureFlag.SET, control, 24);
      for (let i = 0; i < maxFds; i++) await sock.dmaUnmap(i * PAGE, PAGE);

      // Program the timer, then migrate while a "fake guest" keeps writing BAR1.
      const t2 = Math.floor(Date.now() / 1000) + 2;
      await sock.regionWrite(0, 0, le64(t2));
      let done = false;
      let last = Buffer.alloc(0);
      const guest = (async () => {
        do {
          const buf = randomBytes(BAR1);
          await sock.regionWrite(1, 0, buf);
          last = buf;
        } while (!done);
      })();
      await setStateLikeC(sock, S.PRE_COPY);
      for (let i = 0; i < 16; i++) assert.equal((await sock.migDataRead(1024)).length, 1024, `pre-copy read ${i}`);
      done = true;
      await guest;
      await setStateLikeC(sock, S.STOP_COPY);
      const iters: Buffer[] = [];
      for (let i = 0; i < 17; i++) {
        const d = await sock.migDataRead(1024);
        assert.ok(d.length > 0, `stop-copy read ${i}`);
        iters.push(d);
      }
      assert.equal(iters[16]!.length, 8);
      assert.equal((await sock.migDataRead(1024)).length, 0, 'then the end of the stream');
      await setStateLikeC(sock, S.STOP);

      // client.c's migrate_to(): start the destination server, connect as soon as its socket exists.
      dst = await startTimer(`${src.path}_migrated`, { verbose: true, untilSocket: true });
      sock2 = await Client.connect(dst.path, { capabilities: C_CAPS });
      await setStateLikeC(sock2, S.RESUMING);
      for (const d of iters) await sock2.migDataWrite(d);
      await setStateLikeC(sock2, S.STOP);
      assert.equal(crc32(await sock2.regionRead(1, 0, BAR1)), crc32(last));
      await setStateLikeC(sock2, S.RUNNING);

      // The destination starts with no DMA maps: the client maps the second half, then sets up INTx.
      for (let i = maxFds; i < nrDma; i++) await sock2.dmaMap(i * PAGE, page(backing, i), 3, i * PAGE);
      await configureIrqs(sock2, dstIrq);
      await assertBusMasterClear(sock2);
      await dstIrq.waitFor(1, 4000);
      assert.ok(Date.now() / 1000 >= t2 - 0.01);
      await waitForDmaIo(sock2, 0);
      assert.equal(irq.total, 1, 'the source, stopped, did not fire again');
      assertTimerDma(backing, maxFds, maxFds + 1);
      assert.doesNotMatch(dst.stderr, /DMA failed/);
      await sock2.dmaUnmap(0, 0, true);
    } finally {
      sock.close();
      sock2?.close();
      irq.close();
      dstIrq.close();
      backing.close();
    }
  });

  it('a deadline already past fires at once when the destination runs, without failing the resume', async () => {
    const fresh = await startTimer(join(dir, 'fresh.sock'));
    const c = await Client.connect(fresh.path);
    const irq = new EventFd();
    try {
      await c.reset();
      await setMigrationState(c, S.RESUMING);
      await c.setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, undefined, [irq.fd]);
      const image = Buffer.concat([randomBytes(BAR1), le64(Math.floor(Date.now() / 1000) - 60)]);
      for (let off = 0; off < image.length; off += 4096) await c.migDataWrite(image.subarray(off, off + 4096));
      await setMigrationState(c, S.RUNNING);
      await irq.waitFor(1, 1000);
      assert.ok((await c.regionRead(0, 0, 8)).readBigInt64LE(0) >= 60n, 'BAR0 reads now - T');
    } finally {
      c.close();
      irq.close();
      await fresh.stop();
    }
  });
});
