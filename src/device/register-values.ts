/**
 * A register map's stored values as plain JSON (registers as hex strings,
 * memory-backed blocks as base64): what the device's default migration
 * saves and restores.
 */
import type { Slot } from './register-entries.js';
import { describeValue } from '../values/describe.js';

/** A map's stored values by entry name (see {@link RegisterMap.saveValues}). */
export type RegisterValues = Record<string, string>;

/** Every stored value of `slots`, by name (see `RegisterMap.saveValues`). */
export function saveSlotValues<C>(slots: readonly Slot<C>[]): RegisterValues {
  const out: RegisterValues = {};
  for (const s of slots) {
    if (s.kind === 'register') out[s.name] = s.value.toString(16);
    else if (s.buffer) out[s.name] = s.buffer.toString('base64');
  }
  return out;
}

/** Puts `values` back into the slots they name, all checked before any is changed (see `RegisterMap.loadValues`). */
export function loadSlotValues<C>(byName: ReadonlyMap<string, Slot<C>>, values: RegisterValues): void {
  if (typeof values !== 'object' || values === null || Array.isArray(values)) throw new TypeError('register values must be an object by name');
  const apply: (() => void)[] = [];
  for (const [name, v] of Object.entries(values)) {
    const s = byName.get(name);
    if (!s || (s.kind !== 'register' && !s.buffer)) throw new TypeError(`register values: no register or memory block named ${name}`);
    if (typeof v !== 'string') throw new TypeError(`register values: ${name} must be a string, got ${describeValue(v)}`);
    if (s.kind === 'register') {
      if (!/^[0-9a-f]{1,16}$/.test(v)) throw new TypeError(`register values: ${name} is not a hex number`);
      const value = BigInt(`0x${v}`);
      if (value >> BigInt(s.size * 8) !== 0n) throw new TypeError(`register values: ${name} does not fit in ${s.size} bytes`);
      apply.push(() => (s.value = value));
    } else {
      const bytes = Buffer.from(v, 'base64');
      if (bytes.length !== s.size) throw new TypeError(`register values: block ${name} has ${bytes.length} bytes, ${s.size} wanted`);
      apply.push(() => bytes.copy(s.buffer!));
    }
  }
  for (const f of apply) f();
}
