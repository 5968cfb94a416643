/**
 * The sample client (`muser sample-client <socket>`), muser's version of
 * the original sample client. Against a `timer` device it exercises every
 * command: negotiation, device / region / IRQ info, mmap of BAR1's sparse
 * areas, region I/O fds, DMA maps with and without fds, SET_IRQS (trigger,
 * mask, unmask), BAR0 and BAR1 access (single and multi writes), dirty-page
 * logging, reset, DMA unmap. Then it programs the timer a few seconds
 * ahead, starts a destination `timer` server on a new socket and
 * live-migrates the device there, and checks that the destination delivers
 * the interrupt (and its DMA) while the stopped source stays quiet. Each
 * step is printed; any failure throws (the CLI exits non-zero).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  Client,
  closeFd,
  dirtyReport,
  EventFd,
  getMigrationState,
  IrqSetFlag,
  mapRegion,
  migrate,
  migrationFlags,
  MigrationState,
  privateMemory,
  RegionCapId,
  sharedMemory,
  startDirtyLogging,
  stopDirtyLogging,
  type GuestMemory,
} from '../client/index.js';
import { BAR1_SIZE, TIMER_IDS } from './timer.js';

const PAGE = 4096;
/** How far ahead the migrated timer is programmed. */
const LEAD_SECONDS = 3;
const MESSAGE_IOVA = 0x0;
const DIRECT_IOVA = 0x10000;
const IRQ_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];

/** Options for {@link runSampleClient}. */
export interface SampleClientOptions {
  verbose: boolean;
  /** Where the step lines go (default stdout). */
  out?: (line: string) => void;
}

class Failure extends Error {}

function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Failure(`check failed: ${what}`);
}

function le64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt(n));
  return b;
}

function pattern(mem: Uint8Array, base: number): boolean {
  for (let i = 0; i < PAGE; i++) if (mem[i] !== base + (i >> 10)) return false;
  return true;
}

