/**
 * Arguments of `muser run`: one or more `<device> <socket>` pairs, each
 * followed by its own options, or `--config <file>`.
 *
 *   muser run [-v] <device> <socket> [--opt value | --opt=value | --flag]... [<device> <socket> ...]
 *   muser run [-v] --config devices.json
 *
 * An option belongs to the device before it. A sample declares its options
 * (Sample.options): a string option takes the next argument, a boolean does
 * not. A device file's options must be written `--name=value` or `--flag`,
 * since nothing says which of them take a value.
 *
 * `--poll` (or `--poll=<idle-ms>`) is common to every device: it serves that
 * device in polling mode (ServeOptions.poll). In a config file: `"poll": true`
 * or `"poll": <idle-ms>` beside "device" and "socket".
 *
 * `--mode <octal>` is common too: the socket's file mode (ServeOptions.mode),
 * octal digits as chmod takes them ("660", "0660" or "0o660"), at most 0777.
 * In a config file `"mode": "0660"`, a string: JSON has no octal numbers,
 * and 660 read as decimal would be 0o1224, so a number is refused.
 *
 * A config entry's keys are checked: an unknown one (a typo) is refused
 * rather than ignored.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { SAMPLES, type Sample } from '../../samples/index.js';
import { UsageError } from '../usage.js';

/** Values of a device's options, by name (`--image x` gives `{ image: 'x' }`). */
export type DeviceOptionValues = Record<string, string | boolean>;

/** One device to serve. */
export interface DeviceArg {
  /** A sample name or a module path (as given). */
  device: string;
  socket: string;
  options: DeviceOptionValues;
  /** Polling mode's idle window in ms (`--poll`), absent when off. */
  pollIdleMs?: number;
  /** The socket's file mode (`--mode`), absent for the default (0o600). */
  mode?: number;
}

/** What `muser run` was asked to do. */
export interface RunArgs {
  verbose: boolean;
  devices: DeviceArg[];
  /** `--isolate` (or `"isolate": true` in a config file): each device's code runs in a child process. Absent when off. */
  isolate?: true;
  /** `--watch`: reload an isolated device file's child whenever the file changes (implies isolate). Absent when off. */
  watch?: true;
  /** `--watchdog <ms>`: an isolated child silent this long is killed and replaced. */
  watchdogMs?: number;
}

/** True when `device` names a file (a module or a device program) rather than a sample. */
export function isModulePath(device: string): boolean {
  return device.includes('/') || /\.((c|m)?(j|t)s|py)$/.test(device);
}

/**
 * True when `device` names a device program (docs/device-programs.md): a
 * file that is not JavaScript or TypeScript, such as a `.py`.
 */
export function isProgramPath(device: string): boolean {
  return isModulePath(device) && !/\.(c|m)?(j|t)s$/.test(device);
}

/** Options muser itself takes for a device program; the rest go to the program. */
const PROGRAM_OPTIONS: NonNullable<Sample['options']> = {
  python: { type: 'string', description: 'the Python interpreter that runs a .py device program' },
  'timeout-ms': { type: 'string', description: "time limit of each request to the device program, in ms" },
};

/**
 * Parses the arguments after `run`. Throws UsageError on anything malformed.
 * With `socketFor` (`muser vm`), devices take no socket argument: device
 * number i is served on `socketFor(i)`.
 */
