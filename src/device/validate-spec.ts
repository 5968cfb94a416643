/**
 * Run-time checks of a DeviceSpec, with messages that name the field
 * (`bars[0].kind: 'mem' is not one of 'memory' | 'io'`). Device files run
 * through tsx are never type-checked, so what TypeScript would catch must be
 * caught here, before anything is built. Value ranges the PCI model owns
 * (id ranges, BAR sizes, MSI vector counts, capability fields) are checked
 * by src/pci/validate.ts; this file checks shapes, types and the fields
 * only the device layer knows.
 */
import type { DeviceSpec } from './spec.js';
import { describeValue } from '../values/describe.js';

const SPEC_FIELDS = [
  'name', 'identity', 'bars', 'regions', 'capabilities', 'extendedCapabilities', 'interrupts', 'configRegisters', 'config',
  'dma', 'requireBusMaster', 'migration', 'state', 'timers', 'onReset', 'onConnect', 'onDisconnect', 'onDispose', 'onRecover', 'checkpointFreeWrites',
  'onCheckpoint', 'onQuiesce', 'onResume',
];
const IDENTITY_FIELDS = ['vendorId', 'deviceId', 'subsystemVendorId', 'subsystemId', 'classCode', 'revision'];
const REGION_FIELDS = ['size', 'memory', 'read', 'write', 'ioeventfds', 'watches', 'readable', 'writable'];
const BAR_FIELDS = [...REGION_FIELDS, 'kind', 'is64', 'prefetchable'];
const INTERRUPT_FIELDS = ['intx', 'msi', 'msix', 'err', 'req'];
const MSIX_FIELDS = ['vectors', 'bar', 'tableOffset', 'pbaOffset'];
/** Capabilities a DeviceSpec lists itself; MSI and MSI-X come from `interrupts`. */
const SPEC_CAPABILITIES = ['pm', 'pcie', 'vendor'];
const SPEC_EXT_CAPABILITIES = ['dsn', 'vendor'];

/**
 * Throws a TypeError (wrong type, unknown field) or RangeError (a value out
 * of range) naming the first bad field of `spec`.
 */
