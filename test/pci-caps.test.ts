import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigSpace, PciConfigError, PciHeader, PciStatus, type ConfigSpaceDescription } from '../src/pci/index.js';
import { record, u16, u32, u8, w16, w32 } from './helpers/config-access.js';

const identity = { vendorId: 0x4e58, deviceId: 0x0001 };

/** Walks the standard list from 0x34 as an OS does: [offset, id] pairs. */
function walk(c: ConfigSpace): [number, number][] {
  const found: [number, number][] = [];
  if ((u16(c, PciHeader.STATUS) & PciStatus.CAP_LIST) === 0) return found;
  let ptr = u8(c, PciHeader.CAPABILITY_LIST) & ~3;
  for (let guard = 0; ptr !== 0 && guard < 48; guard++) {
    assert.ok(ptr >= 0x40 && ptr <= 0xfc, `pointer 0x${ptr.toString(16)} outside device-specific space`);
    found.push([ptr, u8(c, ptr)]);
    ptr = u8(c, ptr + 1) & ~3;
  }
  assert.equal(ptr, 0, 'list terminates');
  return found;
}

/** Walks the extended list from 0x100: [offset, id, version] triples. */
function walkExtended(c: ConfigSpace): [number, number, number][] {
  const found: [number, number, number][] = [];
  let off = 0x100;
  for (let guard = 0; guard < 960; guard++) {
    const header = u32(c, off);
    if (header === 0) break;
    found.push([off, header & 0xffff, (header >>> 16) & 0xf]);
    off = header >>> 20;
    if (off === 0) break;
    assert.ok(off >= 0x100 && off % 4 === 0, 'next pointer in extended space and aligned');
  }
  return found;
}

const full: ConfigSpaceDescription = {
  identity,
  bars: [{ kind: 'memory', size: 0x4000 }],
  capabilities: [
    { id: 'pm' },
    { id: 'msi', vectors: 8, is64: true, perVectorMask: true },
    { id: 'msix', vectors: 16, tableBar: 0, tableOffset: 0x1000, pbaBar: 0, pbaOffset: 0x2000 },
    { id: 'pcie', flr: true },
    { id: 'vendor', data: Uint8Array.from([0xde, 0xad, 0xbe, 0xef, 0x01]) },
  ],
  extendedCapabilities: [
    { id: 'dsn', serial: 0x0011223344556677n },
    { id: 'vendor', vsecId: 0x1234, revision: 2, data: Uint8Array.from([1, 2, 3, 4, 5, 6]) },
  ],
};

/** Offset of the capability with numeric id `id`, found by walking. */
function capAt(c: ConfigSpace, id: number): number {
  const hit = walk(c).find(([, i]) => i === id);
  assert.ok(hit, `capability 0x${id.toString(16)} present`);
  return hit[0];
}

