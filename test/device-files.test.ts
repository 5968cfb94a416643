// Device files as a newcomer writes them (papercuts 1 and 2): a file that
// calls serve() itself, a file without a default export, a file outside
// any project that depends on muser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/timer-process.js';

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
