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
                                          serve devices from one process (Ctrl-C stops it, listing
                                          the guest accesses that hit no register);
                                          <device> is a sample name or a device file
                                          (./my-device.js, ./my-device.ts with tsx installed)
                                          whose default export is a DeviceSpec or a factory of one,
                                          or a device program (./pvpanic.py; --python <path> picks the
                                          interpreter, --timeout-ms <ms> bounds each request to it);
                                          --poll[=<idle-ms>] after a device busy-polls its socket and
                                          doorbells (one CPU at 100% while busy, sleeps after 1 ms idle);
                                          --mode <octal> after a device sets its socket's file mode
                                          (default 0600, owner only; e.g. 0660 adds the group)
  muser run [-v] --config <devices.json>  serve what {"devices":[{"device","socket","options","poll","mode"}]} lists
  muser run --isolate [--watchdog <ms>] [--watch] ...
                                          each device's code in a child process: a crash or a hang
                                          (no answer within --watchdog ms, default 3000) is replaced
                                          under the live connection; --watch reloads a device file's
                                          child when the file changes (config: "isolate": true)
  muser reload <socket-path>              a device served with run --isolate: a fresh child with the
                                          code on disk takes over (SIGUSR2 to muser reloads them all)
  muser vm [-v] [--modules <m,...>] [--share <dir>]... [--run <cmd>] [--kernel <bzImage>] [--qemu <file>]
           [--cpus <n>] [--memory <size>] [--isolate] [--watch] [--watchdog <ms>] [<device> [options]]...
                                          boot a Linux guest with the devices (named as for run, no
                                          sockets) on QEMU's vfio-user-pci: a shell on its console
                                          (exit powers it off; Ctrl-A x stops it), or --run <cmd> with
                                          its output on stdout and its exit status as muser's;
                                          --modules loads kernel modules (and their dependencies),
                                          --share shows a host folder at the same path in the guest;
                                          --isolate/--watch/--watchdog as for run
  muser vm setup                          fetch what vm needs into a cache (QEMU >= 10.1.1, busybox,
                                          a guest kernel); $MUSER_VM_CACHE, default ~/.cache/muser/vm
  muser trace <device-socket> --listen <socket-path> [--filter cmd,...] [--region n,...] [--json] [--stats] [--data-bytes N]
                                          a proxy for the client to connect to: prints every message decoded;
                                          --stats: per-command latencies and region accesses per offset at exit
  muser check [--json] [--only id,...] [--timeout ms] <socket-path>
                                          conformance and robustness checks of any vfio-user server
  muser lspci [--json] [-x|-xxx|-xxxx] <socket-path>
                                          connect and decode the device's config space;
                                          -x adds a hex dump of the header, -xxx of 256 bytes, -xxxx of all
  muser peek <socket-path> <region> <offset> [--width 1|2|4|8]
  muser poke <socket-path> <region> <offset> <value> [--width 1|2|4|8]
                                          read or write one register (region: bar0-bar5, config or
                                          a number; offset and value decimal or 0x-hex; width 4 by default)
  muser sample-client <socket-path>       exercise a timer device and live-migrate it
  muser help

samples:
${samples}
`;
}
