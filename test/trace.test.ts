// `muser trace` between our client and a sample device, all real processes:
// every message passes both ways with its fds (memfd DMA maps, MSI-X
// eventfds, the BAR's region fd), DMA_READ / DMA_WRITE requests from the
// device reach the client, and each message is printed decoded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, EventFd, privateMemory, sharedMemory } from '../src/client/index.js';
import { native } from '../src/native/index.js';
import { MAIN, startServer } from './helpers/timer-process.js';
import { AccessStats, type AccessSummary, type PlaceStats, type TraceEvent } from '../src/cli/trace/index.js';
import { le32, le64 } from './helpers/bytes.js';

interface Traced {
  /** Stops the proxy (SIGTERM) and resolves with everything it printed. */
  stop(): Promise<string>;
}

/** Runs `muser trace <device> --listen <listen> ...extra` until it listens. */
async function startTrace(device: string, listen: string, extra: string[]): Promise<Traced> {
  const child = spawn(process.execPath, [MAIN, 'trace', device, '--listen', listen, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const deadline = Date.now() + 10_000;
  while (!err.includes('muser: tracing')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`trace did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    async stop() {
      child.kill('SIGTERM');
      assert.equal(await closed, 0, err);
      return out;
    },
  };
}

test('trace: a transparent proxy, fds included, printing each message as JSON lines, with --stats', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-trace-'));
  const deviceSock = join(dir, 'dev.sock');
  const traceSock = join(dir, 'trace.sock');
  const device = await startServer([MAIN, 'run', 'counter', deviceSock], deviceSock, 'serving counter', 'counter');
  const tracer = await startTrace(deviceSock, traceSock, ['--json', '--stats']);
  const irq = new EventFd();
  const mapped = sharedMemory(1 << 16);
  const byMessages = privateMemory(1 << 16);
  try {
    const client = await Client.connect(traceSock);
    // An eventfd through the proxy: the device's interrupt must reach it.
    await client.setIrqEventfds(2, 0, [irq.fd]);
    await client.regionWrite(7, 4, Buffer.from([0x06, 0x04])); // memory space + bus master
    await client.regionWrite(0, 4, le32(5));
    await irq.waitFor(1);
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 5);
    // A memfd through the proxy: the device copies within it directly.
    await client.dmaMap(0x100000, mapped);
    mapped.bytes.set(Buffer.from('0123456789abcdef'), 0);
    await client.regionWrite(0, 8, le64(0x100000));
    assert.equal(Buffer.from(mapped.bytes.subarray(16, 32)).toString(), 'fedcba9876543210');
    // Memory without an fd: the device's DMA_READ / DMA_WRITE cross the proxy the other way.
    await client.dmaMap(0x200000, byMessages);
    byMessages.bytes.set(Buffer.from('ABCDEFGHIJKLMNOP'), 0);
    const served = client.dmaRequestsServed;
    await client.regionWrite(0, 8, le64(0x200000));
    assert.equal(Buffer.from(byMessages.bytes.subarray(16, 32)).toString(), 'PONMLKJIHGFEDCBA');
    assert.equal(client.dmaRequestsServed, served + 2);
    // The BAR 2 region fd comes back through the proxy and maps the device's memory.
    const bar2 = await client.regionInfo(2);
    assert.ok(bar2.fd !== undefined && bar2.fd >= 0, 'region fd passed');
    native.close(bar2.fd!);
    // A refused command: an error reply with its errno.
    await assert.rejects(client.regionRead(5, 0, 4));
    client.close();
    await client.whenClosed;
    await new Promise((r) => setTimeout(r, 100));

    const lines = (await tracer.stop()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    const events = lines.filter((l) => l.command !== undefined);
    const find = (pred: (e: Record<string, any>) => boolean, what: string): Record<string, any> => {
      const e = events.find(pred);
      assert.ok(e, `${what} in the trace:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
      return e;
    };
    find((e) => e.command === 'version' && e.dir === 'c>s', 'VERSION request');
    const setIrqs = find((e) => e.command === 'device_set_irqs' && e.type === 'request', 'SET_IRQS');
    assert.equal(setIrqs.fds, 1);
    assert.equal(setIrqs.fields.index, 2);
    const write = find((e) => e.command === 'region_write' && e.type === 'request' && e.fields.region === 0 && e.fields.offset === '0x4', 'the counter write');
    assert.equal(write.fields.count, 4);
    assert.equal(write.fields.data, '05000000');
    const read = find((e) => e.command === 'region_read' && e.type === 'reply' && e.fields.region === 0, 'the counter read reply');
    assert.equal(read.fields.data, '05000000');
    assert.equal(typeof read.latencyUs, 'number');
    const map = find((e) => e.command === 'dma_map' && e.type === 'request' && e.fields.address === '0x100000', 'DMA_MAP with fd');
    assert.equal(map.fds, 1);
    assert.equal(map.fields.size, 1 << 16);
    const dmaRead = find((e) => e.command === 'dma_read' && e.dir === 's>c' && e.type === 'request', 'the device DMA_READ');
    assert.equal(dmaRead.fields.address, '0x200000');
    assert.equal(dmaRead.fields.count, 16);
    const dmaReadReply = find((e) => e.command === 'dma_read' && e.dir === 'c>s' && e.type === 'reply', 'its reply');
    assert.equal(dmaReadReply.fields.data, Buffer.from('ABCDEFGHIJKLMNOP').toString('hex'));
    assert.equal(typeof dmaReadReply.latencyUs, 'number');
    const dmaWrite = find((e) => e.command === 'dma_write' && e.dir === 's>c' && e.type === 'request', 'the device DMA_WRITE');
    assert.equal(dmaWrite.fields.data, Buffer.from('PONMLKJIHGFEDCBA').toString('hex'));
    const regionInfo = find((e) => e.command === 'device_get_region_info' && e.type === 'reply' && e.fields.index === 2, 'BAR2 info');
    assert.equal(regionInfo.fds, 1);
    const refused = find((e) => e.command === 'region_read' && e.type === 'reply' && e.errno !== undefined, 'the error reply');
    assert.equal(refused.errnoName, 'EINVAL');
    const stats = lines.find((l) => l.stats)?.stats as { command: string; requests: number; replies: number; errors: number; p50Us?: number }[];
    assert.ok(stats, 'stats line');
    const rr = stats.find((s) => s.command === 'region_read')!;
    assert.equal(rr.requests, 2);
    assert.equal(rr.errors, 1);
    assert.equal(typeof rr.p50Us, 'number');
    assert.equal(stats.find((s) => s.command === 'dma_read')!.replies, 1);
    // Region accesses per place: counts, refusals, values read.
    const accesses = lines.find((l) => l.stats)?.accesses as AccessSummary;
    const place = (region: number, offset: number, op: string): PlaceStats | undefined => accesses.places.find((p) => p.region === region && p.offset === offset && p.op === op);
    const counterRead = place(0, 0, 'read')!;
    assert.deepEqual(counterRead, { region: 0, offset: 0, width: 4, op: 'read', count: 1, errors: 0, firstT: counterRead.firstT, values: ['0x5'] });
    assert.deepEqual({ ...place(0, 4, 'write'), firstT: 0 }, { region: 0, offset: 4, width: 4, op: 'write', count: 1, errors: 0, firstT: 0 });
    assert.equal(place(0, 8, 'write')?.count, 2);
    const refusedPlace = place(5, 0, 'read')!;
    assert.deepEqual([refusedPlace.count, refusedPlace.errors, refusedPlace.values], [1, 1, undefined]);
    assert.equal(accesses.otherAccesses, 0);
    assert.equal(existsSync(traceSock), false, 'the proxy removed its socket');
  } finally {
    irq.close();
    mapped.close();
    byMessages.close();
    await device.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('trace: text output with --filter and --region shows only what was asked for', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-trace-'));
  const deviceSock = join(dir, 'dev.sock');
  const device = await startServer([MAIN, 'run', 'counter', deviceSock], deviceSock, 'serving counter', 'counter');
  try {
    const onlyWrites = await startTrace(deviceSock, join(dir, 'a.sock'), ['--filter', 'region_write']);
    const onlyBar0 = await startTrace(deviceSock, join(dir, 'b.sock'), ['--region', '0']);
    for (const sock of ['a.sock', 'b.sock']) {
      const c = await Client.connect(join(dir, sock));
      await c.regionWrite(0, 4, le32(1));
      await c.regionRead(7, 0, 4);
      await c.regionRead(0, 0, 4);
      c.close();
      await c.whenClosed;
    }
    await new Promise((r) => setTimeout(r, 100));
    const writes = (await onlyWrites.stop()).split('\n').filter((l) => l && !l.startsWith('#'));
    assert.equal(writes.length, 2, writes.join('\n'));
    assert.match(writes[0], /c>s #\d+ region_write offset=0x4 region=0 count=4 data=01000000/);
    assert.match(writes[1], /s>c #\d+ region_write reply \d+us offset=0x4 region=0 count=4$/);
    const bar0 = (await onlyBar0.stop()).split('\n').filter((l) => l && !l.startsWith('#'));
    assert.equal(bar0.length, 4, bar0.join('\n'));
    assert.ok(bar0.every((l) => / region=0 /.test(l)));
    assert.match(bar0[3], /region_read reply \d+us .*data=02000000/);
  } finally {
    await device.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('trace --stats: the access table shows a place read many times with one value, and refusals', () => {
  const stats = new AccessStats();
  let msgId = 0;
  let t = 0;
  const access = (command: 'region_read' | 'region_write', region: number, offset: number, count: number, reply: { data?: string; errno?: number }): void => {
    const fields = { offset: `0x${offset.toString(16)}`, region, count };
    const base = { dir: 'c>s' as const, conn: 1, msgId: ++msgId, command, flags: 0, fds: 0, size: 0 };
    stats.add({ ...base, t: (t += 0.001), type: 'request', fields } satisfies TraceEvent);
    const replyFields = reply.data === undefined ? {} : { ...fields, data: reply.data, dataLength: reply.data.length / 2 };
    stats.add({ ...base, t, dir: 's>c', type: 'reply', fields: replyFields, ...(reply.errno === undefined ? {} : { errno: reply.errno, errnoName: 'EINVAL' }) });
  };
  for (let i = 0; i < 5; i++) access('region_read', 0, 0x4, 4, { data: '00000000' });
  access('region_write', 0, 0x10, 4, {});
  for (const v of ['01', '02', '03', '04', '05']) access('region_read', 0, 0x8, 1, { data: v });
  access('region_read', 7, 0x11, 2, { errno: 22 });
  const lines = stats.format().trimEnd().split('\n');
  assert.match(lines[0], /^region access +count +errors +first s +values read$/);
  assert.match(lines[1], /^BAR0 0x4 w4 read +5 +0 +0\.001 +always 0x0$/);
  assert.match(lines[2], /^BAR0 0x8 w1 read +5 +0 +0\.007 +0x1 0x2 0x3 0x4 \.\.\.$/);
  assert.match(lines[3], /^BAR0 0x10 w4 write +1 +0 +0\.006$/);
  assert.match(lines[4], /^config 0x11 w2 read +1 +1 +0\.012$/);
  assert.equal(lines.length, 5);
});
