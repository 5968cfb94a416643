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
 * `--timeout-ms` (and `--poll` and `--mode`, which every device takes): those are muser's.
 */
import { existsSync } from 'node:fs';
import Module, { register } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Device } from '../../device/device.js';
import type { DeviceSpec } from '../../device/spec.js';
import { validateSpec } from '../../device/validate-spec.js';
import { listeningServers, type Server } from '../../server/server.js';
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
  // Servers the file starts itself (a script calling serve()) are stopped
  // when the load fails, so a failed load leaves no socket and no listener.
  const before = new Set(listeningServers());
  const started = (): Server[] => [...listeningServers()].filter((s) => !before.has(s));
  const refuseOwnServers = (): void => {
    const own = started();
    if (own.length === 0) return;
    throw new DeviceFileError(
      `${arg.device} called serve() itself (on ${own.map((s) => s.path).join(', ')}; stopped): muser run serves the file's default export ` +
        `on the socket given on the command line, the file must not serve it too. ${DEVICE_FILE_EXAMPLE}`,
    );
  };
  try {
    const module = await importDeviceFile(file);
    refuseOwnServers();
    const device = await deviceOf(arg.device, module, options);
    refuseOwnServers();
    return device;
  } catch (e) {
    for (const s of started()) s.close();
    throw e;
  }
}

/** What the message of a failed load shows. */
const DEVICE_FILE_EXAMPLE = `A device file for muser run exports the device (a DeviceSpec, or a function returning one) and does not call serve():

    import type { DeviceSpec } from 'muser';
    export default function myDevice(options: { verbose: boolean }): DeviceSpec {
      return { identity: { vendorId: 0x1234, deviceId: 0x0001 }, bars: { 0: { size: 4096, memory: true } } };
    }

(docs/guides/device-files.md)`;

/** The device a loaded module's default export gives. */
async function deviceOf(name: string, module: { default?: unknown }, options: Record<string, unknown>): Promise<DeviceSpec | Device> {
  let exported: unknown = module.default;
  if (typeof exported === 'function') exported = await (exported as (o: typeof options) => unknown)(options);
  if (exported instanceof Device) return exported;
  if (!isDeviceSpec(exported)) {
    // A CommonJS module without exports shows up as `default: {}`.
    const none = module.default === undefined || (typeof module.default === 'object' && module.default !== null && Object.keys(module.default).length === 0);
    const what = none ? 'has no default export' : 'has a default export that is not a DeviceSpec';
    throw new DeviceFileError(`${name} ${what}. ${DEVICE_FILE_EXAMPLE}`);
  }
  try {
    validateSpec(exported);
  } catch (e) {
    throw new DeviceFileError(`${name}: ${(e as Error).message}`);
  }
  return exported;
}

let resolutionRegistered = false;

/**
 * Device files outside a project that depends on muser import 'muser' too:
 * it resolves to this muser (see resolve-muser.ts). Registered once, before
 * the first device file is imported.
 */
async function registerMuserResolution(): Promise<void> {
  if (resolutionRegistered) return;
  resolutionRegistered = true;
  // The package's entry points, as a device file imports them (by URL: the CLI sits above them).
  const entries = {
    muser: new URL('../../index.js', import.meta.url).href,
    'muser/client': new URL('../../client/index.js', import.meta.url).href,
  };
  const store = globalThis as unknown as Record<symbol, unknown>;
  store[Symbol.for('muser.running')] = await import(entries.muser);
  store[Symbol.for('muser.running/client')] = await import(entries['muser/client']);
  register('./resolve-muser.js', { parentURL: import.meta.url, data: { entries } });
  // tsx runs a .ts file outside a `"type": "module"` package as CommonJS,
  // where require('muser') does not pass through module hooks: the same
  // fallback for require(), to a CommonJS file that hands over the modules
  // already loaded (a require() of muser's ES modules would load a copy).
  const shims: Record<string, string> = {
    muser: fileURLToPath(new URL('./running-muser.cjs', import.meta.url)),
    'muser/client': fileURLToPath(new URL('./running-muser-client.cjs', import.meta.url)),
  };
  const cjs = Module as unknown as { _resolveFilename(request: string, ...rest: unknown[]): string };
  const original = cjs._resolveFilename;
  cjs._resolveFilename = function (request: string, ...rest: unknown[]): string {
    try {
      return original.call(this, request, ...rest);
    } catch (e) {
      const shim = shims[request];
      if (shim === undefined || (e as { code?: string }).code !== 'MODULE_NOT_FOUND') throw e;
      return shim;
    }
  };
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
  await registerMuserResolution();
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

/** Looks like a DeviceSpec (an object with an identity); validateSpec says what is wrong with its fields. */
function isDeviceSpec(value: unknown): value is DeviceSpec {
  return typeof value === 'object' && value !== null && 'identity' in value;
}