describe('pci capability chain', () => {
  it('links every capability from 0x34, dword aligned, in order', () => {
    const c = new ConfigSpace(full);
    const chain = walk(c);
    assert.deepEqual(chain.map(([, id]) => id), [0x01, 0x05, 0x11, 0x10, 0x09]);
    assert.equal(chain[0]![0], 0x40);
    for (const [off] of chain) assert.equal(off % 4, 0);
    const sizes = chain.slice(1).map(([off], i) => off - chain[i]![0]);
    assert.deepEqual(sizes, [8, 24, 12, 60], 'PM 8, MSI 64-bit masked 24, MSI-X 12, PCIe v2 60');
    const vendor = chain[4]![0];
    assert.equal(u8(c, vendor + 2), 8, 'vendor length byte counts the header');
    assert.deepEqual([...c.read(vendor + 3, 5)], [0xde, 0xad, 0xbe, 0xef, 0x01]);
    assert.deepEqual(c.capabilities.filter((x) => x.chain === 'standard').map((x) => [x.offset, x.length]), chain.map(([off], i) => [off, [8, 24, 12, 60, 8][i]]));
  });

  it('has no list without capabilities', () => {
    const c = new ConfigSpace({ identity });
    assert.deepEqual(walk(c), []);
    assert.equal(u8(c, 0x34), 0);
  });

  it('links the extended chain from 0x100', () => {
    const c = new ConfigSpace(full);
    const ext = walkExtended(c);
    assert.deepEqual(ext.map(([, id, ver]) => [id, ver]), [[0x0003, 1], [0x000b, 1]]);
    const [dsn, vsec] = [ext[0]![0], ext[1]![0]];
    assert.equal(dsn, 0x100);
    assert.equal(u32(c, dsn + 4), 0x44556677);
    assert.equal(u32(c, dsn + 8), 0x00112233);
    assert.equal(vsec, 0x10c);
    const vh = u32(c, vsec + 4);
    assert.deepEqual([vh & 0xffff, (vh >>> 16) & 0xf, vh >>> 20], [0x1234, 2, 14]);
    assert.deepEqual([...c.read(vsec + 8, 6)], [1, 2, 3, 4, 5, 6]);
    assert.equal(c.findCapability('dsn', 'extended')?.offset, 0x100);
  });

  it('keeps capability headers and read-only payloads unchanged by writes', () => {
    const c = new ConfigSpace(full);
    const before = c.read(0, 4096);
    for (const [off] of walk(c)) w16(c, off, 0xffff);
    for (let off = 0x100; off < 0x120; off += 4) w32(c, off, 0xffffffff);
    const vendor = capAt(c, 0x09);
    w32(c, vendor + 4, 0);
    assert.deepEqual(c.read(0x34, 1), before.subarray(0x34, 0x35));
    for (const [off] of walk(c)) assert.deepEqual(c.read(off, 2), before.subarray(off, off + 2));
    assert.deepEqual(c.read(0x100, 0x20), before.subarray(0x100, 0x120));
    assert.deepEqual(c.read(vendor, 8), before.subarray(vendor, vendor + 8));
  });
});

describe('pci PM capability', () => {
  it('allows D0 and D3hot only and reports power changes', () => {
    const c = new ConfigSpace(full);
    const pm = capAt(c, 0x01);
    assert.equal(u16(c, pm + 2) & 0x7, 3, 'PM 1.2');
    const events = record(c);
    w16(c, pm + 2, 0xffff);
    assert.equal(u16(c, pm + 2), 0x0003, 'PMC read-only');
    w16(c, pm + 4, 0x0003);
    assert.equal(c.powerState, 3);
    assert.equal(u16(c, pm + 4), 0x000b, 'D3hot with No_Soft_Reset');
    w16(c, pm + 4, 0x0001);
    assert.equal(c.powerState, 3, 'D1 unsupported: state unchanged');
    w16(c, pm + 4, 0xfff0);
    assert.equal(c.powerState, 0);
    assert.equal(u16(c, pm + 4), 0x0008);
    assert.deepEqual(events, [{ type: 'power', state: 3 }, { type: 'power', state: 0 }]);
  });
});

describe('pci MSI capability', () => {
  it('lays out the 32-bit form without masking', () => {
    const c = new ConfigSpace({ identity, capabilities: [{ id: 'msi', vectors: 4 }] });
    const msi = capAt(c, 0x05);
    assert.equal(u16(c, msi + 2), 0x0004, 'MMC = 2, 32-bit, no mask');
    w32(c, msi + 4, 0xfee00003);
    w16(c, msi + 8, 0x4021);
    assert.equal(u32(c, msi + 4), 0xfee00000, 'address bits 0-1 read-only');
    assert.equal(u16(c, msi + 8), 0x4021);
    const s = c.msiState()!;
    assert.deepEqual([s.address, s.data, s.is64, s.perVectorMask, s.capableVectors], [0xfee00000n, 0x4021, false, false, 4]);
  });

  it('enables vectors through MME while MMC stays read-only', () => {
    const c = new ConfigSpace(full);
    const msi = capAt(c, 0x05);
    assert.equal(u16(c, msi + 2), 0x0186, '64-bit, per-vector mask, MMC = 3');
    const events = record(c);
    w16(c, msi + 2, 0xfe31);
    assert.equal(u16(c, msi + 2), 0x01b7, 'only enable and MME written');
    assert.deepEqual(events, [{ type: 'msi', enabled: true, vectors: 8 }]);
    w16(c, msi + 2, 0x0071);
    assert.equal(c.msiState()!.vectors, 8, 'MME above MMC is clamped');
    w32(c, msi + 4, 0xfee01000);
    w32(c, msi + 8, 0x1);
    w16(c, msi + 12, 0x4028);
    const s = c.msiState()!;
    assert.deepEqual([s.enabled, s.address, s.data], [true, 0x1_fee0_1000n, 0x4028]);
    assert.deepEqual(c.msiMessage(3), { address: 0x1_fee0_1000n, data: 0x402b });
  });

  it('keeps mask and pending registers: mask writable per capable vector, pending set only by the device', () => {
    const c = new ConfigSpace(full);
    const msi = capAt(c, 0x05);
    const events = record(c);
    w16(c, msi + 2, 0x0031);
    events.length = 0;
    w32(c, msi + 16, 0xffffffff);
    assert.equal(u32(c, msi + 16), 0xff, 'only capable vectors have mask bits');
    assert.deepEqual(events, [{ type: 'msi-mask', mask: 0xff }]);
    c.setMsiPending(2, true);
    c.setMsiPending(5, true);
    assert.equal(u32(c, msi + 20), 0x24, 'pending bits set');
    w32(c, msi + 20, 0);
    assert.equal(u32(c, msi + 20), 0x24, 'pending is read-only');
    events.length = 0;
    w32(c, msi + 16, 0xfb);
    assert.deepEqual(events, [{ type: 'msi-mask', mask: 0xfb }], 'an unmask is reported; the device sends what is pending');
    c.setMsiPending(2, false);
    assert.equal(c.msiState()!.pending, 0x20);
    assert.throws(() => c.setMsiPending(8, true), /out of range/);
  });
});

