/** Command-line usage text and the error that prints it. */
import { SAMPLES } from '../samples/index.js';

/** Bad arguments: main prints the message and the usage, exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The usage text. */
export function usage(): string {
  const samples = Object.entries(SAMPLES)
    .map(([name, s]) => {
      const options = Object.entries(s.options ?? {}).map(([o, spec]) => `\n  ${''.padEnd(14)}  --${o}${spec.type === 'string' ? ' <value>' : ''}  ${spec.description}`);
      return `  ${name.padEnd(14)}${s.description}${options.join('')}`;
    })
    .join('\n');
  return `usage:
  muser run [-v] <device> <socket-path> [options] [<device> <socket-path> [options]]...
                                          serve devices from one process (Ctrl-C stops it);
                                          <device> is a sample name or a device file
                                          (./my-device.js, ./my-device.ts with tsx installed)
                                          whose default export is a DeviceSpec or a factory of one,
                                          or a device program (./pvpanic.py; --python <path> picks the
                                          interpreter, --timeout-ms <ms> bounds each request to it);
                                          --poll[=<idle-ms>] after a device busy-polls its socket and
                                          doorbells (one CPU at 100% while busy, sleeps after 1 ms idle)
  muser run [-v] --config <devices.json>  serve what {"devices":[{"device","socket","options"}]} lists
  muser trace <device-socket> --listen <socket-path> [--filter cmd,...] [--region n,...] [--json] [--stats] [--data-bytes N]
                                          a proxy for the client to connect to: prints every message decoded
  muser check [--json] [--only id,...] [--timeout ms] <socket-path>
                                          conformance and robustness checks of any vfio-user server
  muser lspci [--json] <socket-path>      connect and decode the device's config space
  muser sample-client <socket-path>       exercise a timer device and live-migrate it
  muser help

samples:
${samples}
`;
}
