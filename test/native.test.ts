/**
 * The native addon and the fd ownership of the transport built on it:
 * SCM_RIGHTS round trips on real sockets, fds nobody takes are closed,
 * detached mappings read length 0, eventfd and memfd behave as the kernel's.
 */
import assert from 'node:assert/strict';
import { fstatSync, readdirSync, readFileSync, readlinkSync, readSync, statSync, writeSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { native, PollEvent, PollMode, type PollHandle } from '../src/native/index.js';
import { Channel, closeAll } from '../src/transport/channel.js';
import { Listener } from '../src/transport/listener.js';
import type { Frame } from '../src/transport/framer.js';
import { Command, HeaderFlag } from '../src/protocol/constants.js';
import { encodeMessage } from '../src/protocol/header.js';
import { encodeVersion } from '../src/protocol/version.js';
import { encodeDeviceInfoRequest } from '../src/protocol/device-info.js';
import { serve } from '../src/index.js';
import { benchDevice } from '../src/samples/bench.js';
import { RawConn, selfFdCount } from './helpers/raw.js';

const EAGAIN = 11;
const ENOENT = 2;
const EBADF = 9;
const EINVAL = 22;
const O_CLOEXEC = 0o2000000;

const dir = mkdtempSync(join(tmpdir(), 'muser-native-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Receives stream chunks on `fd` until `want` bytes arrived; resolves with bytes and fds. */
function receive(fd: number, want: number): Promise<{ data: Buffer; fds: number[]; poll: PollHandle }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const fds: number[] = [];
    let got = 0;
    const t = setTimeout(() => reject(new Error('nothing received')), 5000);
    const poll = native.pollStart(fd, PollMode.Stream, (kind, a, b) => {
      if (kind === PollEvent.Data) {
        chunks.push(a as Buffer);
        got += (a as Buffer).length;
        if (b) fds.push(...(b as number[]));
        if (got >= want) {
          clearTimeout(t);
          native.pollStop(poll);
          resolve({ data: Buffer.concat(chunks), fds, poll });
        }
      } else if (kind !== PollEvent.Writable) {
        clearTimeout(t);
        native.pollStop(poll);
        reject(new Error(`unexpected poll event ${kind}`));
      }
    });
  });
}

function tick(ms = 20): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until this process's fd count drops to `target` (fds close asynchronously after EOF). */
/** How many of this process's fds point at `target` (as /proc/self/fd shows it). */
function openFdsTo(target: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === target) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

async function fdCountReaches(target: number, timeoutMs = 3000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let n = selfFdCount();
  while (n !== target && Date.now() < deadline) {
    await tick(10);
    n = selfFdCount();
  }
  return n;
}