/** Starts `muser run timer <path>` and waits for it to listen. */
async function startServer(path: string, verbose: boolean, say: (l: string) => void): Promise<ChildProcess> {
  const main = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  const child = spawn(process.execPath, [main, 'run', 'timer', path, ...(verbose ? ['-v'] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (verbose) for (const l of d.toString().split('\n')) if (l) say(`  [destination] ${l}`);
  });
  const deadline = Date.now() + 10_000;
  while (!err.includes('serving timer') || !existsSync(path)) {
    if (child.exitCode !== null) throw new Failure(`destination server exited: ${err.trim()}`);
    if (Date.now() > deadline) throw new Failure(`destination server did not start: ${err.trim()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

function stopServer(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/**
 * Maps the sample's two DMA regions: fd-less at 0x0 (served by messages),
 * shared at 0x10000; and sets Bus Master Enable, as a guest driver does,
 * without which the device may not DMA.
 */
async function mapDma(c: Client, msg: GuestMemory, direct: GuestMemory): Promise<void> {
  await c.setBusMaster();
  await c.dmaMap(MESSAGE_IOVA, msg);
  await c.dmaMap(DIRECT_IOVA, direct);
}

/** Runs the sample client against the timer device at `path`. */
export async function runSampleClient(path: string, o: SampleClientOptions): Promise<void> {
  const out = o.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  let n = 0;
  const step = (l: string): void => out(`[${++n}] ${l}`);
  const detail = (l: string): void => {
    if (o.verbose) out(`    ${l}`);
  };

  const msgMem = privateMemory(4 * PAGE);
  const directMem = sharedMemory(PAGE, 'sample-client-dma');
  const irq = new EventFd();
  const dstIrq = new EventFd();
  let src: Client | undefined;
  let dst: Client | undefined;
  let server: ChildProcess | undefined;
  try {
    // Negotiation.
    src = await Client.connect(path);
    step(`VERSION: connected to ${path}; server offers ${JSON.stringify(src.server)}`);

    // Device, regions, interrupts.
    const info = await src.deviceInfo();
    step(`DEVICE_GET_INFO: flags 0x${info.flags.toString(16)}, ${info.numRegions} regions, ${info.numIrqs} IRQ indexes`);
    let bar1Fd: number | undefined;
    let areas: { offset: number; size: number }[] = [];
    for (let i = 0; i < info.numRegions; i++) {
      const r = await src.regionInfo(i);
      if (r.info.size === 0) {
        if (r.fd !== undefined) closeFd(r.fd);
        continue;
      }
      const sparse = r.caps.find((cap) => cap.id === RegionCapId.SPARSE_MMAP);
      if (sparse?.id === RegionCapId.SPARSE_MMAP && i === 1) areas = sparse.areas;
      step(`DEVICE_GET_REGION_INFO ${i}: ${r.info.size} bytes, flags 0x${r.info.flags.toString(16)}${sparse?.id === RegionCapId.SPARSE_MMAP ? `, sparse mmap ${sparse.areas.map((a) => `0x${a.offset.toString(16)}+0x${a.size.toString(16)}`).join(' ')}` : ''}${r.fd !== undefined ? ', with an fd' : ''}`);
      if (i === 1) bar1Fd = r.fd;
      else if (r.fd !== undefined) closeFd(r.fd);
    }
    for (let i = 0; i < info.numIrqs; i++) {
      const irqInfo = await src.irqInfo(i);
      step(`DEVICE_GET_IRQ_INFO ${IRQ_NAMES[i] ?? i}: count ${irqInfo.count}, flags 0x${irqInfo.flags.toString(16)}`);
    }
    const ioFds = await src.regionIoFds(0);
    step(`DEVICE_GET_REGION_IO_FDS 0: ${ioFds.count} doorbells`);
    for (const fd of ioFds.fds) closeFd(fd);

    const config = await src.regionRead(7, 0, 64);
    const ids = { vendorId: config.readUInt16LE(0), deviceId: config.readUInt16LE(2), subsystemVendorId: config.readUInt16LE(0x2c), subsystemId: config.readUInt16LE(0x2e) };
    step(`REGION_READ config space: ${ids.vendorId.toString(16)}:${ids.deviceId.toString(16)} subsystem ${ids.subsystemVendorId.toString(16)}:${ids.subsystemId.toString(16)}`);
    check(JSON.stringify(ids) === JSON.stringify(TIMER_IDS), 'the device is a timer (dead:beef, cafe:babe)');

    await src.reset();
    step('DEVICE_RESET');

    // BAR1: mapped areas and messages see the same memory.
    check(bar1Fd !== undefined && areas.length === 2, 'BAR1 comes with an fd and two sparse areas');
    const maps = areas.map((a) => {
      const m = mapRegion(bar1Fd!, a.offset, a.size);
      return { area: a, bytes: m.bytes, unmap: m.unmap };
    });
    closeFd(bar1Fd!);
    const bar1 = randomBytes(BAR1_SIZE);
    await src.regionWrite(1, 0, bar1);
    for (const m of maps) check(Buffer.from(m.bytes).equals(bar1.subarray(m.area.offset, m.area.offset + m.area.size)), 'a mapped area shows what REGION_WRITE wrote');
    maps[0]!.bytes.set(Buffer.from('written through the mapping'), 0);
    check((await src.regionRead(1, 0, 27)).toString() === 'written through the mapping', 'REGION_READ shows what the mapping wrote');
    await src.regionWriteMulti([
      { region: 1, offset: 0x2000, count: 4, data: Buffer.from([1, 2, 3, 4]) },
      { region: 1, offset: 0x2004, count: 4, data: Buffer.from([5, 6, 7, 8]) },
    ]);
    check((await src.regionRead(1, 0x2000, 8)).equals(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8])), 'REGION_WRITE_MULTI landed');
    for (const m of maps) m.unmap();
    step('BAR1: mmapped both sparse areas; REGION_WRITE, REGION_READ and REGION_WRITE_MULTI agree with the mappings');

    // DMA: memory with and without an fd.
    await mapDma(src, msgMem, directMem);
    step(`DMA_MAP: 0x${MESSAGE_IOVA.toString(16)}+0x${msgMem.bytes.length.toString(16)} without an fd (DMA_READ/DMA_WRITE messages), 0x${DIRECT_IOVA.toString(16)}+0x${PAGE.toString(16)} with an fd (mapped)`);

    // Interrupts.
    await src.setIrqEventfds(0, 0, [irq.fd]);
    await src.maskIrqs(0, 0, 1, true);
    await src.maskIrqs(0, 0, 1, false);
    step('DEVICE_SET_IRQS: INTx -> eventfd; mask; unmask');

    // Dirty logging, then the timer: an interrupt and DMA one second from now.
    const page = await startDirtyLogging(src, PAGE, [{ iova: 0, length: 0x20000 }]);
    step(`DEVICE_FEATURE DMA_LOGGING_START: page size ${page}`);
    const t1 = Math.floor(Date.now() / 1000) + 1;
    await src.regionWrite(0, 0, le64(t1));
    const delta = (await src.regionRead(0, 0, 8)).readBigInt64LE(0);
    step(`BAR0: wrote T = ${t1}; reads back now - T = ${delta}`);
    await irq.waitFor(1, 4000);
    step(`interrupt: INTx fired at ${(Date.now() / 1000).toFixed(2)}`);
    const dmaDeadline = Date.now() + 3000;
    // Like the original client: wait for all 8 DMA messages, the device's last DMA.
    while (!(pattern(msgMem.bytes, 0x41) && pattern(directMem.bytes, 0x61) && src.dmaRequestsServed >= 8)) {
      if (Date.now() > dmaDeadline) throw new Failure('the device did not complete its DMA');
      await new Promise((r) => setTimeout(r, 10));
    }
    step(`DMA: the device wrote and read back 4 KiB through ${src.dmaRequestsServed} DMA_READ/DMA_WRITE messages, and 4 KiB through the mapping`);
    const dirty = await dirtyReport(src, 0, 0x20000, PAGE);
    detail(`dirty pages: ${dirty.map((a) => `0x${a.toString(16)}`).join(' ')}`);
    check(dirty.includes(DIRECT_IOVA), 'the page written through the mapping is reported dirty');
    check((await dirtyReport(src, 0, 0x20000, PAGE)).length === 0, 'a report clears what it reported');
    await stopDirtyLogging(src);
    step(`DEVICE_FEATURE DMA_LOGGING_REPORT: ${dirty.length} dirty page(s), 0x${DIRECT_IOVA.toString(16)} among them; DMA_LOGGING_STOP`);

    await src.dmaUnmap(MESSAGE_IOVA, msgMem.bytes.length);
    await src.dmaMap(MESSAGE_IOVA, msgMem);
    step('DMA_UNMAP and DMA_MAP again');

    // INTx masked itself when it fired: unmask it, as a guest's EOI would.
    await src.maskIrqs(0, 0, 1, false);

    // Migration.
    const flags = await migrationFlags(src);
    step(`DEVICE_FEATURE MIGRATION: flags 0x${flags.toString(16)}; state ${MigrationState[await getMigrationState(src)]}`);
    const t2 = Math.floor(Date.now() / 1000) + LEAD_SECONDS;
    await src.regionWrite(0, 0, le64(t2));
    step(`BAR0: timer programmed for ${t2}, ${LEAD_SECONDS} s ahead`);
    const dstPath = `${path}_migrated`;
    server = await startServer(dstPath, o.verbose, out);
    step(`destination: started \`muser run timer ${dstPath}\` (pid ${server.pid})`);
    dst = await Client.connect(dstPath);
    const firedBefore = irq.total;
    const result = await migrate(src, dst, {
      dirtyLog: { ranges: [{ iova: 0, length: 0x20000 }], pageSize: PAGE },
      onStep: (s) => step(`migration: ${s}`),
    });
    step(`migrated: ${result.preCopyBytes} bytes pre-copy, ${result.stopCopyBytes} bytes stop-copy, ${result.chunks} chunks; ${result.totalMs.toFixed(1)} ms in all, ${result.downtimeMs.toFixed(1)} ms stopped`);
    check(Buffer.from(await dst.regionRead(1, 0, BAR1_SIZE)).equals(await src.regionRead(1, 0, BAR1_SIZE)), 'BAR1 equal on both sides');
    step('BAR1: equal on source and destination');

    // The destination's client sets up DMA and the interrupt; the interrupt comes from there.
    msgMem.bytes.fill(0);
    directMem.bytes.fill(0);
    await mapDma(dst, msgMem, directMem);
    await dst.setIrqEventfds(0, 0, [dstIrq.fd]);
    step('destination: DMA_MAP and DEVICE_SET_IRQS');
    step(`waiting for the interrupt at ${t2}...`);
    await dstIrq.waitFor(1, (LEAD_SECONDS + 5) * 1000);
    const now = Date.now() / 1000;
    check(now >= t2 - 0.01, `the interrupt came at T (${now.toFixed(2)} >= ${t2})`);
    step(`interrupt: delivered by the destination at ${now.toFixed(2)}`);
    while (!(pattern(msgMem.bytes, 0x41) && pattern(directMem.bytes, 0x61) && dst.dmaRequestsServed >= 8)) {
      if (Date.now() / 1000 > now + 3) throw new Failure('the destination did not complete its DMA');
      await new Promise((r) => setTimeout(r, 10));
    }
    step('DMA: done by the destination, through messages and the mapping');
    check(irq.total === firedBefore, 'the stopped source raised no interrupt');
    check((await getMigrationState(src)) === MigrationState.STOP, 'the source is stopped');
    step('source: stopped and silent');
    step('OK');
  } finally {
    src?.close();
    dst?.close();
    irq.close();
    dstIrq.close();
    directMem.close();
    msgMem.close();
    if (server) await stopServer(server);
  }
}
