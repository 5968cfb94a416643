// Run-time validation of a DeviceSpec (papercut 4): device files run through
// tsx are never type-checked, so every mistake below once passed silently or
// with a misleading message. Each must now name the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device, defineRegisters, type DeviceSpec } from '../src/index.js';
import { runCli } from './helpers/timer-process.js';

const identity = { vendorId: 0x1234, deviceId: 0x0001 };

/** Builds a device from something a JS device file could export, expecting `error`. */
function refused(spec: unknown, error: RegExp, type: typeof TypeError | typeof RangeError = TypeError): void {
  assert.throws(() => new Device(spec as DeviceSpec), (e: Error) => {
    assert.ok(e instanceof type, `${e.name}: ${e.message}`);
    assert.match(e.message, error);
    return true;
  });
}

test("a register's access typo ('r') is refused, listing the access types", () => {
  const entries = [{ name: 'ctrl', offset: 0, width: 4, access: 'r' }];
  assert.throws(() => defineRegisters(entries as never), /register ctrl: access 'r' is not one of 'ro' \| 'rw' \| 'wo' \| 'rw1c' \| 'rc'/);
  assert.throws(() => defineRegisters([{ name: 'x', offset: 0, width: 4, wirtable: 1 }] as never), /register x: unknown field 'wirtable'/);
});

test('BAR index 6 is refused, pointing to regions', () => {
  refused({ identity, bars: { 6: { size: 4096 } } }, /bars\[6\]: BAR index 6 is not 0-5 .*regions/, RangeError);
  refused({ identity, bars: { 0: { size: 4096, kind: 'mem' } } }, /bars\[0\]\.kind: 'mem' is not one of 'memory' \| 'io'/, RangeError);
  refused({ identity, bars: { 0: { size: '4096' } } }, /bars\[0\]\.size: must be an integer/);
});

test('an MSI-X table placed over registers in the same BAR is refused, naming the register', () => {
  const registers = defineRegisters([{ name: 'doorbell', offset: 0x10, width: 4 }]);
  refused(
    { identity, bars: { 0: registers.bar({ size: 4096 }) }, interrupts: { msix: { vectors: 4, bar: 0 } } },
    /interrupts\.msix: the MSI-X table \(0x0-0x3f in BAR0\) would shadow register doorbell/,
    RangeError,
  );
  // Clear of the registers it is fine.
  new Device({ identity, bars: { 0: registers.bar({ size: 4096 }) }, interrupts: { msix: { vectors: 4, bar: 0, tableOffset: 0x800 } } }).dispose();
});

test('a string vendorId names identity.vendorId', () => {
  refused({ identity: { vendorId: '0x1234', deviceId: 1 } }, /identity\.vendorId: must be an integer \(a number, not a string/);
});

test("capabilities: { id: 'msix' } points to interrupts.msix; { id: 'agp' } lists the valid ids", () => {
  refused({ identity, capabilities: [{ id: 'msix' }] }, /capabilities\[0\]: MSI-X is declared with interrupts\.msix/);
  refused({ identity, capabilities: [{ id: 'pm' }, { id: 'agp' }] }, /capabilities\[1\]\.id: 'agp' is not one of 'pm' \| 'pcie' \| 'vendor'/, RangeError);
  refused({ identity, extendedCapabilities: [{ id: 'aer' }] }, /extendedCapabilities\[0\]\.id: 'aer' is not one of 'dsn' \| 'vendor'/, RangeError);
});

test('unknown fields and wrong types are named', () => {
  refused({ identity, interupts: { msix: 1 } }, /DeviceSpec: unknown field 'interupts'/);
  refused({ identity, interrupts: { msi: 3 } }, /interrupts\.msi: 3 is not a vector count/, RangeError);
  refused({ identity, onReset: 'reset' }, /onReset: must be a function/);
  refused('spec', /a DeviceSpec must be an object/);
  refused({ identity, checkpointFreeWrites: { region: 0 } }, /checkpointFreeWrites: must be an array of \{ region, offset, length \}/);
  refused({ identity, checkpointFreeWrites: [{ region: 0, offset: '0x1000', length: 4 }] }, /checkpointFreeWrites\[0\]\.offset: must be an integer \(a number, not a string/);
});

test('muser run: a device file with a string vendorId gets the field, not "must be a DeviceSpec"', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-validate-'));
  try {
    const file = join(dir, 'dev.mjs');
    writeFileSync(file, "export default { identity: { vendorId: '0x1234', deviceId: 1 } };\n");
    const r = await runCli(['run', file, join(dir, 's.sock')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /identity\.vendorId: must be an integer/);
    assert.doesNotMatch(r.stderr, /must be a DeviceSpec/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
