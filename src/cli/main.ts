#!/usr/bin/env node
/** The `muser` command. */
import { parseArgs } from 'node:util';
import { runSample } from './run.js';
import { SAMPLES, type SampleValues } from '../samples/index.js';
import { UsageError, usage } from './usage.js';

/** Flags every command may read. */
interface Flags {
  verbose: boolean;
  json: boolean;
  /** The options of the sample `run` serves. */
  sample: SampleValues;
}

type Command = (positionals: string[], flags: Flags) => Promise<void>;

const COMMANDS: Record<string, Command> = {
  run: (p, f) => runSample(p[0], p[1], f.verbose, f.sample),
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
  // `run <sample>` also takes that sample's own options.
  const [first, second] = argv.filter((a) => !a.startsWith('-'));
  const sampleOptions = first === 'run' && second !== undefined ? (SAMPLES[second]?.options ?? {}) : {};
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: {
        ...sampleOptions,
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
    const { verbose, json, help: _help, ...sample } = parsed.values as SampleValues;
    await cmd(rest, { verbose: verbose === true, json: json === true, sample });
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
