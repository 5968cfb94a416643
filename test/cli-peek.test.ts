// `muser peek`/`poke` (one register access from the shell) and `muser lspci -x` (hex dump), papercut 7.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineRegisters, serve } from '../src/index.js';
import esbWatchdog from './fixtures/esb-watchdog.js';
import { runCli } from './helpers/timer-process.js';

test('muser peek and poke read and write one register; lspci -x dumps config space', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-peek-'));
  // Each command is a connection of its own, and the device resets when one ends (register maps included).
  const written: number[] = [];
  const spec = esbWatchdog();
  const doorbell = defineRegisters([{ name: 'doorbell', offset: 0x4, width: 4, write: (v) => void written.push(v) }]);
  const server = serve({ ...spec, bars: { 2: doorbell.bar({ size: 4096 }) } }, join(dir, 's.sock'), { log: 'silent' });
  try {
    const sock = server.path;
    const { code, stdout, stderr } = await runCli(['peek', sock, 'config', '0', '--width', '2']);
    assert.deepEqual({ code, stdout, stderr }, { code: 0, stdout: '0x8086\n', stderr: '' });
    assert.equal((await runCli(['poke', sock, 'bar2', '0x4', '0xdeadbeef'])).code, 0);
    assert.deepEqual(written, [0xdeadbeef]);
    // A map behind a BAR is reset with the device when the poke's connection ends: the next one reads the reset value.
    assert.equal((await runCli(['peek', sock, '2', '4'])).stdout, '0x00000000\n');
    assert.equal((await runCli(['peek', sock, 'config', '0x0'])).stdout, '0x25ab8086\n', 'width 4 by default');
    // A refused access: the client's error, exit 1.
    const refused = await runCli(['poke', sock, 'config', '0x60', '1', '--width', '1']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /REGION_WRITE of region 7 at 0x60 \(1 byte\) refused: EINVAL/);
    const bad = await runCli(['poke', sock, 'bar2', '0', '0x1ff', '--width', '1']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /VALUE 0x1ff does not fit in 1 byte/);

    const x = await runCli(['lspci', '-x', sock]);
    assert.equal(x.code, 0, x.stderr);
    const dump = x.stdout.split('\n').filter((l) => /^[0-9a-f]{2,3}: /.test(l));
    assert.equal(dump.length, 4, '-x: the 64-byte header');
    assert.match(dump[0], /^00: 86 80 ab 25 /);
    const xxx = (await runCli(['lspci', '-xxx', sock])).stdout.split('\n').filter((l) => /^[0-9a-f]{2,3}: /.test(l));
    assert.equal(xxx.length, 16);
    assert.match(xxx[6], /^60: 00 00 00 00 00 00 00 00 00 /, 'the config registers, read through the table');
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
