import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  ConfigSpace,
  PciCommand,
  PciConfigError,
  PciHeader,
  PciStatus,
  type ConfigSpaceDescription,
} from '../src/pci/index.js';
import { record, u16, u32, u8, w16, w32 } from './helpers/config-access.js';

const identity = { vendorId: 0x1af4, deviceId: 0x1234, subsystemVendorId: 0x1b36, subsystemId: 0x0042, classCode: 0x020000, revision: 0x05 };

/** A device with one of each BAR kind. */
function device(extra: Partial<ConfigSpaceDescription> = {}): ConfigSpace {
  return new ConfigSpace({
    identity,
    bars: [
      { kind: 'memory', size: 4096 },
      { kind: 'memory', size: 0x100000, is64: true, prefetchable: true },
      undefined,
      { kind: 'io', size: 32 },
      { kind: 'memory', size: 8 * 2 ** 30, is64: true },
    ],
    interruptPin: 1,
    ...extra,
  });
}

/** Asserts `fn` throws a PciConfigError with errno 22 whose message matches. */
function throwsEinval(fn: () => unknown, message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PciConfigError, `expected PciConfigError, got ${String(e)}`);
    assert.equal(e.errno, 22);
    if (message) assert.match(e.message, message);
    return true;
  });
}

describe('pci config header', () => {
  it('reports identity registers', () => {
    const c = device();
    assert.equal(c.size, 256);
    assert.equal(u16(c, PciHeader.VENDOR_ID), 0x1af4);
    assert.equal(u16(c, PciHeader.DEVICE_ID), 0x1234);
    assert.equal(u8(c, PciHeader.REVISION_ID), 0x05);
    assert.equal(u32(c, 0x08) >>> 8, 0x020000);
    assert.equal(u8(c, PciHeader.HEADER_TYPE), 0);
    assert.equal(u16(c, PciHeader.SUBSYSTEM_VENDOR_ID), 0x1b36);
    assert.equal(u16(c, PciHeader.SUBSYSTEM_ID), 0x0042);
    assert.equal(u8(c, PciHeader.INTERRUPT_PIN), 1);
    assert.equal(u8(c, PciHeader.CAPABILITY_LIST), 0);
    assert.equal(u16(c, PciHeader.STATUS) & PciStatus.CAP_LIST, 0);
  });

  it('ignores writes to read-only fields', () => {
    const c = device();
    const before = c.read(0, 256);
    for (const off of [0x00, 0x08, 0x28, 0x2c, 0x30, 0x34, 0x38, 0x3c]) w32(c, off, 0xffffffff);
    for (let off = 0x40; off < 0x100; off += 4) w32(c, off, 0xffffffff);
    const after = c.read(0, 256);
    for (const off of [0, 1, 2, 3, 8, 9, 10, 11, 0x0e, 0x0f, 0x2c, 0x2d, 0x2e, 0x2f, 0x34, 0x3d, 0x3e, 0x3f]) {
      assert.equal(after[off], before[off], `byte 0x${off.toString(16)} changed`);
    }
    assert.equal(u32(c, PciHeader.ROM_ADDRESS), 0, 'no expansion ROM');
    assert.equal(u32(c, 0x40), 0, 'space after the header stays zero');
  });

  it('keeps only the writable command bits', () => {
    const c = device();
    const events = record(c);
    w16(c, PciHeader.COMMAND, 0xffff);
    assert.equal(u16(c, PciHeader.COMMAND), PciCommand.WRITABLE);
    assert.equal(c.command, 0x0547);
    assert.ok(c.intxDisabled);
    assert.deepEqual(events, [{ type: 'command', value: 0x0547, previous: 0 }]);
    w16(c, PciHeader.COMMAND, PciCommand.MEMORY | PciCommand.MASTER);
    assert.equal(c.intxDisabled, false);
    assert.equal(u16(c, PciHeader.COMMAND), 0x0006);
  });

  it('clears status error bits on write-one and keeps other bits', () => {
    const c = device();
    c.setStatusError(PciStatus.REC_MASTER_ABORT | PciStatus.SIG_TARGET_ABORT | PciStatus.CAP_LIST);
    assert.equal(u16(c, PciHeader.STATUS), 0x2800, 'only RW1C bits can be raised');
    w16(c, PciHeader.STATUS, 0);
    assert.equal(u16(c, PciHeader.STATUS), 0x2800, 'writing zero keeps them');
    w16(c, PciHeader.STATUS, PciStatus.REC_MASTER_ABORT | PciStatus.CAP_LIST | PciStatus.INTERRUPT);
    assert.equal(u16(c, PciHeader.STATUS), 0x0800, 'one clears only the written bit');
  });

  it('mirrors the INTx condition in status bit 3', () => {
    const c = device();
    c.setIntxPending(true);
    assert.ok(c.intxPending);
    assert.equal(u16(c, PciHeader.STATUS) & PciStatus.INTERRUPT, PciStatus.INTERRUPT);
    w16(c, PciHeader.STATUS, 0xffff);
    assert.equal(u16(c, PciHeader.STATUS) & PciStatus.INTERRUPT, PciStatus.INTERRUPT, 'not writable');
    c.setIntxPending(false);
    assert.equal(u16(c, PciHeader.STATUS), 0);
  });

  it('lets software set cache line, latency timer and interrupt line', () => {
    const c = device();
    c.write(PciHeader.CACHE_LINE_SIZE, Buffer.from([0x10, 0x40]));
    c.write(PciHeader.INTERRUPT_LINE, Buffer.from([0x0b, 0x04]));
    assert.equal(u8(c, PciHeader.CACHE_LINE_SIZE), 0x10);
    assert.equal(u8(c, PciHeader.LATENCY_TIMER), 0x40);
    assert.equal(u8(c, PciHeader.INTERRUPT_LINE), 0x0b);
    assert.equal(u8(c, PciHeader.INTERRUPT_PIN), 1);
  });

  it('applies a write spanning several fields byte by byte', () => {
    const c = device();
    c.setStatusError(PciStatus.DETECTED_PARITY);
    c.write(0x03, Buffer.from([0xff, 0x02, 0x00, 0x00, 0x80]));
    assert.equal(u16(c, PciHeader.DEVICE_ID), 0x1234);
    assert.equal(c.command, PciCommand.MEMORY);
    assert.equal(u16(c, PciHeader.STATUS), 0, 'status high byte write cleared the parity bit');
    assert.equal(u8(c, PciHeader.REVISION_ID), 5);
  });
});