describe('sockets with SCM_RIGHTS', () => {
  test('a memfd sent over a socketpair arrives as a new fd to the same file', async () => {
    const [a, b] = native.socketpair();
    const mfd = native.memfd('scm-test', 0);
    writeSync(mfd, Buffer.from('written on the sending side'), 0, undefined, 0);
    const got = receive(b, 5);
    assert.equal(native.sendmsg(a, Buffer.from('hello'), [mfd]), 5);
    const { data, fds } = await got;
    assert.equal(data.toString(), 'hello');
    assert.equal(fds.length, 1);
    const rfd = fds[0];
    assert.notEqual(rfd, mfd);
    assert.equal(fstatSync(rfd).ino, fstatSync(mfd).ino, 'same inode');
    assert.match(readlinkSync(`/proc/self/fd/${rfd}`), /memfd:scm-test/);
    const buf = Buffer.alloc(27);
    readSync(rfd, buf, 0, 27, 0);
    assert.equal(buf.toString(), 'written on the sending side');
    // Received with MSG_CMSG_CLOEXEC.
    const flags = parseInt(/flags:\s*(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${rfd}`, 'utf8'))![1], 8);
    assert.ok(flags & O_CLOEXEC, 'received fd is close-on-exec');
    // And writes through the received fd are seen through the original.
    writeSync(rfd, Buffer.from('BACK'), 0, 4, 0);
    readSync(mfd, buf, 0, 4, 0);
    assert.equal(buf.subarray(0, 4).toString(), 'BACK');
    for (const fd of [rfd, mfd, a, b]) assert.equal(native.close(fd), 0);
  });

  test('several fds in one message keep their order; eventfds stay linked', async () => {
    const [a, b] = native.socketpair();
    const efds = [native.eventfd(0), native.eventfd(0), native.eventfd(0)];
    const got = receive(b, 3);
    assert.equal(native.sendmsg(a, [Buffer.from('x'), Buffer.from('yz')], efds), 3);
    const { data, fds } = await got;
    assert.equal(data.toString(), 'xyz');
    assert.equal(fds.length, 3);
    fds.forEach((fd, i) => assert.equal(native.eventfdWrite(fd, i + 1), 0));
    efds.forEach((fd, i) => assert.equal(native.eventfdRead(fd), i + 1));
    for (const fd of [...fds, ...efds, a, b]) native.close(fd);
  });

  test('listen makes an owner-only socket; connect and accept pair up', async () => {
    const path = join(dir, 'l.sock');
    const lfd = native.listen(path, 4, 0o600);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(native.accept(lfd), -EAGAIN, 'nobody waiting');
    const cfd = native.connect(path);
    const sfd = native.accept(lfd);
    assert.ok(sfd >= 0);
    const got = receive(sfd, 4);
    assert.equal(native.sendmsg(cfd, Buffer.from('ping')), 4);
    assert.equal((await got).data.toString(), 'ping');
    for (const fd of [cfd, sfd, lfd]) native.close(fd);
    assert.equal(native.connect(join(dir, 'nobody.sock')), -ENOENT, 'connect answers -errno, never throws for a missing socket');
  });

  test('connect never blocks: a listener with a backlog of 0 and one unaccepted connection gives -EAGAIN at once', () => {
    const path = join(dir, 'backlog0.sock');
    const lfd = native.listen(path, 0, 0o600);
    const queued = native.connect(path);
    assert.ok(queued >= 0, 'the first connection waits in the backlog');
    const started = Date.now();
    assert.equal(native.connect(path), -EAGAIN);
    assert.ok(Date.now() - started < 1000);
    const accepted = native.accept(lfd);
    assert.ok(accepted >= 0);
    const next = native.connect(path);
    assert.ok(next >= 0, 'room again once the server accepted');
    for (const fd of [queued, accepted, next, lfd]) native.close(fd);
  });

  test('Listener refuses to replace a file that is not a socket', () => {
    const path = join(dir, 'plain-file');
    writeFileSync(path, 'x');
    assert.throws(() => new Listener(path, () => {}), /not a socket/);
  });

  test('sendmsg on a closed peer returns -EPIPE instead of raising SIGPIPE', () => {
    const [a, b] = native.socketpair();
    native.close(b);
    assert.equal(native.sendmsg(a, Buffer.from('x')), -32);
    native.close(a);
  });
});

describe('fds nobody takes are closed', () => {
  test('fds of an incomplete message are closed when the peer hangs up', async () => {
    // Counted by what they point at: other fds of the process may come and go meanwhile.
    const name = `orphan-${process.pid}`;
    const held = (): number => openFdsTo(`/memfd:${name} (deleted)`);
    const [a, b] = native.socketpair();
    let closed = false;
    const frames: Frame[] = [];
    const ch = new Channel(b, { onFrame: (f) => frames.push(f), onClose: () => (closed = true) });
    try {
      const m1 = native.memfd(name, 4096);
      const m2 = native.memfd(name, 4096);
      // A header announcing 64 bytes, then only 20 of them, with two fds.
      const msg = encodeMessage({ msgId: 1, command: Command.DEVICE_GET_INFO }, Buffer.alloc(48));
      assert.equal(native.sendmsg(a, msg.subarray(0, 20), [m1, m2]), 20);
      native.close(m1);
      native.close(m2);
      await tick();
      assert.equal(frames.length, 0);
      assert.equal(held(), 2, 'the channel holds the two fds of the incomplete message');
      native.close(a);
      const deadline = Date.now() + 3000;
      while (held() !== 0 && Date.now() < deadline) await tick(10);
      assert.equal(held(), 0, 'EOF closes the channel and the fds it held');
      assert.ok(closed);
    } finally {
      ch.close();
    }
  });

  test('fds with a header that cannot be trusted are closed with the connection', async () => {
    const before = selfFdCount();
    const [a, b] = native.socketpair();
    let error: Error | undefined;
    const ch = new Channel(b, { onFrame: () => assert.fail('no frame expected'), onClose: (e) => (error = e) }, 4096);
    try {
      const m1 = native.memfd('orphan2', 4096);
      const bad = Buffer.alloc(16);
      bad.writeUInt32LE(8, 4); // size below the header
      native.sendmsg(a, bad, [m1]);
      native.close(m1);
      assert.equal(await fdCountReaches(before + 1), before + 1, 'only our end of the pair is left');
      assert.match(String(error), /smaller than the header/);
      // The same for a size over the maximum.
      const [c, d] = native.socketpair();
      let error2: Error | undefined;
      new Channel(d, { onFrame: () => assert.fail('no frame expected'), onClose: (e) => (error2 = e) }, 4096);
      const m2 = native.memfd('orphan3', 4096);
      const big = Buffer.alloc(16);
      big.writeUInt32LE(4097, 4);
      native.sendmsg(c, big, [m2]);
      native.close(m2);
      assert.equal(await fdCountReaches(before + 2), before + 2, 'only our ends of the pairs are left');
      assert.match(String(error2), /exceeds the maximum/);
      native.close(c);
    } finally {
      ch.close();
      native.close(a);
    }
  });

  test('the server closes fds that come with commands that take none, unsolicited replies and rejected messages', async () => {
    const path = join(dir, 'srv.sock');
    const server = serve(benchDevice(), path, { log: 'silent' });
    try {
      const conn = await RawConn.negotiated(path);
      const base = selfFdCount();
      const mk = (): number[] => [native.memfd('extra', 4096), native.eventfd(0), native.memfd('extra2', 0)];
      // A command that takes no fds: answered, fds closed by the server.
      let fds = mk();
      const r = await conn.call(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 }), { fds });
      assert.ok(r !== 'closed' && !(r.header.flags & HeaderFlag.ERROR));
      closeAll(fds);
      // A reply nobody asked for.
      fds = mk();
      conn.send(encodeMessage({ msgId: 999, command: Command.DMA_READ, flags: HeaderFlag.REPLY }, Buffer.alloc(8)), fds);
      closeAll(fds);
      // An error reply (bad payload) with fds.
      fds = mk();
      const e = await conn.errnoOf(Command.DEVICE_GET_INFO, Buffer.alloc(3), { fds });
      assert.equal(e, EINVAL);
      closeAll(fds);
      // Posted (no-reply) command with fds.
      fds = mk();
      conn.command(Command.DEVICE_RESET, Buffer.alloc(0), { fds, flags: HeaderFlag.NO_REPLY });
      closeAll(fds);
      const ok = await conn.errnoOf(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 }));
      assert.equal(ok, 'ok');
      assert.equal(server.session?.dropped, 1, 'the unsolicited reply was dropped');
      assert.equal(selfFdCount(), base, 'every fd that reached the server was closed');
      conn.close();
    } finally {
      server.close();
    }
  });

  test('a Channel closed by its own handler closes fds of a message still in flight', async () => {
    const before = selfFdCount();
    const [a, b] = native.socketpair();
    let frames = 0;
    const ch: Channel = new Channel(b, { onFrame: (f) => (frames++, closeAll(f.fds), ch.close()), onClose: () => {} });
    try {
      // One chunk: a whole message, then the start of a second one that owns the fds.
      const m1 = encodeMessage({ msgId: 1, command: Command.DEVICE_GET_INFO }, Buffer.alloc(16));
      const m2 = encodeMessage({ msgId: 2, command: Command.DEVICE_GET_INFO }, Buffer.alloc(64));
      const fds = [native.memfd('inflight', 4096), native.eventfd(0)];
      native.sendmsg(a, Buffer.concat([m1, m2.subarray(0, 30)]), fds);
      closeAll(fds);
      assert.equal(await fdCountReaches(before + 1), before + 1, 'only our end of the pair is left');
      assert.equal(frames, 1);
    } finally {
      ch.close();
      native.close(a);
    }
  });
});

describe('mmap', () => {
  test('a shared mapping sees the file; after munmap every view has length 0', () => {
    const fd = native.memfd('map', 8192);
    const m = native.mmap(fd, 0, 8192, true);
    assert.ok(Array.isArray(m));
    const [ab, handle] = m;
    const view = new Uint8Array(ab);
    const sub = view.subarray(4096, 4100);
    const dv = new DataView(ab);
    view[4096] = 0xab;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, 4096);
    assert.equal(b[0], 0xab, 'write through the mapping reached the file');
    writeSync(fd, Buffer.from([0xcd]), 0, 1, 5);
    assert.equal(view[5], 0xcd, 'write to the file is visible in the mapping');
    assert.equal(native.munmap(handle, ab), 0);
    assert.equal(ab.byteLength, 0);
    assert.equal(view.length, 0);
    assert.equal(sub.length, 0);
    assert.equal(view[4096], undefined);
    assert.equal(sub[0], undefined);
    view[10] = 1; // a write to a detached view is dropped, not a crash
    assert.equal(view[10], undefined);
    assert.throws(() => dv.getUint8(0), TypeError);
    assert.equal(native.munmap(handle, ab), 0, 'munmap is idempotent');
    // The file still holds the data.
    readSync(fd, b, 0, 1, 4096);
    assert.equal(b[0], 0xab);
    native.close(fd);
  });

  test('a private mapping does not write through; bad arguments give -errno', () => {
    const fd = native.memfd('priv', 4096);
    const m = native.mmap(fd, 0, 4096, false);
    assert.ok(Array.isArray(m));
    new Uint8Array(m[0])[0] = 7;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, 0);
    assert.equal(b[0], 0);
    native.munmap(m[1], m[0]);
    assert.equal(native.mmap(fd, 0, 0, true), -EINVAL);
    assert.equal(native.mmap(fd, 100, 4096, true), -EINVAL, 'unaligned offset');
    native.close(fd);
    assert.equal(native.mmap(fd, 0, 4096, true), -EBADF);
  });

  test('mappings released by munmap leave /proc/self/maps', () => {
    // Only this memfd's lines count: threads and the heap map and unmap memory of their own meanwhile.
    const name = `muser-maps-${process.pid}`;
    const lines = (): number => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`memfd:${name}`)).length;
    const fd = native.memfd(name, 4096);
    assert.equal(lines(), 0);
    const maps: [ArrayBuffer, unknown][] = [];
    for (let i = 0; i < 200; i++) maps.push(native.mmap(fd, 0, 4096, true) as [ArrayBuffer, never]);
    assert.ok(lines() >= 200, 'each mapping is a line');
    for (const [ab, h] of maps) native.munmap(h as never, ab);
    assert.equal(lines(), 0, 'every mapping of the memfd is gone');
    native.close(fd);
  });
});

describe('eventfd and memfd', () => {
  test('eventfd counts writes; reading resets; empty reads -EAGAIN', () => {
    const fd = native.eventfd(0);
    assert.equal(native.eventfdRead(fd), -EAGAIN);
    assert.equal(native.eventfdWrite(fd, 3), 0);
    assert.equal(native.eventfdWrite(fd, 4), 0);
    assert.equal(native.eventfdRead(fd), 7);
    assert.equal(native.eventfdRead(fd), -EAGAIN);
    native.close(fd);
    const fd5 = native.eventfd(5);
    assert.equal(native.eventfdRead(fd5), 5);
    native.close(fd5);
    assert.equal(native.eventfdWrite(fd5, 1), -EBADF);
  });

  test('an eventfd poller reports the accumulated count', async () => {
    const fd = native.eventfd(0);
    const counts: number[] = [];
    const poll = native.pollStart(fd, PollMode.EventFd, (kind, n) => {
      if (kind === PollEvent.Count) counts.push(n as number);
    });
    native.eventfdWrite(fd, 2);
    native.eventfdWrite(fd, 3);
    await tick();
    native.eventfdWrite(fd, 1);
    await tick();
    native.pollStop(poll);
    native.close(fd);
    assert.deepEqual(counts, [5, 1]);
  });

  test('memfd sizes, ftruncate, dup and close', () => {
    const fd0 = native.memfd('zero', 0);
    assert.equal(native.fdSize(fd0), 0);
    const fd = native.memfd('sized', 12345);
    assert.equal(native.fdSize(fd), 12345);
    assert.match(readlinkSync(`/proc/self/fd/${fd}`), /memfd:sized/);
    assert.equal(native.ftruncate(fd, 8192), 0);
    assert.equal(native.fdSize(fd), 8192);
    assert.equal(native.ftruncate(fd, -1), -EINVAL);
    const d = native.dup(fd);
    assert.notEqual(d, fd);
    assert.equal(fstatSync(d).ino, fstatSync(fd).ino);
    for (const f of [fd0, fd, d]) assert.equal(native.close(f), 0);
    assert.equal(native.close(fd), -EBADF);
    assert.equal(native.fdSize(fd), -EBADF);
    assert.equal(native.dup(fd), -EBADF);
  });
});

describe('VERSION over a socketpair Channel', () => {
  test('two Channels exchange messages with fds in both directions', async () => {
    const before = selfFdCount();
    const [a, b] = native.socketpair();
    const got: Frame[] = [];
    const ca = new Channel(a, { onFrame: (f) => got.push(f), onClose: () => {} });
    const cb: Channel = new Channel(b, {
      onFrame: (f) => {
        // Echo the message back with the same fds, then drop ours.
        cb.send(Buffer.from(f.bytes), f.fds);
        closeAll(f.fds);
      },
      onClose: () => {},
    });
    const mfd = native.memfd('echo', 4096);
    const msg = encodeMessage({ msgId: 7, command: Command.VERSION }, encodeVersion({ major: 0, minor: 1, capabilities: {} }));
    ca.send(msg, [mfd]);
    for (let i = 0; i < 100 && got.length === 0; i++) await tick(5);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].bytes, msg);
    assert.equal(got[0].fds.length, 1);
    assert.equal(fstatSync(got[0].fds[0]).ino, fstatSync(mfd).ino);
    closeAll(got[0].fds);
    native.close(mfd);
    ca.close();
    assert.equal(await fdCountReaches(before), before);
    assert.ok(cb.isClosed);
  });
});
