// The tx-log window under --isolate: a client that stops reading makes the
// child queue its replies in the journal's tx log (backpressure). A SIGKILL
// right after a reply is queued must not make the successor both send the
// queued reply and answer its request again, and one that kills a successor
// before it re-sent its predecessor's queued replies must not lose them: the
// client gets each reply exactly once, in order, and a write takes effect once.
// A reload under backpressure must not make the old child and its successor
// both send the queued replies: the old one, frozen, sends nothing more.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, HEADER_SIZE, HeaderFlag } from '../src/protocol/constants.js';
import { decodeRegionReadReply, encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/protocol/region-access.js';
import { encodeMessage } from '../src/protocol/header.js';
import type { IsolatedServer } from '../src/isolate/index.js';
import { RawConn } from './helpers/raw.js';
import { alive, startIsolated, tempDir, u32, until, writeDeviceFile } from './helpers/isolated.js';

/** Reads of 4 KiB: this many replies overfill a UNIX socket's buffer (about 200 KiB), so the later ones are queued. */
const FILL_READS = 100;

interface Rig {
  server: IsolatedServer;
  raw: RawConn;
  /** Arms a kill point in whichever child reaches it first. */
  arm(point: string): void;
  /** msgIds of the requests sent, in order. */
  expected: number[];
}

/** An isolated device whose client stops reading (its replies pile up in the child's tx log), with kill points armed. */
async function withRig(body: (rig: Rig, dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const armFile = join(dir, 'crash-at');
  // Children read it at start (spares too): the kill points exist only in this test's children.
  process.env.MUSER_READ_CRASH_AT = armFile;
  const server = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir);
  const raw = await RawConn.negotiated(server.path);
  try {
    raw.channel.pauseReading(true);
    await body({ server, raw, arm: (point) => writeFileSync(armFile, point), expected: [] }, dir);
    assert.equal(existsSync(armFile), false, 'every armed kill fired');
  } finally {
    delete process.env.MUSER_READ_CRASH_AT;
    raw.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Sends the fill reads in one send (the child reads them in one go), so its rx log holds some until it has answered them all. */
function sendFill(rig: Rig): void {
  const fill = Array.from({ length: FILL_READS }, (_, i) => 1000 + i);
  rig.raw.send(Buffer.concat(fill.map((msgId) => encodeMessage({ msgId, command: Command.REGION_READ }, encodeRegionReadRequest({ region: 0, offset: 0, count: 4096 })))));
  rig.expected.push(...fill);
}

const countOf = (payload: Buffer): number => Buffer.from(decodeRegionReadReply(payload).data).readUInt32LE(0);

/** Reads again: every expected reply once, in request order (`count`: what the last one, a read of the count, holds); then nothing more. */
async function assertRepliesOnce(rig: Rig, count: number): Promise<void> {
  rig.raw.channel.pauseReading(false);
  for (const [i, id] of rig.expected.entries()) {
    const f = await rig.raw.next(8000);
    assert.ok(f !== 'closed', 'the connection lived');
    assert.equal(f.header.msgId, id, `reply ${i} answers request ${i} (a reply sent twice shifts the rest)`);
    assert.equal(f.header.flags & HeaderFlag.ERROR, 0, `reply ${i}: errno ${f.header.errno}`);
    if (i === rig.expected.length - 1 && f.header.command === Command.REGION_READ && f.payload.length <= 64) assert.equal(countOf(f.payload), count, 'the write counted once');
  }
  // Nothing more came: the next reply is the next request's.
  const last = rig.raw.command(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 }));
  const f = await rig.raw.next(8000);
  assert.ok(f !== 'closed', 'the connection lived');
  assert.equal(f.header.msgId, last, 'no reply sent twice');
  assert.equal(countOf(f.payload), count, 'the count after');
  assert.equal(rig.raw.pendingFrames(), 0, 'no reply sent twice');
}

/** Fills the socket with reads while the child dies on the first reply it queues; resolves once a successor answered them all into the tx log. */
async function killOnFirstQueuedReply(rig: Rig): Promise<void> {
  const { server } = rig;
  await server.standby();
  rig.arm('reply-queued');
  sendFill(rig);
  await until(() => server.restarts === 1, 8000, 'the kill on a queued read reply, and a successor');
  await until(() => server.unansweredBytes === 0 && server.unsentReplyBytes > 0, 8000, 'every fill read answered, the replies waiting in the tx log');
}

/** Adds 1 to the count (a write), then reads it: two replies expected. */
function countOnce(rig: Rig): void {
  rig.expected.push(rig.raw.command(Command.REGION_WRITE, encodeRegionWriteRequest({ region: 0, offset: 4, count: 4, data: u32(1) })));
  rig.expected.push(rig.raw.command(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 })));
}

test('isolate: a child killed just after queuing a reply under backpressure: every reply reaches the client exactly once, in order, a write counted once', async () => {
  await withRig(async (rig) => {
    const { server } = rig;
    // Kill 1 lands on the first reply queued: a fill read's (most likely its tail, the kernel having taken its head).
    await killOnFirstQueuedReply(rig);

    // Kill 2 lands on a write's reply: the write has taken effect (and is checkpointed with its reply).
    await server.standby();
    rig.arm('reply-queued');
    const pid = server.childPid;
    countOnce(rig);
    await until(() => server.restarts === 2, 8000, 'the kill on a queued write reply, and a successor');
    assert.notEqual(server.childPid, pid, 'a successor serves');

    await assertRepliesOnce(rig, 1);
    assert.equal(server.restarts, 2);
  });
});

