/**
 * A device's checkpoint is its migration save (the device's own
 * save/load, or the default: memory regions, `state`, config space,
 * pending interrupts), taken right after each request that may change it
 * and before that request's reply goes out. A device whose state muser
 * cannot see (offerMigration says why) is not checkpointed: its
 * successor starts from power-on state, as after a reset.
 */
import type { Device } from '../device/device.js';
import type { MigrationData } from '../device/migration-spec.js';
import { defaultLoader, saveDefault } from '../migration/default.js';
import { Command } from '../protocol/constants.js';

/** Requests after which the device's state may have changed. */
const CHANGING: ReadonlySet<number> = new Set([Command.REGION_WRITE, Command.REGION_WRITE_MULTI, Command.DEVICE_RESET]);

/** True when `command` may change the device's state. */
export function changesState(command: number): boolean {
  return CHANGING.has(command);
}

/**
 * The device's save as chunks, when it is available right away. A save
 * that is a Promise or an async iterable is not (undefined): the reply
 * cannot wait for it here.
 */
export function saveNow(device: Device): Uint8Array[] | undefined {
  const spec = device.spec.migration;
  const data: unknown = spec && spec.save ? spec.save(device) : saveDefault(device);
  if (data instanceof Promise) {
    data.catch(() => undefined);
    return undefined;
  }
  const d = data as MigrationData;
  if (d instanceof Uint8Array) return [d];
  // Views are fine: the journal copies them before anything runs.
  if (Symbol.iterator in d) return [...d];
  return undefined;
}

/**
 * Loads a checkpoint into a fresh device the way a migration's RESUMING
 * would, except that the memory of `adoptedRegions` (memfds the
 * predecessor served, which hold newer bytes than the checkpoint) is
 * left as it is by the default loader; a device's own `load` or `loader`
 * sees the whole checkpoint.
 */
export async function loadCheckpoint(device: Device, state: Uint8Array, adoptedRegions: ReadonlySet<number> = new Set()): Promise<void> {
  const spec = device.spec.migration;
  if (spec && spec.loader) {
    const sink = spec.loader(device);
    await sink.write(state);
    await sink.end();
  } else if (spec && spec.load) {
    await spec.load(state, device);
  } else {
    const sink = defaultLoader(device, adoptedRegions);
    await sink.write(state);
    await sink.end();
  }
}
