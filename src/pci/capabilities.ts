/**
 * Lays out the standard capability chain (from 0x40) and the extended chain
 * (from 0x100) into a ConfigImage, with write masks per register.
 */

import { check } from './errors.js';
import type { ConfigImage } from './image.js';
import {
  CapHeader,
  DsnCap,
  ExtCapHeader,
  MsiCap,
  MsixCap,
  MsixEntry,
  PCI_CAP_START,
  PCI_CONFIG_SIZE,
  PCI_EXT_CAP_START,
  PciCapId,
  PciExtCapId,
  PciHeader,
  PciStatus,
  PcieCap,
  PmCap,
  VendorCap,
  VsecCap,
} from './regs.js';
import type {
  CapabilityDescription,
  CapabilityInfo,
  ExtendedCapabilityDescription,
  MsiCapabilityDescription,
  MsixCapabilityDescription,
  MsixLayout,
  PcieCapabilityDescription,
} from './types.js';
import { msixPbaSize } from './validate.js';

/** Where the MSI registers of a placed MSI capability are. */
export interface MsiLayout {
  offset: number;
  capableVectors: number;
  is64: boolean;
  perVectorMask: boolean;
  /** Offset of the message data register. */
  dataOffset: number;
  /** Offset of the mask register (perVectorMask only). */
  maskOffset: number | undefined;
  /** Offset of the pending register (perVectorMask only). */
  pendingOffset: number | undefined;
}

/** Result of laying out all capabilities. */
export interface CapabilityLayout {
  caps: CapabilityInfo[];
  pm: { offset: number } | undefined;
  msi: MsiLayout | undefined;
  msix: (MsixLayout & { offset: number }) | undefined;
  pcie: { offset: number; flr: boolean } | undefined;
}

/** Rounds up to a dword boundary. */
function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Size in bytes of an MSI capability of this shape. */
function msiSize(cap: MsiCapabilityDescription): number {
  const base = cap.is64 ? 14 : 10;
  return cap.perVectorMask ? (cap.is64 ? 24 : 20) : base;
}

/** Size in bytes of a standard capability. */
export function capabilitySize(cap: CapabilityDescription): number {
  switch (cap.id) {
    case 'pm':
      return PmCap.SIZE;
    case 'msi':
      return msiSize(cap);
    case 'msix':
      return MsixCap.SIZE;
    case 'pcie':
      return PcieCap.SIZE;
    case 'vendor':
      return VendorCap.DATA + cap.data.length;
  }
}

/** Size in bytes of an extended capability. */
export function extendedCapabilitySize(cap: ExtendedCapabilityDescription): number {
  return cap.id === 'dsn' ? DsnCap.SIZE : VsecCap.DATA + cap.data.length;
}

/** Numeric id of a standard capability. */
function capId(cap: CapabilityDescription): number {
  const ids = { pm: PciCapId.PM, msi: PciCapId.MSI, msix: PciCapId.MSIX, pcie: PciCapId.PCIE, vendor: PciCapId.VENDOR };
  return ids[cap.id];
}

/** Writes the PM capability body (PMC read-only, power state writable). */
function writePm(img: ConfigImage, off: number): void {
  img.define(off + PmCap.PMC, 2, PmCap.PMC_VERSION_1_2);
  img.define(off + PmCap.PMCSR, 2, PmCap.PMCSR_NO_SOFT_RESET, PmCap.PMCSR_STATE_MASK);
}

/** Writes the MSI capability body and returns its register layout. */
function writeMsi(img: ConfigImage, off: number, cap: MsiCapabilityDescription): MsiLayout {
  const is64 = cap.is64 ?? false;
  const pvm = cap.perVectorMask ?? false;
  const mmc = Math.log2(cap.vectors) << MsiCap.FLAGS_MMC_SHIFT;
  const flags = mmc | (is64 ? MsiCap.FLAGS_64BIT : 0) | (pvm ? MsiCap.FLAGS_MASKBIT : 0);
  img.define(off + MsiCap.FLAGS, 2, flags, MsiCap.FLAGS_ENABLE | MsiCap.FLAGS_MME_MASK);
  img.define(off + MsiCap.ADDRESS_LO, 4, 0, 0xfffffffc);
  if (is64) img.define(off + MsiCap.ADDRESS_HI, 4, 0, 0xffffffff);
  const dataOffset = off + (is64 ? MsiCap.DATA_64 : MsiCap.DATA_32);
  img.define(dataOffset, 2, 0, 0xffff);
  const layout: MsiLayout = { offset: off, capableVectors: cap.vectors, is64, perVectorMask: pvm, dataOffset, maskOffset: undefined, pendingOffset: undefined };
  if (!pvm) return layout;
  const bits = cap.vectors === 32 ? 0xffffffff : (1 << cap.vectors) - 1;
  layout.maskOffset = off + (is64 ? MsiCap.MASK_64 : MsiCap.MASK_32);
  layout.pendingOffset = off + (is64 ? MsiCap.PENDING_64 : MsiCap.PENDING_32);
  img.define(layout.maskOffset, 4, 0, bits);
  img.define(layout.pendingOffset, 4, 0, 0, 0, bits);
  return layout;
}

