/**
 * Misuse of the native addon and of serve()'s options throws, naming what
 * is wrong, before anything reaches the kernel: a string mode once reached
 * chmod as -1 (a socket of mode 07777). Handles are type-tagged, two pollers
 * never share an fd, and a message whose fds the kernel truncated
 * (MSG_CTRUNC) breaks its connection with a reason instead of arriving
 * short of fds.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { native, PollEvent, PollMode, type MapHandle, type PollHandle } from '../src/native/index.js';
import { serve } from '../src/index.js';
import { parseRunArgs } from '../src/cli/run/index.js';
import { UsageError } from '../src/cli/usage.js';
import { benchDevice } from '../src/samples/bench.js';
import { MAIN, startServer } from './helpers/timer-process.js';
import { until } from './helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-args-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The addon with its types erased, as plain JavaScript would call it. */
const js = native as unknown as Record<string, (...args: unknown[]) => unknown>;

/** Asserts `f` throws `type` with a message matching `message`. */
function throwsNamed(f: () => unknown, type: typeof TypeError | typeof RangeError, message: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof type, `${String(e)} is a ${type.name}`);
    assert.match((e as Error).message, message);
    return true;
  });
}

describe('native arguments', () => {
  const [a, b] = native.socketpair();
  const mfd = native.memfd('args', 4096);
  const map = native.mmap(mfd, 0, 4096, true) as [ArrayBuffer, MapHandle];
  const poll = native.pollStart(a, PollMode.Stream, () => {});
  after(() => {
    native.pollStop(poll);
    native.munmap(map[1], map[0]);
    for (const fd of [a, b, mfd]) native.close(fd);
  });

  test('a wrong type throws a TypeError naming the function and argument', () => {
    const p = join(dir, 'never.sock');
    const cases: [string, unknown[], RegExp][] = [
      ['listen', [p, 16, '600'], /^listen: mode must be an integer in 0\.\.0o777, got string$/],
      ['listen', [p, '16', 0o600], /^listen: backlog must be .*got string$/],
      ['listen', [5, 16, 0o600], /^listen: path must be a string, got number$/],
      ['connect', [undefined], /^connect: path must be a string, got undefined$/],
      ['accept', ['3'], /^accept: fd must be a 32-bit integer, got string$/],
      ['close', [null], /^close: fd must be .*got null$/],
      ['dup', [{}], /^dup: fd must be/],
      ['fdSize', [], /^fdSize: fd must be .*got undefined$/],
      ['sendmsg', [b, 'x'], /^sendmsg: data must be a Buffer, got string$/],
      ['sendmsg', [b, [Buffer.alloc(1), 7]], /^sendmsg: data\[1\] must be a Buffer, got number$/],
      ['sendmsg', [b, Buffer.alloc(1), [mfd, '4']], /^sendmsg: fds\[1\] must be a 32-bit integer, got string$/],
      ['sendmsg', [b, Buffer.alloc(1), null], /^sendmsg: fds must be an array of fds or undefined, got null$/],
      ['pollStart', [b, PollMode.Stream, 'cb'], /^pollStart: callback must be a function, got string$/],
      ['pollStart', [b, '0', () => {}], /^pollStart: mode must be/],
      ['pollStart', [b, PollMode.Stream, () => {}, 'buf'], /^pollStart: recvBuffer must be a Buffer, got string$/],
      ['pollWritable', [poll, 1], /^pollWritable: on must be a boolean, got number$/],
      ['pollPause', [poll, 'yes'], /^pollPause: paused must be a boolean, got string$/],
      ['pollSpin', [poll, '1000'], /^pollSpin: idleNs must be/],
      ['pollSetBuffer', [poll, 'buf'], /^pollSetBuffer: buffer must be a Buffer, got string$/],
      ['mmap', [mfd, '0', 4096, true], /^mmap: offset must be a safe integer, got string$/],
      ['mmap', [mfd, 0, 4096, 1], /^mmap: shared must be a boolean, got number$/],
      ['mmap', [mfd, 0, 4096, true, '1'], /^mmap: group must be an integer in 0\.\.2\^31-1, got string$/],
      ['mmapRevoke', [poll], /^mmapRevoke: .*mapping handle/],
      ['mmapReplace', [poll, mfd], /^mmapReplace: .*mapping handle/],
      ['mmapReplace', [map[1], '3'], /^mmapReplace: fd must be a 32-bit integer, got string$/],
      ['mmapRevokeGroup', ['1'], /^mmapRevokeGroup: group must be/],
      ['setBlocking', ['3', true], /^setBlocking: fd must be a 32-bit integer, got string$/],
      ['setBlocking', [mfd, 1], /^setBlocking: blocking must be a boolean, got number$/],
      ['munmap', [map[1], new Uint8Array(map[0])], /^munmap: arrayBuffer must be an ArrayBuffer, got object$/],
      ['eventfd', ['0'], /^eventfd: initval must be/],
      ['eventfdWrite', [mfd, '1'], /^eventfdWrite: value must be/],
      ['eventfdRead', [undefined], /^eventfdRead: fd must be/],
      ['memfd', [7, 0], /^memfd: name must be a string, got number$/],
      ['memfd', ['x', 0, 'yes'], /^memfd: allowSealing must be a boolean or undefined, got string$/],
      ['ftruncate', [mfd, '4096'], /^ftruncate: size must be a safe integer, got string$/],
      ['fallocate', [mfd, 0, 0, '4096'], /^fallocate: length must be/],
      ['blockDeviceSize', ['x'], /^blockDeviceSize: fd must be/],
      ['fdSeals', [[]], /^fdSeals: fd must be .*got array$/],
      ['addSeals', [mfd, '1'], /^addSeals: seals must be/],
      ['pread', [mfd, [1, 2], 0], /^pread: bytes must be a Uint8Array, got array$/],
      ['pwrite', [mfd, Buffer.alloc(1), '0'], /^pwrite: offset must be a safe integer, got string$/],
      ['preadvNowait', [mfd, [new Uint8Array(1), 'x'], 0], /^preadvNowait: buffers\[1\] must be a Uint8Array, got string$/],
      ['preadvNowait', [mfd, new Uint8Array(1), 0], /^preadvNowait: buffers must be an array of Uint8Arrays, got object$/],
      ['recvDiscard', ['3', 1], /^recvDiscard: fd must be a 32-bit integer, got string$/],
      ['recvDiscard', [b, '16'], /^recvDiscard: length must be an integer in 0\.\.2\^31-1, got string$/],
      ['peekOffset', [undefined], /^peekOffset: fd must be a 32-bit integer, got undefined$/],
      ['setPeekOffset', [b, null], /^setPeekOffset: offset must be an integer in -1\.\.2\^31-1, got null$/],
      ['setPeekOffset', [{}, 0], /^setPeekOffset: fd must be a 32-bit integer, got object$/],
    ];
    for (const [fn, args, message] of cases) throwsNamed(() => js[fn](...args), TypeError, message);
    assert.equal(existsSync(p), false, 'no socket was created');
  });

  test('a number that is not an integer, or does not fit its C type, throws a RangeError', () => {
    const p = join(dir, 'never2.sock');
    const cases: [string, unknown[], RegExp][] = [
      ['listen', [p, 16, 0o7777], /^listen: mode must be an integer in 0\.\.0o777, got 0o7777$/],
      ['listen', [p, 16, -1], /^listen: mode must be an integer in 0\.\.0o777, got -1$/],
      ['listen', [p, 1.5, 0o600], /^listen: backlog must be an integer in 0\.\.2147483647, got 1\.5$/],
      ['close', [1.5], /^close: fd must be a 32-bit integer, got 1\.5$/],
      ['close', [2 ** 32 + 3], /^close: fd must be a 32-bit integer, got 4294967299$/],
      ['close', [NaN], /^close: fd must be a 32-bit integer, got nan$/],
      ['eventfd', [-1], /^eventfd: initval must be an integer in 0\.\.4294967295, got -1$/],
      ['eventfdWrite', [mfd, 2 ** 60], /^eventfdWrite: value must be an integer >= 0/],
      ['mmap', [mfd, 0.5, 4096, true], /^mmap: offset must be a safe integer, got 0\.5$/],
      ['memfd', ['x', -1], /^memfd: size must be an integer >= 0, got -1$/],
      ['pollStart', [b, 4, () => {}], /^pollStart: mode must be a PollMode \(0\.\.3\), got 4$/],
      ['recvDiscard', [b, -1], /^recvDiscard: length must be an integer in 0\.\.2\^31-1, got -1$/],
      ['recvDiscard', [b, 2 ** 31], /^recvDiscard: length must be an integer in 0\.\.2\^31-1, got 2147483648$/],
      ['recvDiscard', [b, 1.5], /^recvDiscard: length must be an integer in 0\.\.2\^31-1, got 1\.5$/],
      ['setPeekOffset', [b, -2], /^setPeekOffset: offset must be an integer in -1\.\.2\^31-1, got -2$/],
      ['peekOffset', [0.5], /^peekOffset: fd must be a 32-bit integer, got 0\.5$/],
      ['pollStart', [b, PollMode.Stream, () => {}, Buffer.alloc(0)], /^pollStart: recvBuffer\.length must be at least 1, got 0$/],
      ['pollSpin', [poll, -1], /^pollSpin: idleNs must be an integer >= 0, got -1$/],
      ['sendmsg', [b, Buffer.alloc(1), new Array(254).fill(mfd)], /^sendmsg: fds may hold at most 253 elements, got 254$/],
      ['sendmsg', [b, new Array(65).fill(Buffer.alloc(1))], /^sendmsg: data may hold at most 64 elements, got 65$/],
    ];
    for (const [fn, args, message] of cases) throwsNamed(() => js[fn](...args), RangeError, message);
    assert.equal(existsSync(p), false, 'no socket was created');
  });

  test('expected failures of the system call still return -errno', () => {
    assert.equal(native.close(-1), -9);
    assert.equal(native.mmap(mfd, -4096, 4096, true), -22);
    assert.equal(native.ftruncate(mfd, -1), -22);
    assert.equal(native.preadvNowait(mfd, [new Uint8Array(1)], -1), -22);
    assert.equal(native.sendmsg(-1, Buffer.alloc(1)), -9);
    assert.equal(native.recvDiscard(-1, 1), -9);
    assert.equal(native.recvDiscard(b, 1), -11, 'nothing to consume: EAGAIN');
    assert.equal(native.peekOffset(-1), -9);
    assert.equal(native.peekOffset(mfd), -88, 'not a socket: ENOTSOCK');
    assert.equal(native.setPeekOffset(mfd, 0), -88);
  });

  test('a path with a null byte is refused, not cut short', () => {
    throwsNamed(() => native.listen(join(dir, 'cut\0.sock'), 16, 0o600), TypeError, /^listen: path must be a string without null bytes$/);
    assert.equal(existsSync(join(dir, 'cut')), false);
  });

  test('listen applies exactly the mode asked for', () => {
    for (const mode of [0o600, 0o660, 0o640]) {
      const p = join(dir, `mode-${mode.toString(8)}.sock`);
      const fd = native.listen(p, 4, mode);
      const st = statSync(p);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o7777, mode, `0o${(st.mode & 0o7777).toString(8)}`);
      native.close(fd);
    }
  });
});

