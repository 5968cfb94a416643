/**
 * Whether a device is offered for live migration, and the Migration that
 * serves it when it is. Refusing beats silently losing state muser cannot see.
 */
import type { Device } from '../device/device.js';
import type { BarSpec, DeviceSpec } from '../device/spec.js';
import { registerMapOf } from '../device/registers.js';
import { Migration } from './migration.js';

/** A device's migration, or why it has none. */
export type MigrationOffer = { migration: Migration; unavailable?: undefined } | { migration?: undefined; unavailable: string };

/** Builds the device's migration, unless its spec refuses or hides state. */
export function offerMigration(device: Device): MigrationOffer {
  const spec = device.spec;
  if (spec.migration === false) return { unavailable: 'the device refuses migration (migration: false)' };
  const hidden = spec.migration === undefined ? hiddenStateReason(spec) : undefined;
  if (hidden !== undefined) return { unavailable: hidden };
  return { migration: new Migration(device, spec.migration) };
}

/**
 * Why the default migration could lose this device's state, or undefined
 * when it cannot: callbacks (region read/write, doorbells, config hooks) may
 * keep state in closures that muser cannot see. Such a device must say how
 * to migrate (`migration: { save, load }`), declare where its state lives
 * (`state`, migrated as JSON; for timers, a `stateKey`), opt into the default explicitly
 * (`migration: {}`), or refuse (`migration: false`). Without that, it is
 * not offered for migration at all: refusing beats silently losing state.
 */
function hiddenStateReason(spec: DeviceSpec): string | undefined {
  const unkept = (spec.timers ?? []).filter((t) => t.stateKey === undefined).map((t) => t.name);
  if (unkept.length > 0) {
    return `timer ${unkept.join(', ')} keeps its time outside \`state\`: give it a stateKey, migration: { save, load }, migration: {} for the default, or migration: false`;
  }
  if (spec.state !== undefined) return undefined;
  const regions: [string, BarSpec | undefined][] = [
    ...Object.entries(spec.bars ?? {}).map(([i, b]): [string, BarSpec | undefined] => [`BAR${i}`, b]),
    ...Object.entries(spec.regions ?? {}).map(([i, r]): [string, BarSpec | undefined] => [`region ${i}`, r]),
  ];
  // A register map without hooks keeps everything in its stored values, which migrate.
  const hooked = (r: BarSpec): boolean => registerMapOf(r)?.hasHooks ?? true;
  const withCallbacks = regions.filter(([, r]) => r && (((r.read || r.write) && hooked(r)) || (r.ioeventfds?.length ?? 0) > 0)).map(([name]) => name);
  if (spec.config?.read || spec.config?.write) withCallbacks.push('config hooks');
  if (spec.configRegisters && spec.configRegisters.hasHooks !== false) withCallbacks.push('config registers');
  if (withCallbacks.length === 0) return undefined;
  return (
    `${withCallbacks.join(', ')} served by callbacks that may keep state muser cannot see: ` +
    'give migration: { save, load }, a `state` object, migration: {} for the default, or migration: false'
  );
}