/** Writes the MSI-X capability body and returns the table/PBA layout. */
function writeMsix(img: ConfigImage, off: number, cap: MsixCapabilityDescription): MsixLayout & { offset: number } {
  img.define(off + MsixCap.FLAGS, 2, cap.vectors - 1, MsixCap.FLAGS_ENABLE | MsixCap.FLAGS_MASKALL);
  img.define(off + MsixCap.TABLE, 4, (cap.tableOffset | cap.tableBar) >>> 0);
  img.define(off + MsixCap.PBA, 4, (cap.pbaOffset | cap.pbaBar) >>> 0);
  return {
    offset: off,
    vectors: cap.vectors,
    tableBar: cap.tableBar,
    tableOffset: cap.tableOffset,
    tableSize: cap.vectors * MsixEntry.SIZE,
    pbaBar: cap.pbaBar,
    pbaOffset: cap.pbaOffset,
    pbaSize: msixPbaSize(cap.vectors),
  };
}

/** Device/port type field value for a PCIe description. */
function pcieType(cap: PcieCapabilityDescription): number {
  if (cap.type === 'rc-endpoint') return PcieCap.TYPE_RC_ENDPOINT;
  if (cap.type === 'legacy-endpoint') return PcieCap.TYPE_LEGACY_ENDPOINT;
  return PcieCap.TYPE_ENDPOINT;
}

/** Writes link registers: a trained x1 link at 2.5 GT/s. */
function writePcieLink(img: ConfigImage, off: number): void {
  img.define(off + PcieCap.LNKCAP, 4, PcieCap.LNKCAP_SLS_2_5GB | PcieCap.LNKCAP_MLW_X1);
  img.define(off + PcieCap.LNKCTL, 2, 0, PcieCap.LNKCTL_WRITABLE);
  img.define(off + PcieCap.LNKSTA, 2, PcieCap.LNKSTA_CLS_2_5GB | PcieCap.LNKSTA_NLW_X1);
  img.define(off + PcieCap.LNKCAP2, 4, PcieCap.LNKCAP2_SLS_2_5GB);
  img.define(off + PcieCap.LNKCTL2, 2, PcieCap.LNKCTL2_TLS_2_5GT);
}

/** Writes the PCIe capability body (version 2, no slot, 128-byte payload). */
function writePcie(img: ConfigImage, off: number, cap: PcieCapabilityDescription): { offset: number; flr: boolean } {
  const type = pcieType(cap);
  const flr = cap.flr ?? false;
  img.define(off + PcieCap.FLAGS, 2, PcieCap.FLAGS_VERSION_2 | (type << PcieCap.FLAGS_TYPE_SHIFT));
  img.define(off + PcieCap.DEVCAP, 4, PcieCap.DEVCAP_RBER | (flr ? PcieCap.DEVCAP_FLR : 0));
  const devctl = PcieCap.DEVCTL_RELAX_EN | PcieCap.DEVCTL_NOSNOOP_EN | PcieCap.DEVCTL_READRQ_512B;
  img.define(off + PcieCap.DEVCTL, 2, devctl, PcieCap.DEVCTL_WRITABLE | (flr ? PcieCap.DEVCTL_BCR_FLR : 0));
  img.define(off + PcieCap.DEVSTA, 2, 0, 0, PcieCap.DEVSTA_RW1C, PcieCap.DEVSTA_RW1C);
  if (type !== PcieCap.TYPE_RC_ENDPOINT) writePcieLink(img, off);
  return { offset: off, flr };
}

/** Writes a vendor capability: length byte then read-only payload. */
function writeVendor(img: ConfigImage, off: number, data: Uint8Array): void {
  img.define(off + VendorCap.LENGTH, 1, VendorCap.DATA + data.length);
  img.fill(off + VendorCap.DATA, data);
}

