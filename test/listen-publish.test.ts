// A server's socket file appears only once the socket listens. libvfio-user's
// sample client starts its migration destination, polls stat() until the path
// exists and connects at once; a socket bound but not yet listening refused it
// (ECONNREFUSED). The window between bind() and listen() is microseconds, so
// strace widens it: every listen() of the server is held for 300 ms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { MAIN } from './helpers/timer-process.js';

const LISTEN_DELAY_US = 300_000;

/** Pids of a process's children (the server strace started). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

test('the socket path appears only once the server listens: a client connecting at first sight is served', async (t) => {
  if (spawnSync('strace', ['-V']).status !== 0) return t.skip('strace is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'muser-publish-'));
  const path = join(dir, 'timer.sock');
  const strace = spawn(
    'strace',
    ['-f', '-qq', '--seccomp-bpf', '-e', 'trace=listen', '-e', `inject=listen:delay_enter=${LISTEN_DELAY_US}`, '-o', '/dev/null', process.execPath, MAIN, 'run', 'timer', path],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  strace.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => strace.once('exit', () => resolve()));
  let client: Client | undefined;
  try {
    const deadline = Date.now() + 10_000;
    while (!existsSync(path)) {
      if (strace.exitCode !== null) {
        if (/ptrace|Operation not permitted/.test(stderr)) return t.skip(`strace cannot trace here: ${stderr.trim()}`);
        assert.fail(`the server exited: ${stderr}`);
      }
      assert.ok(Date.now() < deadline, `no socket at ${path} within 10 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 1));
    }
    client = await Client.connect(path); // refused (ECONNREFUSED) while the socket does not listen yet
    assert.ok(client.server.maxDataXferSize! > 0, 'VERSION negotiated');
    assert.deepEqual(readdirSync(dir), ['timer.sock'], 'no staging name is left behind');
  } finally {
    client?.close();
    for (const pid of childrenOf(strace.pid!)) process.kill(pid, 'SIGTERM');
    if (strace.exitCode === null) await exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
