/**
 * Turns a program's device (from HELLO) into a real DeviceSpec: each BAR's
 * register table becomes a RegisterMap, so a program's device gets every
 * rule a TypeScript one does (widths, alignment, splitting, access types,
 * reset values, traces). Register callbacks the program declared become
 * requests to it; everything else muser serves with no round trip.
 * Config registers are a RegisterMap behind the config hooks.
 */
import { defineRegisters, type Register, type Register64, type RegisterEntry, type RegisterMap } from '../device/registers.js';
import type { Device } from '../device/device.js';
import { DeviceError, Errno } from '../device/errors.js';
import type { Logger } from '../device/logger.js';
import type { BarSpec, DeviceSpec } from '../device/spec.js';
import type { ProgramDevice, ProgramRegister } from './hello.js';

/** How register hooks reach the program. */
export interface ProgramCalls {
  read(bar: number, register: ProgramRegister): Promise<bigint>;
  write(bar: number, register: ProgramRegister, value: bigint): Promise<void>;
  /** A config register with `write: true` was written (its new stored value). */
  configWritten(register: ProgramRegister, value: bigint): void;
}

/** Config registers live here: after the header, before extended config space. */
const CONFIG_START = 0x40;
const CONFIG_END = 0x100;

/** The built device, and the register maps muser keeps for it. */
export interface BuiltProgramDevice {
  /** Identity, BARs, interrupts, capabilities, config hooks; lifecycle hooks are the caller's. */
  spec: DeviceSpec;
  /** Every register, by name, with the map holding its value. */
  registers: Map<string, { map: RegisterMap<unknown>; register: ProgramRegister }>;
  /** Every map (BARs and config), to reset them. */
  maps: RegisterMap<unknown>[];
  /** Config space bytes [start, end) the config registers take (dword aligned), if any. */
  configWindow: { start: number; end: number } | undefined;
}

/** Builds the spec. Throws TypeError / RangeError naming the field for anything muser refuses. */
export function buildProgramDevice(d: ProgramDevice, calls: ProgramCalls, log: Logger | undefined): BuiltProgramDevice {
  const registers: BuiltProgramDevice['registers'] = new Map();
  const maps: RegisterMap<unknown>[] = [];
  const bars: DeviceSpec['bars'] = {};
  for (const [i, b] of d.bars.entries()) {
    const where = `device.bars[${i}]`;
    const entries = b.registers.map((r) => barRegister(b.index, r, calls));
    const map = named(`${where}.registers`, () => defineRegisters<Device>(entries, { log }));
    const options = { size: b.size, kind: b.kind, is64: b.is64 || undefined, prefetchable: b.prefetchable || undefined };
    const bar: BarSpec = named(where, () => map.bar(options));
    bars[b.index as 0] = bar;
    maps.push(map as RegisterMap<unknown>);
    for (const r of b.registers) registers.set(r.name, { map: map as RegisterMap<unknown>, register: r });
  }
  let configWindow: BuiltProgramDevice['configWindow'];
  let config: DeviceSpec['config'];
  if (d.config.length > 0) {
    const entries = d.config.map((r) => configRegister(r, calls));
    const map = named('device.config', () => defineRegisters<undefined>(entries, { log }));
    maps.push(map as RegisterMap<unknown>);
    for (const r of d.config) registers.set(r.name, { map: map as RegisterMap<unknown>, register: r });
    const start = Math.floor(Math.min(...d.config.map((r) => r.offset)) / 4) * 4;
    const end = Math.ceil(Math.max(...d.config.map((r) => r.offset + r.width)) / 4) * 4;
    if (start < CONFIG_START || end > CONFIG_END) {
      throw new RangeError(`device.config: registers must lie in config space 0x40-0xff (they take 0x${start.toString(16)}-0x${(end - 1).toString(16)})`);
    }
    configWindow = { start, end };
    const inside = (offset: number, length: number): boolean => offset >= start && offset + length <= end;
    config = {
      read(offset, length) {
        if (!inside(offset, length)) return undefined;
        const bytes = map.read(offset, length, undefined);
        if (bytes instanceof Promise) throw new DeviceError(Errno.EIO, 'config register read went asynchronous');
        return Buffer.from(bytes);
      },
      write(offset, data) {
        if (!inside(offset, data.length)) return false;
        void map.write(offset, data, undefined);
        return true;
      },
    };
  }
  const spec: DeviceSpec = {
    identity: d.identity,
    bars,
    interrupts: d.interrupts,
    capabilities: d.capabilities,
  };
  if (d.name !== undefined) spec.name = d.name;
  if (config) spec.config = config;
  return { spec, registers, maps, configWindow };
}

