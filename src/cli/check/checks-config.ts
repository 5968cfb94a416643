/** Checks of config-space rules: header, read-only ids, BAR sizing, capability chains, MSI-X. */
import type { Client } from '../../client/client.js';
import { ClientError } from '../../client/client.js';
import { IrqIndex, RegionIndex } from '../../protocol/constants.js';
import { barOffset, MsixCap, PCI_CAP_START, PCI_EXT_CAP_START, PciBar, PciCapId, PciHeader, PciStatus } from '../../pci/regs.js';
import { expect, CheckSkip, type Check, type CheckContext } from './types.js';

const CFG = RegionIndex.CONFIG;

async function read32(c: Client, offset: number): Promise<number> {
  return (await c.regionRead(CFG, offset, 4)).readUInt32LE(0);
}

async function write32(c: Client, offset: number, value: number): Promise<void> {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  await c.regionWrite(CFG, offset, b);
}

/** Writes that a server refuses are as good as ignored for read-only checks. */
async function tryWrite32(c: Client, offset: number, value: number): Promise<void> {
  try {
    await write32(c, offset, value);
  } catch (e) {
    if (!(e instanceof ClientError)) throw e;
  }
}

/** Offsets of the standard capabilities, in chain order; throws CheckFailure on a broken chain. */
export async function standardChain(ctx: CheckContext): Promise<{ offset: number; id: number }[]> {
  const c = await ctx.client();
  const cfg = await c.regionRead(CFG, 0, 256);
  const status = cfg.readUInt16LE(PciHeader.STATUS);
  if (!(status & PciStatus.CAP_LIST)) return [];
  const caps: { offset: number; id: number }[] = [];
  const seen = new Set<number>();
  let ptr = cfg[PciHeader.CAPABILITY_LIST];
  while (ptr !== 0) {
    expect(ptr >= PCI_CAP_START && ptr <= 0xfc, `capability pointer 0x${ptr.toString(16)} outside 0x40-0xfc`);
    expect((ptr & 3) === 0, `capability pointer 0x${ptr.toString(16)} is not dword aligned`);
    expect(!seen.has(ptr), `the capability chain loops back to 0x${ptr.toString(16)}`);
    seen.add(ptr);
    const id = cfg[ptr];
    expect(id !== 0 && id !== 0xff, `capability at 0x${ptr.toString(16)} has id 0x${id.toString(16)}`);
    caps.push({ offset: ptr, id });
    ptr = cfg[ptr + 1];
  }
  return caps;
}