describe('handles are tagged with their kind', () => {
  test('a mapping handle is no poller handle, and the other way round', () => {
    const [a, b] = native.socketpair();
    const mfd = native.memfd('tags', 4096);
    const [ab, mh] = native.mmap(mfd, 0, 4096, true) as [ArrayBuffer, MapHandle];
    const ph = native.pollStart(a, PollMode.Stream, () => {});
    try {
      for (const f of ['pollStop', 'pollPause', 'pollWritable', 'pollSpin', 'pollSetBuffer'] as const) {
        const extra = f === 'pollSpin' ? 0 : f === 'pollSetBuffer' ? Buffer.alloc(8) : true;
        throwsNamed(() => js[f](mh, extra), TypeError, new RegExp(`^${f}: handle must be a poller handle \\(from pollStart\\), got external$`));
        throwsNamed(() => js[f]({}, extra), TypeError, new RegExp(`^${f}: handle must be a poller handle.*got object$`));
        throwsNamed(() => js[f](a, extra), TypeError, new RegExp(`^${f}: handle must be a poller handle.*got number$`));
      }
      throwsNamed(() => native.munmap(ph as unknown as MapHandle, ab), TypeError, /^munmap: handle must be a mapping handle \(from mmap\), got external$/);
      throwsNamed(() => native.munmap(undefined as unknown as MapHandle, ab), TypeError, /^munmap: handle must be a mapping handle/);
      assert.equal(new Uint8Array(ab).length, 4096, 'the mapping is untouched');
      // Another mapping's ArrayBuffer would be detached while this one is unmapped under it.
      const other = native.mmap(mfd, 0, 4096, true) as [ArrayBuffer, MapHandle];
      throwsNamed(() => native.munmap(mh, other[0]), TypeError, /^munmap: arrayBuffer is not the one mmap returned with this handle$/);
      assert.equal(new Uint8Array(other[0]).length, 4096);
      assert.equal(native.munmap(other[1], other[0]), 0);
      assert.equal(native.munmap(mh, ab), 0);
      assert.equal(ab.byteLength, 0, 'detached');
    } finally {
      native.pollStop(ph);
      for (const fd of [a, b, mfd]) native.close(fd);
    }
  });

  test('a stopped poller handle stays harmless after its poller is gone', async () => {
    const [a, b] = native.socketpair();
    const ph = native.pollStart(a, PollMode.Stream, () => {}, Buffer.alloc(64));
    native.pollStop(ph);
    await new Promise((r) => setImmediate(r)); // the close completes
    native.pollStop(ph);
    native.pollPause(ph, true);
    native.pollWritable(ph, true);
    native.pollSpin(ph, 1000);
    assert.throws(() => native.pollSetBuffer(ph, Buffer.alloc(8)), /pollSetBuffer: a stopped poller/);
    assert.equal(native.spinState()[0], 0, 'a stopped poller does not make the loop spin');
    native.close(a);
    native.close(b);
  });
});