describe('pci MSI-X capability', () => {
  it('exposes table size and locations read-only', () => {
    const c = new ConfigSpace(full);
    const mx = capAt(c, 0x11);
    assert.equal(u16(c, mx + 2), 15);
    assert.equal(u32(c, mx + 4), 0x1000);
    assert.equal(u32(c, mx + 8), 0x2000);
    w32(c, mx + 4, 0xffffffff);
    w32(c, mx + 8, 0xffffffff);
    w16(c, mx + 2, 0x3fff);
    assert.deepEqual([u16(c, mx + 2), u32(c, mx + 4), u32(c, mx + 8)], [15, 0x1000, 0x2000]);
    assert.deepEqual(c.msixLayout, { vectors: 16, tableBar: 0, tableOffset: 0x1000, tableSize: 256, pbaBar: 0, pbaOffset: 0x2000, pbaSize: 8 });
  });

  it('encodes the BAR indicator next to the offsets', () => {
    const c = new ConfigSpace({
      identity,
      bars: [undefined, { kind: 'memory', size: 4096 }, { kind: 'memory', size: 4096, is64: true }],
      capabilities: [{ id: 'msix', vectors: 3, tableBar: 1, tableOffset: 0x800, pbaBar: 2, pbaOffset: 0x10 }],
    });
    const mx = capAt(c, 0x11);
    assert.equal(u32(c, mx + 4), 0x801);
    assert.equal(u32(c, mx + 8), 0x012);
  });

  it('reports enable and function mask changes', () => {
    const c = new ConfigSpace(full);
    const mx = capAt(c, 0x11);
    const events = record(c);
    w16(c, mx + 2, 0xc000);
    assert.ok(c.msixEnabled && c.msixFunctionMasked && c.msix!.isEnabled);
    c.write(mx + 3, Buffer.from([0x80]));
    assert.ok(c.msixEnabled && !c.msixFunctionMasked);
    assert.deepEqual(events, [
      { type: 'msix', enabled: true, functionMask: true },
      { type: 'msix', enabled: true, functionMask: false },
    ]);
  });

  it('keeps pending bits in the PBA across function mask changes', () => {
    const c = new ConfigSpace(full);
    const mx = capAt(c, 0x11);
    w16(c, mx + 2, 0xc000);
    c.msix!.write(5 * 16 + 12, Buffer.from([0, 0, 0, 0]));
    assert.ok(c.msix!.isMasked(5) && !c.msix!.isVectorMasked(5), 'function masked');
    c.msix!.setPending(5, true);
    assert.equal(c.msix!.readPba(0, 8).readBigUInt64LE(0), 1n << 5n);
    const events = record(c);
    w16(c, mx + 2, 0x8000);
    assert.deepEqual(events, [{ type: 'msix', enabled: true, functionMask: false }]);
    assert.ok(!c.msix!.isMasked(5) && c.msix!.isPending(5), 'the device, not the table, decides to send and clear it');
  });
});

