#!/usr/bin/env node
/** The `muser` command. */
import { parseArgs } from 'node:util';
import { UsageError, usage } from './usage.js';

/** A command: the words after its name (global flags first); resolves to its exit code. */
type Command = (args: string[]) => Promise<number | void>;

/** Parses `-v` and `--json`; other flags are usage errors. */
function flags(args: string[]) {
  try {
    return parseArgs({ args, allowPositionals: true, options: { verbose: { type: 'boolean', short: 'v' }, json: { type: 'boolean' } } });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

const COMMANDS: Record<string, Command> = {
  run: async (args) => {
    const { run } = await import('./run/index.js');
    try {
      await run(args);
    } finally {
      // A device may hold the loop open (gpio's console reads stdin, a failed
      // device file's timers): stopped is stopped, and so is failed.
      setImmediate(() => process.exit());
    }
  },
  vm: async (args) => {
    const { vm } = await import('./vm/index.js');
    const code = await vm(args);
    // As with run: a device may hold the loop open; the guest is gone, so are we.
    setImmediate(() => process.exit(code));
    return code;
  },
  reload: async (args) => {
    const { positionals: p } = flags(args);
    if (!p[0]) throw new UsageError('reload needs the socket path of a device served with run --isolate');
    const { requestReload } = await import('./run/isolated.js');
    process.stdout.write(`${await requestReload(p[0])}\n`);
  },
  trace: async (args) => {
    const { trace } = await import('./trace/index.js');
    await trace(args);
  },
  check: async (args) => {
    const { check } = await import('./check/index.js');
    return check(args);
  },
  lspci: async (args) => {
    // -x, -xx, -xxx, -xxxx: how much of config space to dump, as lspci counts them.
    const xs = args.filter((a) => /^-x+$/.test(a));
    const { positionals: p, values } = flags(args.filter((a) => !xs.includes(a)));
    if (!p[0]) throw new UsageError('lspci needs a socket path');
    const { lspci } = await import('./lspci/index.js');
    const hexDump = xs.reduce((n, a) => n + a.length - 1, 0);
    process.stdout.write(await lspci(p[0], { json: values.json === true, hexDump }));
  },
  peek: async (args) => {
    const { peek } = await import('./peek.js');
    process.stdout.write(await peek(args));
  },
  poke: async (args) => {
    const { poke } = await import('./peek.js');
    process.stdout.write(await poke(args));
  },
  'sample-client': async (args) => {
    const { positionals: p, values } = flags(args);
    if (!p[0]) throw new UsageError('sample-client needs a socket path');
    const { runSampleClient } = await import('../samples/sample-client.js');
    await runSampleClient(p[0], { verbose: values.verbose === true });
  },
  help: async () => {
    process.stdout.write(usage());
  },
};

/** Flags that may come before the command name. */
const GLOBAL_FLAGS = new Set(['-v', '--verbose', '--json']);

async function main(argv: string[]): Promise<number> {
  const at = argv.findIndex((a) => !GLOBAL_FLAGS.has(a));
  const name = at < 0 ? undefined : argv[at];
  if (name === '-h' || name === '--help') {
    process.stdout.write(usage());
    return 0;
  }
  if (name === undefined) {
    process.stdout.write(usage());
    return 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) return fail(new UsageError(name.startsWith('-') ? `unknown flag '${name}'` : `unknown command '${name}'`));
  const rest = [...argv.slice(0, at), ...argv.slice(at + 1)];
  if (rest.includes('-h') || rest.includes('--help')) {
    process.stdout.write(usage());
    return 0;
  }
  try {
    return (await cmd(rest)) ?? 0;
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
