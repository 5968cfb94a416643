/**
 * `muser run <sample> <socket>`: serve a sample device in the foreground
 * until SIGINT or SIGTERM, then remove the socket and exit 0.
 */
import { SAMPLES, type SampleValues } from '../samples/index.js';
import { Server } from '../server/server.js';
import { UsageError } from './usage.js';

/** Serves the named sample with its own option values; resolves when a signal stopped it. */
export async function runSample(name: string | undefined, socketPath: string | undefined, verbose: boolean, values: SampleValues = {}): Promise<void> {
  if (!name || !socketPath) throw new UsageError('run needs a sample name and a socket path');
  const sample = SAMPLES[name];
  if (!sample) throw new UsageError(`unknown sample '${name}' (known: ${Object.keys(SAMPLES).join(', ')})`);
  const server = new Server(await sample.create({ verbose, values }), socketPath, { log: verbose ? 'debug' : 'info' });
  const stopped = new Promise<void>((resolve) => {
    const stop = (): void => {
      server.close();
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  // Only now say we serve: whoever waits for this line may signal us at once.
  process.stderr.write(`muser: serving ${name} on ${socketPath}\n`);
  return stopped;
}
