/**
 * The device a program describes in HELLO, checked field by field. Every
 * mistake throws TypeError or RangeError naming the field
 * (`device.bars[0].registers[1].width: ...`), which muser sends back as
 * the HELLO's error reply and logs. Unknown fields are refused: a typo
 * must not silently become a default.
 */
import type { CapabilityDescription, PciIdentity } from '../pci/index.js';
import type { RegisterAccess, RegisterWidth } from '../device/registers.js';
import type { InterruptSpec } from '../device/spec.js';
import { valueFromJson } from './wire.js';

/** One register of a program's table. */
export interface ProgramRegister {
  name: string;
  offset: number;
  width: RegisterWidth;
  access: RegisterAccess;
  reset: bigint;
  writable: bigint | undefined;
  widths: RegisterWidth[] | undefined;
  trace: boolean;
  /** Reads ask the program (READ). */
  read: boolean;
  /** Writes are told to the program (WRITE, or CONFIG_WRITE for config registers). */
  write: boolean;
}

/** One BAR of a program's device. */
export interface ProgramBar {
  index: number;
  size: number;
  kind: 'memory' | 'io';
  is64: boolean;
  prefetchable: boolean;
  registers: ProgramRegister[];
}

/** The whole device of a HELLO. */
export interface ProgramDevice {
  name: string | undefined;
  identity: PciIdentity;
  bars: ProgramBar[];
  config: ProgramRegister[];
  interrupts: InterruptSpec;
  capabilities: CapabilityDescription[];
  /** The program keeps a `state` that migrates (QUIESCE / LOAD_STATE). */
  migratable: boolean;
}

type Json = Record<string, unknown>;

const ACCESS: readonly RegisterAccess[] = ['ro', 'rw', 'wo', 'rw1c', 'rc'];
const WIDTHS: readonly number[] = [1, 2, 4, 8];

/** Checks HELLO's payload; returns the protocol version asked for and the device. */
export function parseHello(hello: Json): { version: unknown; device: ProgramDevice } {
  fields(hello, 'HELLO', ['version', 'device']);
  return { version: hello.version, device: parseDevice(object(hello.device, 'device')) };
}

function parseDevice(d: Json): ProgramDevice {
  fields(d, 'device', ['name', 'identity', 'bars', 'config', 'interrupts', 'capabilities', 'state']);
  const name = d.name === undefined ? undefined : string(d.name, 'device.name');
  const bars = list(d.bars ?? [], 'device.bars').map((b, i) => parseBar(object(b, `device.bars[${i}]`), `device.bars[${i}]`));
  const indexes = new Set<number>();
  for (const b of bars) {
    if (indexes.has(b.index)) throw new RangeError(`device.bars: BAR ${b.index} is given twice`);
    indexes.add(b.index);
  }
  const config = list(d.config ?? [], 'device.config').map((r, i) => parseRegister(object(r, `device.config[${i}]`), `device.config[${i}]`));
  for (const [i, r] of config.entries()) {
    if (r.read) throw new TypeError(`device.config[${i}].read: config registers cannot have read callbacks (config space reads are answered at once; keep the value current with SET_REGISTER)`);
  }
  const names = new Set<string>();
  for (const r of [...bars.flatMap((b) => b.registers), ...config]) {
    if (names.has(r.name)) throw new TypeError(`device: register name ${r.name} is used twice (names are unique in a device)`);
    names.add(r.name);
  }
  if (d.state !== undefined && (d.state === null || typeof d.state !== 'object' || Array.isArray(d.state))) {
    throw new TypeError('device.state: must be a JSON object');
  }
  return {
    name,
    identity: parseIdentity(object(d.identity, 'device.identity')),
    bars,
    config,
    interrupts: parseInterrupts(object(d.interrupts ?? {}, 'device.interrupts')),
    capabilities: list(d.capabilities ?? [], 'device.capabilities').map((c, i) => parseCapability(object(c, `device.capabilities[${i}]`), `device.capabilities[${i}]`)),
    migratable: d.state !== undefined,
  };
}

function parseIdentity(id: Json): PciIdentity {
  const keys = ['vendorId', 'deviceId', 'subsystemVendorId', 'subsystemId', 'classCode', 'revision'] as const;
  fields(id, 'device.identity', keys);
  const out: PciIdentity = { vendorId: integer(id.vendorId, 'device.identity.vendorId'), deviceId: integer(id.deviceId, 'device.identity.deviceId') };
  for (const k of keys.slice(2)) if (id[k] !== undefined) out[k] = integer(id[k], `device.identity.${k}`);
  return out;
}

function parseBar(b: Json, where: string): ProgramBar {
  fields(b, where, ['index', 'size', 'kind', 'is64', 'prefetchable', 'registers']);
  const index = integer(b.index, `${where}.index`);
  if (index > 5) throw new RangeError(`${where}.index: ${index} is not a BAR index 0-5`);
  const kind = b.kind ?? 'memory';
  if (kind !== 'memory' && kind !== 'io') throw new TypeError(`${where}.kind: must be "memory" or "io"`);
  return {
    index,
    size: integer(b.size, `${where}.size`),
    kind,
    is64: boolean(b.is64 ?? false, `${where}.is64`),
    prefetchable: boolean(b.prefetchable ?? false, `${where}.prefetchable`),
    registers: list(b.registers ?? [], `${where}.registers`).map((r, i) => parseRegister(object(r, `${where}.registers[${i}]`), `${where}.registers[${i}]`)),
  };
}