export const CONFIG_CHECKS: Check[] = [
  {
    id: 'config.header',
    title: 'config header: a vendor id, header type 0, a capability pointer when the list bit is set',
    async run(ctx) {
      const c = await ctx.client();
      const cfg = await c.regionRead(CFG, 0, 64);
      const vendor = cfg.readUInt16LE(PciHeader.VENDOR_ID);
      expect(vendor !== 0xffff && vendor !== 0, `vendor id 0x${vendor.toString(16)}`);
      const type = cfg[PciHeader.HEADER_TYPE] & 0x7f;
      expect(type === 0, `header type ${type}, want 0 (a type 0 function)`);
      if (cfg.readUInt16LE(PciHeader.STATUS) & PciStatus.CAP_LIST) expect(cfg[PciHeader.CAPABILITY_LIST] >= PCI_CAP_START, `capabilities listed but the pointer is 0x${cfg[PciHeader.CAPABILITY_LIST].toString(16)}`);
      return `${vendor.toString(16).padStart(4, '0')}:${cfg.readUInt16LE(PciHeader.DEVICE_ID).toString(16).padStart(4, '0')}`;
    },
  },
  {
    id: 'config.readonly-ids',
    title: 'vendor, device, revision, class code and subsystem ids ignore writes',
    async run(ctx) {
      const c = await ctx.client();
      for (const offset of [PciHeader.VENDOR_ID, PciHeader.REVISION_ID, PciHeader.SUBSYSTEM_VENDOR_ID]) {
        const before = await read32(c, offset);
        await tryWrite32(c, offset, ~before);
        const after = await read32(c, offset);
        if (after !== before) await tryWrite32(c, offset, before);
        expect(after === before, `config dword 0x${offset.toString(16)} changed from 0x${before.toString(16)} to 0x${after.toString(16)} on a write`);
      }
    },
  },
  {
    id: 'config.status-write',
    title: 'writing all ones to the status register sets no bit (bits are read-only or write-1-to-clear)',
    async run(ctx) {
      const c = await ctx.client();
      const before = (await c.regionRead(CFG, PciHeader.STATUS, 2)).readUInt16LE(0);
      try {
        await c.regionWrite(CFG, PciHeader.STATUS, Buffer.from([0xff, 0xff]));
      } catch (e) {
        if (!(e instanceof ClientError)) throw e;
      }
      const after = (await c.regionRead(CFG, PciHeader.STATUS, 2)).readUInt16LE(0);
      const gained = after & ~before;
      expect(gained === 0, `status 0x${before.toString(16)} became 0x${after.toString(16)}: a write set bits 0x${gained.toString(16)}`);
      return `0x${before.toString(16)} -> 0x${after.toString(16)}`;
    },
  },
  {
    id: 'config.bar-sizing',
    title: 'BAR sizing (write all ones, read back) gives each region size; unused BARs read 0',
    async run(ctx) {
      const { regions } = await ctx.facts();
      const c = await ctx.client();
      const found: string[] = [];
      for (let i = 0; i <= RegionIndex.BAR5; i++) {
        const off = barOffset(i);
        const original = await read32(c, off);
        await write32(c, off, 0xffffffff);
        const sized = await read32(c, off);
        await write32(c, off, original);
        const want = regions[i]?.info.size ?? 0;
        if (want === 0) {
          expect(sized === 0, `BAR ${i} has no region but reads 0x${sized.toString(16)} after sizing`);
          continue;
        }
        let size: bigint;
        if (sized & PciBar.SPACE_IO) {
          const bits = (sized & PciBar.IO_MASK) | 0xffff0000; // I/O decoders may ignore the upper 16 bits
          size = BigInt((~bits + 1) >>> 0);
        } else if ((sized & PciBar.MEM_TYPE_MASK) === PciBar.MEM_TYPE_64) {
          expect(i < RegionIndex.BAR5, 'BAR 5 claims to be 64-bit');
          const hiOff = barOffset(i + 1);
          const hiOriginal = await read32(c, hiOff);
          await write32(c, hiOff, 0xffffffff);
          const hi = await read32(c, hiOff);
          await write32(c, hiOff, hiOriginal);
          const mask = (BigInt(hi) << 32n) | BigInt((sized & PciBar.MEM_MASK) >>> 0);
          size = ((~mask & 0xffffffffffffffffn) + 1n) & 0xffffffffffffffffn;
          i++; // the upper half is not a BAR of its own
        } else {
          size = BigInt((~(sized & PciBar.MEM_MASK) + 1) >>> 0);
        }
        expect(size === BigInt(want), `BAR ${i} sizes to ${size} bytes (read 0x${sized.toString(16)}), its region is ${want}`);
        found.push(`BAR${i}=${want}`);
      }
      return found.join(' ') || 'no BARs';
    },
  },
  {
    id: 'config.capability-chain',
    title: 'capability chains: aligned pointers inside config space, no loops',
    async run(ctx) {
      const caps = await standardChain(ctx);
      const { regions } = await ctx.facts();
      const extended: number[] = [];
      if (regions[CFG].info.size >= 4096) {
        const c = await ctx.client();
        const seen = new Set<number>();
        let ptr = PCI_EXT_CAP_START;
        for (;;) {
          const header = await read32(c, ptr);
          if (header === 0 || header === 0xffffffff) break;
          expect(!seen.has(ptr), `the extended capability chain loops back to 0x${ptr.toString(16)}`);
          seen.add(ptr);
          extended.push(header & 0xffff);
          const next = (header >>> 20) & 0xffc;
          if (next === 0) break;
          expect(next >= PCI_EXT_CAP_START, `extended capability at 0x${ptr.toString(16)} points to 0x${next.toString(16)}, below 0x100`);
          ptr = next;
        }
      }
      return `standard [${caps.map((k) => `0x${k.id.toString(16)}@0x${k.offset.toString(16)}`).join(' ')}] extended [${extended.map((id) => `0x${id.toString(16)}`).join(' ')}]`;
    },
  },
  {
    id: 'config.msix',
    title: 'MSI-X capability: table size matches the IRQ info, table and PBA fit their BAR',
    async run(ctx) {
      const msix = (await standardChain(ctx)).find((k) => k.id === PciCapId.MSIX);
      if (!msix) throw new CheckSkip('no MSI-X capability');
      const c = await ctx.client();
      const { regions } = await ctx.facts();
      const flags = (await c.regionRead(CFG, msix.offset + MsixCap.FLAGS, 2)).readUInt16LE(0);
      const vectors = (flags & MsixCap.FLAGS_QSIZE) + 1;
      const irq = await c.irqInfo(IrqIndex.MSIX);
      expect(irq.count === vectors, `MSI-X capability says ${vectors} vectors, IRQ info says ${irq.count}`);
      for (const [what, at, bytes] of [['table', MsixCap.TABLE, vectors * 16], ['PBA', MsixCap.PBA, Math.ceil(vectors / 64) * 8]] as const) {
        const v = await read32(c, msix.offset + at);
        const bir = v & MsixCap.BIR_MASK;
        const offset = (v & MsixCap.OFFSET_MASK) >>> 0;
        const barSize = bir <= RegionIndex.BAR5 ? (regions[bir]?.info.size ?? 0) : 0;
        expect(offset + bytes <= barSize, `MSI-X ${what} at BAR ${bir} + 0x${offset.toString(16)} (${bytes} bytes) does not fit the BAR (${barSize} bytes)`);
      }
      return `${vectors} vectors`;
    },
  },
];
