// Migration is explicit where muser cannot see a device's state: the
// README's counter (its count in `state`) migrates with its count; a device
// with callbacks and no word on migration is not offered for it at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineRegisters, serve, type DeviceSpec } from '../src/index.js';
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
    ['a register map without hooks (its values migrate)', tableOnly(), true],
    ['a register map with a hook', { ...tableOnly(), bars: { 0: defineRegisters([{ name: 'r', offset: 0, width: 4, read: () => 1 }]).bar({ size: 4096 }) } }, false],
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

/** A device whose state lives only in its register tables: no hooks, no `state`, no word on migration. */
function tableOnly(): DeviceSpec {
  return {
    identity: { vendorId: 0x1af4, deviceId: 0x10f6, classCode: 0xff0000 },
    bars: {
      0: defineRegisters([
        { name: 'scratch', offset: 0, width: 4 },
        { name: 'status', offset: 4, width: 2, access: 'rw1c', reset: 0xff },
        { name: 'address', offset: 8, width: 8 },
        { name: 'ram', offset: 0x10, size: 8 },
      ]).bar({ size: 4096 }),
    },
    configRegisters: defineRegisters([{ name: 'vendor_scratch', offset: 0x40, width: 4 }]),
  };
}

test('register values that live only in the tables migrate, in BARs and config space', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-'));
  const src = serve(tableOnly(), join(dir, 'src.sock'), { log: 'silent' });
  const dst = serve(tableOnly(), join(dir, 'dst.sock'), { log: 'silent' });
  const a = await Client.connect(src.path);
  const b = await Client.connect(dst.path);
  try {
    await a.regionWrite(0, 0, le32(0xcafef00d));
    await a.regionWrite(0, 4, Buffer.from([0x0f, 0x00])); // clears the low four status bits
    await a.regionWrite(0, 8, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]));
    await a.regionWrite(0, 0x10, Buffer.from('muser!!!'));
    await a.regionWrite(7, 0x40, le32(0x12345678));
    await migrate(a, b);
    assert.equal((await b.regionRead(0, 0, 4)).readUInt32LE(0), 0xcafef00d);
    assert.equal((await b.regionRead(0, 4, 2)).readUInt16LE(0), 0xf0, 'rw1c status as the source left it');
    assert.equal((await b.regionRead(0, 8, 8)).readBigUInt64LE(0), 0x0807060504030201n);
    assert.equal((await b.regionRead(0, 0x10, 8)).toString(), 'muser!!!', 'a memory-backed block too');
    assert.equal((await b.regionRead(7, 0x40, 4)).readUInt32LE(0), 0x12345678, 'config registers too');
  } finally {
    a.close();
    b.close();
    src.close();
    dst.close();
  }
});
