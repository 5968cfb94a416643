/**
 * Decodes base address registers from their original values and the masks
 * read back after writing all-ones, and formats them as `Region` lines.
 */
import { PCI_NUM_BARS, PciBar, PciCommand, PciHeader, barOffset } from '../../pci/regs.js';
import type { LspciBar } from './types.js';
import { formatSize, hex } from './util.js';

/** Decoded BARs and the disagreements found. */
export interface BarsResult {
  bars: LspciBar[];
  notes: string[];
}

/** True when the BAR's original value declares a 64-bit memory BAR. */
export function isMem64(value: number): boolean {
  return (value & PciBar.SPACE_IO) === 0 && (value & PciBar.MEM_TYPE_MASK) === PciBar.MEM_TYPE_64;
}

/** The lowest set bit of an address mask: the BAR size (0 if unimplemented). */
function sizeFromMask(mask: bigint): bigint {
  return mask & -mask;
}

/** Decodes BAR `i` (and its upper half when 64-bit); undefined when unimplemented. */
function decodeBar(config: Buffer, masks: readonly number[], i: number, regionSize: number): LspciBar | undefined {
  const lo = config.readUInt32LE(barOffset(i));
  if (lo & PciBar.SPACE_IO) {
    const size = sizeFromMask(BigInt((masks[i]! & PciBar.IO_MASK) >>> 0));
    const address = BigInt((lo & PciBar.IO_MASK) >>> 0);
    return size ? { index: i, kind: 'io', is64: false, prefetchable: false, size: Number(size), address, regionSize } : undefined;
  }
  const is64 = isMem64(lo) && i + 1 < PCI_NUM_BARS;
  const hiOf = (v: number): bigint => (is64 ? BigInt(v >>> 0) << 32n : 0n);
  const size = sizeFromMask(hiOf(masks[i + 1] ?? 0) | BigInt((masks[i]! & PciBar.MEM_MASK) >>> 0));
  if (!size) return undefined;
  const address = hiOf(is64 ? config.readUInt32LE(barOffset(i + 1)) : 0) | BigInt((lo & PciBar.MEM_MASK) >>> 0);
  const prefetchable = (lo & PciBar.MEM_PREFETCH) !== 0;
  return { index: i, kind: 'memory', is64, prefetchable, size: Number(size), address, regionSize };
}

/** Decodes the six BARs of a type 0 header. */
export function decodeBars(config: Buffer, masks: readonly number[], regionSizes: readonly number[]): BarsResult {
  const result: BarsResult = { bars: [], notes: [] };
  if ((config[PciHeader.HEADER_TYPE]! & 0x7f) !== 0) {
    result.notes.push(`header type ${hex(config[PciHeader.HEADER_TYPE]!, 2)}: BARs not decoded`);
    return result;
  }
  for (let i = 0; i < PCI_NUM_BARS; i++) {
    const bar = decodeBar(config, masks, i, regionSizes[i] ?? 0);
    result.notes.push(...barNotes(config, i, bar, regionSizes[i] ?? 0));
    if (!bar) continue;
    result.bars.push(bar);
    if (bar.is64) i++;
  }
  return result;
}

/** Disagreements between BAR `i` and its VFIO region. */
function barNotes(config: Buffer, i: number, bar: LspciBar | undefined, regionSize: number): string[] {
  const notes: string[] = [];
  if (isMem64(config.readUInt32LE(barOffset(i))) && i === PCI_NUM_BARS - 1) notes.push('BAR 5 claims 64-bit but has no upper half');
  if (bar && bar.size !== regionSize) {
    notes.push(`Region ${i}: BAR decodes ${formatSize(bar.size)} but VFIO region ${i} has size ${formatSize(regionSize)}`);
  }
  if (!bar && regionSize > 0) notes.push(`Region ${i}: BAR not implemented but VFIO region ${i} has size ${formatSize(regionSize)}`);
  return notes;
}

/** The `Region` line of a BAR, as lspci -vv prints it (tab-indented). */
export function formatBar(bar: LspciBar, command: number): string {
  const io = bar.kind === 'io';
  const where = bar.address === 0n ? '<unassigned>' : hex(bar.address, io ? 4 : 8);
  const type = io ? '' : ` (${bar.is64 ? '64-bit' : '32-bit'}, ${bar.prefetchable ? 'prefetchable' : 'non-prefetchable'})`;
  const enabled = (command & (io ? PciCommand.IO : PciCommand.MEMORY)) !== 0;
  const mismatch = bar.size === bar.regionSize ? '' : ` [VFIO region size=${formatSize(bar.regionSize)} disagrees]`;
  const space = io ? 'I/O ports' : 'Memory';
  return `\tRegion ${bar.index}: ${space} at ${where}${type}${enabled ? '' : ' [disabled]'} [size=${formatSize(bar.size)}]${mismatch}`;
}