export function validateSpec(spec: unknown): asserts spec is DeviceSpec {
  if (!isObject(spec)) throw new TypeError(`a DeviceSpec must be an object, got ${describeValue(spec)}`);
  knownFields(spec, SPEC_FIELDS, 'DeviceSpec');
  optional(spec, 'name', 'string', '');
  if (!isObject(spec.identity)) throw new TypeError(`identity: must be an object with vendorId and deviceId, got ${describeValue(spec.identity)}`);
  knownFields(spec.identity, IDENTITY_FIELDS, 'identity');
  for (const f of IDENTITY_FIELDS) {
    const required = f === 'vendorId' || f === 'deviceId';
    if (required || spec.identity[f] !== undefined) integer(spec.identity[f], `identity.${f}`);
  }
  if (spec.bars !== undefined) validateBars(spec.bars);
  if (spec.regions !== undefined) {
    if (!isObject(spec.regions)) throw new TypeError(`regions: must be an object of regions by index, got ${describeValue(spec.regions)}`);
    for (const [key, r] of Object.entries(spec.regions)) {
      if (!/^\d+$/.test(key) || Number(key) < 9) throw new RangeError(`regions[${key}]: device-specific regions take indexes 9 and up (BARs go in \`bars\`)`);
      validateRegion(r, `regions[${key}]`, [...REGION_FIELDS, 'type']);
    }
  }
  validateCapabilities(spec.capabilities, 'capabilities', SPEC_CAPABILITIES);
  validateCapabilities(spec.extendedCapabilities, 'extendedCapabilities', SPEC_EXT_CAPABILITIES);
  if (spec.interrupts !== undefined) validateInterrupts(spec.interrupts);
  if (spec.configRegisters !== undefined && !hasMethods(spec.configRegisters, ['read', 'write', 'reset', 'layout'])) {
    throw new TypeError(`configRegisters: must be a register map from defineRegisters(), got ${describeValue(spec.configRegisters)}`);
  }
  if (spec.config !== undefined) {
    if (!isObject(spec.config)) throw new TypeError(`config: must be an object of hooks { read, write }, got ${describeValue(spec.config)}`);
    optional(spec.config, 'read', 'function', 'config.');
    optional(spec.config, 'write', 'function', 'config.');
  }
  optional(spec, 'dma', 'boolean', '');
  optional(spec, 'requireBusMaster', 'boolean', '');
  if (spec.migration !== undefined && spec.migration !== false && !isObject(spec.migration)) {
    throw new TypeError(`migration: must be false or an object ({} for the default), got ${describeValue(spec.migration)}`);
  }
  if (spec.state !== undefined && !isObject(spec.state)) throw new TypeError(`state: must be a plain object, got ${describeValue(spec.state)}`);
  if (spec.timers !== undefined) {
    if (!Array.isArray(spec.timers)) throw new TypeError(`timers: must be an array of deviceTimer()s, got ${describeValue(spec.timers)}`);
    spec.timers.forEach((t: unknown, i) => {
      if (!hasMethods(t, ['start', 'cancel', 'attach', 'detach'])) throw new TypeError(`timers[${i}]: must be a timer from deviceTimer(), got ${describeValue(t)}`);
    });
  }
  for (const hook of ['onReset', 'onConnect', 'onDisconnect', 'onDispose', 'onRecover', 'onCheckpoint', 'onQuiesce', 'onResume']) optional(spec, hook, 'function', '');
  if (spec.checkpointFreeWrites !== undefined) {
    if (!Array.isArray(spec.checkpointFreeWrites)) throw new TypeError(`checkpointFreeWrites: must be an array of { region, offset, length }, got ${describeValue(spec.checkpointFreeWrites)}`);
    spec.checkpointFreeWrites.forEach((r: unknown, i) => {
      if (!isObject(r)) throw new TypeError(`checkpointFreeWrites[${i}]: must be { region, offset, length }, got ${describeValue(r)}`);
      for (const f of ['region', 'offset', 'length']) integer(r[f], `checkpointFreeWrites[${i}].${f}`);
    });
  }
}

function validateBars(bars: unknown): void {
  if (!isObject(bars) || Array.isArray(bars)) throw new TypeError(`bars: must be an object of BARs by index 0-5 ({ 0: { size: 4096, ... } }), got ${describeValue(bars)}`);
  for (const [key, bar] of Object.entries(bars)) {
    if (!/^[0-5]$/.test(key)) {
      throw new RangeError(`bars[${key}]: BAR index ${key} is not 0-5 (device-specific regions go in \`regions\`, index 9 and up)`);
    }
    if (bar === undefined) continue;
    validateRegion(bar, `bars[${key}]`, BAR_FIELDS);
    const b = bar as Record<string, unknown>;
    if (b.kind !== undefined && b.kind !== 'memory' && b.kind !== 'io') throw new RangeError(`bars[${key}].kind: ${describeValue(b.kind)} is not one of 'memory' | 'io'`);
    optional(b, 'is64', 'boolean', `bars[${key}].`);
    optional(b, 'prefetchable', 'boolean', `bars[${key}].`);
  }
}

function validateRegion(r: unknown, where: string, fields: readonly string[]): void {
  if (!isObject(r)) throw new TypeError(`${where}: must be an object with a size, got ${describeValue(r)}`);
  knownFields(r, fields, where);
  integer(r.size, `${where}.size`);
  optional(r, 'read', 'function', `${where}.`);
  optional(r, 'write', 'function', `${where}.`);
  optional(r, 'readable', 'boolean', `${where}.`);
  optional(r, 'writable', 'boolean', `${where}.`);
  if (r.memory !== undefined && typeof r.memory !== 'boolean' && !isObject(r.memory)) {
    throw new TypeError(`${where}.memory: must be a boolean or { mmap: [...] }, got ${describeValue(r.memory)}`);
  }
  if (r.ioeventfds !== undefined && !Array.isArray(r.ioeventfds)) throw new TypeError(`${where}.ioeventfds: must be an array, got ${describeValue(r.ioeventfds)}`);
  if (r.watches !== undefined) {
    if (!Array.isArray(r.watches)) throw new TypeError(`${where}.watches: must be an array of memoryWatch()es, got ${describeValue(r.watches)}`);
    r.watches.forEach((w: unknown, i) => {
      if (!hasMethods(w, ['store', 'attach', 'start', 'stop', 'detach'])) throw new TypeError(`${where}.watches[${i}]: must be a watch from memoryWatch(), got ${describeValue(w)}`);
    });
    if (r.watches.length > 0 && !r.memory) throw new TypeError(`${where}.watches: watched words need a memory-backed region the client maps (memory: true or { mmap: [...] })`);
  }
}