/** Writes one standard capability body into the image and records its layout. */
function writeCap(img: ConfigImage, off: number, cap: CapabilityDescription, out: CapabilityLayout): void {
  img.define(off + CapHeader.ID, 1, capId(cap));
  switch (cap.id) {
    case 'pm':
      writePm(img, off);
      out.pm = { offset: off };
      return;
    case 'msi':
      out.msi = writeMsi(img, off, cap);
      return;
    case 'msix':
      out.msix = writeMsix(img, off, cap);
      return;
    case 'pcie':
      out.pcie = writePcie(img, off, cap);
      return;
    case 'vendor':
      writeVendor(img, off, cap.data);
      return;
  }
}

/** Places the standard chain from 0x40 and links it from 0x34. */
function placeStandard(img: ConfigImage, caps: readonly CapabilityDescription[], out: CapabilityLayout): void {
  let off = PCI_CAP_START;
  let prevNext: number = PciHeader.CAPABILITY_LIST;
  for (const cap of caps) {
    const len = capabilitySize(cap);
    check(off + len <= PCI_CONFIG_SIZE, `capabilities do not fit in 256 bytes ('${cap.id}' at 0x${off.toString(16)}, ${len} bytes)`);
    writeCap(img, off, cap, out);
    img.define(prevNext, 1, off);
    prevNext = off + CapHeader.NEXT;
    out.caps.push({ chain: 'standard', id: cap.id, capId: capId(cap), offset: off, length: len });
    off = align4(off + len);
  }
  if (caps.length > 0) img.setU16(PciHeader.STATUS, img.u16(PciHeader.STATUS) | PciStatus.CAP_LIST);
}

/** Writes an extended capability body (header excluded). */
function writeExtCap(img: ConfigImage, off: number, cap: ExtendedCapabilityDescription): void {
  if (cap.id === 'dsn') {
    img.define(off + DsnCap.SERIAL_LO, 4, Number(cap.serial & 0xffffffffn));
    img.define(off + DsnCap.SERIAL_HI, 4, Number(cap.serial >> 32n));
    return;
  }
  const len = VsecCap.DATA + cap.data.length;
  img.define(off + VsecCap.HEADER, 4, (cap.vsecId | (cap.revision << VsecCap.REV_SHIFT) | (len << VsecCap.LEN_SHIFT)) >>> 0);
  img.fill(off + VsecCap.DATA, cap.data);
}

/** Extended header dword: id, version, next. */
function extHeader(id: number, version: number, next: number): number {
  return (id | (version << ExtCapHeader.VERSION_SHIFT) | (next << ExtCapHeader.NEXT_SHIFT)) >>> 0;
}

/** Places the extended chain from 0x100 with linked headers. */
function placeExtended(img: ConfigImage, caps: readonly ExtendedCapabilityDescription[], out: CapabilityLayout): void {
  const offsets: number[] = [];
  let off = PCI_EXT_CAP_START;
  for (const cap of caps) {
    const len = extendedCapabilitySize(cap);
    check(off + len <= img.size, `extended capabilities do not fit in ${img.size} bytes`);
    offsets.push(off);
    out.caps.push({ chain: 'extended', id: cap.id, capId: extCapId(cap), offset: off, length: len });
    off = align4(off + len);
  }
  caps.forEach((cap, i) => {
    const version = cap.id === 'dsn' ? DsnCap.VERSION : VsecCap.VERSION;
    img.define(offsets[i]!, 4, extHeader(extCapId(cap), version, offsets[i + 1] ?? 0));
    writeExtCap(img, offsets[i]!, cap);
  });
}

/** Numeric id of an extended capability. */
function extCapId(cap: ExtendedCapabilityDescription): number {
  return cap.id === 'dsn' ? PciExtCapId.DSN : PciExtCapId.VENDOR;
}

/**
 * Lays out both capability chains into `img` (header already written).
 * @throws PciConfigError when the capabilities do not fit.
 */
export function buildCapabilities(
  img: ConfigImage,
  caps: readonly CapabilityDescription[],
  extCaps: readonly ExtendedCapabilityDescription[],
): CapabilityLayout {
  const out: CapabilityLayout = { caps: [], pm: undefined, msi: undefined, msix: undefined, pcie: undefined };
  placeStandard(img, caps, out);
  if (extCaps.length > 0) placeExtended(img, extCaps, out);
  return out;
}
