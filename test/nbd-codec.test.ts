/**
 * The NBD client against a scripted server (test/helpers/fake-nbd-server.ts):
 * reply shapes that real servers do not produce on demand. Reads assembled
 * from data and hole chunks in any order, error chunks with the server's
 * message, replies out of order, a server without NBD_OPT_GO, and replies
 * that break the protocol (the request fails, the disk goes on).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockError, openNbdBackend } from '../src/index.js';
import { dataChunk, errorChunk, fakeNbdServer, holeChunk, simpleReply, type FakeRequest } from './helpers/fake-nbd-server.js';
import type { Socket } from 'node:net';

const SIZE = 1 << 20;
/** What reads of offset 0 return in these tests: byte i is i & 0xff. */
const content = (offset: number, length: number) => Buffer.from(Array.from({ length }, (_, i) => (offset + i) & 0xff));

test('a read assembled from data and hole chunks, out of order, lands in the right bytes of a scatter list', async () => {
  const { server, uri } = await fakeNbdServer({
    size: SIZE,
    reply(s: Socket, r: FakeRequest) {
      // Second half first, as a hole then data; then the first half.
      const half = r.length / 2;
      s.write(holeChunk(r.cookie, r.offset + half, 100, false));
      s.write(dataChunk(r.cookie, r.offset + half + 100, content(r.offset + half + 100, half - 100), false));
      s.write(dataChunk(r.cookie, r.offset, content(r.offset, half), true));
    },
  });
  const disk = await openNbdBackend(uri);
  const a = Buffer.alloc(1000, 0xee);
  const b = Buffer.alloc(3096, 0xee);
  await disk.read(4096, [a, b]);
  const want = content(4096, 4096);
  want.fill(0, 2048, 2148);
  assert.deepEqual(Buffer.concat([a, b]), want);
  await disk.close();
  server.close();
});

test('replies to many requests may come in any order', async () => {
  const held: FakeRequest[] = [];
  const { server, uri } = await fakeNbdServer({
    size: SIZE,
    structured: false,
    reply(s, r) {
      held.push(r);
      if (held.length < 8) return;
      for (const h of held.reverse()) s.write(Buffer.concat([simpleReply(h.cookie), content(h.offset, h.length)]));
    },
  });
  const disk = await openNbdBackend(uri);
  const bufs = Array.from({ length: 8 }, () => Buffer.alloc(512));
  await Promise.all(bufs.map((b, i) => disk.read(i * 512, [b])));
  bufs.forEach((b, i) => assert.deepEqual(b, content(i * 512, 512)));
  await disk.close();
  server.close();
});

test("an error chunk fails the request with the server's message; other requests are unaffected", async () => {
  const { server, uri } = await fakeNbdServer({
    size: SIZE,
    reply(s, r) {
      if (r.type === 0 && r.offset === 0) s.write(errorChunk(r.cookie, 28, 'quota exceeded on pool A', true));
      else if (r.type === 0) s.write(dataChunk(r.cookie, r.offset, content(r.offset, r.length), true));
      else s.write(simpleReply(r.cookie, r.type === 1 ? 1 : 0));
    },
  });
  const disk = await openNbdBackend(uri);
  await assert.rejects(async () => disk.read(0, [Buffer.alloc(512)]), (e: unknown) => e instanceof BlockError && e.code === 'ENOSPC' && /quota exceeded on pool A/.test(e.message));
  await assert.rejects(async () => disk.write(0, [Buffer.alloc(512)]), (e: unknown) => e instanceof BlockError && e.code === 'EROFS' && /EPERM/.test(e.message));
  const b = Buffer.alloc(512);
  await disk.read(512, [b]);
  assert.deepEqual(b, content(512, 512));
  await disk.flush();
  await disk.close();
  server.close();
});

test('a server without NBD_OPT_GO is reached with NBD_OPT_EXPORT_NAME', async () => {
  const { server, uri } = await fakeNbdServer({
    size: SIZE,
    noGo: true,
    flags: 1 | 2, // read-only, nothing else
    reply(s, r) {
      s.write(dataChunk(r.cookie, r.offset, content(r.offset, r.length), true));
    },
  });
  const disk = await openNbdBackend(uri);
  assert.equal(disk.size, SIZE);
  assert.equal(disk.readOnly, true);
  assert.deepEqual(disk.capabilities, { flush: false, discard: false, writeZeroes: false });
  await assert.rejects(async () => disk.discard(0, 512), (e: unknown) => e instanceof BlockError && e.code === 'EROFS');
  const b = Buffer.alloc(512);
  await disk.read(1024, [b]);
  assert.deepEqual(b, content(1024, 512));
  await disk.flush(); // nothing to flush: resolves without asking the server
  await disk.close();
  server.close();
});

test('a reply that breaks the protocol fails its request with EIO, and the disk reconnects for the next one', async () => {
  let connections = 0;
  let broken = false;
  const { server, uri } = await fakeNbdServer({
    size: SIZE,
    reply(s, r) {
      if (!broken) {
        broken = true;
        // Data outside the requested range.
        s.write(dataChunk(r.cookie, r.offset + r.length, Buffer.alloc(16), true));
        return;
      }
      s.write(dataChunk(r.cookie, r.offset, content(r.offset, r.length), true));
    },
  });
  server.on('connection', () => connections++);
  const disk = await openNbdBackend(uri, { reconnect: { delayMs: 10 } });
  await assert.rejects(async () => disk.read(0, [Buffer.alloc(512)]), (e: unknown) => e instanceof BlockError && e.code === 'EIO' && /outside the read/.test(e.message));
  const b = Buffer.alloc(512);
  await disk.read(0, [b]);
  assert.deepEqual(b, content(0, 512));
  assert.equal(connections, 2);
  assert.equal(disk.reconnects, 1);
  await disk.close();
  server.close();
});

test('a reply that covers only part of a read fails it with EIO', async () => {
  const { server, uri } = await fakeNbdServer({
    size: SIZE,
    reply(s, r) {
      s.write(dataChunk(r.cookie, r.offset, content(r.offset, r.length / 2), true));
    },
  });
  const disk = await openNbdBackend(uri);
  await assert.rejects(async () => disk.read(0, [Buffer.alloc(1024)]), (e: unknown) => e instanceof BlockError && e.code === 'EIO' && /covered 512 of 1024/.test(e.message));
  await disk.close();
  server.close();
});
