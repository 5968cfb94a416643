/**
 * Arguments of `muser vm`: its own options first, then the devices as in
 * `muser run` (samples or device files, each followed by its options) but
 * without sockets: muser serves each on a private socket.
 *
 *   muser vm [-v] [--kernel FILE] [--modules LIST]... [--share DIR]... [--run CMD]
 *            [--qemu FILE] [--cpus N] [--memory SIZE] [--isolate] [--watch] [--watchdog MS]
 *            [<device> [device options]]...
 */
import { resolve } from 'node:path';
import { parseRunArgs, parseWatchdogMs, type DeviceArg } from '../run/index.js';
import { UsageError } from '../usage.js';

/** What `muser vm` was asked to boot. */
export interface VmArgs {
  verbose: boolean;
  /** A kernel image (bzImage) to boot instead of the default one. */
  kernel?: string;
  /** Kernel modules to load in the guest, by name, in order. */
  modules: string[];
  /** Host folders the guest mounts at the same absolute paths. */
  shares: string[];
  /** A shell command to run in the guest instead of an interactive shell. */
  run?: string;
  /** A QEMU binary to use instead of the one found. */
  qemu?: string;
  cpus: number;
  /** Guest RAM in MiB. */
  memoryMiB: number;
  /** The devices, each with the private socket `socketFor` gave it. */
  devices: DeviceArg[];
  /** `--isolate`: each device's code in a child process, as `muser run --isolate`. Absent when off. */
  isolate?: true;
  /** `--watch`: reload a device file's child whenever the file changes (implies isolate). Absent when off. */
  watch?: true;
  /** `--watchdog <ms>`: an isolated child silent this long is killed and replaced. */
  watchdogMs?: number;
}

/** Default guest RAM, in MiB. */
export const DEFAULT_MEMORY_MIB = 512;

/** The options that take a value, by name. */
const VALUE_OPTIONS = new Set(['kernel', 'modules', 'share', 'run', 'qemu', 'cpus', 'memory', 'watchdog']);
/** The options that take no value. */
const FLAG_OPTIONS = new Set(['isolate', 'watch']);

/**
 * Parses the arguments after `vm`; device number i gets the socket
 * `socketFor(i)`. Throws UsageError on anything malformed.
 */
export function parseVmArgs(args: readonly string[], socketFor: (index: number) => string): VmArgs {
  const out: VmArgs = { verbose: false, modules: [], shares: [], cpus: 1, memoryMiB: DEFAULT_MEMORY_MIB, devices: [] };
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i];
    if (arg === '-v' || arg === '--verbose') {
      out.verbose = true;
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') ? arg.slice(2, eq < 0 ? undefined : eq) : '';
    if (name === 'config') break; // refused below, wherever it is
    if (FLAG_OPTIONS.has(name)) {
      if (eq >= 0) throw new UsageError(`vm: --${name} takes no value`);
      out.isolate = true;
      if (name === 'watch') out.watch = true;
      continue;
    }
    if (!VALUE_OPTIONS.has(name)) throw new UsageError(`vm: unknown option ${arg}`);
    const value = eq < 0 ? args[++i] : arg.slice(eq + 1);
    if (value === undefined || value === '') throw new UsageError(`vm: --${name} needs a value`);
    switch (name) {
      case 'kernel':
        out.kernel = resolve(value);
        break;
      case 'qemu':
        out.qemu = value.includes('/') ? resolve(value) : value;
        break;
      case 'run':
        out.run = value;
        break;
      case 'modules':
        out.modules.push(...value.split(/[,\s]+/).filter((m) => m !== ''));
        break;
      case 'share':
        out.shares.push(resolve(value));
        break;
      case 'cpus':
        out.cpus = parseCount(value);
        break;
      case 'memory':
        out.memoryMiB = parseMemory(value);
        break;
      case 'watchdog':
        out.watchdogMs = rethrowAsVm(() => parseWatchdogMs(value, '--watchdog'));
        break;
    }
  }
  const rest = args.slice(i);
  if (rest.some((a) => a === '--config' || a.startsWith('--config='))) {
    throw new UsageError('vm: --config is not supported: name the devices on the command line');
  }
  // vm's own option names are not device options: one after a device is misplaced.
  const misplaced = rest.find((a) => a.startsWith('--') && (VALUE_OPTIONS.has(a.slice(2).split('=')[0]) || FLAG_OPTIONS.has(a.slice(2))));
  if (misplaced) throw new UsageError(`vm: ${misplaced.split('=')[0]} must come before the first device`);
  if (rest.length > 0) {
    const parsed = rethrowAsVm(() => parseRunArgs(rest, socketFor));
    out.verbose ||= parsed.verbose;
    out.devices = parsed.devices;
  }
  return out;
}

/** `--cpus`: a whole number of vCPUs, 1 to 64. */
function parseCount(value: string): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 64)) throw new UsageError(`vm: --cpus takes a number of vCPUs from 1 to 64, got ${value}`);
  return n;
}

/** `--memory`: 512, 512M, 2G (MiB without a suffix); 64 MiB to 64 GiB. */
export function parseMemory(value: string): number {
  const m = /^(\d+)([MG]?)i?B?$/i.exec(value);
  const mib = m ? Number(m[1]) * (m[2].toUpperCase() === 'G' ? 1024 : 1) : NaN;
  if (!(mib >= 64 && mib <= 65536)) throw new UsageError(`vm: --memory takes a size from 64M to 64G (like 512M or 2G), got ${value}`);
  return mib;
}

/** parseRunArgs' messages say `run:`; here they are about `vm`. */
function rethrowAsVm<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(e.message.replace(/^run\b/, 'vm'));
    throw e;
  }
}
