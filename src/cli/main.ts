#!/usr/bin/env node
/** The `muser` command. */
import { parseArgs } from 'node:util';
import { runSample } from './run.js';
import { UsageError, usage } from './usage.js';

/** Flags every command may read. */
interface Flags {
  verbose: boolean;
  json: boolean;
}

type Command = (positionals: string[], flags: Flags) => Promise<void>;

const COMMANDS: Record<string, Command> = {
  run: (p, f) => runSample(p[0], p[1], f.verbose),
  lspci: async (p, f) => {
    if (!p[0]) throw new UsageError('lspci needs a socket path');
    const { lspci } = await import('./lspci.js');
    process.stdout.write(await lspci(p[0], { json: f.json }));
  },
  'sample-client': async (p, f) => {
    if (!p[0]) throw new UsageError('sample-client needs a socket path');
    const { runSampleClient } = await import('../samples/sample-client.js');
    await runSampleClient(p[0], { verbose: f.verbose });
  },
  help: async () => {
    process.stdout.write(usage());
  },
};

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: {
        verbose: { type: 'boolean', short: 'v' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
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
    await cmd(rest, { verbose: parsed.values.verbose ?? false, json: parsed.values.json ?? false });
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
