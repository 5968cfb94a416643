import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MsixTable, PciConfigError } from '../src/pci/index.js';

/** A 16-byte table entry. */
function entry(addr: bigint, data: number, ctrl: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(addr, 0);
  b.writeUInt32LE(data, 8);
  b.writeUInt32LE(ctrl, 12);
  return b;
}

/** A table with MSI-X enabled and the function unmasked. */
function enabledTable(vectors: number): { t: MsixTable } {
  const t = new MsixTable(vectors);
  t.setControl(true, false);
  return { t };
}

/** Asserts `fn` throws a PciConfigError with errno 22. */
function throwsEinval(fn: () => unknown): void {
  assert.throws(fn, (e: unknown) => e instanceof PciConfigError && e.errno === 22);
}

describe('MSI-X table', () => {
  it('starts with every vector masked and nothing pending', () => {
    const t = new MsixTable(5);
    assert.equal(t.tableSize, 80);
    assert.equal(t.pbaSize, 8);
    for (let v = 0; v < 5; v++) {
      assert.deepEqual(t.read(v * 16, 16), entry(0n, 0, 1));
      assert.ok(t.isVectorMasked(v) && t.isMasked(v) && !t.isPending(v));
    }
    assert.deepEqual(t.readPba(0, 8), Buffer.alloc(8));
  });

  it('sizes the PBA in qwords', () => {
    assert.equal(new MsixTable(64).pbaSize, 8);
    assert.equal(new MsixTable(65).pbaSize, 16);
    assert.equal(new MsixTable(2048).pbaSize, 256);
    throwsEinval(() => new MsixTable(0));
    throwsEinval(() => new MsixTable(2049));
  });

  it('stores address and data, and only the mask bit of vector control', () => {
    const t = new MsixTable(4);
    t.write(16, entry(0x1_fee0_0003n, 0x4041, 0xffffffff));
    assert.deepEqual(t.read(16, 16), entry(0x1_fee0_0000n, 0x4041, 1));
    assert.deepEqual(t.entry(1), { address: 0x1_fee0_0000n, data: 0x4041, masked: true });
    t.write(28, Buffer.from([0xfe, 0xff, 0xff, 0xff]));
    assert.equal(t.isVectorMasked(1), false);
    assert.equal(t.read(28, 4).readUInt32LE(0), 0);
  });

  it('accepts accesses of any size and alignment within the table', () => {
    const t = new MsixTable(2);
    t.write(6, Buffer.from([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55]));
    assert.deepEqual([...t.read(6, 12)], [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0, 0, 0, 0x44, 0x55]);
    assert.equal(t.isVectorMasked(0), false);
    assert.deepEqual(t.entry(1), { address: 0x5544n, data: 0, masked: true });
  });

  it('rejects out-of-range accesses and vectors', () => {
    const t = new MsixTable(2);
    throwsEinval(() => t.read(30, 4));
    throwsEinval(() => t.write(32, Buffer.from([0])));
    throwsEinval(() => t.readPba(4, 8));
    throwsEinval(() => t.read(-4, 4));
    throwsEinval(() => t.isPending(2));
    throwsEinval(() => t.setPending(-1, true));
  });

  it('reports which entries a write covered', () => {
    const t = new MsixTable(8);
    assert.deepEqual(t.write(6 * 16 + 12, Buffer.from([0])), { first: 6, last: 6 });
    assert.deepEqual(t.write(15, Buffer.from([0, 0])), { first: 0, last: 1 });
    assert.ok(t.touched);
  });

  it('honours the function mask', () => {
    const { t } = enabledTable(4);
    t.write(0, Buffer.concat([entry(1n, 1, 0), entry(2n, 2, 0), entry(3n, 3, 1)]));
    t.setControl(true, true);
    assert.ok(t.isMasked(0) && !t.isVectorMasked(0));
    assert.ok(t.isMasked(2) && t.isVectorMasked(2));
    t.setControl(true, false);
    assert.ok(!t.isMasked(0) && t.isMasked(2), 'vector 2 is still masked by its entry');
  });

  it('keeps pending bits in the PBA, 64 vectors a qword', () => {
    const { t } = enabledTable(70);
    t.setPending(66, true);
    assert.ok(t.isPending(66));
    assert.equal(t.readPba(8, 8).readBigUInt64LE(0), 1n << 2n);
    t.write(66 * 16 + 12, Buffer.from([0]));
    assert.ok(t.isPending(66), 'unmasking does not clear pending: the device sends and clears it');
  });

  it('keeps the PBA read-only to software and settable by the device', () => {
    const t = new MsixTable(3);
    t.setPending(2, true);
    t.setPending(0, true);
    t.setPending(0, false);
    assert.equal(t.readPba(0, 1)[0], 0b100);
  });

  it('resets to power-on state', () => {
    const { t } = enabledTable(3);
    t.write(0, entry(0xfee00000n, 7, 0));
    t.setPending(1, true);
    t.reset();
    assert.deepEqual(t.read(0, 16), entry(0n, 0, 1));
    assert.equal(t.isPending(1), false);
    assert.equal(t.isEnabled, false);
  });

  it('round-trips through snapshot and restore', () => {
    const { t } = enabledTable(70);
    t.write(32, entry(0xfee01000n, 0x55, 0));
    t.setPending(66, true);
    t.setControl(true, true);
    const b = new MsixTable(70);
    b.restore(t.snapshot());
    assert.deepEqual(b.read(0, b.tableSize), t.read(0, t.tableSize));
    assert.deepEqual(b.readPba(0, 16), t.readPba(0, 16));
    assert.ok(b.isEnabled && b.isFunctionMasked);
    assert.ok(b.isPending(66));
    throwsEinval(() => new MsixTable(71).restore(t.snapshot()));
  });
});
