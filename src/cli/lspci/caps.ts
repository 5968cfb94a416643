/**
 * Describes standard capabilities as lspci -vv does: a title and detail
 * lines, decoded from a config space image. Pure functions.
 */
import { CapHeader, MsiCap, MsixCap, PcieCap, PmCap, VendorCap } from '../../pci/regs.js';
import { capName, linkSpeed, pcieTypeName } from './names.js';
import { bitFlags, fits, flag, hex } from './util.js';

/** A capability's title and its detail lines (without indentation). */
export interface CapText {
  title: string;
  details: string[];
}

type Describe = (c: Buffer, o: number) => CapText;

const STD_LIMIT = 0x100;
const AUX_CURRENT_MA = [0, 55, 100, 160, 220, 270, 320, 375];

function truncated(name: string): CapText {
  return { title: `${name} <truncated>`, details: [] };
}

function describePm(c: Buffer, o: number): CapText {
  if (!fits(o, PmCap.SIZE, STD_LIMIT)) return truncated('Power Management');
  const pmc = c.readUInt16LE(o + PmCap.PMC);
  const csr = c.readUInt16LE(o + PmCap.PMCSR);
  const aux = AUX_CURRENT_MA[(pmc >> 6) & 7];
  const pme = ['D0', 'D1', 'D2', 'D3hot', 'D3cold'].map((s, i) => flag(s, pmc & (0x800 << i))).join(',');
  const flags = `Flags: ${flag('PMEClk', pmc & 0x8)} ${flag('DSI', pmc & 0x20)} ${flag('D1', pmc & 0x200)} ${flag('D2', pmc & 0x400)} AuxCurrent=${aux}mA PME(${pme})`;
  const state = `D${csr & PmCap.PMCSR_STATE_MASK}`;
  const status = `Status: ${state} ${flag('NoSoftRst', csr & PmCap.PMCSR_NO_SOFT_RESET)} ${flag('PME-Enable', csr & PmCap.PMCSR_PME_ENABLE)} DSel=${(csr >> 9) & 15} DScale=${(csr >> 13) & 3} ${flag('PME', csr & PmCap.PMCSR_PME_STATUS)}`;
  return { title: `Power Management version ${pmc & 7}`, details: [flags, status] };
}

function describeMsi(c: Buffer, o: number): CapText {
  if (!fits(o, MsiCap.DATA_32 + 2, STD_LIMIT)) return truncated('MSI');
  const f = c.readUInt16LE(o + MsiCap.FLAGS);
  const is64 = (f & MsiCap.FLAGS_64BIT) !== 0;
  const maskable = (f & MsiCap.FLAGS_MASKBIT) !== 0;
  const size = maskable ? (is64 ? MsiCap.PENDING_64 : MsiCap.PENDING_32) + 4 : (is64 ? MsiCap.DATA_64 : MsiCap.DATA_32) + 2;
  if (!fits(o, size, STD_LIMIT)) return truncated('MSI');
  const enabled = 1 << ((f & MsiCap.FLAGS_MME_MASK) >> MsiCap.FLAGS_MME_SHIFT);
  const capable = 1 << ((f & MsiCap.FLAGS_MMC_MASK) >> MsiCap.FLAGS_MMC_SHIFT);
  const title = `MSI: ${flag('Enable', f & MsiCap.FLAGS_ENABLE)} Count=${enabled}/${capable} ${flag('Maskable', maskable)} ${flag('64bit', is64)}`;
  const lo = c.readUInt32LE(o + MsiCap.ADDRESS_LO);
  const address = is64 ? hex(c.readUInt32LE(o + MsiCap.ADDRESS_HI), 8) + hex(lo, 8) : hex(lo, 8);
  const data = c.readUInt16LE(o + (is64 ? MsiCap.DATA_64 : MsiCap.DATA_32));
  const details = [`Address: ${address}  Data: ${hex(data, 4)}`];
  if (maskable) {
    const mask = c.readUInt32LE(o + (is64 ? MsiCap.MASK_64 : MsiCap.MASK_32));
    const pending = c.readUInt32LE(o + (is64 ? MsiCap.PENDING_64 : MsiCap.PENDING_32));
    details.push(`Masking: ${hex(mask, 8)}  Pending: ${hex(pending, 8)}`);
  }
  return { title, details };
}

