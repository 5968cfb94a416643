// `muser run --isolate` as a user runs it, `muser reload`, and the arguments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { parseRunArgs } from '../src/cli/run/index.js';
import { UsageError } from '../src/cli/usage.js';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';
import { tempDir, u32 } from './helpers/isolated.js';

test('run --isolate: serves, is reloaded by `muser reload` with its state, and stops cleanly', async () => {
  const dir = tempDir();
  const sock = join(dir, 'c.sock');
  const server = await startServer([MAIN, 'run', '--isolate', '--watchdog', '500', 'counter', sock], sock, `serving counter on ${sock} (isolated)`);
  const client = await Client.connect(sock);
  try {
    await client.regionWrite(0, 4, u32(4));
    const r = await runCli(['reload', sock]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /reloaded counter/);
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 4);
    const none = await runCli(['reload', join(dir, 'nothing.sock')]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no isolated muser serves/);
  } finally {
    client.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(server.child.exitCode, 0, server.stderr);
});

test('run --isolate: arguments and config', () => {
  assert.equal(parseRunArgs(['counter', 's']).isolate, undefined);
  assert.deepEqual(
    (({ isolate, watch, watchdogMs }) => ({ isolate, watch, watchdogMs }))(parseRunArgs(['--isolate', '--watchdog=250', 'counter', 's'])),
    { isolate: true, watch: undefined, watchdogMs: 250 },
  );
  assert.equal(parseRunArgs(['--watch', './d.js', 's']).isolate, true, '--watch implies --isolate');
  assert.throws(() => parseRunArgs(['--watchdog', '0', 'counter', 's']), (e) => e instanceof UsageError && /--watchdog takes/.test(e.message));
  const dir = tempDir();
  try {
    const config = join(dir, 'devices.json');
    writeFileSync(config, JSON.stringify({ isolate: true, watchdogMs: 1000, devices: [{ device: 'counter', socket: 'a.sock' }] }));
    const parsed = parseRunArgs(['--config', config]);
    assert.equal(parsed.isolate, true);
    assert.equal(parsed.watchdogMs, 1000);
    writeFileSync(config, JSON.stringify({ isolated: true, devices: [{ device: 'counter', socket: 'a.sock' }] }));
    assert.throws(() => parseRunArgs(['--config', config]), /unknown key "isolated"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('run --isolate: a RAM disk, which dies with the child, is warned about; an image file is not', async () => {
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(1024 * 1024));
  const ram = join(dir, 'ram.sock');
  const file = join(dir, 'file.sock');
  const server = await startServer([MAIN, 'run', '--isolate', 'virtio-blk', ram, '--size', '1M', 'virtio-blk', file, '--image', image], file, `serving virtio-blk on ${file} (isolated)`);
  try {
    assert.match(server.stderr, new RegExp(`warning: virtio-blk on ${ram}: the RAM disk \\(--size\\) lives in the child process: its contents are lost whenever the child dies or is reloaded`));
    assert.doesNotMatch(server.stderr, new RegExp(`warning: virtio-blk on ${file}`));
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