describe('one poller per fd', () => {
  test('a second pollStart on a watched fd throws EEXIST and the first keeps reading', async () => {
    const [a, b] = native.socketpair();
    const got: string[] = [];
    const first = native.pollStart(a, PollMode.Stream, (kind, data) => {
      if (kind === PollEvent.Data) got.push((data as Buffer).toString());
    });
    try {
      assert.throws(
        () => native.pollStart(a, PollMode.Stream, () => {}),
        (e: Error & { errno?: number }) => e.errno === 17 && /already watched/.test(e.message),
      );
      assert.equal(native.sendmsg(b, Buffer.from('still heard')), 11);
      await until(() => got.length > 0, 'the first poller to read');
      assert.deepEqual(got, ['still heard']);
      // Once it is stopped, the fd may be watched again.
      native.pollStop(first);
      const second = native.pollStart(a, PollMode.Readable, () => {});
      native.pollStop(second);
    } finally {
      native.pollStop(first);
      native.close(a);
      native.close(b);
    }
  });
});

describe('fds truncated by the kernel (MSG_CTRUNC)', () => {
  test('close the fds that arrived and break the connection with a reason', async () => {
    // A child under a small fd limit, with its fd table full but for 3 slots, receives 10 fds.
    const child = fileURLToPath(new URL('./helpers/ctrunc-child.js', import.meta.url));
    const out = await new Promise<string>((resolve, reject) =>
      execFile('sh', ['-c', 'ulimit -n 128 && exec "$0" "$1"', process.execPath, child], { timeout: 10_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout),
      ),
    );
    const r = JSON.parse(out) as { frames: number; frameFds: number; closeReason: string; stillOpen: number };
    assert.equal(r.frames, 0, 'the message was not handed on short of its fds');
    assert.match(r.closeReason, /^socket error: fds sent with a message were dropped by the kernel \(MSG_CTRUNC/);
    assert.equal(r.stillOpen, 0, 'the fds that did arrive were closed');
  });
});

describe('serve() options', () => {
  test("mode '600' (a string) throws, naming the option, and creates no socket", () => {
    const p = join(dir, 'str-mode.sock');
    throwsNamed(
      () => serve(benchDevice(), p, { mode: '600' as unknown as number }),
      TypeError,
      /^serve: options\.mode must be an integer in 0\.\.0o777, got '600' \(write the number, e\.g\. 0o600/,
    );
    assert.equal(existsSync(p), false);
  });

  test('mode 0o600 gives a 0600 socket, 0o660 a 0660 one; the default is 0600', () => {
    for (const [mode, want] of [[0o600, 0o600], [0o660, 0o660], [undefined, 0o600]] as const) {
      const p = join(dir, `serve-${String(mode)}.sock`);
      const server = serve(benchDevice(), p, { mode, log: 'silent' });
      try {
        assert.equal(statSync(p).mode & 0o7777, want);
      } finally {
        server.close();
      }
    }
  });

  test('every other option is checked too, and unknown ones are refused', () => {
    const p = join(dir, 'bad-opts.sock');
    const cases: [unknown, typeof TypeError | typeof RangeError, RegExp][] = [
      [{ mode: 0o1600 }, RangeError, /^serve: options\.mode must be an integer in 0\.\.0o777, got 0o1600$/],
      [{ mode: 1.5 }, RangeError, /options\.mode/],
      [{ mdoe: 0o660 }, TypeError, /^serve: unknown option options\.mdoe \(known: mode, replaceStale, backlog, limits, log, poll\)$/],
      [{ backlog: '16' }, TypeError, /^serve: options\.backlog must be an integer, got '16'$/],
      [{ backlog: -1 }, RangeError, /^serve: options\.backlog must be an integer in/],
      [{ replaceStale: 'no' }, TypeError, /^serve: options\.replaceStale must be a boolean/],
      [{ poll: 'yes' }, TypeError, /^serve: options\.poll must be a boolean or \{ idleMs \}, got 'yes'$/],
      [{ poll: { idleMs: '5' } }, TypeError, /^serve: options\.poll\.idleMs must be a number of ms/],
      [{ poll: { idle: 5 } }, TypeError, /^serve: unknown option options\.poll\.idle/],
      [{ log: 'loud' }, RangeError, /^serve: options\.log must be a Logger or one of debug, info, warn, error, silent, got 'loud'$/],
      [{ log: { info() {} } }, TypeError, /^serve: options\.log must be a Logger .* without debug, warn, error$/],
      [{ limits: { maxMsgFds: '16' } }, TypeError, /^serve: options\.limits\.maxMsgFds must be a positive integer, got '16'$/],
      [{ limits: { maxMsgFds: 254 } }, RangeError, /^serve: options\.limits\.maxMsgFds must be an integer in 1\.\.253, got 254$/],
      [{ limits: { versionTimeoutMs: 0 } }, RangeError, /options\.limits\.versionTimeoutMs/],
      [{ limits: { maxPending: 5 } }, TypeError, /^serve: unknown option options\.limits\.maxPending \(known: maxMsgFds/],
      ['fast', TypeError, /^serve: options must be an object, got 'fast'$/],
    ];
    for (const [options, type, message] of cases) throwsNamed(() => serve(benchDevice(), p, options as never), type, message);
    assert.equal(existsSync(p), false);
  });
});

describe('muser run --mode and a config file\'s "mode"', () => {
  test('octal digits only; a JSON number or an unknown key is refused', () => {
    assert.equal(parseRunArgs(['bench', 'a.sock', '--mode', '0660']).devices[0].mode, 0o660);
    assert.equal(parseRunArgs(['bench', 'a.sock', '--mode=600']).devices[0].mode, 0o600);
    assert.equal(parseRunArgs(['bench', 'a.sock', '--mode=0o640']).devices[0].mode, 0o640);
    assert.equal(parseRunArgs(['bench', 'a.sock']).devices[0].mode, undefined);
    assert.deepEqual(parseRunArgs(['bench', 'a.sock', '--mode', '0660']).devices[0].options, {}, '--mode is not a sample option');
    for (const bad of [['bench', 'a.sock', '--mode=800'], ['bench', 'a.sock', '--mode=1777'], ['bench', 'a.sock', '--mode=rw'], ['bench', 'a.sock', '--mode']]) {
      assert.throws(() => parseRunArgs(bad), UsageError, bad.join(' '));
    }
    const cfg = join(dir, 'devices.json');
    writeFileSync(cfg, JSON.stringify({ devices: [{ device: 'bench', socket: 'a.sock', mode: '0660' }, { device: 'bench', socket: 'b.sock', mode: '600' }] }));
    assert.deepEqual(
      parseRunArgs(['--config', cfg]).devices.map((d) => d.mode),
      [0o660, 0o600],
    );
    writeFileSync(cfg, JSON.stringify([{ device: 'bench', socket: 'a.sock', mode: 600 }]));
    assert.throws(() => parseRunArgs(['--config', cfg]), /devices\[0\]\.mode must be a string of octal digits such as "0660" \(JSON has no octal numbers/);
    writeFileSync(cfg, JSON.stringify([{ device: 'bench', socket: 'a.sock', mdoe: '0660' }]));
    assert.throws(() => parseRunArgs(['--config', cfg]), /devices\[0\] has an unknown key "mdoe" \(known: device, socket, options, poll, mode\)/);
  });

  test('muser run serves with the mode asked for', async () => {
    const sock = join(dir, 'run-mode.sock');
    const server = await startServer([MAIN, 'run', 'bench', sock, '--mode', '0640'], sock, `on ${sock}`, 'muser run');
    try {
      assert.equal(statSync(sock).mode & 0o7777, 0o640);
    } finally {
      await server.stop();
    }
  });
});