function parseRegister(r: Json, where: string): ProgramRegister {
  fields(r, where, ['name', 'offset', 'width', 'access', 'reset', 'writable', 'widths', 'trace', 'read', 'write', 'description']);
  const name = string(r.name, `${where}.name`);
  if (name === '') throw new TypeError(`${where}.name: must not be empty`);
  const width = integer(r.width, `${where}.width`);
  if (!WIDTHS.includes(width)) throw new RangeError(`${where}.width: ${width} is not 1, 2, 4 or 8`);
  const access = r.access ?? 'rw';
  if (!ACCESS.includes(access as RegisterAccess)) throw new TypeError(`${where}.access: ${JSON.stringify(access)} is not one of ${ACCESS.join(', ')}`);
  let widths: RegisterWidth[] | undefined;
  if (r.widths !== undefined) {
    widths = list(r.widths, `${where}.widths`).map((w, i) => {
      const n = integer(w, `${where}.widths[${i}]`);
      if (!WIDTHS.includes(n)) throw new RangeError(`${where}.widths[${i}]: ${n} is not 1, 2, 4 or 8`);
      return n as RegisterWidth;
    });
  }
  if (r.description !== undefined) string(r.description, `${where}.description`);
  return {
    name,
    offset: integer(r.offset, `${where}.offset`),
    width: width as RegisterWidth,
    access: access as RegisterAccess,
    reset: r.reset === undefined ? 0n : value(r.reset, `${where}.reset`),
    writable: r.writable === undefined ? undefined : value(r.writable, `${where}.writable`),
    widths,
    trace: boolean(r.trace ?? true, `${where}.trace`),
    read: boolean(r.read ?? false, `${where}.read`),
    write: boolean(r.write ?? false, `${where}.write`),
  };
}

function parseInterrupts(i: Json): InterruptSpec {
  fields(i, 'device.interrupts', ['intx', 'msi', 'msix']);
  const out: InterruptSpec = {};
  if (i.intx !== undefined) out.intx = boolean(i.intx, 'device.interrupts.intx');
  const msi = i.msi === undefined ? 0 : integer(i.msi, 'device.interrupts.msi');
  if (msi !== 0 && ![1, 2, 4, 8, 16, 32].includes(msi)) throw new RangeError(`device.interrupts.msi: ${msi} vectors; MSI has 1, 2, 4, 8, 16 or 32`);
  if (msi) out.msi = msi;
  const msix = i.msix === undefined ? 0 : integer(i.msix, 'device.interrupts.msix');
  if (msix > 2048) throw new RangeError(`device.interrupts.msix: ${msix} vectors; MSI-X has at most 2048`);
  if (msix) out.msix = msix;
  return out;
}

function parseCapability(c: Json, where: string): CapabilityDescription {
  switch (c.id) {
    case 'pm':
      fields(c, where, ['id']);
      return { id: 'pm' };
    case 'pcie': {
      fields(c, where, ['id', 'type', 'flr']);
      const out: CapabilityDescription = { id: 'pcie' };
      if (c.type !== undefined) {
        if (c.type !== 'endpoint' && c.type !== 'rc-endpoint' && c.type !== 'legacy-endpoint') {
          throw new TypeError(`${where}.type: must be "endpoint", "rc-endpoint" or "legacy-endpoint"`);
        }
        out.type = c.type;
      }
      if (c.flr !== undefined) out.flr = boolean(c.flr, `${where}.flr`);
      return out;
    }
    case 'vendor': {
      fields(c, where, ['id', 'data']);
      const data = list(c.data, `${where}.data`).map((x, i) => {
        const n = integer(x, `${where}.data[${i}]`);
        if (n > 0xff) throw new RangeError(`${where}.data[${i}]: ${n} is not a byte`);
        return n;
      });
      return { id: 'vendor', data: Uint8Array.from(data) };
    }
    default:
      throw new TypeError(`${where}.id: ${JSON.stringify(c.id)} is not "pm", "pcie" or "vendor" (MSI and MSI-X come from device.interrupts)`);
  }
}

// ---- field checks ----

function fields(o: Json, where: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new TypeError(`${where}.${k}: unknown field (known: ${allowed.join(', ')})`);
  }
}

function object(v: unknown, where: string): Json {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TypeError(`${where}: must be a JSON object`);
  return v as Json;
}

function list(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) throw new TypeError(`${where}: must be a JSON array`);
  return v;
}

function string(v: unknown, where: string): string {
  if (typeof v !== 'string') throw new TypeError(`${where}: must be a string`);
  return v;
}

function boolean(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw new TypeError(`${where}: must be true or false`);
  return v;
}

function integer(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new TypeError(`${where}: must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

function value(v: unknown, where: string): bigint {
  const big = valueFromJson(v);
  if (big === undefined) throw new TypeError(`${where}: must be a non-negative integer (or a "0x..." string above 2^53), got ${JSON.stringify(v)}`);
  return big;
}
