// The tx-log window under --isolate: a client that stops reading makes the
// child queue its replies in the journal's tx log (backpressure). A SIGKILL
// right after a reply is queued, before anything else is written, must not
// make the successor both send the queued reply and answer its request again:
// the client gets each reply exactly once, in order, and a write takes effect once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, HeaderFlag } from '../src/protocol/constants.js';
import { decodeRegionReadReply, encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/protocol/region-access.js';
import { encodeMessage } from '../src/protocol/header.js';
import { RawConn } from './helpers/raw.js';
import { startIsolated, tempDir, u32, until, writeDeviceFile } from './helpers/isolated.js';

/** Reads of 4 KiB: this many replies overfill a UNIX socket's buffer (about 200 KiB), so the later ones are queued. */
const FILL_READS = 100;

test('isolate: a child killed just after queuing a reply under backpressure: every reply reaches the client exactly once, in order, a write counted once', async () => {
  const dir = tempDir();
  const arm = join(dir, 'crash-at');
  // Children read it at start (spares too): the kill point exists only in this test's children.
  process.env.MUSER_READ_CRASH_AT = arm;
  const server = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir);
  const raw = await RawConn.negotiated(server.path);
  try {
    // The client stops reading: once the socket is full, the child's replies wait in the tx log.
    raw.channel.pauseReading(true);
    const expected: number[] = [];

    // Kill 1 lands on the first reply queued: a fill read's (most likely its tail, the kernel having taken its head).
    await server.standby();
    writeFileSync(arm, 'reply-queued');
    // In one send: the child reads them in one go, so its rx log holds some of them until it has answered them all.
    const fill = Array.from({ length: FILL_READS }, (_, i) => 1000 + i);
    raw.send(Buffer.concat(fill.map((msgId) => encodeMessage({ msgId, command: Command.REGION_READ }, encodeRegionReadRequest({ region: 0, offset: 0, count: 4096 })))));
    expected.push(...fill);
    await until(() => server.restarts === 1, 8000, 'the kill on a queued read reply, and a successor');
    assert.equal(existsSync(arm), false, 'the kill fired');
    await until(() => server.unansweredBytes === 0 && server.unsentReplyBytes > 0, 8000, 'every fill read answered, the replies waiting in the tx log');

    // Kill 2 lands on a write's reply: the write has taken effect (and is checkpointed with its reply).
    await server.standby();
    writeFileSync(arm, 'reply-queued');
    const pid = server.childPid;
    expected.push(raw.command(Command.REGION_WRITE, encodeRegionWriteRequest({ region: 0, offset: 4, count: 4, data: u32(1) })));
    const readAfter = raw.command(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 }));
    expected.push(readAfter);
    await until(() => server.restarts === 2, 8000, 'the kill on a queued write reply, and a successor');
    assert.equal(existsSync(arm), false, 'the kill fired');
    assert.notEqual(server.childPid, pid, 'a successor serves');

    // The client reads again: every reply once, in request order.
    raw.channel.pauseReading(false);
    for (const [i, id] of expected.entries()) {
      const f = await raw.next(8000);
      assert.ok(f !== 'closed', 'the connection lived');
      assert.equal(f.header.msgId, id, `reply ${i} answers request ${i} (a reply sent twice shifts the rest)`);
      assert.equal(f.header.flags & HeaderFlag.ERROR, 0, `reply ${i}: errno ${f.header.errno}`);
      if (id === readAfter) assert.equal(Buffer.from(decodeRegionReadReply(f.payload).data).readUInt32LE(0), 1, 'the write counted once');
    }
    // Nothing more came: the next reply is the next request's.
    const last = raw.command(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 4, count: 4 }));
    const f = await raw.next(8000);
    assert.ok(f !== 'closed', 'the connection lived');
    assert.equal(f.header.msgId, last, 'no reply sent twice');
    assert.equal(Buffer.from(decodeRegionReadReply(f.payload).data).readUInt32LE(0), 1, 'the count after');
    assert.equal(raw.pendingFrames(), 0, 'no reply sent twice');
    assert.equal(server.restarts, 2);
  } finally {
    delete process.env.MUSER_READ_CRASH_AT;
    raw.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
