// Memory-backed regions the client maps, under --isolate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startIsolated, tempDir, writeDeviceFile } from './helpers/isolated.js';

test('isolate: a device with memory the client can map is warned about at start; one without is not', async () => {
  const dir = tempDir();
  try {
    const mapped = join(dir, 'mapped.mjs');
    writeFileSync(
      mapped,
      `export default () => ({
  name: 'mapped', identity: { vendorId: 0x1234, deviceId: 0x4243 },
  bars: { 2: { size: 8192, memory: true }, 0: { size: 4096, memory: { mmap: [] } } },
});
`,
    );
    const warned: string[] = [];
    const log = { debug: () => {}, info: () => {}, warn: (m: string) => warned.push(m), error: (m: string) => warned.push(m) };
    const server = await startIsolated(mapped, dir, { log, spare: false });
    server.close();
    assert.equal(warned.length, 1, warned.join('\n'));
    assert.match(warned[0], /^region 2 has memory the client maps: after a crash or a reload the successor serves new memory/);

    warned.length = 0;
    const plain = await startIsolated(writeDeviceFile(dir, { version: 1 }), dir, { log, spare: false }, 'plain.sock');
    plain.close();
    assert.deepEqual(warned, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