describe('pci BARs', () => {
  it('sizes a 32-bit memory BAR and keeps the aligned address', () => {
    const c = device();
    assert.equal(u32(c, 0x10), 0x0);
    w32(c, 0x10, 0xffffffff);
    assert.equal(u32(c, 0x10), 0xfffff000);
    w32(c, 0x10, 0xfebf1234);
    assert.equal(u32(c, 0x10), 0xfebf1000);
    assert.equal(c.barAddress(0), 0xfebf1000n);
  });

  it('sizes a prefetchable 64-bit BAR in both halves', () => {
    const c = device();
    assert.equal(u32(c, 0x14), 0x0c, 'type bits: 64-bit prefetchable');
    w32(c, 0x14, 0xffffffff);
    w32(c, 0x18, 0xffffffff);
    assert.equal(u32(c, 0x14), 0xfff0000c);
    assert.equal(u32(c, 0x18), 0xffffffff);
    w32(c, 0x14, 0xe0000000);
    w32(c, 0x18, 0x00000001);
    assert.equal(c.barAddress(1), 0x1_e000_0000n);
    assert.equal(c.barAddress(2), undefined, 'upper half is not a BAR of its own');
  });

  it('sizes a 64-bit BAR larger than 4 GiB through its upper dword', () => {
    const c = device();
    w32(c, 0x20, 0xffffffff);
    w32(c, 0x24, 0xffffffff);
    assert.equal(u32(c, 0x20), 0x00000004);
    assert.equal(u32(c, 0x24), 0xfffffffe);
  });

  it('sizes an I/O BAR', () => {
    const c = device();
    assert.equal(u32(c, 0x1c), 0x1);
    w32(c, 0x1c, 0xffffffff);
    assert.equal(u32(c, 0x1c), 0xffffffe1);
    w32(c, 0x1c, 0xc043);
    assert.equal(c.barAddress(3), 0xc040n);
  });

  it('reads unimplemented BARs and the ROM BAR as zero', () => {
    const c = new ConfigSpace({ identity });
    for (let off = 0x10; off <= 0x24; off += 4) {
      w32(c, off, 0xffffffff);
      assert.equal(u32(c, off), 0);
    }
    w32(c, PciHeader.ROM_ADDRESS, 0xffffffff);
    assert.equal(u32(c, PciHeader.ROM_ADDRESS), 0);
    assert.equal(c.barAddress(0), undefined);
  });

  it('reports BAR address changes as events', () => {
    const c = device();
    const events = record(c);
    w32(c, 0x10, 0xfebf0000);
    w32(c, 0x10, 0xfebf0000);
    assert.deepEqual(events, [{ type: 'bar', index: 0, address: 0xfebf0000n }]);
  });
});

