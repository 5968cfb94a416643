// What muser accepts in a device program's HELLO (the example of
// docs/device-programs.md included), and config registers end to end.
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '../src/client/index.js';
import { Device } from '../src/device/device.js';
import { buildProgramDevice, checkConfigWindow, type ProgramCalls } from '../src/program/build.js';
import { parseHello } from '../src/program/hello.js';
import { startDeviceProgram } from '../src/program/index.js';
import { serve } from '../src/server/server.js';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CONFIG = 7;
const calls: ProgramCalls = { read: async () => 0n, write: async () => undefined, configWritten: () => undefined };

/** Parses and builds a HELLO the way muser does; the built Device. */
function build(hello: Record<string, unknown>): Device {
  const built = buildProgramDevice(parseHello(hello).device, calls, undefined);
  const device = new Device(built.spec);
  try {
    checkConfigWindow(device, built.configWindow);
  } catch (e) {
    device.dispose();
    throw e;
  }
  return device;
}

test("the HELLO of docs/device-programs.md is a device muser builds", () => {
  const doc = readFileSync(join(REPO, 'docs/device-programs.md'), 'utf8');
  const json = /### The device in HELLO\n\n```json\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(json, 'the page has the example');
  const device = build(JSON.parse(json) as Record<string, unknown>);
  assert.equal(device.name, 'pvpanic');
  assert.equal(device.config.read(0, 4).readUInt32LE(0), 0x0011_1b36);
  assert.deepEqual(device.config.capabilities.map((c) => c.id).sort(), ['pcie', 'pm']);
  device.dispose();
});

test('HELLO mistakes are refused with the field named', () => {
  const base = { identity: { vendorId: 1, deviceId: 2 } };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...base, bars: [{ index: 0, size: 16, registers: [{ name: 'r', offset: 0, width: 3 }] }] }, /device\.bars\[0\]\.registers\[0\]\.width: 3 is not 1, 2, 4 or 8/],
    [{ ...base, bars: [{ index: 0, size: 16, registers: [{ name: 'r', offset: 0, width: 4, acess: 'ro' }] }] }, /device\.bars\[0\]\.registers\[0\]\.acess: unknown field/],
    [{ ...base, bars: [{ index: 0, size: 16, registers: [{ name: 'r', offset: 16, width: 4 }] }] }, /device\.bars\[0\]: registers end at 0x14, past the BAR's 16 bytes/],
    [{ ...base, bars: [{ index: 0, size: 16, registers: [{ name: 'r', offset: 0, width: 4 }, { name: 'r', offset: 4, width: 4 }] }] }, /register name r is used twice/],
    [{ ...base, config: [{ name: 'c', offset: 0x40, width: 4, read: true }] }, /device\.config\[0\]\.read: config registers cannot have read callbacks/],
    [{ ...base, config: [{ name: 'c', offset: 0x20, width: 4 }] }, /device\.config: registers must lie in config space 0x40-0xff/],
    [{ ...base, capabilities: [{ id: 'pm' }], config: [{ name: 'c', offset: 0x40, width: 4 }] }, /device\.config: registers at 0x40-0x43 overlap the pm capability at 0x40/],
    [{ ...base, capabilities: [{ id: 'msix' }] }, /device\.capabilities\[0\]\.id: "msix" is not "pm", "pcie" or "vendor"/],
    [{ ...base, interrupts: { msi: 3 } }, /device\.interrupts\.msi: 3 vectors/],
    [{ identity: { vendorId: 1 } }, /device\.identity\.deviceId: must be a non-negative integer/],
    [{ ...base, bars: [{ index: 0, size: 16, registers: [{ name: 'r', offset: 0, width: 1, reset: 256 }] }] }, /register r: reset 0x100 does not fit in 1 bytes/],
  ];
  for (const [device, message] of cases) assert.throws(() => build({ version: 1, device }), message, JSON.stringify(device));
});

test('config registers of a Python program: the guest writes, the program hears it, the program sets what the guest reads', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-cfg-'));
  const program = [
    'from muser import Device, Identity, Register, capability',
    'def written(value, device):',
    '    device.log(f"cfg written {value:#x}")',
    '    device.set_register("status", value & 0xff)',
    'Device(Identity(vendor_id=0x1234, device_id=0xC0F0), name="cfg", capabilities=[capability("pm")], config=[',
    '    Register("knob", offset=0xE0, width=4, writable=0xFFFF, write=written),',
    '    Register("status", offset=0xE4, width=1, access="ro"),',
    ']).serve()',
  ].join('\n');
  const lines: string[] = [];
  const log = { debug: () => {}, info: (m: string) => void lines.push(m), warn: (m: string) => void lines.push(m), error: (m: string) => void lines.push(m) };
  const p = await startDeviceProgram({ command: ['python3', '-c', program], log });
  const server = serve(p.device, join(dir, 'cfg.sock'), { log: 'silent' });
  const client = await Client.connect(join(dir, 'cfg.sock'));
  try {
    await client.regionWrite(CONFIG, 0xe0, Buffer.from([0x34, 0x12, 0xff, 0xff]));
    assert.equal((await client.regionRead(CONFIG, 0xe0, 4)).readUInt32LE(0), 0x1234, 'only the writable bits stored');
    const deadline = Date.now() + 5000;
    while ((await client.regionRead(CONFIG, 0xe4, 1))[0] !== 0x34) {
      assert.ok(Date.now() < deadline, 'the program never set status');
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(lines, ['cfg written 0x1234']);
    assert.equal((await client.regionRead(CONFIG, 0xe0, 2)).readUInt16LE(0), 0x1234, 'narrow reads of config registers');
  } finally {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a device program in C with no library (test/fixtures/programs/minimal.c): muser run serves it, muser check passes', async (t) => {
  if (spawnSync('cc', ['--version']).status !== 0) return t.skip('no C compiler (cc)');
  const dir = mkdtempSync(join(tmpdir(), 'muser-c-'));
  const exe = join(dir, 'minimal');
  const cc = spawnSync('cc', ['-O1', '-Wall', '-Werror', '-o', exe, join(REPO, 'test/fixtures/programs/minimal.c')], { encoding: 'utf8' });
  assert.equal(cc.status, 0, cc.stderr);
  const sock = join(dir, 'minimal.sock');
  const server = await startServer([MAIN, 'run', exe, sock], sock, `on ${sock}`, 'muser run minimal');
  try {
    const client = await Client.connect(sock);
    assert.equal((await client.regionRead(CONFIG, 0, 4)).readUInt32LE(0), 0xc0de_1234);
    assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 0x600dc0de);
    await client.regionWrite(0, 4, Buffer.from([0x78, 0x56, 0x34, 0x12]));
    assert.equal((await client.regionRead(0, 4, 4)).readUInt32LE(0), 0x12345678);
    assert.equal((await client.regionRead(0, 6, 2)).readUInt16LE(0), 0x1234, 'muser slices a narrow read of a program register');
    client.close();
    const checked = await runCli(['check', sock]);
    assert.equal(checked.code, 0, `muser check failed:\n${checked.stdout}${checked.stderr}`);
    assert.doesNotMatch(server.stderr, /error|device program/, 'no error (muser check provokes warnings of its own)');
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
