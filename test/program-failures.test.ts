// Device programs that crash, hang, send malformed messages, describe a
// device muser refuses, or never start: each gets a clear error in the log
// (or from startDeviceProgram), the guest's accesses fail at once instead
// of hanging, and another device served by the same process carries on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, ClientError } from '../src/client/index.js';
import { Errno } from '../src/device/errors.js';
import { startDeviceProgram, ProgramStartError, type DeviceProgram } from '../src/program/index.js';
import { serve } from '../src/server/server.js';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';
import type { Logger } from '../src/device/logger.js';
import { recordingLogger } from './helpers/logs.js';
import { until } from './helpers/wait.js';

const PROGRAMS = fileURLToPath(new URL('../../test/fixtures/programs/', import.meta.url));
const MISBEHAVE = join(PROGRAMS, 'misbehave.py');
const CONFIG = 7;

async function refusal(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ClientError, `a ClientError, got ${String(e)}`);
    return e.errno;
  }
  return assert.fail('the access succeeded');
}

const ended = (p: DeviceProgram): boolean => p.child.exitCode !== null || p.child.signalCode !== null;

const CASES = [
  { mode: 'crash', errno: Errno.EIO, log: /device program \S*misbehave\.py exited with code 3; accesses needing it now fail with EIO/ },
  { mode: 'hang', errno: Errno.ETIMEDOUT, log: /device program \S*misbehave\.py did not answer a write of register act \(BAR 0 \+0x8\) within 400 ms; accesses needing it now fail with EIO/ },
  { mode: 'garbage', errno: Errno.EIO, log: /broke the protocol: message size 8 is smaller than the header/ },
  { mode: 'stray', errno: Errno.EIO, log: /sent a malformed message: a reply \(id 999, kind 33\) to no request/ },
  { mode: 'unknown', errno: Errno.EIO, log: /sent a malformed message: unknown event kind 99/ },
  { mode: 'short', errno: Errno.EIO, log: /sent a malformed message: READ reply has 3 payload bytes, 8 expected/, read: true },
];