/**
 * Throws TypeError naming the capability a config register overlaps: the
 * placement of capabilities is known only once the device is built.
 */
export function checkConfigWindow(device: Device, window: BuiltProgramDevice['configWindow']): void {
  if (!window) return;
  for (const c of device.config.capabilities) {
    if (c.chain !== 'standard') continue;
    if (c.offset < window.end && window.start < c.offset + c.length) {
      throw new RangeError(
        `device.config: registers at 0x${window.start.toString(16)}-0x${(window.end - 1).toString(16)} overlap the ${c.id} capability ` +
          `at 0x${c.offset.toString(16)}-0x${(c.offset + c.length - 1).toString(16)}; move them to free config space`,
      );
    }
  }
}

function barRegister(bar: number, r: ProgramRegister, calls: ProgramCalls): RegisterEntry<Device> {
  const base = { name: r.name, offset: r.offset, access: r.access, trace: r.trace, ...(r.widths ? { widths: r.widths } : {}) };
  if (r.width === 8) {
    const reg: Register64<Device> = { ...base, width: 8, reset: r.reset };
    if (r.writable !== undefined) reg.writable = r.writable;
    if (r.read) reg.read = () => calls.read(bar, r);
    if (r.write) reg.write = (value) => calls.write(bar, r, value);
    return reg;
  }
  const reg: Register<Device> = { ...base, width: r.width, reset: narrow(r, r.reset, 'reset') };
  if (r.writable !== undefined) reg.writable = narrow(r, r.writable, 'writable');
  if (r.read) reg.read = () => calls.read(bar, r).then((v) => fitting(r, v));
  if (r.write) reg.write = (value) => calls.write(bar, r, BigInt(value));
  return reg;
}

function configRegister(r: ProgramRegister, calls: ProgramCalls): RegisterEntry<undefined> {
  const base = { name: r.name, offset: r.offset, access: r.access, trace: r.trace, ...(r.widths ? { widths: r.widths } : {}) };
  // A config register's hook runs after the store: the program hears the new stored value.
  if (r.width === 8) {
    const reg: Register64<undefined> = { ...base, width: 8, reset: r.reset };
    if (r.writable !== undefined) reg.writable = r.writable;
    if (r.write) reg.write = (value) => calls.configWritten(r, value);
    return reg;
  }
  const reg: Register<undefined> = { ...base, width: r.width, reset: narrow(r, r.reset, 'reset') };
  if (r.writable !== undefined) reg.writable = narrow(r, r.writable, 'writable');
  if (r.write) reg.write = (value) => calls.configWritten(r, BigInt(value));
  return reg;
}

/** A value of a register of up to 4 bytes, as the number RegisterMap wants. */
function narrow(r: ProgramRegister, v: bigint, field: string): number {
  if (v >= 1n << BigInt(r.width * 8)) throw new RangeError(`register ${r.name}: ${field} 0x${v.toString(16)} does not fit in ${r.width} bytes`);
  return Number(v);
}

/** A value the program read: it must fit its register (a bug in the program otherwise). */
function fitting(r: ProgramRegister, v: bigint): number {
  if (v >= 1n << BigInt(r.width * 8)) throw new DeviceError(Errno.EIO, `device program: register ${r.name} read 0x${v.toString(16)}, wider than its ${r.width} bytes`);
  return Number(v);
}

/** Runs `f`; an error it throws gets `where` in front, keeping its type. */
function named<T>(where: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof RangeError) throw new RangeError(`${where}: ${e.message}`);
    if (e instanceof TypeError) throw new TypeError(`${where}: ${e.message}`);
    throw e;
  }
}
