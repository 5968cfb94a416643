// `muser run` with the user's own device files (JS, TS through tsx, sync or
// async factories), several devices in one process, and a config file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, closeFd } from '../src/client/index.js';
import { parseRunArgs } from '../src/cli/run/index.js';
import { UsageError } from '../src/cli/usage.js';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';

/** The fixture compiled (dist/test/fixtures) and as written (test/fixtures, for tsx). */
const FIXTURE_JS = fileURLToPath(new URL('./fixtures/my-device.js', import.meta.url));
const FIXTURE_TS = fileURLToPath(new URL('../../test/fixtures/my-device.ts', import.meta.url));

/** Vendor and device id from config space. */
async function ids(path: string): Promise<[number, number]> {
  const c = await Client.connect(path);
  try {
    const id = await c.regionRead(7, 0, 4);
    return [id.readUInt16LE(0), id.readUInt16LE(2)];
  } finally {
    c.close();
  }
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'muser-run-'));
}

test('run: a sample, a JS device file with an option, and a TS device file, all from one process', async () => {
  const dir = tempDir();
  const plain = join(dir, 'plain.mjs');
  // A default export that is a DeviceSpec itself (no factory).
  writeFileSync(plain, 'export default { identity: { vendorId: 0xabcd, deviceId: 0x0002 }, bars: { 0: { size: 4096, memory: true } } };\n');
  const socks = ['a', 'b', 'c', 'd'].map((n) => join(dir, `${n}.sock`));
  try {
    const args = [MAIN, 'run', 'counter', socks[0], FIXTURE_JS, socks[1], '--id=0x42', FIXTURE_TS, socks[2], '--id=0x43', plain, socks[3]];
    const server = await startServer(args, socks[3], `on ${socks[3]}`, 'muser run');
    assert.match(server.stderr, /serving counter on /);
    assert.match(server.stderr, /serving my-device from .*my-device\.js on /);
    assert.deepEqual(await ids(socks[0]), [0x1af4, 0x10ff]);
    assert.deepEqual(await ids(socks[1]), [0x1234, 0x42]);
    assert.deepEqual(await ids(socks[2]), [0x1234, 0x43]);
    assert.deepEqual(await ids(socks[3]), [0xabcd, 0x0002]);
    // The device file's BAR works too.
    const c = await Client.connect(socks[2]);
    await c.regionWrite(0, 0, Buffer.from([7, 0, 0, 0]));
    assert.equal((await c.regionRead(0, 0, 4)).readUInt32LE(0), 7);
    c.close();
    const exited = new Promise<number | null>((resolve) => server.child.once('exit', (code) => resolve(code)));
    server.child.kill('SIGTERM');
    assert.equal(await exited, 0);
    for (const s of socks) assert.equal(existsSync(s), false, `${s} removed`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('run --config: devices, sockets and options from a JSON file, paths relative to it', async () => {
  const dir = tempDir();
  try {
    writeFileSync(
      join(dir, 'devices.json'),
      JSON.stringify({ devices: [{ device: 'counter', socket: 'one.sock' }, { device: FIXTURE_JS, socket: 'two.sock', options: { id: '0x99' } }] }),
    );
    const two = join(dir, 'two.sock');
    const server = await startServer([MAIN, 'run', '--config', join(dir, 'devices.json')], two, `on ${two}`, 'muser run --config');
    assert.deepEqual(await ids(join(dir, 'one.sock')), [0x1af4, 0x10ff]);
    assert.deepEqual(await ids(two), [0x1234, 0x99]);
    await server.stop();
    assert.equal(existsSync(two), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('run: a device file without a device, or missing, fails with a message and leaves no socket', async () => {
  const dir = tempDir();
  try {
    const bad = join(dir, 'bad.mjs');
    writeFileSync(bad, 'export default () => ({ name: "no identity" });\n');
    const throws = join(dir, 'throws.mjs');
    writeFileSync(throws, 'export default async () => { throw new Error("factory says no"); };\n');
    for (const [file, message] of [
      [bad, /has a default export that is not a DeviceSpec. A device file for muser run exports the device/],
      [throws, /factory says no/],
      [join(dir, 'missing.js'), /no such file/],
    ] as const) {
      const sock = join(dir, 'x.sock');
      const r = await runCli(['run', 'counter', join(dir, 'ok.sock'), file, sock]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(existsSync(sock), false);
      assert.equal(existsSync(join(dir, 'ok.sock')), false, 'the device started before it is closed again');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('run arguments: options follow their device; malformed lines are usage errors', () => {
  assert.deepEqual(parseRunArgs(['counter', 'a.sock', '-v', './d.js', 'b.sock', '--image=x.img', '--ro']), {
    verbose: true,
    devices: [
      { device: 'counter', socket: 'a.sock', options: {} },
      { device: './d.js', socket: 'b.sock', options: { image: 'x.img', ro: true } },
    ],
  });
  for (const bad of [
    ['--image=x', 'counter', 'a.sock'], // option before any device
    ['counter'], // no socket
    ['counter', 'a.sock', 'gpio'], // second device without socket
    ['counter', 'a.sock', 'gpio', 'a.sock'], // one socket twice
    ['counter', 'a.sock', '--no-such-option'], // samples declare their options
    ['nosuch', 'a.sock'],
    ['counter', 'a.sock', '--config', 'x.json'],
    ['counter', 'a.sock', '-x'],
  ]) {
    assert.throws(() => parseRunArgs(bad), UsageError, bad.join(' '));
  }
});

test('run: doorbells in mapped memory without --poll are served, with a hint; with --poll, no hint', async () => {
  const dir = tempDir();
  const sock = join(dir, 'nvme.sock');
  try {
    for (const poll of [false, true]) {
      const server = await startServer([MAIN, 'run', 'nvme', sock, '--size', '1M', '--mmap-doorbells', ...(poll ? ['--poll'] : [])], sock, `on ${sock}`, 'muser run');
      try {
        const hint = /nvme has doorbells in mapped memory and no --poll: each is seen on a timer, up to 1 ms late \(add --poll\)/;
        if (poll) assert.doesNotMatch(server.stderr, hint);
        else assert.match(server.stderr, hint);
        const c = await Client.connect(sock);
        const info = await c.regionInfo(0);
        assert.ok(info.fd !== undefined, 'BAR0 comes with its fd: the doorbell page is mappable');
        closeFd(info.fd);
        c.close();
      } finally {
        await server.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
