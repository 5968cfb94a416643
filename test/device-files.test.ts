// Device files as a newcomer writes them (papercuts 1 and 2): a file that
// calls serve() itself, a file without a default export, a file outside
// any project that depends on muser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { MAIN, runCli, startServer } from './helpers/timer-process.js';

/** muser's entry point, as a URL a file anywhere can import. */
const MUSER = new URL('../src/index.js', import.meta.url).href;

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'muser-devfile-'));
}

test('muser run on a file that calls serve() itself fails, stops what it started, and shows a device file', async () => {
  const dir = tempDir();
  try {
    const own = join(dir, 'own.sock');
    const file = join(dir, 'counter.mjs');
    // Like the README's counter as a script: serve() at import, no default export, and a timer.
    writeFileSync(
      file,
      `import { serve } from '${MUSER}';\n` +
        `const server = serve({ identity: { vendorId: 0x1234, deviceId: 1 } }, ${JSON.stringify(own)});\n` +
        `setInterval(() => {}, 1000);\n` +
        `process.once('SIGINT', () => server.close());\n`,
    );
    const r = await runCli(['run', file, join(dir, 'given.sock')]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /called serve\(\) itself \(on .*own\.sock; stopped\)/);
    assert.match(r.stderr, /export default function myDevice\(options: \{ verbose: boolean \}\): DeviceSpec/);
    assert.match(r.stderr, /device-files\.md/);
    assert.equal(existsSync(own), false, 'the socket the file opened is removed');
    assert.equal(existsSync(join(dir, 'given.sock')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('muser run on a file without a default export says so and shows a device file', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'none.mjs');
    writeFileSync(file, 'export const spec = { identity: { vendorId: 0x1234, deviceId: 1 } };\n');
    const r = await runCli(['run', file, join(dir, 's.sock')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /none\.mjs has no default export\. A device file for muser run exports the device/);
    assert.match(r.stderr, /return \{ identity: \{ vendorId: 0x1234/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A device file importing both of muser's entry points by their bare names. */
const OUTSIDE_DEVICE = `import { defineRegisters } from 'muser';
import { Client } from 'muser/client';
const registers = defineRegisters([{ name: 'id', offset: 0, width: 4, access: 'ro', reset: 0xfeed }]);
export default () => ({ name: typeof Client === 'function' ? 'outside' : 'no-client', identity: { vendorId: 0x1234, deviceId: 0x77 }, bars: { 0: registers.bar({ size: 4096 }) } });
`;

test("muser run serves device files outside any project: 'muser' resolves to the running muser (JS, and TS as CommonJS)", async () => {
  const dir = tempDir();
  try {
    const js = join(dir, 'dev.mjs');
    const ts = join(dir, 'dev.ts'); // no package.json around it: tsx runs it as CommonJS
    writeFileSync(js, OUTSIDE_DEVICE);
    writeFileSync(ts, OUTSIDE_DEVICE);
    const socks = [join(dir, 'a.sock'), join(dir, 'b.sock')];
    const server = await startServer([MAIN, 'run', js, socks[0], ts, socks[1]], socks[1], `on ${socks[1]}`, 'muser run');
    try {
      assert.match(server.stderr, /serving outside from .*dev\.mjs/);
      assert.match(server.stderr, /serving outside from .*dev\.ts/);
      for (const s of socks) {
        const c = await Client.connect(s);
        assert.equal((await c.regionRead(0, 0, 4)).readUInt32LE(0), 0xfeed);
        c.close();
      }
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a TypeScript device file outside any project that calls serve() is stopped too (ESM and CommonJS)', async () => {
  const dir = tempDir();
  try {
    for (const name of ['self.mts', 'self.ts']) {
      const own = join(dir, `${name}.sock`);
      const file = join(dir, name);
      writeFileSync(file, `import { serve } from 'muser';\nserve({ identity: { vendorId: 0x1234, deviceId: 1 } }, ${JSON.stringify(own)});\n`);
      const r = await runCli(['run', file, join(dir, 'given.sock')]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /called serve\(\) itself/);
      assert.equal(existsSync(own), false, `${name}: its socket is removed`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
