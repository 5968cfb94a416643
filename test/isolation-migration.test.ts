// Migration is explicit where muser cannot see a device's state: the
// README's counter (its count in `state`) migrates with its count; a device
// with callbacks and no word on migration is not offered for it at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type DeviceSpec } from '../src/index.js';
import { Client, ClientError } from '../src/client/index.js';
import { migrate, migrationFlags } from '../src/client/migrate.js';
import { counterDevice } from '../src/samples/counter.js';
import { le32 } from './helpers/bytes.js';

const ENOTSUP = 95;

test("the README's counter migrates with its count", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-'));
  const src = serve(counterDevice(), join(dir, 'src.sock'), { log: 'silent' });
  const dst = serve(counterDevice(), join(dir, 'dst.sock'), { log: 'silent' });
  const a = await Client.connect(src.path);
  const b = await Client.connect(dst.path);
  try {
    await a.regionWrite(0, 4, le32(5));
    await a.regionWrite(0, 4, le32(37));
    assert.equal((await a.regionRead(0, 0, 4)).readUInt32LE(0), 42);
    assert.equal((await b.regionRead(0, 0, 4)).readUInt32LE(0), 0);
    await migrate(a, b);
    assert.equal((await b.regionRead(0, 0, 4)).readUInt32LE(0), 42, 'the count arrived');
    await b.regionWrite(0, 4, le32(1));
    assert.equal((await b.regionRead(0, 0, 4)).readUInt32LE(0), 43, 'and keeps counting there');
  } finally {
    a.close();
    b.close();
    src.close();
    dst.close();
  }
});

/** A device whose state is a closure variable: invisible to muser. */
function closureCounter(migration?: DeviceSpec['migration']): DeviceSpec {
  let count = 0;
  return {
    identity: { vendorId: 0x1af4, deviceId: 0x10f4, classCode: 0xff0000 },
    bars: { 0: { size: 4096, read: () => count, write: (_o, d) => void (count += d.readUInt32LE(0)) } },
    ...(migration === undefined ? {} : { migration }),
  };
}

test('hidden state must say how to migrate: not offered (in VERSION or DEVICE_FEATURE) unless it does', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-'));
  const cases: [string, DeviceSpec, boolean][] = [
    ['callbacks, no state, no migration', closureCounter(), false],
    ['callbacks with migration: {} (the default, knowingly)', closureCounter({}), true],
    ['callbacks with migration: false', closureCounter(false), false],
    ['callbacks with a state object', { ...closureCounter(), state: { count: 0 } }, true],
    ['memory only', { identity: { vendorId: 0x1af4, deviceId: 0x10f5, classCode: 0xff0000 }, bars: { 0: { size: 4096, memory: true } } }, true],
  ];
  for (const [i, [what, spec, offered]] of cases.entries()) {
    const server = serve(spec, join(dir, `${i}.sock`), { log: 'silent' });
    const c = await Client.connect(server.path);
    try {
      // VERSION advertises migration exactly when the device offers it: a client plans by it.
      assert.equal(c.server.migration !== undefined, offered, `${what}: VERSION's migration capability`);
      if (offered) assert.ok((await migrationFlags(c)) !== 0, what);
      else await assert.rejects(migrationFlags(c), (e) => e instanceof ClientError && e.errno === ENOTSUP, what);
      if (!offered && spec.migration === undefined) assert.match(server.migration.unavailable ?? '', /BAR0 served by callbacks/);
    } finally {
      c.close();
      server.close();
    }
  }
});