for (const c of CASES) {
  test(`a program that ${c.mode === 'crash' ? 'crashes' : c.mode === 'hang' ? 'hangs' : c.mode === 'short' ? 'answers a read with a short reply' : `sends ${c.mode} messages`} mid-access: the access fails with errno ${c.errno}, the log says why, the program is stopped, the rest serves on`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muser-prog-'));
    const { log, lines } = recordingLogger();
    // Only a hang may take the time limit: every other failure must be seen at once.
    const timeoutMs = c.mode === 'hang' ? 400 : 60_000;
    const program = await startDeviceProgram({ command: ['python3', MISBEHAVE], args: [`--behave=${c.mode}`], timeoutMs, log });
    const server = serve(program.device, join(dir, 'bad.sock'), { log: 'silent' });
    const other = serve({ identity: { vendorId: 0x1234, deviceId: 0x0042 }, bars: { 0: { size: 4096, memory: true } } }, join(dir, 'other.sock'), { log: 'silent' });
    const client = await Client.connect(join(dir, 'bad.sock'));
    const neighbour = await Client.connect(join(dir, 'other.sock'));
    try {
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 7);
      await client.regionWrite(0, 4, Buffer.from([5, 0, 0, 0]));
      const started = Date.now();
      const act = 'read' in c ? client.regionRead(0, 8, 4) : client.regionWrite(0, 8, Buffer.from([1, 0, 0, 0]));
      assert.equal(await refusal(act), c.errno);
      if (c.mode !== 'hang') assert.ok(Date.now() - started < 3000, `failed at once (${Date.now() - started} ms)`);
      await until(() => lines.some((l) => c.log.test(l)), `the log line ${c.log}`);
      assert.match(lines.find((l) => c.log.test(l))!, /^error: /);
      await until(() => ended(program), 'the program to be stopped');
      if (c.mode === 'hang') assert.equal(program.child.signalCode, 'SIGKILL');
      assert.ok(program.failure);

      // From now on, what needs the program fails at once; what muser serves still works.
      const again = Date.now();
      assert.equal(await refusal(client.regionRead(0, 0, 4)), Errno.EIO);
      assert.ok(Date.now() - again < 1000);
      assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 5, 'a register muser stores');
      assert.equal((await client.regionRead(CONFIG, 0, 4)).readUInt32LE(0), 0xbad01234, 'config space');
      await neighbour.regionWrite(0, 0, Buffer.from([9]));
      assert.equal((await neighbour.regionRead(0, 0, 1))[0], 9, 'the other device of the process');
      assert.equal(lines.filter((l) => l.startsWith('error: ')).length, 1, `one error line: ${lines.join('\n')}`);
    } finally {
      client.close();
      neighbour.close();
      server.close();
      other.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('stopping the server while the last client leaves (its reset still asking the program) logs no error', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-prog-'));
  const { log, lines } = recordingLogger();
  const program = await startDeviceProgram({ command: ['python3', MISBEHAVE], log });
  // The server logs the disconnect, then starts the reset (a RESET to the program): close right then.
  const serverLog: Logger = { ...log, info: (m) => (log.info(m), m === 'client disconnected' && setImmediate(() => server.close())) };
  const server = serve(program.device, join(dir, 'dev.sock'), { log: serverLog });
  try {
    const client = await Client.connect(join(dir, 'dev.sock'));
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 7);
    const left = new Promise((resolve) => server.once('disconnect', resolve));
    client.close();
    await left;
    await until(() => ended(program), 'the program to end');
    assert.deepEqual(lines.filter((l) => /^(warn|error): /.test(l)), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a program that describes a device muser refuses, exits early, never says HELLO, or speaks another version: startDeviceProgram says so', async () => {
  const start = (command: string[], helloTimeoutMs?: number) => startDeviceProgram({ command, helloTimeoutMs, log: 'silent' });
  await assert.rejects(start(['python3', join(PROGRAMS, 'bad-device.py')]), (e: Error) => {
    assert.ok(e instanceof ProgramStartError);
    assert.match(e.message, /bad-device\.py described a device muser refuses: BAR0: size 24 is not a power of two$/);
    return true;
  });
  await assert.rejects(start(['python3', join(PROGRAMS, 'exits-early.py')]), /exits-early\.py exited with code 4 before its HELLO was accepted/);
  await assert.rejects(start(['python3', join(PROGRAMS, 'silent.py')], 300), /silent\.py did not say HELLO within 300 ms/);
  await assert.rejects(start(['/nonexistent/python']), /could not be started: spawn \/nonexistent\/python ENOENT/);
  const version2 = [
    'import json, os, socket, struct',
    's = socket.socket(fileno=int(os.environ["MUSER_DEVICE_FD"])); s.setblocking(True)',
    'p = json.dumps({"version": 2, "device": {}}).encode()',
    's.sendall(struct.pack("<HHIII", 1, 1, 16 + len(p), 0, 0) + p)',
    'h = s.recv(16); print("errno", struct.unpack("<HHIII", h)[4], flush=True); s.recv(100)',
  ].join('\n');
  await assert.rejects(start(['python3', '-c', version2]), /asked for protocol version 2 is not supported: this muser speaks version 1/);
});

test('muser run: a crashing device program next to a sample in one process; a program that cannot start fails the command', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-prog-'));
  const [bad, counter] = [join(dir, 'bad.sock'), join(dir, 'counter.sock')];
  // --python names the interpreter (the real one behind python3, wherever it lives).
  const python = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout.trim();
  const server = await startServer([MAIN, 'run', MISBEHAVE, bad, '--python', python, '--behave=crash', 'counter', counter], counter, `on ${counter}`);
  try {
    const children = readFileSync(`/proc/${server.child.pid}/task/${server.child.pid}/children`, 'utf8').trim().split(/\s+/);
    const argv = readFileSync(`/proc/${children[0]}/cmdline`, 'utf8').split('\0');
    assert.deepEqual(argv.slice(0, 3), [python, MISBEHAVE, '--behave=crash'], 'the program runs under --python, with its options');
    const client = await Client.connect(bad);
    assert.equal(await refusal(client.regionWrite(0, 8, Buffer.from([1, 0, 0, 0]))), Errno.EIO);
    client.close();
    await until(() => /\[misbehave\] error: device program \S+misbehave\.py exited with code 3/.test(server.stderr), 'the crash in the log');
    const c = await Client.connect(counter);
    await c.regionWrite(0, 4, Buffer.from([2, 0, 0, 0]));
    assert.equal((await c.regionRead(0, 0, 4)).readUInt32LE(0), 2, 'the counter sample still serves');
    c.close();
    assert.equal(server.child.exitCode, null, 'muser still runs');
  } finally {
    await server.stop();
  }
  const early = await runCli(['run', join(PROGRAMS, 'exits-early.py'), join(dir, 'x.sock')]);
  assert.equal(early.code, 1);
  assert.match(early.stderr, /muser: device program \S*exits-early\.py exited with code 4 before its HELLO was accepted/);
  const refused = await runCli(['run', join(PROGRAMS, 'bad-device.py'), join(dir, 'y.sock')]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /muser: device program \S*bad-device\.py described a device muser refuses/);
  assert.match(refused.stderr, /SpecError: muser refused the device/, "the program's own traceback says it too");
  rmSync(dir, { recursive: true, force: true });
});
