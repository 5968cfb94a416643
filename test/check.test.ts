// `muser check` passes every sample, and each of its checks fails against a
// server that breaks the rule it checks (test/helpers/broken-servers.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALL_CHECKS, runChecks } from '../src/cli/check/index.js';
import { SAMPLES } from '../src/samples/index.js';
import { BROKEN_SERVERS, TRANSPARENT, startBroken } from './helpers/broken-servers.js';
import { MAIN, runCli as cli, startServer } from './helpers/timer-process.js';

/** Options a sample cannot run without. */
const REQUIRED_OPTIONS: Record<string, string[]> = { 'virtio-blk': ['--size', '16M'], nvme: ['--size', '16M'] };

for (const name of Object.keys(SAMPLES)) {
  test(`check: the ${name} sample passes every check (muser check --json, exit 0)`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muser-check-'));
    const sock = join(dir, 'dev.sock');
    const server = await startServer([MAIN, 'run', name, sock, ...(REQUIRED_OPTIONS[name] ?? [])], sock, `serving ${name}`, name);
    try {
      const r = await cli(['check', '--json', sock]);
      const report = JSON.parse(r.stdout) as { pass: number; fail: number; skip: number; results: { id: string; status: string; detail?: string }[] };
      const failed = report.results.filter((x) => x.status === 'fail');
      assert.deepEqual(failed, [], `failures on ${name}`);
      assert.equal(r.code, 0);
      assert.equal(report.results.length, ALL_CHECKS.length);
      assert.ok(report.pass >= ALL_CHECKS.length - 3, `${report.pass} passed, ${report.skip} skipped`);
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('check: the broken-server interposer itself breaks nothing', async () => {
  const broken = startBroken(TRANSPARENT);
  try {
    const results = await runChecks(broken.path, { timeoutMs: 2000 });
    assert.deepEqual(results.filter((r) => r.status === 'fail'), []);
  } finally {
    broken.stop();
  }
});

test('check: every check is failed by at least one broken server', () => {
  const covered = new Set(BROKEN_SERVERS.flatMap((b) => b.fails));
  const ids = ALL_CHECKS.map((c) => c.id);
  assert.deepEqual(ids.filter((id) => !covered.has(id)), [], 'checks no broken server fails');
  for (const id of covered) assert.ok(ids.includes(id), `broken servers name an unknown check ${id}`);
});

for (const broken of BROKEN_SERVERS) {
  test(`check: a server that ${broken.name} fails ${broken.fails.join(', ')}`, async () => {
    const running = startBroken(broken);
    try {
      const results = await runChecks(running.path, { timeoutMs: 500, only: broken.fails });
      for (const id of broken.fails) {
        const r = results.find((x) => x.id === id);
        assert.equal(r?.status, 'fail', `${id}: ${JSON.stringify(r)}`);
      }
    } finally {
      running.stop();
    }
  });
}

test('check (CLI): a failing server gives FAIL lines and exit 1', async () => {
  const running = startBroken(BROKEN_SERVERS.find((b) => b.name === 'is not a PCI device')!);
  try {
    const r = await cli(['check', running.path]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^FAIL  device\.info /m);
    assert.match(r.stdout, /^PASS  negotiation\.version /m);
    assert.match(r.stdout, /\d+ passed, [1-9]\d* failed/);
  } finally {
    running.stop();
  }
});

test('check (CLI): nothing listening is one clear error and exit 1', async () => {
  const r = await cli(['check', join(tmpdir(), `muser-check-nobody-${process.pid}.sock`)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot connect to /);
  assert.equal(r.stdout, '');
});
