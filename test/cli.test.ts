// The muser command: usage, bad arguments, and run's signal handling.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';

test('no arguments, an unknown command, an unknown sample, missing paths: usage and a non-zero exit', async () => {
  for (const args of [[], ['frobnicate'], ['run', 'no-such-sample', '/tmp/x.sock'], ['run', 'bench'], ['lspci'], ['--bogus-flag']]) {
    const r = await runCli(args);
    assert.notEqual(r.code, 0, `muser ${args.join(' ')} exits non-zero`);
    assert.match(r.stdout + r.stderr, /usage:/, `muser ${args.join(' ')} prints the usage`);
  }
  const unknown = await runCli(['run', 'no-such-sample', '/tmp/x.sock']);
  assert.match(unknown.stderr, /unknown sample 'no-such-sample'/);
});

test('help lists every sample and exits 0', async () => {
  const r = await runCli(['help']);
  assert.equal(r.code, 0);
  for (const name of ['bench', 'counter', 'gpio', 'timer']) assert.match(r.stdout, new RegExp(`\\b${name}\\b`));
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`run: ${signal} removes the owner-only socket and exits 0`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muser-cli-'));
    const path = join(dir, 'c.sock');
    try {
      const server = await startServer([MAIN, 'run', 'counter', path], path, 'serving counter', 'counter');
      assert.equal(statSync(path).mode & 0o777, 0o600);
      const exited = new Promise<number | null>((resolve) => server.child.once('exit', (code) => resolve(code)));
      server.child.kill(signal);
      assert.equal(await exited, 0);
      assert.equal(existsSync(path), false, 'the socket is gone');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
