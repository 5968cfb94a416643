/**
 * `muser vm`: from device files to a Linux guest whose drivers see them, in
 * one command. `muser vm setup` prepares QEMU and a guest kernel.
 */
export { parseVmArgs, type VmArgs } from './args.js';
export { GuestConsole, type ConsoleEvent } from './console.js';
export { VmError } from './error.js';

/** Runs `muser vm ...` (the words after `vm`); resolves to the exit code. */
export async function vm(args: readonly string[]): Promise<number> {
  if (args[0] === 'setup') {
    const { setup } = await import('./setup.js');
    return setup(args.slice(1));
  }
  const { runVm } = await import('./session.js');
  return runVm(args);
}
