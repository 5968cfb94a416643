// The read window under --isolate: the child peeks at the client's socket,
// journals the bytes, then consumes them (src/isolate/rx-socket.ts). A
// SIGKILL at any instant of a read (even inside the recvmsg, where the
// kernel has taken the bytes from the socket and JS has not seen them)
// loses no request and serves none twice: the successor finds every byte
// either in the socket or in the journal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, HeaderFlag } from '../src/protocol/constants.js';
import { decodeRegionReadReply, encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/protocol/region-access.js';
import { encodeMessage } from '../src/protocol/header.js';
import type { CrashPoint } from '../src/isolate/crash-point.js';
import { RawConn, type RawFrame } from './helpers/raw.js';
import { startIsolated, tempDir, u32, until, writeDeviceFile } from './helpers/isolated.js';

const POINTS: CrashPoint[] = ['peeked', 'journaled', 'consuming', 'discarded', 'consumed'];

const countOf = (f: RawFrame | 'closed'): number => {
  assert.ok(f !== 'closed', 'the connection lived');
  assert.equal(f.header.flags & HeaderFlag.ERROR, 0, `errno ${f.header.errno}`);
  return Buffer.from(decodeRegionReadReply(f.payload).data).readUInt32LE(0);
};

test('isolate: a child killed at each point of a read (peeked, journaled, consuming, discarded, consumed) loses no request and serves none twice', async () => {
  const dir = tempDir();
  const arm = join(dir, 'crash-at');
  // Children read it at start (spares too): the kill points exist only in this test's children.
  process.env.MUSER_READ_CRASH_AT = arm;
  const server = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir);
  const raw = await RawConn.negotiated(server.path);
  try {
    for (const [i, point] of POINTS.entries()) {
      await server.standby();
      writeFileSync(arm, point);
      const pid = server.childPid;
      // Two writes and a read in one send: one read of the socket takes all three.
      const write = (msgId: number): Buffer => encodeMessage({ msgId, command: Command.REGION_WRITE }, encodeRegionWriteRequest({ region: 0, offset: 4, count: 4, data: u32(3) }));
      const ids = [100 + 3 * i, 101 + 3 * i, 102 + 3 * i];
      raw.send(Buffer.concat([write(ids[0]), write(ids[1]), encodeMessage({ msgId: ids[2], command: Command.REGION_READ }, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 }))]));
      const replies: RawFrame[] = [];
      for (const id of ids) {
        const reply = await raw.next(8000);
        assert.ok(reply !== 'closed', `${point}: the connection lived`);
        assert.equal(reply.header.msgId, id, `${point}: answered in order`);
        assert.equal(reply.header.flags & HeaderFlag.ERROR, 0, `${point}: errno ${reply.header.errno}`);
        replies.push(reply);
      }
      assert.equal(existsSync(arm), false, `${point}: the kill fired`);
      assert.notEqual(server.childPid, pid, `${point}: a successor answered`);
      assert.equal(server.restarts, i + 1);
      // Served exactly once: a lost write leaves the count short, one served twice leaves it 3 too high.
      assert.equal(countOf(replies[2]), 6 * (i + 1), `${point}: each write counted once`);
      const count = countOf(await raw.call(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 })));
      assert.equal(count, 6 * (i + 1), `${point}: and the stream in step after`);
      assert.equal(raw.pendingFrames(), 0, `${point}: no reply twice`);
    }
  } finally {
    delete process.env.MUSER_READ_CRASH_AT;
    raw.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate: 20 SIGKILLs at random moments under pipelined writes and reads: no request lost or served twice, every read in step', async () => {
  const dir = tempDir();
  const server = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir);
  const raw = await RawConn.negotiated(server.path);
  let seed = 20261207;
  const random = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x1_0000_0000;
  };
  const KILLS = 20;
  const WINDOW = 8;
  /** Requests not answered yet, oldest first: a write adds 1; a read sees the writes sent before it, each counted once. */
  const outstanding: { id: number; read: boolean; count: number }[] = [];
  let writes = 0;
  let sent = 0;
  let answered = 0;
  let resent = 0;
  let last: RawFrame | undefined;
  let stop = false;
  let failure: Error | undefined;
  /** Set by the killer: the next request goes to an idle child, and the kill follows it within 0 to 30 µs (while the child reads it). */
  let killAfterSend = false;
  const send = (): void => {
    const read = random() < 0.5;
    const id = read
      ? raw.command(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 }))
      : raw.command(Command.REGION_WRITE, encodeRegionWriteRequest({ region: 0, offset: 4, count: 4, data: u32(1) }));
    if (!read) writes++;
    outstanding.push({ id, read, count: writes });
    sent++;
  };
  const client = (async () => {
    while (!stop || outstanding.length > 0) {
      if (killAfterSend && outstanding.length === 0) {
        send();
        const at = process.hrtime.bigint() + BigInt(Math.floor(random() * 30_000));
        while (process.hrtime.bigint() < at);
        process.kill(server.childPid!, 'SIGKILL');
        killAfterSend = false;
      }
      while (!stop && !killAfterSend && outstanding.length < WINDOW) send();
      // A breather now and then, so the spare child that takes over next loads in time.
      if (sent % 8 === 0) await new Promise((r) => setTimeout(r, 1));
      const f = await raw.next(8000).catch((e: Error) => e);
      if (f instanceof Error) throw new Error(`${outstanding.length} requests unanswered for 8 s (${sent} sent): ${f.message}`);
      if (f === 'closed') throw new Error('the connection closed');
      // A reply the kernel took just before the kill, whose sending the journal had not noted yet, is sent
      // again by the successor (the send window, not covered: docs/guides/isolation.md). It is the very
      // reply before, byte for byte; counted, not failed.
      if (last && f.header.msgId === last.header.msgId && f.payload.equals(last.payload) && f.header.msgId !== outstanding[0]?.id) {
        resent++;
        continue;
      }
      last = f;
      // Replies come in request order: one lost, or served twice, breaks the order.
      const want = outstanding.shift();
      assert.equal(f.header.msgId, want?.id, `reply ${answered}: the oldest request's (msgIds wrap at 32768)`);
      assert.equal(f.header.flags & HeaderFlag.ERROR, 0, `reply ${answered}: errno ${f.header.errno}`);
      if (want!.read) assert.equal(countOf(f), want!.count, `reply ${answered} reads the ${want!.count} writes sent before it`);
      answered++;
    }
  })().catch((e: Error) => {
    failure = e;
  });
  try {
    for (let k = 1; k <= KILLS && !failure; k++) {
      await server.standby();
      await new Promise((r) => setTimeout(r, 1 + random() * 15));
      // Half the kills land anywhere (mostly while the child serves), half while it reads a request.
      if (k % 2 === 0) process.kill(server.childPid!, 'SIGKILL');
      else killAfterSend = true;
      await until(() => server.restarts === k || failure !== undefined, 8000, `recovery ${k}`);
    }
    stop = true;
    await client;
    if (failure) throw failure;
    assert.equal(server.restarts, KILLS);
    assert.equal(answered, sent, 'every request answered');
    assert.equal(countOf(await raw.call(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 }))), writes, 'the final count');
    process.stderr.write(`isolate read window: ${sent} pipelined requests (${writes} writes) across ${KILLS} kills; ${resent} replies sent again (the send window)\n`);
  } finally {
    stop = true;
    await client;
    raw.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