describe('pci config access checks', () => {
  it('rejects accesses outside config space with errno 22', () => {
    const c = device();
    throwsEinval(() => c.read(255, 2));
    throwsEinval(() => c.read(-1, 1));
    throwsEinval(() => c.read(0, 257));
    throwsEinval(() => c.read(1.5, 1));
    throwsEinval(() => c.write(256, Buffer.from([0])));
    throwsEinval(() => c.write(254, Buffer.alloc(4)));
    assert.equal(c.read(0, 256).length, 256);
    assert.equal(c.read(256, 0).length, 0);
  });

  it('uses 4096 bytes for PCIe functions', () => {
    const c = device({ capabilities: [{ id: 'pcie' }] });
    assert.equal(c.size, 4096);
    assert.equal(u32(c, 0x100), 0, 'empty extended list');
    assert.equal(c.read(0xffc, 4).length, 4);
    throwsEinval(() => c.read(0xffd, 4));
  });
});

describe('pci config hooks', () => {
  it('lets hooks override reads and consume writes', () => {
    const seen: [number, number[]][] = [];
    const c = device({
      hooks: {
        read: (off, len) => (off === 0x40 ? Buffer.alloc(len, 0xab) : undefined),
        write: (off, data) => {
          seen.push([off, [...data]]);
          return off === 0x04;
        },
      },
    });
    assert.deepEqual([...c.read(0x40, 2)], [0xab, 0xab]);
    assert.equal(u16(c, 0), 0x1af4);
    w16(c, 0x04, 0x0006);
    assert.equal(c.command, 0, 'consumed by the hook');
    c.write(0x3c, Buffer.from([9]));
    assert.equal(u8(c, 0x3c), 9, 'not consumed: standard handling');
    assert.deepEqual(seen, [[0x04, [6, 0]], [0x3c, [9]]]);
  });

  it('turns a read hook returning the wrong length into EIO', () => {
    const c = device({ hooks: { read: () => Buffer.alloc(1) } });
    assert.throws(() => c.read(0, 4), (e: unknown) => e instanceof PciConfigError && e.errno === 5);
  });
});

describe('pci reset and snapshot', () => {
  it('reset() returns to power-on state and reports it', () => {
    const c = device({ capabilities: [{ id: 'msi', vectors: 4 }] });
    const powerOn = c.read(0, 256);
    w16(c, 0x04, 0x0406);
    w32(c, 0x10, 0xfebf0000);
    c.write(0x3c, Buffer.from([11]));
    w16(c, 0x42, 0x0021);
    c.setIntxPending(true);
    const events = record(c);
    c.reset();
    assert.deepEqual(c.read(0, 256), powerOn);
    assert.equal(c.intxPending, false);
    assert.deepEqual(events, [
      { type: 'command', value: 0, previous: 0x0406 },
      { type: 'bar', index: 0, address: 0n },
      { type: 'msi', enabled: false, vectors: 0 },
    ]);
  });

  it('round-trips state through snapshot() and restore()', () => {
    const desc: ConfigSpaceDescription = {
      identity,
      bars: [{ kind: 'memory', size: 0x4000 }],
      capabilities: [{ id: 'pcie' }, { id: 'msix', vectors: 8, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x2000 }],
      extendedCapabilities: [{ id: 'dsn', serial: 0x0102030405060708n }],
    };
    const a = new ConfigSpace(desc);
    w16(a, 0x04, 0x0006);
    w32(a, 0x10, 0xfe000000);
    w16(a, a.findCapability('msix')!.offset + 2, 0xc007);
    a.msix!.write(0x10, Buffer.from([0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0, 0x41, 0, 0, 0]));
    a.msix!.setPending(3, true);
    a.setIntxPending(true);
    const snap = a.snapshot();

    const b = new ConfigSpace(desc);
    const events = record(b);
    b.restore(snap);
    assert.deepEqual(b.read(0, 4096), a.read(0, 4096));
    assert.deepEqual(b.msix!.read(0, 128), a.msix!.read(0, 128));
    assert.ok(b.msix!.isPending(3));
    assert.ok(b.msixEnabled && b.msixFunctionMasked && b.intxPending);
    assert.deepEqual(b.snapshot(), snap);
    assert.deepEqual(events, [
      { type: 'command', value: 6, previous: 0 },
      { type: 'bar', index: 0, address: 0xfe000000n },
      { type: 'msix', enabled: true, functionMask: true },
    ]);
  });

  it('refuses snapshots of another device or malformed ones', () => {
    const a = device();
    const snap = a.snapshot();
    const other = new ConfigSpace({ ...{ identity: { ...identity, deviceId: 0x9999 } }, bars: [{ kind: 'memory', size: 4096 }] });
    throwsEinval(() => other.restore(snap), /different device/);
    throwsEinval(() => a.restore(snap.subarray(0, 100)), /too short/);
    const bad = Buffer.from(snap);
    bad[0] = 0;
    throwsEinval(() => a.restore(bad), /snapshot/);
    const pcie = device({ capabilities: [{ id: 'pcie' }] });
    throwsEinval(() => pcie.restore(snap), /256-byte/);
  });
});

