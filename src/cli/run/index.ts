/**
 * `muser run`: serve one or more devices (samples or the user's own device
 * files) from one process, in the foreground, until SIGINT, SIGTERM or
 * SIGHUP; then print, per device, the guest accesses that hit no register
 * (src/device/unmodeled.ts), remove every socket and exit 0.
 */
import { Server } from '../../server/server.js';
import { formatUnmodeled } from '../../device/unmodeled.js';
import { isModulePath, parseRunArgs, type DeviceArg } from './args.js';
import { loadDevice } from './load.js';
import { watchParent } from './parent.js';
import { startIsolated } from './isolated.js';

export { parseRunArgs, parseWatchdogMs, readConfig, isModulePath, type DeviceArg, type RunArgs, type DeviceOptionValues } from './args.js';
export { loadDevice, DeviceFileError } from './load.js';
export { startIsolated } from './isolated.js';

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Serves what `args` (the words after `run`) name; resolves once a signal stopped it. */
export async function run(args: readonly string[]): Promise<void> {
  const parsed = parseRunArgs(args);
  const { verbose, devices } = parsed;
  // Handlers first: a signal at any later moment stops us cleanly. They stay
  // installed (not `once`): npm forwards the terminal's Ctrl-C, so the
  // SIGINT may come twice, and the second must not kill us half-way.
  let stopRequested!: () => void;
  const stopped = new Promise<void>((resolve) => (stopRequested = resolve));
  let stopping = false;
  const onSignal = (): void => {
    stopping = true;
    stopRequested();
  };
  for (const s of STOP_SIGNALS) process.on(s, onSignal);
  const unwatch = watchParent(onSignal);
  const servers: Served[] = [];
  const closeAll = (): void => {
    for (const server of servers.splice(0)) server.close();
    unwatch();
  };
  try {
    if (parsed.isolate) servers.push(...(await startIsolated(parsed, () => stopping)));
    else for (const d of devices) {
      const spec = await loadDevice(d, verbose);
      if (stopping) break;
      servers.push(serveInProcess(spec, d, verbose));
    }
  } catch (e) {
    closeAll();
    for (const s of STOP_SIGNALS) process.off(s, onSignal);
    throw e;
  }
  // Only now say we serve: whoever waits for these lines may signal us at once.
  if (!stopping) {
    for (const [i, d] of devices.entries()) {
      const label = isModulePath(d.device) ? `${servers[i].name} from ${d.device}` : d.device;
      const polling = d.pollIdleMs !== undefined ? ` (polling, idle window ${d.pollIdleMs} ms)` : '';
      const isolated = parsed.isolate ? ' (isolated)' : '';
      process.stderr.write(`muser: serving ${label} on ${d.socket}${polling}${isolated}\n`);
    }
  }
  await stopped;
  reportUnmodeled(servers);
  closeAll();
}

/** A device this command serves: in this process, or in a child with --isolate. */
interface Served {
  readonly name: string;
  close(): void;
  /** What the device's guests touched that no register serves (in-process devices only), or undefined. */
  unmodeled?(): string | undefined;
}

/** What each device's guests touched that no register serves, for the developer to model next. */
function reportUnmodeled(servers: readonly Served[]): void {
  for (const server of servers) {
    const text = server.unmodeled?.();
    if (text) process.stderr.write(`muser: ${text}`);
  }
}

/** A device served in this process, as without --isolate. */
function serveInProcess(spec: Awaited<ReturnType<typeof loadDevice>>, d: DeviceArg, verbose: boolean): Served {
  const poll = d.pollIdleMs !== undefined ? { idleMs: d.pollIdleMs } : undefined;
  const server = new Server(spec, d.socket, { log: verbose ? 'debug' : 'info', poll, mode: d.mode });
  // Watched memory without --poll works, but only on the timer: say so, the user likely meant speed.
  if (!poll && server.device.regions.some((r) => (r?.watches.length ?? 0) > 0)) {
    process.stderr.write(`muser: ${server.device.name} has doorbells in mapped memory and no --poll: each is seen on a timer, up to 1 ms late (add --poll)\n`);
  }
  return { name: server.device.name, close: () => server.close(), unmodeled: () => formatUnmodeled(server.device.name, server.unmodeledAccesses()) };
}