export function parseRunArgs(args: readonly string[], socketFor?: (index: number) => string): RunArgs {
  let verbose = false;
  let isolate = false;
  let watch = false;
  let watchdogMs: number | undefined;
  let config: string | undefined;
  const devices: DeviceArg[] = [];
  let current: { device: string; socket?: string; options: DeviceOptionValues; pollIdleMs?: number; mode?: number } | undefined;
  const finish = (): void => {
    if (!current) return;
    if (current.socket === undefined) throw new UsageError(`run: device '${current.device}' needs a socket path`);
    const d: DeviceArg = { device: current.device, socket: current.socket, options: current.options };
    if (current.pollIdleMs !== undefined) d.pollIdleMs = current.pollIdleMs;
    if (current.mode !== undefined) d.mode = current.mode;
    devices.push(d);
    current = undefined;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '-v' || arg === '--verbose') {
      verbose = true;
    } else if (arg === '--isolate') {
      isolate = true;
    } else if (arg === '--watch') {
      watch = isolate = true;
    } else if (arg === '--watchdog' || arg.startsWith('--watchdog=')) {
      watchdogMs = parseWatchdogMs(arg.startsWith('--watchdog=') ? arg.slice('--watchdog='.length) : args[++i], '--watchdog');
    } else if (arg === '--config' || arg.startsWith('--config=')) {
      config = arg.startsWith('--config=') ? arg.slice('--config='.length) : args[++i];
      if (!config) throw new UsageError('run: --config needs a file');
    } else if (arg.startsWith('--')) {
      if (!current) throw new UsageError(`run: option ${arg} must follow a device and its socket`);
      const eq = arg.indexOf('=');
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const inline = eq < 0 ? undefined : arg.slice(eq + 1);
      if (name === 'poll') {
        current.pollIdleMs = parsePollIdleMs(inline ?? true, '--poll');
        continue;
      }
      if (name === 'mode') {
        const value = inline ?? args[++i];
        if (value === undefined) throw new UsageError('run: --mode needs an octal file mode, such as 0660');
        current.mode = parseSocketMode(value, '--mode');
        continue;
      }
      const spec = optionSpecs(current.device)?.[name] ?? (isProgramPath(current.device) ? PROGRAM_OPTIONS[name] : undefined);
      if (optionSpecs(current.device) && !spec) throw new UsageError(`run: sample '${current.device}' has no option --${name}`);
      if (inline !== undefined) current.options[name] = spec?.type === 'boolean' ? inline !== 'false' : inline;
      else if (spec?.type === 'string' && spec.optionalNumber && !/^\d+$/.test(args[i + 1] ?? '')) current.options[name] = true;
      else if (spec?.type === 'string') {
        const value = args[++i];
        if (value === undefined) throw new UsageError(`run: --${name} needs a value`);
        current.options[name] = value;
      } else current.options[name] = true;
    } else if (arg.startsWith('-') && arg.length > 1) {
      throw new UsageError(`run: unknown flag ${arg}`);
    } else if (current && current.socket === undefined && !socketFor) {
      current.socket = arg;
    } else {
      finish();
      current = { device: arg, options: {}, socket: socketFor?.(devices.length) };
    }
  }
  finish();
  if (config !== undefined) {
    if (devices.length > 0) throw new UsageError('run: give either --config or <device> <socket> pairs, not both');
    devices.push(...readConfig(config));
    const top = readConfigTop(config);
    isolate ||= top.isolate === true;
    watchdogMs ??= top.watchdogMs;
  }
  if (devices.length === 0) throw new UsageError('run needs a sample name (or device file) and a socket path');
  const sockets = new Set<string>();
  for (const d of devices) {
    if (!isModulePath(d.device) && !SAMPLES[d.device]) {
      throw new UsageError(`unknown sample '${d.device}' (known: ${Object.keys(SAMPLES).join(', ')}; a device file path needs a '/' or a .js/.ts extension)`);
    }
    const declared = optionSpecs(d.device);
    for (const name of Object.keys(d.options)) {
      if (declared && !declared[name]) throw new UsageError(`run: sample '${d.device}' has no option --${name}`);
    }
    const key = resolve(d.socket);
    if (sockets.has(key)) throw new UsageError(`run: socket ${d.socket} is given twice`);
    sockets.add(key);
  }
  return {
    verbose,
    devices,
    ...(isolate ? { isolate: true as const } : {}),
    ...(watch ? { watch: true as const } : {}),
    ...(watchdogMs !== undefined ? { watchdogMs } : {}),
  };
}

/** `--watchdog` / config `"watchdogMs"`: milliseconds in [10, 600000]. */
export function parseWatchdogMs(value: unknown, where: string): number {
  const ms = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  if (!Number.isInteger(ms) || ms < 10 || ms > 600_000) throw new UsageError(`run: ${where} takes a whole number of ms in [10, 600000], got ${String(value)}`);
  return ms;
}

/** The keys a config file's top level may have (beside "devices"). */
const CONFIG_TOP_KEYS = ['devices', 'isolate', 'watchdogMs'];