describe('pci description validation', () => {
  const cases: [string, Partial<ConfigSpaceDescription>, RegExp][] = [
    ['non power of two BAR', { bars: [{ kind: 'memory', size: 3000 }] }, /power of two/],
    ['tiny memory BAR', { bars: [{ kind: 'memory', size: 8 }] }, /at least 16/],
    ['tiny io BAR', { bars: [{ kind: 'io', size: 2 }] }, /at least 4/],
    ['64-bit BAR in slot 5', { bars: [undefined, undefined, undefined, undefined, undefined, { kind: 'memory', size: 4096, is64: true }] }, /last slot/],
    ['64-bit BAR overlapping', { bars: [{ kind: 'memory', size: 4096, is64: true }, { kind: 'memory', size: 4096 }] }, /overlaps BAR1/],
    ['64-bit io BAR', { bars: [{ kind: 'io', size: 16, is64: true }] }, /I\/O BAR cannot be 64-bit/],
    ['too many BARs', { bars: new Array(7).fill(undefined) }, /at most 6/],
    ['32-bit BAR of 4 GiB', { bars: [{ kind: 'memory', size: 2 ** 32 }] }, /exceeds/],
    ['MSI-X table outside BAR', { bars: [{ kind: 'memory', size: 4096 }], capabilities: [{ id: 'msix', vectors: 256, tableBar: 0, tableOffset: 0x800, pbaBar: 0, pbaOffset: 0 }] }, /MSI-X table .*does not fit/],
    ['MSI-X overlap', { bars: [{ kind: 'memory', size: 4096 }], capabilities: [{ id: 'msix', vectors: 4, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x30 }] }, /overlap/],
    ['MSI-X in missing BAR', { bars: [{ kind: 'memory', size: 4096 }], capabilities: [{ id: 'msix', vectors: 4, tableBar: 1, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800 }] }, /not a memory BAR/],
    ['MSI-X in io BAR', { bars: [{ kind: 'io', size: 256 }], capabilities: [{ id: 'msix', vectors: 4, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x80 }] }, /not a memory BAR/],
    ['MSI-X unaligned', { bars: [{ kind: 'memory', size: 4096 }], capabilities: [{ id: 'msix', vectors: 4, tableBar: 0, tableOffset: 4, pbaBar: 0, pbaOffset: 0x800 }] }, /aligned/],
    ['MSI-X too many vectors', { bars: [{ kind: 'memory', size: 65536 }], capabilities: [{ id: 'msix', vectors: 2049, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x8000 }] }, /vectors/],
    ['MSI vectors', { capabilities: [{ id: 'msi', vectors: 3 as 2 }] }, /MSI vectors/],
    ['duplicate MSI', { capabilities: [{ id: 'msi', vectors: 1 }, { id: 'msi', vectors: 1 }] }, /more than once/],
    ['ext cap without PCIe', { extendedCapabilities: [{ id: 'dsn', serial: 1n }] }, /need a PCIe/],
    ['DSN out of range', { capabilities: [{ id: 'pcie' }], extendedCapabilities: [{ id: 'dsn', serial: 1n << 64n }] }, /64-bit/],
    ['vendor cap too long', { capabilities: [{ id: 'vendor', data: new Uint8Array(253) }] }, /too long/],
    ['caps not fitting', { capabilities: Array.from({ length: 4 }, () => ({ id: 'vendor' as const, data: new Uint8Array(60) })) }, /do not fit in 256/],
    ['ext caps not fitting', { capabilities: [{ id: 'pcie' }], extendedCapabilities: Array.from({ length: 2 }, () => ({ id: 'vendor' as const, vsecId: 1, revision: 1, data: new Uint8Array(2000) })) }, /do not fit in 4096/],
    ['interrupt pin', { interruptPin: 5 }, /interruptPin/],
  ];
  for (const [name, extra, message] of cases) {
    it(`rejects ${name}`, () => throwsEinval(() => new ConfigSpace({ identity, ...extra }), message));
  }

  it('rejects identity values out of range', () => {
    throwsEinval(() => new ConfigSpace({ identity: { vendorId: 0xffff, deviceId: 1 } }), /vendorId/);
    throwsEinval(() => new ConfigSpace({ identity: { vendorId: 1, deviceId: 0x10000 } }), /deviceId/);
    throwsEinval(() => new ConfigSpace({ identity: { vendorId: 1, deviceId: 1, classCode: 0x1000000 } }), /classCode/);
    throwsEinval(() => new ConfigSpace({ identity: { vendorId: 1, deviceId: 1, revision: 256 } }), /revision/);
    throwsEinval(() => new ConfigSpace({ identity: { vendorId: 1, deviceId: 1, subsystemId: -1 } }), /subsystemId/);
  });
});