function describeMsix(c: Buffer, o: number): CapText {
  if (!fits(o, MsixCap.SIZE, STD_LIMIT)) return truncated('MSI-X');
  const f = c.readUInt16LE(o + MsixCap.FLAGS);
  const table = c.readUInt32LE(o + MsixCap.TABLE);
  const pba = c.readUInt32LE(o + MsixCap.PBA);
  const where = (v: number): string => `BAR=${v & MsixCap.BIR_MASK} offset=${hex(v & MsixCap.OFFSET_MASK, 8)}`;
  return {
    title: `MSI-X: ${flag('Enable', f & MsixCap.FLAGS_ENABLE)} Count=${(f & MsixCap.FLAGS_QSIZE) + 1} ${flag('Masked', f & MsixCap.FLAGS_MASKALL)}`,
    details: [`Vector table: ${where(table)}`, `PBA: ${where(pba)}`],
  };
}

const DEV_ERR_BITS = [['CorrErr', 0x1], ['NonFatalErr', 0x2], ['FatalErr', 0x4], ['UnsupReq', 0x8]] as const;

function pcieDeviceLines(c: Buffer, o: number): string[] {
  const cap = c.readUInt32LE(o + PcieCap.DEVCAP);
  const ctl = c.readUInt16LE(o + PcieCap.DEVCTL);
  const sta = c.readUInt16LE(o + PcieCap.DEVSTA);
  const devCap = `DevCap:\tMaxPayload ${128 << (cap & 7)} bytes, PhantFunc ${(cap >> 3) & 3}, ${flag('ExtTag', cap & 0x20)} ${flag('RBE', cap & PcieCap.DEVCAP_RBER)} ${flag('FLReset', cap & PcieCap.DEVCAP_FLR)}`;
  const ctlBits = [...DEV_ERR_BITS, ['RlxdOrd', 0x10], ['ExtTag', 0x100], ['PhantFunc', 0x200], ['AuxPwr', 0x400], ['NoSnoop', 0x800]] as const;
  const devCtl = `DevCtl:\t${bitFlags(ctl, ctlBits)}`;
  const sizes = `\tMaxPayload ${128 << ((ctl >> 5) & 7)} bytes, MaxReadReq ${128 << ((ctl >> 12) & 7)} bytes`;
  const devSta = `DevSta:\t${bitFlags(sta, [...DEV_ERR_BITS, ['AuxPwr', 0x10], ['TransPend', 0x20]])}`;
  return [devCap, devCtl, sizes, devSta];
}

function pcieLinkLines(c: Buffer, o: number): string[] {
  const cap = c.readUInt32LE(o + PcieCap.LNKCAP);
  const sta = c.readUInt16LE(o + PcieCap.LNKSTA);
  return [
    `LnkCap:\tPort #${cap >>> 24}, Speed ${linkSpeed(cap & 15)}, Width x${(cap >> 4) & 0x3f}`,
    `LnkSta:\tSpeed ${linkSpeed(sta & 15)}, Width x${(sta >> 4) & 0x3f}`,
  ];
}

function describePcie(c: Buffer, o: number): CapText {
  if (!fits(o, PcieCap.LNKSTA + 2, STD_LIMIT)) return truncated('Express');
  const f = c.readUInt16LE(o + PcieCap.FLAGS);
  const type = (f >> PcieCap.FLAGS_TYPE_SHIFT) & 15;
  const title = `Express (v${f & 15}) ${pcieTypeName(type)}, MSI ${hex((f >> 9) & 0x1f, 2)}`;
  const hasLink = type !== PcieCap.TYPE_RC_ENDPOINT && type !== 0xa;
  return { title, details: [...pcieDeviceLines(c, o), ...(hasLink ? pcieLinkLines(c, o) : [])] };
}

function describeVendor(c: Buffer, o: number): CapText {
  if (!fits(o, VendorCap.DATA, STD_LIMIT)) return truncated('Vendor Specific Information');
  const len = c[o + VendorCap.LENGTH]!;
  const bad = len < VendorCap.DATA || !fits(o, len, STD_LIMIT) ? ' <bad length>' : '';
  return { title: `Vendor Specific Information: Len=${hex(len, 2)}${bad}`, details: [] };
}

const DESCRIBE: Record<number, Describe> = {
  0x01: describePm,
  0x05: describeMsi,
  0x09: describeVendor,
  0x10: describePcie,
  0x11: describeMsix,
};

/** Describes the standard capability with header at `offset`. */
export function describeCap(config: Buffer, offset: number): CapText {
  const id = config[offset + CapHeader.ID]!;
  const describe = DESCRIBE[id];
  return describe ? describe(config, offset) : { title: capName(id), details: [] };
}
