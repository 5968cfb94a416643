/**
 * Live migration of a program's device with muser's default migration: its
 * `device.state` holds the program's state (JSON text, kept as the program
 * wrote it, so numbers JavaScript cannot hold exactly survive) and the
 * values muser stores for its registers. The program is asked for its
 * state when the device stops (QUIESCE), told to run again (RESUME), and
 * handed the migrated state on the destination (LOAD_STATE).
 */
import type { MigrationSpec } from '../device/migration-spec.js';
import { MigrationState } from '../device/migration-spec.js';
import { DeviceError, Errno } from '../device/errors.js';
import type { BuiltProgramDevice } from './build.js';
import type { ProgramConnection } from './connection.js';
import { decodeEmpty, decodeState, Kind, valueFromJson, valueToJson } from './wire.js';

/** `device.state` of a program's device. */
export interface ProgramState extends Record<string, unknown> {
  /** The program's state as JSON text (null before the device first stopped). */
  program: string | null;
  /** Values muser stores, by register name. */
  registers: Record<string, number | string>;
}

/** The state object and migration spec of a program's device. */
export function programMigration(conn: ProgramConnection, built: BuiltProgramDevice): { state: ProgramState; migration: MigrationSpec } {
  const state: ProgramState = { program: null, registers: {} };
  const migration: MigrationSpec = {
    async onTransition(from, to) {
      if (from === MigrationState.RESUMING) {
        restoreRegisters(built, state.registers);
        if (typeof state.program !== 'string') throw new DeviceError(Errno.EINVAL, 'migration data holds no device program state');
        await conn.call(Kind.LOAD_STATE, Buffer.from(state.program, 'utf8'), 'LOAD_STATE', decodeEmpty('LOAD_STATE'));
      }
      if (from === MigrationState.RUNNING) {
        state.program = await conn.call(Kind.QUIESCE, undefined, 'QUIESCE', decodeState);
        state.registers = saveRegisters(built);
      }
      if (to === MigrationState.RUNNING) conn.send(Kind.RESUME);
    },
  };
  return { state, migration };
}

function saveRegisters(built: BuiltProgramDevice): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [name, { map, register }] of built.registers) out[name] = valueToJson(register.width === 8 ? map.get64(name) : map.get(name));
  return out;
}

function restoreRegisters(built: BuiltProgramDevice, saved: unknown): void {
  if (saved === null || typeof saved !== 'object' || Array.isArray(saved)) throw new DeviceError(Errno.EINVAL, 'migration data: register values are not an object');
  for (const [name, v] of Object.entries(saved)) {
    const entry = built.registers.get(name);
    const value = valueFromJson(v);
    if (!entry || value === undefined) throw new DeviceError(Errno.EINVAL, `migration data: register ${name} (${JSON.stringify(v)}) is not one of this device's`);
    entry.map.set(name, value);
  }
}