/** A config file's settings for the whole process: `"isolate": true`, `"watchdogMs": 3000`. */
function readConfigTop(path: string): { isolate?: boolean; watchdogMs?: number } {
  const json = JSON.parse(readFileSync(path, 'utf8')) as unknown;
  if (Array.isArray(json) || json === null || typeof json !== 'object') return {};
  const top = json as Record<string, unknown>;
  for (const key of Object.keys(top)) {
    if (!CONFIG_TOP_KEYS.includes(key)) throw new UsageError(`run: config ${path} has an unknown key "${key}" (known: ${CONFIG_TOP_KEYS.join(', ')})`);
  }
  if (top.isolate !== undefined && typeof top.isolate !== 'boolean') throw new UsageError(`run: config ${path}: "isolate" must be true or false`);
  return {
    isolate: top.isolate as boolean | undefined,
    watchdogMs: top.watchdogMs === undefined ? undefined : parseWatchdogMs(top.watchdogMs, `config ${path}: watchdogMs`),
  };
}

/** Default idle window of `--poll`, in ms (the server's default). */
const DEFAULT_POLL_IDLE_MS = 1;

/** `--poll` / `--poll=<ms>` / config `"poll"` to an idle window in ms. */
function parsePollIdleMs(value: unknown, where: string): number {
  if (value === true || value === 'true') return DEFAULT_POLL_IDLE_MS;
  const ms = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  if (!Number.isFinite(ms) || ms <= 0 || ms > 60_000) throw new UsageError(`run: ${where} takes an idle window in ms in (0, 60000], got ${String(value)}`);
  return ms;
}

/**
 * `--mode` / config `"mode"` to a file mode: octal digits only ("660",
 * "0660", "0o660"), at most 0777; never a decimal reading of them.
 */
function parseSocketMode(value: unknown, where: string): number {
  if (typeof value === 'number') {
    throw new UsageError(`run: ${where} must be a string of octal digits such as "0660" (JSON has no octal numbers; ${value} would be read as decimal), got ${value}`);
  }
  const m = typeof value === 'string' ? /^(?:0o?)?([0-7]{1,4})$/i.exec(value.trim()) : null;
  const mode = m ? parseInt(m[1], 8) : NaN;
  if (!(mode <= 0o777)) throw new UsageError(`run: ${where} takes an octal file mode in 0..0777 such as 0660, got ${JSON.stringify(value)}`);
  return mode;
}

/** The keys a config file's device entry may have. */
const CONFIG_ENTRY_KEYS = ['device', 'socket', 'options', 'poll', 'mode'];

/** The options a sample declares, or undefined for a device file. */
function optionSpecs(device: string): Sample['options'] | undefined {
  if (isModulePath(device)) return undefined;
  return SAMPLES[device]?.options ?? {};
}

/**
 * Reads a config file: `{ "devices": [ { "device", "socket", "options"? } ] }`
 * (or just the array). Relative device-file and socket paths are relative to
 * the config file's directory.
 */
export function readConfig(path: string): DeviceArg[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new UsageError(`run: cannot read config ${path}: ${(e as Error).message}`);
  }
  const list = Array.isArray(json) ? json : (json as { devices?: unknown } | null)?.devices;
  if (!Array.isArray(list)) throw new UsageError(`run: config ${path} must be {"devices": [...]} or an array`);
  const base = dirname(resolve(path));
  return list.map((entry: unknown, i): DeviceArg => {
    const e = entry as { device?: unknown; socket?: unknown; options?: unknown; poll?: unknown; mode?: unknown } | null;
    if (typeof e?.device !== 'string' || typeof e.socket !== 'string') {
      throw new UsageError(`run: config ${path}: devices[${i}] needs "device" and "socket" strings`);
    }
    for (const key of Object.keys(e)) {
      if (!CONFIG_ENTRY_KEYS.includes(key)) throw new UsageError(`run: config ${path}: devices[${i}] has an unknown key "${key}" (known: ${CONFIG_ENTRY_KEYS.join(', ')})`);
    }
    const options = e.options ?? {};
    if (typeof options !== 'object' || Array.isArray(options)) throw new UsageError(`run: config ${path}: devices[${i}].options must be an object`);
    for (const [k, v] of Object.entries(options)) {
      if (typeof v !== 'string' && typeof v !== 'boolean') throw new UsageError(`run: config ${path}: devices[${i}].options.${k} must be a string or boolean`);
    }
    const device = isModulePath(e.device) ? resolve(base, e.device) : e.device;
    const d: DeviceArg = { device, socket: resolve(base, e.socket), options: options as DeviceOptionValues };
    if (e.poll !== undefined && e.poll !== false) d.pollIdleMs = parsePollIdleMs(e.poll, `config ${path}: devices[${i}].poll`);
    if (e.mode !== undefined) d.mode = parseSocketMode(e.mode, `config ${path}: devices[${i}].mode`);
    return d;
  });
}
