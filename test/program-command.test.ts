// How `muser run` starts a device program: the interpreter from the file's
// #! line, python3 for a .py without one, --python PATH over both, an
// executable as it is; and which options are muser's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isProgramPath, parseRunArgs } from '../src/cli/run/args.js';
import { programCommand, ProgramStartError } from '../src/program/index.js';

test('programCommand: #! line, python3 by default, --python over both, executables as they are', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-cmd-'));
  try {
    const plain = join(dir, 'plain.py');
    writeFileSync(plain, 'print(1)\n');
    const bang = join(dir, 'bang.py');
    writeFileSync(bang, '#!/usr/bin/env python3.12 -u\nprint(1)\n');
    const exe = join(dir, 'device');
    writeFileSync(exe, '#!/bin/sh\n');
    chmodSync(exe, 0o755);
    const notExe = join(dir, 'device.rb');
    writeFileSync(notExe, 'puts 1\n');
    assert.deepEqual(programCommand(plain), ['python3', plain]);
    assert.deepEqual(programCommand(bang), ['/usr/bin/env', 'python3.12', '-u', bang]);
    assert.deepEqual(programCommand(bang, '/opt/py/bin/python'), ['/opt/py/bin/python', bang]);
    assert.deepEqual(programCommand(plain, '/opt/py/bin/python'), ['/opt/py/bin/python', plain]);
    assert.deepEqual(programCommand(exe), ['/bin/sh', exe]);
    assert.throws(() => programCommand(notExe), (e: Error) => e instanceof ProgramStartError && /not executable and not a \.py file/.test(e.message));
    assert.throws(() => programCommand(join(dir, 'missing.py')), /missing\.py: no such file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('muser run: a .py is a device program; --python and --timeout-ms take a value, other options pass through', () => {
  assert.equal(isProgramPath('pvpanic.py'), true);
  assert.equal(isProgramPath('./bin/device'), true);
  assert.equal(isProgramPath('./my-device.js'), false);
  assert.equal(isProgramPath('counter'), false);
  const { devices } = parseRunArgs(['pvpanic.py', '/tmp/a.sock', '--python', '/opt/py/bin/python', '--timeout-ms', '300', '--speed=fast', '--flag', 'counter', '/tmp/b.sock']);
  assert.equal(devices.length, 2);
  assert.deepEqual(devices[0], { device: 'pvpanic.py', socket: '/tmp/a.sock', options: { python: '/opt/py/bin/python', 'timeout-ms': '300', speed: 'fast', flag: true } });
  assert.equal(devices[1].device, 'counter');
});
