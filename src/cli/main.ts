#!/usr/bin/env node
/** The `muser` command. */
import { parseArgs } from 'node:util';
import { runSample } from './run.js';
import { UsageError, usage } from './usage.js';

type Command = (positionals: string[], verbose: boolean) => Promise<void>;

const COMMANDS: Record<string, Command> = {
  run: (p, v) => runSample(p[0], p[1], v),
  lspci: async (p) => {
    if (!p[0]) throw new UsageError('lspci needs a socket path');
    const { lspci } = await import('./lspci.js');
    process.stdout.write(await lspci(p[0]));
  },
  'sample-client': async (p, v) => {
    if (!p[0]) throw new UsageError('sample-client needs a socket path');
    const { runSampleClient } = await import('../samples/sample-client.js');
    await runSampleClient(p[0], { verbose: v });
  },
  help: async () => {
    process.stdout.write(usage());
  },
};

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { verbose: { type: 'boolean', short: 'v' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    return fail(new UsageError((e as Error).message));
  }
  const [name, ...rest] = parsed.positionals;
  if (parsed.values.help || name === undefined) {
    process.stdout.write(usage());
    return name === undefined && !parsed.values.help ? 2 : 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) return fail(new UsageError(`unknown command '${name}'`));
  try {
    await cmd(rest, parsed.values.verbose ?? false);
    return 0;
  } catch (e) {
    return fail(e);
  }
}

function fail(e: unknown): number {
  if (e instanceof UsageError) {
    process.stderr.write(`muser: ${e.message}\n\n${usage()}`);
    return 2;
  }
  process.stderr.write(`muser: ${e instanceof Error ? e.message : String(e)}\n`);
  return 1;
}

process.exitCode = await main(process.argv.slice(2));
