// Connecting never blocks, and `muser check` spends no connection: against
// a listener whose backlog is full (libvfio-user listens with a backlog of 0)
// a connect is retried until its timeout and then says what it waited for;
// nothing there fails at once; and a server that serves one client in its
// life is checked on that one connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { ConnectError, connectSocket } from '../src/transport/connect.js';
import { Client } from '../src/client/index.js';
import { runChecks } from '../src/cli/check/index.js';
import { CONNECTION_CHECKS } from '../src/cli/check/checks-connection.js';
import { TRANSPARENT, startBroken } from './helpers/broken-servers.js';
import { runCli } from './helpers/timer-process.js';

const { EAGAIN } = constants.errno;
const WAITED = /waiting to connect to \S+ \(backlog full \/ server not accepting\)/;

/** A listener with a backlog of 0 and one connection it never accepts: the next connect finds the backlog full. */
function fullBacklog(): { path: string; listenFd: number; queued: number; close(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'muser-backlog-'));
  const path = join(dir, 'full.sock');
  const listenFd = native.listen(path, 0, 0o600);
  const queued = native.connect(path);
  assert.ok(queued >= 0, `the first connection queues (${queued})`);
  return {
    path,
    listenFd,
    queued,
    close() {
      native.close(queued);
      native.close(listenFd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('connect: a full backlog gives EAGAIN at once; connectSocket retries without blocking the loop, then names what it waited for', async () => {
  const full = fullBacklog();
  try {
    assert.equal(native.connect(full.path), -EAGAIN);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    const started = Date.now();
    await assert.rejects(connectSocket(full.path, { timeoutMs: 300 }), (e) => e instanceof ConnectError && e.code === 'ETIMEDOUT' && WAITED.test(e.message));
    const took = Date.now() - started;
    clearInterval(ticker);
    assert.ok(took >= 290 && took < 3000, `gave up after ${took} ms`);
    assert.ok(ticks >= 10, `the event loop ran ${ticks} 10 ms timers while connecting`);
    await assert.rejects(Client.connect(full.path, { timeoutMs: 100 }), (e) => e instanceof ConnectError && WAITED.test(e.message));
  } finally {
    full.close();
  }
});

test('connect: succeeds once the server accepts the connection ahead of it', async () => {
  const full = fullBacklog();
  try {
    const connecting = connectSocket(full.path, { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 50));
    const accepted = native.accept(full.listenFd);
    assert.ok(accepted >= 0);
    const fd = await connecting;
    assert.ok(fd >= 0);
    native.close(fd);
    native.close(accepted);
  } finally {
    full.close();
  }
});

test('connect: no socket, or nobody listening, fails at once with a clear message', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-noone-'));
  try {
    const stale = join(dir, 'stale.sock');
    native.close(native.listen(stale, 0, 0o600)); // the file stays, nobody listens
    for (const [path, code, why] of [[join(dir, 'none.sock'), 'ENOENT', /no socket there/], [stale, 'ECONNREFUSED', /nobody listens there/]] as const) {
      const started = Date.now();
      await assert.rejects(connectSocket(path, { timeoutMs: 10_000 }), (e) => e instanceof ConnectError && e.code === code && why.test(e.message) && e.message.includes(path));
      assert.ok(Date.now() - started < 1000, `${code} took ${Date.now() - started} ms`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('check (CLI): against a full backlog it exits 1 at --timeout, saying what it waited for', async () => {
  const full = fullBacklog();
  try {
    const r = await runCli(['check', '--timeout', '1', full.path], { killAfterMs: 20_000 });
    assert.equal(r.killed, false, 'muser check hung on connect');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, WAITED);
    assert.equal(r.stdout, '');
  } finally {
    full.close();
  }
});

test('check: a server with one client in its life is checked on that one connection; the checks that need another are skipped', async () => {
  const running = startBroken(TRANSPARENT, { oneClient: true });
  try {
    const results = await runChecks(running.path, { timeoutMs: 2000 });
    assert.deepEqual(results.filter((r) => r.status === 'fail'), []);
    const own = new Set(CONNECTION_CHECKS.map((c) => c.id));
    for (const r of results.filter((x) => own.has(x.id))) {
      assert.equal(r.status, 'skip', r.id);
      assert.match(r.detail ?? '', /stopped listening \(ENOENT\) when its first client left: it serves one client in its life/);
    }
    assert.ok(results.filter((r) => r.status === 'pass').length >= results.length - own.size - 3, JSON.stringify(results));
    assert.equal(running.accepted, 1);
  } finally {
    running.stop();
  }
});

test('check (CLI): no probe connection spends a one-client server', async () => {
  const running = startBroken(TRANSPARENT, { oneClient: true });
  try {
    const r = await runCli(['check', running.path], { killAfterMs: 60_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^PASS  device\.info /m);
    assert.match(r.stdout, /^SKIP  hostile\.still-serving /m);
  } finally {
    running.stop();
  }
});
