/**
 * `muser run`: serve one or more devices (samples or the user's own device
 * files) from one process, in the foreground, until SIGINT, SIGTERM or
 * SIGHUP; then print, per device, the guest accesses that hit no register
 * (src/device/unmodeled.ts), remove every socket and exit 0.
 */
import { Server } from '../../server/server.js';
import { formatUnmodeled } from '../../device/unmodeled.js';
import { isModulePath, parseRunArgs } from './args.js';
import { loadDevice } from './load.js';
import { watchParent } from './parent.js';

export { parseRunArgs, readConfig, isModulePath, type DeviceArg, type RunArgs, type DeviceOptionValues } from './args.js';
export { loadDevice, DeviceFileError } from './load.js';

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Serves what `args` (the words after `run`) name; resolves once a signal stopped it. */
export async function run(args: readonly string[]): Promise<void> {
  const { verbose, devices } = parseRunArgs(args);
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
  const servers: Server[] = [];
  const closeAll = (): void => {
    for (const server of servers.splice(0)) server.close();
    unwatch();
  };
  try {
    for (const d of devices) {
      const spec = await loadDevice(d, verbose);
      if (stopping) break;
      const poll = d.pollIdleMs !== undefined ? { idleMs: d.pollIdleMs } : undefined;
      servers.push(new Server(spec, d.socket, { log: verbose ? 'debug' : 'info', poll, mode: d.mode }));
    }
  } catch (e) {
    closeAll();
    for (const s of STOP_SIGNALS) process.off(s, onSignal);
    throw e;
  }
  // Only now say we serve: whoever waits for these lines may signal us at once.
  if (!stopping) {
    for (const [i, d] of devices.entries()) {
      const label = isModulePath(d.device) ? `${servers[i].device.name} from ${d.device}` : d.device;
      const polling = d.pollIdleMs !== undefined ? ` (polling, idle window ${d.pollIdleMs} ms)` : '';
      process.stderr.write(`muser: serving ${label} on ${d.socket}${polling}\n`);
    }
  }
  await stopped;
  reportUnmodeled(servers);
  closeAll();
}

/** What each device's guests touched that no register serves, for the developer to model next. */
function reportUnmodeled(servers: readonly Server[]): void {
  for (const server of servers) {
    const text = formatUnmodeled(server.device.name, server.unmodeledAccesses());
    if (text) process.stderr.write(`muser: ${text}`);
  }
}
