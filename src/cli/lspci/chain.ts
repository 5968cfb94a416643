/**
 * Walks the standard and extended capability chains of a config space
 * image, defensively: a device may point anywhere.
 */
import { CapHeader, ExtCapHeader, PCI_CAP_START, PCI_EXT_CAP_START, PCIE_CONFIG_SIZE, PciHeader, PciStatus } from '../../pci/regs.js';
import { hex } from './util.js';

/** Most capabilities visited per chain before giving up. */
export const MAX_CAPS = 48;

/** One capability header found in a chain. */
export interface ChainEntry {
  offset: number;
  id: number;
  /** Extended chain only. */
  version?: number;
}

/** What a walk found, and what was wrong with the chain. */
export interface ChainResult {
  entries: ChainEntry[];
  notes: string[];
}

/** Why following `ptr` must stop, or undefined when it is fine. */
function badPointer(ptr: number, min: number, end: number, seen: Set<number>, count: number): string | undefined {
  if (ptr < min || ptr + 4 > end) return `pointer ${hex(ptr, 2)} is outside ${hex(min, 2)}-${hex(end - 1, 2)}`;
  if (ptr & 3) return `pointer ${hex(ptr, 2)} is not dword-aligned`;
  if (seen.has(ptr)) return `pointer ${hex(ptr, 2)} loops back`;
  if (count >= MAX_CAPS) return `more than ${MAX_CAPS} capabilities`;
  return undefined;
}

/** Walks the standard chain from the pointer at 0x34 (when Status says Cap+). */
export function walkStandard(config: Buffer): ChainResult {
  const result: ChainResult = { entries: [], notes: [] };
  if ((config.readUInt16LE(PciHeader.STATUS) & PciStatus.CAP_LIST) === 0) return result;
  const seen = new Set<number>();
  let ptr = config[PciHeader.CAPABILITY_LIST]!;
  while (ptr !== 0) {
    const bad = badPointer(ptr, PCI_CAP_START, 0x100, seen, result.entries.length);
    if (bad) {
      result.notes.push(`capability chain: ${bad}; stopped`);
      break;
    }
    seen.add(ptr);
    result.entries.push({ offset: ptr, id: config[ptr + CapHeader.ID]! });
    ptr = config[ptr + CapHeader.NEXT]!;
  }
  return result;
}

/** Walks the extended chain from 0x100 (4096-byte config space only). */
export function walkExtended(config: Buffer): ChainResult {
  const result: ChainResult = { entries: [], notes: [] };
  if (config.length < PCIE_CONFIG_SIZE) return result;
  const first = config.readUInt32LE(PCI_EXT_CAP_START);
  if (first === 0 || first === 0xffffffff) return result;
  const seen = new Set<number>();
  let ptr = PCI_EXT_CAP_START;
  while (ptr !== 0) {
    const bad = badPointer(ptr, PCI_EXT_CAP_START, PCIE_CONFIG_SIZE, seen, result.entries.length);
    if (bad) {
      result.notes.push(`extended capability chain: ${bad}; stopped`);
      break;
    }
    seen.add(ptr);
    const header = config.readUInt32LE(ptr);
    const version = (header >>> ExtCapHeader.VERSION_SHIFT) & ExtCapHeader.VERSION_MASK;
    result.entries.push({ offset: ptr, id: header & ExtCapHeader.ID_MASK, version });
    ptr = header >>> ExtCapHeader.NEXT_SHIFT;
  }
  return result;
}
