// An isolated device's child dies under a live connection: a successor
// takes the connection over and the client never notices.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { Client, EventFd, sharedMemory } from '../src/client/index.js';
import { Command, HeaderFlag } from '../src/protocol/constants.js';
import { encodeRegionReadRequest, encodeRegionWriteRequest, decodeRegionReadReply } from '../src/protocol/region-access.js';
import { encodeMessage } from '../src/protocol/header.js';
import { RawConn } from './helpers/raw.js';
import { alive, startIsolated, tempDir, u32, until, writeDeviceFile } from './helpers/isolated.js';

const IRQ_MSIX = 2;

test('isolate: SIGKILL of the child keeps the connection, the count, the DMA maps and the interrupts', async () => {
  const dir = tempDir();
  const server = await startIsolated('counter', dir);
  const client = await Client.connect(server.path);
  const irq = new EventFd();
  const shared = sharedMemory(1 << 16);
  const recoveries: number[] = [];
  server.on('recovered', (r: { ms: number }) => recoveries.push(r.ms));
  try {
    await client.setIrqEventfds(IRQ_MSIX, 0, [irq.fd]);
    await client.setBusMaster();
    await client.dmaMap(0x10000, shared);
    await client.regionWrite(0, 4, u32(5));
    await client.regionWrite(0, 4, u32(5));
    assert.equal(await irq.waitFor(2), 2);

    for (let kill = 1; kill <= 3; kill++) {
      await server.standby();
      const pid = server.childPid!;
      process.kill(pid, 'SIGKILL');
      // The client just goes on: its next request waits for the successor.
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 10 + (kill - 1) * 5, `count after kill ${kill}`);
      assert.notEqual(server.childPid, pid);
      assert.equal(server.restarts, kill);
      // Interrupts reach the eventfd the client set before the crash.
      await client.regionWrite(0, 4, u32(5));
      assert.equal(await irq.waitFor(2 + kill), 2 + kill, "one interrupt per increment, none lost or added by the recovery");
    }
    // DMA through the map made before the crashes.
    shared.bytes.set(Array.from({ length: 16 }, (_, i) => i + 1), 0x100);
    const addr = Buffer.alloc(8);
    addr.writeBigUInt64LE(0x10100n);
    await client.regionWrite(0, 8, addr);
    assert.deepEqual([...shared.bytes.subarray(0x110, 0x120)], Array.from({ length: 16 }, (_, i) => 16 - i));
    assert.equal(recoveries.length, 3);
    process.stderr.write(`isolate: recovered in ${recoveries.map((ms) => ms.toFixed(1)).join(', ')} ms\n`);
  } finally {
    client.close();
    irq.close();
    shared.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate: a request half-read when the child died is completed by its successor, and served once', async () => {
  const dir = tempDir();
  const server = await startIsolated('counter', dir);
  const raw = await RawConn.negotiated(server.path);
  try {
    const write = encodeMessage({ msgId: 77, command: Command.REGION_WRITE }, encodeRegionWriteRequest({ region: 0, offset: 4, count: 4, data: u32(3) }));
    await server.standby();
    raw.send(write.subarray(0, 10));
    await until(() => server.unansweredBytes === 10, 3000, 'the child to read the first 10 bytes');
    process.kill(server.childPid!, 'SIGKILL');
    raw.send(write.subarray(10));
    const reply = await raw.next();
    assert.ok(reply !== 'closed');
    assert.equal(reply.header.msgId, 77);
    assert.equal(reply.header.flags & HeaderFlag.ERROR, 0, `errno ${reply.header.errno}`);
    const read = await raw.call(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 0, count: 4 }));
    assert.ok(read !== 'closed');
    assert.equal(Buffer.from(decodeRegionReadReply(read.payload).data).readUInt32LE(0), 3);
  } finally {
    raw.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate: a request whose callback killed the child is served again once; one that kills every child fails with EIO', async () => {
  const dir = tempDir();
  const server = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir);
  const client = await Client.connect(server.path);
  try {
    // Offset 16 kills the first child that serves it: the successor serves it again, and the client sees one success.
    await client.regionWrite(0, 16, u32(1));
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 1);
    assert.equal(server.restarts, 1);
    // Offset 12 kills every child: the third fails it rather than dying too.
    await assert.rejects(client.regionWrite(0, 12, u32(1)), /errno 5|EIO/);
    assert.equal(server.restarts, 3);
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 1, 'the device keeps its count and serves on');
  } finally {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate: an uncheckpointed device (state muser cannot see) comes back from reset, and says so', async () => {
  const dir = tempDir();
  const warnings: string[] = [];
  const file = writeDeviceFile(dir, { version: 1, extra: 'migration: false,' });
  const server = await startIsolated(file, dir, { log: { debug() {}, info() {}, warn: (m) => warnings.push(m), error() {} } });
  const client = await Client.connect(server.path);
  try {
    assert.ok(warnings.some((w) => /not checkpointed/.test(w)), warnings.join('\n'));
    await client.regionWrite(0, 4, u32(7));
    await server.standby();
    const pid = server.childPid!;
    process.kill(pid, 'SIGKILL');
    await until(() => !alive(pid), 2000, 'the child to die');
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 0, 'back at power-on state');
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 1, 'and serving');
  } finally {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
