// REGION_READ / REGION_WRITE served in place (src/server/region-in-place.ts):
// replies built in one reused buffer stay intact while queued, and keep
// their order among replies that wait for async callbacks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type DeviceSpec, type Server } from '../src/index.js';
import { Command, HEADER_SIZE, HeaderFlag } from '../src/protocol/constants.js';
import { encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/protocol/region-access.js';
import { RawConn, type RawFrame } from './helpers/raw.js';
import { until } from './helpers/wait.js';
import { le32 } from './helpers/bytes.js';

/** The u32 at word `k` of BAR0 in these tests. */
const word = (k: number): number => Math.imul(k + 1, 0x9e3779b1) >>> 0;

async function withServer(bars: DeviceSpec['bars'], body: (server: Server, conn: RawConn) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'muser-inplace-'));
  const server = serve({ identity: { vendorId: 0x1234, deviceId: 0x0001 }, bars }, join(dir, 's.sock'), { log: 'silent' });
  const conn = await RawConn.negotiated(server.path);
  try {
    await body(server, conn);
  } finally {
    conn.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function read(conn: RawConn, region: number, offset: number, count: number): number {
  return conn.command(Command.REGION_READ, encodeRegionReadRequest({ offset, region, count }));
}

function write(conn: RawConn, region: number, offset: number, data: Buffer): number {
  return conn.command(Command.REGION_WRITE, encodeRegionWriteRequest({ offset, region, count: data.length, data }));
}

async function frame(conn: RawConn): Promise<RawFrame> {
  const f = await conn.next();
  assert.notEqual(f, 'closed', 'the server closed the connection');
  return f as RawFrame;
}

test('replies built in the reused buffer stay intact while the client leaves them unread', async () => {
  await withServer({ 0: { size: 4096, memory: true } }, async (server, conn) => {
    const bar0 = server.device.regions[0]!.memory!.bytes;
    for (let k = 0; k < 1024; k++) Buffer.from(bar0.buffer, bar0.byteOffset).writeUInt32LE(word(k), k * 4);
    // The client stops reading: the kernel's socket buffer fills, then the server's send queue.
    conn.channel.pauseReading(true);
    const n = 4000;
    const ids: number[] = [];
    for (let i = 0; i < n; i++) ids.push(read(conn, 0, (i % 1024) * 4, 4));
    const channel = server.session!.channel;
    await until(() => channel.pendingBytes > 1000 * 36, 'replies queued in the server');
    conn.channel.pauseReading(false);
    for (let i = 0; i < n; i++) {
      const f = await frame(conn);
      assert.equal(f.header.msgId, ids[i], `reply ${i} in order`);
      assert.equal(f.header.flags & HeaderFlag.ERROR, 0, `reply ${i} succeeded`);
      assert.equal(f.header.size, HEADER_SIZE + 16 + 4);
      assert.equal(f.payload.readUInt32LE(0), (i % 1024) * 4, `reply ${i}: its own offset`);
      assert.equal(f.payload.readUInt32LE(16), word(i % 1024), `reply ${i}: the word it asked for, not a later reply's`);
    }
  });
});

test('in-place replies keep their order among replies that wait for async callbacks', async () => {
  let slowReads = 0;
  await withServer(
    {
      0: { size: 4096, memory: true },
      1: {
        size: 4096,
        read: async (offset: number) => {
          await new Promise((r) => setTimeout(r, 1));
          slowReads++;
          return offset * 3 + 1;
        },
        write: async () => {
          await new Promise((r) => setTimeout(r, 1));
        },
      },
    },
    async (_server, conn) => {
      // Pipelined: a sync access lands while an async one still waits, and the
      // writes to BAR0 must happen in order with the reads around them.
      const expect: Array<{ id: number; value?: number; write?: boolean }> = [];
      for (let i = 0; i < 60; i++) {
        const at = (i % 16) * 4;
        switch (i % 4) {
          case 0:
            expect.push({ id: read(conn, 1, at, 4), value: at * 3 + 1 });
            break;
          case 1:
            expect.push({ id: write(conn, 0, at, le32(1000 + i)), write: true });
            break;
          case 2:
            expect.push({ id: read(conn, 0, (((i - 1) % 16) * 4), 4), value: 1000 + i - 1 });
            break;
          default:
            expect.push({ id: write(conn, 1, at, le32(i)), write: true });
        }
      }
      for (const [i, e] of expect.entries()) {
        const f = await frame(conn);
        assert.equal(f.header.msgId, e.id, `reply ${i} in request order`);
        assert.equal(f.header.flags & HeaderFlag.ERROR, 0, `reply ${i} succeeded`);
        if (e.write) assert.equal(f.payload.length, 16, `reply ${i}: a write's reply`);
        else assert.equal(f.payload.readUInt32LE(16), e.value, `reply ${i}: its own data`);
      }
      assert.equal(slowReads, 15);
    },
  );
});

test('a refused or failing access through the in-place path answers with its errno and serving goes on', async () => {
  await withServer(
    {
      0: { size: 4096, memory: true },
      1: {
        size: 4096,
        read: (offset: number) => {
          if (offset === 8) throw new Error('callback bug');
          return 7;
        },
      },
    },
    async (_server, conn) => {
      const ids = [read(conn, 1, 8, 4), read(conn, 0, 4094, 4), read(conn, 1, 0, 4), read(conn, 0, 0, 8192)];
      const replies = [];
      for (let i = 0; i < ids.length; i++) replies.push(await frame(conn));
      assert.deepEqual(
        replies.map((f) => [f.header.msgId, f.header.flags & HeaderFlag.ERROR ? f.header.errno : 'ok']),
        [
          [ids[0], 5], // EIO: the callback threw
          [ids[1], 22], // EINVAL: past the region's end
          [ids[2], 'ok'],
          [ids[3], 22],
        ],
      );
      assert.equal(replies[2].payload.readUInt32LE(16), 7);
    },
  );
});