function validateCapabilities(caps: unknown, where: string, ids: readonly string[]): void {
  if (caps === undefined) return;
  if (!Array.isArray(caps)) throw new TypeError(`${where}: must be an array, got ${describeValue(caps)}`);
  caps.forEach((c: unknown, i) => {
    const id = isObject(c) ? c.id : undefined;
    if (where === 'capabilities' && (id === 'msi' || id === 'msix')) {
      throw new TypeError(`${where}[${i}]: ${id === 'msi' ? 'MSI' : 'MSI-X'} is declared with interrupts.${id} (${id === 'msi' ? 'interrupts: { msi: 4 }' : 'interrupts: { msix: 8 } or { msix: { vectors, bar, tableOffset, pbaOffset } }'}), not in capabilities`);
    }
    if (typeof id !== 'string' || !ids.includes(id)) {
      throw new RangeError(`${where}[${i}].id: ${describeValue(id)} is not one of ${ids.map((x) => `'${x}'`).join(' | ')}`);
    }
  });
}

function validateInterrupts(irq: unknown): void {
  if (!isObject(irq)) throw new TypeError(`interrupts: must be an object, got ${describeValue(irq)}`);
  knownFields(irq, INTERRUPT_FIELDS, 'interrupts');
  for (const f of ['intx', 'err', 'req']) optional(irq, f, 'boolean', 'interrupts.');
  if (irq.msi !== undefined && ![1, 2, 4, 8, 16, 32].includes(irq.msi as number)) {
    throw new RangeError(`interrupts.msi: ${describeValue(irq.msi)} is not a vector count 1, 2, 4, 8, 16 or 32`);
  }
  if (irq.msix === undefined || typeof irq.msix === 'number') return;
  if (!isObject(irq.msix)) throw new TypeError(`interrupts.msix: must be a vector count or { vectors, bar?, tableOffset?, pbaOffset? }, got ${describeValue(irq.msix)}`);
  knownFields(irq.msix, MSIX_FIELDS, 'interrupts.msix');
  integer(irq.msix.vectors, 'interrupts.msix.vectors');
  for (const f of ['bar', 'tableOffset', 'pbaOffset']) if (irq.msix[f] !== undefined) integer(irq.msix[f], `interrupts.msix.${f}`);
  if (irq.msix.bar !== undefined && !/^[0-5]$/.test(String(irq.msix.bar))) throw new RangeError(`interrupts.msix.bar: BAR ${String(irq.msix.bar)} is not 0-5`);
}

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null;
}

function hasMethods(v: unknown, names: readonly string[]): boolean {
  return isObject(v) && names.every((n) => typeof v[n] === 'function');
}

function knownFields(o: Obj, known: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new TypeError(`${where}: unknown field '${k}' (known: ${known.join(', ')})`);
  }
}

function optional(o: Obj, field: string, type: 'string' | 'boolean' | 'function', prefix: string): void {
  const v = o[field];
  if (v !== undefined && typeof v !== type) throw new TypeError(`${prefix}${field}: must be a ${type}, got ${describeValue(v)}`);
}

function integer(v: unknown, where: string): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw new TypeError(`${where}: must be an integer${typeof v === 'string' ? ' (a number, not a string: 0x1234, not "0x1234")' : ''}, got ${describeValue(v)}`);
  }
}
