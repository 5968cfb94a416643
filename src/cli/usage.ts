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
    .map(([name, s]) => [`  ${name.padEnd(14)}${s.description}`, ...(s.optionHelp ?? []).map((h) => `${' '.repeat(18)}${h}`)].join('\n'))
    .join('\n');
  return `usage:
  muser run [-v] <sample> <socket-path> [sample options]
                                          serve a sample device (Ctrl-C stops it)
  muser lspci [--json] <socket-path>      connect and decode the device's config space
  muser sample-client <socket-path>       exercise a timer device and live-migrate it
  muser help

samples:
${samples}
`;
}
