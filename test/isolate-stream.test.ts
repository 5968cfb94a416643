// The reply stream survives a crash: replies the child queued because the
// client was not reading (one of them half-written into the socket) are
// sent whole and in order by the successor, and requests read but not
// answered are answered once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, HeaderFlag } from '../src/protocol/constants.js';
import { encodeRegionReadRequest, decodeRegionReadReply } from '../src/protocol/region-access.js';
import { RawConn } from './helpers/raw.js';
import { startIsolated, tempDir, until } from './helpers/isolated.js';

const READ = 256 * 1024;
const READS = 40;

/** BAR0 of 1 MiB whose every byte at `offset` reads (offset >> 12) & 0xff. */
function patternDevice(dir: string): string {
  const file = join(dir, 'pattern.mjs');
  writeFileSync(
    file,
    `export default {
  name: 'pattern',
  identity: { vendorId: 0x1234, deviceId: 0x4244, classCode: 0xff0000 },
  migration: {},
  bars: { 0: { size: 1 << 20, read(offset, length) { return Buffer.alloc(length, (offset >> 12) & 0xff); } } },
};
`,
  );
  return file;
}

test('isolate: replies queued under backpressure, one half-written, go out whole and in order from the successor', async () => {
  const dir = tempDir();
  const server = await startIsolated(patternDevice(dir), dir);
  const raw = await RawConn.negotiated(server.path);
  try {
    await server.standby();
    raw.channel.pauseReading(true);
    const ids: number[] = [];
    for (let i = 0; i < READS; i++) ids.push(raw.command(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: i * 4096, count: READ })));
    // The kernel's socket buffers fill; the child queues the rest (the journal's tx log).
    await until(() => server.unsentReplyBytes > 2 * READ, 5000, 'the child to queue replies');
    const queued = server.unsentReplyBytes;
    const pid = server.childPid!;
    process.kill(pid, 'SIGKILL');
    raw.channel.pauseReading(false);
    for (let i = 0; i < READS; i++) {
      const reply = await raw.next(10_000);
      assert.ok(reply !== 'closed', `reply ${i}: the connection lived`);
      assert.equal(reply.header.msgId, ids[i], `reply ${i} in order`);
      assert.equal(reply.header.flags & HeaderFlag.ERROR, 0, `reply ${i}: errno ${reply.header.errno}`);
      const data = Buffer.from(decodeRegionReadReply(reply.payload).data);
      assert.equal(data.length, READ);
      assert.ok(data.every((b) => b === i), `reply ${i}: every byte reads ${i} (a reply cut or mixed with another would not)`);
    }
    assert.notEqual(server.childPid, pid, 'a successor serves');
    assert.equal(server.restarts, 1);
    const after = await raw.call(Command.REGION_READ, encodeRegionReadRequest({ region: 0, offset: 7 * 4096, count: 8 }));
    assert.ok(after !== 'closed');
    assert.deepEqual([...decodeRegionReadReply(after.payload).data], [7, 7, 7, 7, 7, 7, 7, 7], 'the stream is in step after the crash');
    assert.equal(raw.pendingFrames(), 0, 'no reply twice');
    process.stderr.write(`isolate-stream: ${(queued / 1024).toFixed(0)} KiB of replies were queued at the kill\n`);
  } finally {
    raw.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
