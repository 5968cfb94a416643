/**
 * The register maps a device serves: each BAR or region built by
 * `registers.bar()`, and `configRegisters`. Found once, here, for what
 * treats them all alike: the device reset, debug tracing, migration.
 */
import type { Device } from './types.js';
import { registerMapOf, type RegisterMap } from './registers.js';
import type { DeviceSpec } from './spec.js';

/** A map and where it serves: 'BAR0'..'BAR5', 'region9'.., or 'config'. */
export interface PlacedRegisterMap {
  where: string;
  map: RegisterMap<Device>;
}

/** Every register map of `spec`, BARs first, then regions, then config. */
export function registerMapsOf(spec: Pick<DeviceSpec, 'bars' | 'regions' | 'configRegisters'>): PlacedRegisterMap[] {
  const out: PlacedRegisterMap[] = [];
  const add = (where: string, map: RegisterMap<Device> | undefined): void => {
    // One map may serve two places; it is still one set of values.
    if (map && !out.some((p) => p.map === map)) out.push({ where, map });
  };
  for (const [index, bar] of Object.entries(spec.bars ?? {})) add(`BAR${index}`, registerMapOf(bar));
  for (const [index, region] of Object.entries(spec.regions ?? {})) add(`region${index}`, registerMapOf(region));
  add('config', spec.configRegisters);
  return out;
}
