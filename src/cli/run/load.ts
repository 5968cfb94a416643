/**
 * Turns a `muser run` device argument into a DeviceSpec: a sample by name,
 * or the default export of the user's module file.
 *
 * A device file's default export is a DeviceSpec, or a function (sync or
 * async) that returns one; it is called with `{ verbose, ...options }`.
 * TypeScript files (.ts, .mts, .cts) are loaded through `tsx` when it is
 * installed: Node 20 cannot strip types itself, and muser does not force
 * tsx's esbuild binary on every install (it is an optional peer dependency).
 *
 * Any other file (a `.py`, an executable) is a device program: muser starts
 * it and serves the device it describes (docs/device-programs.md). It gets
 * the device's options as its arguments, except `--python` and
 * `--timeout-ms`, which are muser's.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Device } from '../../device/device.js';
import type { DeviceSpec } from '../../device/spec.js';
import { SAMPLES } from '../../samples/index.js';
import { DEFAULT_PROGRAM_TIMEOUT_MS, programCommand, ProgramStartError, startDeviceProgram } from '../../program/index.js';
import { isModulePath, isProgramPath, type DeviceArg, type DeviceOptionValues } from './args.js';
import { UsageError } from '../usage.js';

/** A device file that cannot be loaded or does not export a device. */
export class DeviceFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceFileError';
  }
}

/** The DeviceSpec (or Device) that `arg` names. */
export async function loadDevice(arg: DeviceArg, verbose: boolean): Promise<DeviceSpec | Device> {
  const options = { ...arg.options, verbose };
  if (!isModulePath(arg.device)) {
    const sample = SAMPLES[arg.device];
    if (!sample) throw new DeviceFileError(`unknown sample '${arg.device}'`);
    return sample.create(options);
  }
  const file = resolve(arg.device);
  if (!existsSync(file)) throw new DeviceFileError(`${arg.device}: no such file`);
  if (isProgramPath(arg.device)) return loadProgram(arg.device, file, arg.options, verbose);
  const module = await importDeviceFile(file);
  let exported: unknown = module.default;
  if (typeof exported === 'function') exported = await (exported as (o: typeof options) => unknown)(options);
  if (exported instanceof Device) return exported;
  if (!isDeviceSpec(exported)) {
    throw new DeviceFileError(`${arg.device}: the default export must be a DeviceSpec (with identity.vendorId and identity.deviceId) or a function returning one`);
  }
  return exported;
}

/** Starts a device program; its device. */
async function loadProgram(given: string, file: string, options: DeviceOptionValues, verbose: boolean): Promise<Device> {
  const { python, 'timeout-ms': timeout, ...rest } = options;
  if (typeof python === 'boolean') throw new UsageError('run: --python needs an interpreter path');
  const timeoutMs = timeout === undefined ? DEFAULT_PROGRAM_TIMEOUT_MS : Number(timeout);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) throw new UsageError(`run: --timeout-ms takes a positive number of ms, got ${String(timeout)}`);
  const args = Object.entries(rest).map(([name, v]) => (v === true ? `--${name}` : `--${name}=${String(v)}`));
  try {
    const command = programCommand(file, python);
    const program = await startDeviceProgram({ command, args, timeoutMs, verbose, label: given, log: verbose ? 'debug' : 'info' });
    return program.device;
  } catch (e) {
    if (e instanceof ProgramStartError) throw new DeviceFileError(e.message);
    throw e;
  }
}

async function importDeviceFile(file: string): Promise<{ default?: unknown }> {
  const url = pathToFileURL(file).href;
  if (!/\.(c|m)?ts$/.test(file)) return (await import(url)) as { default?: unknown };
  let tsx: { tsImport(specifier: string, parent: string): Promise<unknown> };
  try {
    tsx = (await import('tsx/esm/api')) as typeof tsx;
  } catch {
    throw new DeviceFileError(`${file}: TypeScript device files need tsx (npm install --save-dev tsx), or compile the file with tsc and run the .js`);
  }
  const module = (await tsx.tsImport(url, import.meta.url)) as { default?: unknown };
  // tsx's CommonJS interop may wrap the module once more.
  const inner = module.default as { default?: unknown; identity?: unknown } | undefined;
  return inner && typeof inner === 'object' && 'default' in inner && !('identity' in inner) ? inner : module;
}

function isDeviceSpec(value: unknown): value is DeviceSpec {
  const identity = (value as { identity?: { vendorId?: unknown; deviceId?: unknown } } | null)?.identity;
  return typeof identity?.vendorId === 'number' && typeof identity.deviceId === 'number';
}