test("isolate: a successor killed before it re-sent its predecessor's queued replies: the next one sends them, each once, in order", async () => {
  await withRig(async (rig) => {
    const { server } = rig;
    await killOnFirstQueuedReply(rig);

    // The serving child dies; its successor dies as it starts, before sending the queued replies; the next one serves.
    await server.standby();
    rig.arm('resending');
    process.kill(server.childPid!, 'SIGKILL');
    await until(() => server.restarts === 3, 8000, 'two successors, the first killed as it re-sent the tx log');

    countOnce(rig);
    await assertRepliesOnce(rig, 1);
    assert.equal(server.restarts, 3);
  });
});

/**
 * Reads the client's socket by hand, blocking this (the parent's) event loop: msgIds of the replies
 * framed, until `count` came, one came out of order, or `timeoutMs` passed; and the bytes left over.
 */
function readRepliesBlocking(fd: number, expected: readonly number[], timeoutMs: number): { ids: number[]; leftover: number } {
  const deadline = Date.now() + timeoutMs;
  const chunk = Buffer.alloc(64 * 1024);
  let pending = Buffer.alloc(0);
  const ids: number[] = [];
  while (ids.length < expected.length && Date.now() < deadline) {
    let n = 0;
    try {
      n = readSync(fd, chunk, 0, chunk.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
    if (n === 0) continue;
    pending = Buffer.concat([pending, chunk.subarray(0, n)]);
    while (pending.length >= HEADER_SIZE && pending.length >= pending.readUInt32LE(4) && ids.length < expected.length) {
      ids.push(pending.readUInt16LE(0));
      pending = pending.subarray(pending.readUInt32LE(4));
      if (ids.at(-1) !== expected[ids.length - 1]) return { ids, leftover: pending.length };
    }
  }
  return { ids, leftover: pending.length };
}

/** Polls `cond` without yielding to the event loop; throws after `timeoutMs`. */
function untilBlocking(cond: () => boolean, timeoutMs: number, what: string): void {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

test('isolate: a reload under backpressure: the old child sends none of its queued replies once frozen, the successor sends each once, in order', async () => {
  await withRig(async (rig, dir) => {
    const { server, raw } = rig;
    sendFill(rig);
    await until(() => server.unansweredBytes === 0 && server.unsentReplyBytes > 0, 8000, 'every fill read answered, the replies waiting in the tx log');
    const oldPid = server.childPid;

    // The new version's onRecover stops the successor until told (recovering, go); once it started (its tx log
    // re-send queued) it says so (started). The parent's event loop is held meanwhile, so the old child is not
    // told to exit: both processes live with the connection while the client reads.
    const [recovering, go, started] = ['recovering', 'go', 'started'].map((f) => join(dir, f));
    writeDeviceFile(dir, {
      version: 2,
      extra: `async onRecover(d, reason) {
      if (reason !== 'reload') return;
      writeFileSync(${JSON.stringify(recovering)}, '');
      while (!existsSync(${JSON.stringify(go)})) await new Promise((r) => setTimeout(r, 1));
      setImmediate(() => writeFileSync(${JSON.stringify(started)}, ''));
    },`,
    });
    const reloading = server.reload();
    try {
      await until(() => existsSync(recovering), 8000, 'the successor recovering (the old child quiesced)');
      writeFileSync(go, '');
      untilBlocking(() => existsSync(started), 8000, 'the successor started');
      assert.ok(alive(oldPid!), 'the old child still lives');
      const { ids, leftover } = readRepliesBlocking(raw.fd, rig.expected, 8000);
      assert.deepEqual(ids, rig.expected, 'every queued reply once, in order (a reply sent by both children repeats)');
      assert.equal(leftover, 0, 'nothing after them (no reply sent by both children)');
    } finally {
      // Settled either way: a reload left running would leave its child behind.
      await reloading.catch(() => undefined);
    }
    await reloading;
    assert.notEqual(server.childPid, oldPid, 'the successor serves');
    rig.expected.length = 0;
    await assertRepliesOnce(rig, 0);
  });
});

test('isolate: a reload under backpressure that fails: the old child sends its queued replies again, each once, in order', async () => {
  await withRig(async (rig, dir) => {
    const { server } = rig;
    sendFill(rig);
    await until(() => server.unansweredBytes === 0 && server.unsentReplyBytes > 0, 8000, 'every fill read answered, the replies waiting in the tx log');
    const oldPid = server.childPid;
    writeDeviceFile(dir, { version: 2, extra: `onRecover(d, reason) { if (reason === 'reload') throw new Error('not this one'); },` });
    await assert.rejects(server.reload(), /failed to take over: not this one/);
    assert.equal(server.childPid, oldPid, 'the old child serves on');
    await assertRepliesOnce(rig, 0);
  });
});
