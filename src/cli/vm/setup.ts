/** `muser vm setup`: runs the package's vm/setup.sh into the cache folder. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../usage.js';
import { installedCache, setupCacheDir } from './cache.js';

/** The package's own vm/ folder (the guest's /init and the setup script). */
export const VM_ASSETS = fileURLToPath(new URL('../../../../vm/', import.meta.url));

/**
 * Prepares what is missing, with a progress line per step, into
 * $MUSER_VM_CACHE, else the complete cache muser vm already uses, else the
 * default one; resolves to the script's exit code.
 */
export function setup(args: readonly string[]): Promise<number> {
  if (args.length > 0) throw new UsageError(`vm setup takes no arguments (the cache folder is $MUSER_VM_CACHE, default ${setupCacheDir()}), got ${args.join(' ')}`);
  // The cache muser vm would use, when one is complete: setup checks it, and completes it if need be.
  const cache = process.env.MUSER_VM_CACHE || installedCache() || setupCacheDir();
  return new Promise((resolve) => {
    const child = spawn('bash', [`${VM_ASSETS}setup.sh`], { stdio: 'inherit', env: { ...process.env, MUSER_VM_CACHE: cache } });
    const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    for (const s of signals) process.on(s, forward);
    child.on('error', (e) => {
      process.stderr.write(`muser vm setup: cannot run bash: ${e.message}\n`);
      resolve(1);
    });
    child.on('exit', (code, signal) => {
      for (const s of signals) process.off(s, forward);
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}