describe('pci PCIe capability', () => {
  it('describes a version 2 endpoint with a trained x1 link', () => {
    const c = new ConfigSpace(full);
    const px = capAt(c, 0x10);
    assert.equal(u16(c, px + 2), 0x0002, 'version 2, endpoint');
    assert.equal(u32(c, px + 4) & 0x10000000, 0x10000000, 'FLR capable');
    assert.equal(u16(c, px + 8), 0x2810);
    assert.equal(u32(c, px + 12) & 0x3ff, 0x011);
    assert.equal(u16(c, px + 18), 0x0011, '2.5 GT/s x1');
    assert.equal(u32(c, px + 44), 0x2);
    w32(c, px + 12, 0);
    w16(c, px + 18, 0);
    assert.equal(u16(c, px + 18), 0x0011, 'link status read-only');
    w16(c, px + 16, 0xffff);
    assert.equal(u16(c, px + 16), 0x00cb);
  });

  it('encodes the port type', () => {
    const rc = new ConfigSpace({ identity, capabilities: [{ id: 'pcie', type: 'rc-endpoint' }] });
    const px = capAt(rc, 0x10);
    assert.equal(u16(rc, px + 2), 0x0092);
    assert.equal(u32(rc, px + 12), 0, 'no link registers for an integrated endpoint');
    assert.equal(u32(rc, px + 4) & 0x10000000, 0, 'no FLR unless asked');
    const leg = new ConfigSpace({ identity, capabilities: [{ id: 'pcie', type: 'legacy-endpoint' }] });
    assert.equal(u16(leg, capAt(leg, 0x10) + 2), 0x0012);
  });

  it('keeps device control writable and device status RW1C', () => {
    const c = new ConfigSpace({ identity, capabilities: [{ id: 'pcie' }] });
    const px = capAt(c, 0x10);
    w16(c, px + 8, 0xffff);
    assert.equal(u16(c, px + 8), 0x7dff, 'phantom and FLR bits are not writable');
    w16(c, px + 10, 0xffff);
    assert.equal(u16(c, px + 10), 0);
  });

  it('performs a function level reset on Initiate FLR', () => {
    const c = new ConfigSpace(full);
    const px = capAt(c, 0x10);
    w16(c, 0x04, 0x0006);
    w32(c, 0x10, 0xfe000000);
    const events = record(c);
    w16(c, px + 8, 0xa810);
    assert.equal(c.command, 0);
    assert.equal(c.barAddress(0), 0n);
    assert.equal(u16(c, px + 8), 0x2810, 'FLR bit reads back 0');
    assert.deepEqual(events.map((e) => e.type), ['command', 'bar', 'flr']);
  });
});

describe('pci capability layout limits', () => {
  it('fills config space exactly up to 256 bytes', () => {
    const fits = { id: 'vendor' as const, data: new Uint8Array(0xc0 - 3) };
    assert.doesNotThrow(() => new ConfigSpace({ identity, capabilities: [fits] }));
    const over = { id: 'vendor' as const, data: new Uint8Array(0xc0 - 2) };
    assert.throws(() => new ConfigSpace({ identity, capabilities: [over] }), PciConfigError);
  });
});

describe('pci config robustness', () => {
  it('survives random writes without losing read-only structure', () => {
    const c = new ConfigSpace(full);
    const fresh = new ConfigSpace(full);
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    c.onChange(() => undefined);
    for (let i = 0; i < 5000; i++) {
      const len = 1 + rand(8);
      const off = rand(4096 - len + 1);
      const data = Buffer.from(Array.from({ length: len }, () => rand(256)));
      c.write(off, data);
      c.msix!.setPending(rand(16), true);
      c.setMsiPending(rand(8), true);
    }
    for (const off of [0, 1, 2, 3, 8, 9, 10, 11, 0x0e, 0x2c, 0x2d, 0x2e, 0x2f, 0x34, 0x3d]) {
      assert.equal(u8(c, off), u8(fresh, off), `header byte 0x${off.toString(16)}`);
    }
    assert.deepEqual(walk(c), walk(fresh));
    assert.deepEqual(walkExtended(c), walkExtended(fresh));
    assert.deepEqual(c.read(0x100, 0x20), fresh.read(0x100, 0x20));
  });
});
