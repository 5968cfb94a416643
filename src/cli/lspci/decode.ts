/** Turns an {@link LspciSnapshot} into {@link LspciData}. Pure. */
import { PciHeader } from '../../pci/regs.js';
import { decodeBars } from './bars.js';
import { walkExtended, walkStandard, type ChainEntry } from './chain.js';
import { capName, extCapName } from './names.js';
import type { LspciCapability, LspciData, LspciSnapshot } from './types.js';

function standardCap(e: ChainEntry): LspciCapability {
  return { offset: e.offset, id: e.id, name: capName(e.id) };
}

function extendedCap(e: ChainEntry): LspciCapability {
  return { offset: e.offset, id: e.id, name: extCapName(e.id), version: e.version };
}

/** Decodes identity, BARs and both capability chains. */
export function decodeLspci(s: LspciSnapshot): LspciData {
  const c = s.config;
  const bars = decodeBars(c, s.barMasks, s.regionSizes);
  const std = walkStandard(c);
  const ext = walkExtended(c);
  return {
    vendorId: c.readUInt16LE(PciHeader.VENDOR_ID),
    deviceId: c.readUInt16LE(PciHeader.DEVICE_ID),
    subsystemVendorId: c.readUInt16LE(PciHeader.SUBSYSTEM_VENDOR_ID),
    subsystemId: c.readUInt16LE(PciHeader.SUBSYSTEM_ID),
    classCode: c.readUIntLE(PciHeader.CLASS_PROG, 3),
    revision: c[PciHeader.REVISION_ID]!,
    headerType: c[PciHeader.HEADER_TYPE]!,
    command: c.readUInt16LE(PciHeader.COMMAND),
    status: c.readUInt16LE(PciHeader.STATUS),
    interruptPin: c[PciHeader.INTERRUPT_PIN]!,
    interruptLine: c[PciHeader.INTERRUPT_LINE]!,
    configSize: c.length,
    numRegions: s.numRegions,
    numIrqs: s.numIrqs,
    bars: bars.bars,
    capabilities: std.entries.map(standardCap),
    extendedCapabilities: ext.entries.map(extendedCap),
    notes: [...bars.notes, ...std.notes, ...ext.notes],
  };
}
