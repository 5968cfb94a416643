/**
 * How a device's spec becomes its PCI layout: where MSI-X goes, the BARs
 * config space describes, the capability list, and the regions the client
 * sees. Pure functions of the spec, used once when a Device is built.
 */
import type { BarDescription, CapabilityDescription } from '../pci/index.js';
import { CONFIG_REGION, makeRegion, PCI_REGION_COUNT, plainRegion, type Region } from './regions.js';
import type { BarSpec } from './region-spec.js';
import type { DeviceSpec, InterruptSpec } from './spec.js';
import { registerMapOf } from './registers.js';

const MAX_BARS = 6;

/** Where the MSI-X table and PBA live in a BAR. */
export interface MsixPlacement {
  vectors: number;
  bar: number;
  tableOffset: number;
  tableSize: number;
  pbaOffset: number;
  pbaSize: number;
}

export function placeMsix(spec: DeviceSpec, irq: InterruptSpec): MsixPlacement | undefined {
  if (irq.msix === undefined) return undefined;
  const o = typeof irq.msix === 'number' ? { vectors: irq.msix } : irq.msix;
  if (!Number.isInteger(o.vectors) || o.vectors < 1 || o.vectors > 2048) {
    throw new RangeError(`MSI-X vectors must be 1..2048, got ${o.vectors}`);
  }
  const tableSize = 16 * o.vectors;
  const pbaSize = 8 * Math.ceil(o.vectors / 64);
  const tableOffset = o.tableOffset ?? 0;
  const pbaOffset = o.pbaOffset ?? align(tableOffset + tableSize, 8);
  const bar = o.bar ?? firstFreeBar(spec);
  const placement = { vectors: o.vectors, bar, tableOffset, tableSize, pbaOffset, pbaSize };
  checkMsixOverRegisters(spec, placement);
  return placement;
}

/** An MSI-X table or PBA over a register map's entries would shadow them: refused. */
function checkMsixOverRegisters(spec: DeviceSpec, p: MsixPlacement): void {
  const map = registerMapOf(spec.bars?.[p.bar as 0]);
  for (const [what, start, size] of [['table', p.tableOffset, p.tableSize], ['PBA', p.pbaOffset, p.pbaSize]] as const) {
    const hit = map?.layout().find((e) => e.offset < start + size && e.offset + e.size > start);
    if (hit) {
      throw new RangeError(
        `interrupts.msix: the MSI-X ${what} (0x${start.toString(16)}-0x${(start + size - 1).toString(16)} in BAR${p.bar}) ` +
          `would shadow register ${hit.name} (0x${hit.offset.toString(16)}, ${hit.size} bytes): give interrupts.msix a tableOffset/pbaOffset (or bar) clear of the registers`,
      );
    }
  }
}

/** Which BAR each register map of the spec serves. */
export function registerMapRegions(spec: DeviceSpec): Map<object, number> {
  const out = new Map<object, number>();
  for (const [index, bar] of Object.entries(spec.bars ?? {})) {
    const map = registerMapOf(bar);
    if (map) out.set(map, Number(index));
  }
  return out;
}

function firstFreeBar(spec: DeviceSpec): number {
  const bars = spec.bars ?? {};
  for (let i = 0; i < MAX_BARS; i++) {
    const used = bars[i as 0] !== undefined || (i > 0 && bars[(i - 1) as 0]?.is64 === true);
    if (!used) return i;
  }
  throw new RangeError('no free BAR for the MSI-X table');
}

export function barDescriptions(spec: DeviceSpec, msix: MsixPlacement | undefined): (BarDescription | undefined)[] {
  const out: (BarDescription | undefined)[] = [];
  for (let i = 0; i < MAX_BARS; i++) {
    const b: BarSpec | undefined = spec.bars?.[i as 0];
    out.push(b ? { size: b.size, kind: b.kind ?? 'memory', is64: b.is64, prefetchable: b.prefetchable } : undefined);
  }
  if (msix && !out[msix.bar]) {
    out[msix.bar] = { size: pow2AtLeast(Math.max(4096, msix.pbaOffset + msix.pbaSize)), kind: 'memory' };
  }
  return out;
}

export function capabilityList(spec: DeviceSpec, irq: InterruptSpec, msix: MsixPlacement | undefined): CapabilityDescription[] {
  const caps: CapabilityDescription[] = [...(spec.capabilities ?? [])];
  if (irq.msi) caps.push({ id: 'msi', vectors: irq.msi as 1, is64: true, perVectorMask: true });
  if (msix) {
    caps.push({ id: 'msix', vectors: msix.vectors, tableBar: msix.bar, tableOffset: msix.tableOffset, pbaBar: msix.bar, pbaOffset: msix.pbaOffset });
  }
  return caps;
}

export function buildRegions(spec: DeviceSpec, bars: (BarDescription | undefined)[], configSize: number): (Region | undefined)[] {
  const regions: (Region | undefined)[] = [];
  for (let i = 0; i < MAX_BARS; i++) {
    const s = spec.bars?.[i as 0];
    const b = bars[i];
    regions[i] = s ? makeRegion(i, s) : b ? plainRegion(i, b.size) : undefined;
  }
  regions[CONFIG_REGION] = plainRegion(CONFIG_REGION, configSize);
  for (const [key, r] of Object.entries(spec.regions ?? {})) {
    const index = Number(key);
    if (!Number.isInteger(index) || index < PCI_REGION_COUNT) throw new RangeError(`device-specific regions start at index ${PCI_REGION_COUNT}, got ${key}`);
    regions[index] = makeRegion(index, r, r.type);
  }
  return regions;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
