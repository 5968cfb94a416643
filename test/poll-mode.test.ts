/**
 * Polling mode (ServeOptions.poll, `muser run ... --poll`): the loop
 * busy-polls after activity, stays responsive while it does, and goes back
 * to sleeping in epoll once the idle window has passed. What it costs and
 * gains is measured by `npm run bench`, not here.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { native, PollEvent, PollMode } from '../src/native/index.js';
import { Client } from '../src/client/index.js';
import { serve, DEFAULT_POLL_IDLE_MS } from '../src/index.js';
import { parseRunArgs } from '../src/cli/run/index.js';
import { UsageError } from '../src/cli/usage.js';
import { benchDevice } from '../src/samples/bench.js';
import { sleep, until } from './helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-poll-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const spinning = (): boolean => native.spinState()[0] === 1;
const spinStarts = (): number => native.spinState()[1];
const directEvents = (): number => native.spinState()[2];

describe('polling mode, server in this process', () => {
  test('a request makes the loop spin; after the idle window it sleeps, and still answers', async () => {
    const idleMs = 5;
    const startsBefore = spinStarts();
    const server = serve(benchDevice(), join(dir, 'a.sock'), { poll: { idleMs } });
    const c = await Client.connect(server.path);
    try {
      await c.regionWrite(0, 0, Buffer.from([1, 2, 3, 4]));
      assert.ok(spinStarts() > startsBefore, 'a connection and its requests start the loop spinning');
      // The timer firing at all shows timers run while the loop spins.
      // A bounded wait: a loaded machine can hold the loop past a fixed sleep.
      await until(() => !spinning(), 'back to sleeping after the idle window', 5000);
      const startsAsleep = spinStarts();
      assert.deepEqual(await c.regionRead(0, 0, 4), Buffer.from([1, 2, 3, 4]));
      assert.ok(spinStarts() > startsAsleep, 'a request after sleeping starts spinning again');
    } finally {
      c.close();
      server.close();
    }
    await until(() => !spinning(), 'sleeping once the server closed', 5000);
  });

  test('while spinning, timers, immediates and promises of other code run', async () => {
    const server = serve(benchDevice(), join(dir, 'b.sock'), { poll: { idleMs: 200 } });
    const c = await Client.connect(server.path);
    try {
      await c.regionRead(0, 0, 4);
      const order: string[] = [];
      await new Promise<void>((resolve) => {
        setImmediate(() => order.push('immediate'));
        void Promise.resolve().then(() => order.push('microtask'));
        setTimeout(() => {
          order.push('timer');
          resolve();
        }, 2);
      });
      assert.deepEqual(order.sort(), ['immediate', 'microtask', 'timer']);
      // Many requests back to back while spinning: every one answered, in order.
      const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => c.regionWrite(0, (i % 1024) * 4, Buffer.alloc(4, i & 0xff))));
      assert.equal(replies.length, 200);
    } finally {
      c.close();
      server.close();
    }
  });

  test('a device without poll does not make the loop spin', async () => {
    // Wait out windows armed by earlier tests.
    await sleep(250);
    const server = serve(benchDevice(), join(dir, 'c.sock'));
    const c = await Client.connect(server.path);
    try {
      const starts = spinStarts();
      await c.regionRead(0, 0, 4);
      assert.equal(spinning(), false);
      assert.equal(spinStarts(), starts);
    } finally {
      c.close();
      server.close();
    }
  });

  test('a bad idle window is refused', () => {
    for (const idleMs of [0, -1, NaN, Infinity, 1e9]) {
      assert.throws(() => serve(benchDevice(), join(dir, 'd.sock'), { poll: { idleMs } }), RangeError, String(idleMs));
    }
  });
});

describe('a busy-polling loop reads its spinning fds itself', () => {
  test('socket messages and eventfd counts arrive through the direct reads, in order', async () => {
    const [a, b] = native.socketpair();
    const efd = native.eventfd(0);
    const got: string[] = [];
    const sock = native.pollStart(a, PollMode.Stream, (kind, data) => {
      if (kind === PollEvent.Data) got.push((data as Buffer).toString());
    });
    let count = 0;
    const ev = native.pollStart(efd, PollMode.EventFd, (kind, n) => {
      if (kind === PollEvent.Count) count += n as number;
    });
    try {
      native.pollSpin(sock, 200_000_000);
      native.pollSpin(ev, 200_000_000);
      const before = directEvents();
      for (let i = 0; i < 20; i++) {
        assert.equal(native.sendmsg(b, Buffer.from(`m${i};`)), 2 + String(i).length);
        await until(() => got.join('').endsWith(`m${i};`), `message ${i}`);
        assert.equal(native.eventfdWrite(efd, 2), 0);
        await until(() => count === 2 * (i + 1), `eventfd count ${i}`);
      }
      assert.equal(got.join(''), Array.from({ length: 20 }, (_, i) => `m${i};`).join(''));
      assert.ok(directEvents() > before, 'the spinning loop read some of them itself');
    } finally {
      native.pollStop(sock);
      native.pollStop(ev);
      native.close(a);
      native.close(b);
      native.close(efd);
    }
  });

  test('paused spinning pollers are not read until they resume (backpressure holds)', async () => {
    const [a, b] = native.socketpair();
    const efd = native.eventfd(0);
    const got: Buffer[] = [];
    let count = 0;
    const sock = native.pollStart(a, PollMode.Stream, (kind, data) => {
      if (kind === PollEvent.Data) got.push(data as Buffer);
    });
    const ev = native.pollStart(efd, PollMode.EventFd, (kind, n) => {
      if (kind === PollEvent.Count) count += n as number;
    });
    try {
      native.pollSpin(sock, 200_000_000);
      native.pollSpin(ev, 200_000_000);
      native.pollPause(sock, true);
      native.pollPause(ev, true);
      native.sendmsg(b, Buffer.from('held'));
      native.eventfdWrite(efd, 3);
      const starts = spinStarts();
      // Many turns of a spinning loop: nothing may be read meanwhile.
      await sleep(20);
      assert.equal(spinning(), true, 'still spinning');
      assert.equal(spinStarts(), starts);
      assert.equal(got.length, 0, 'a paused socket was read');
      assert.equal(count, 0, 'a paused eventfd was read');
      native.pollPause(sock, false);
      native.pollPause(ev, false);
      await until(() => got.length === 1 && count === 3, 'the held message and count after resuming');
      assert.equal(got[0].toString(), 'held');
    } finally {
      native.pollStop(sock);
      native.pollStop(ev);
      native.close(a);
      native.close(b);
      native.close(efd);
    }
  });
});

describe('muser run --poll', () => {
  test('--poll takes the default window, --poll=<ms> its own, per device', () => {
    const { devices } = parseRunArgs(['bench', 'a.sock', '--poll', 'counter', 'b.sock', 'bench', 'c.sock', '--poll=2.5']);
    assert.equal(devices[0].pollIdleMs, DEFAULT_POLL_IDLE_MS);
    assert.equal(devices[1].pollIdleMs, undefined);
    assert.equal(devices[2].pollIdleMs, 2.5);
    assert.deepEqual(devices[0].options, {}, '--poll is not a sample option');
  });

  test('a bad window, or --poll before any device, is a usage error', () => {
    for (const bad of [['bench', 'a.sock', '--poll=0'], ['bench', 'a.sock', '--poll=x'], ['bench', 'a.sock', '--poll='], ['--poll', 'bench', 'a.sock']]) {
      assert.throws(() => parseRunArgs(bad), UsageError, bad.join(' '));
    }
  });

  test('a config file says "poll": true or a window in ms', () => {
    const cfg = join(dir, 'devices.json');
    writeFileSync(cfg, JSON.stringify({ devices: [{ device: 'bench', socket: 'a.sock', poll: true }, { device: 'bench', socket: 'b.sock', poll: 3 }, { device: 'bench', socket: 'c.sock' }] }));
    const { devices } = parseRunArgs(['--config', cfg]);
    assert.deepEqual(
      devices.map((d) => d.pollIdleMs),
      [DEFAULT_POLL_IDLE_MS, 3, undefined],
    );
    writeFileSync(cfg, JSON.stringify([{ device: 'bench', socket: 'a.sock', poll: 'soon' }]));
    assert.throws(() => parseRunArgs(['--config', cfg]), UsageError);
  });
});
