/**
 * Where `muser vm setup` installs QEMU, busybox and the guest kernel, and
 * where `muser vm` looks for them.
 *
 * Layout (vm/setup.sh writes it; the e2e harness shares it):
 *   root/            unpacked Debian packages: usr/bin/qemu-system-x86_64 (unless
 *                    the host's PATH has a good QEMU), usr/bin/busybox
 *   kernel/vmlinuz   the guest kernel
 *   kernel/modules   its modules tree (kernel/**\/*.ko.xz)
 *   .setup-ok        written last: what was installed
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The e2e harness's cache (e2e/setup-qemu.sh runs the same setup into it). */
export const E2E_CACHE = '/var/cache/muser-e2e';

/**
 * The folder `muser vm setup` fills: $MUSER_VM_CACHE, else
 * $XDG_CACHE_HOME/muser/vm, else ~/.cache/muser/vm.
 */
export function setupCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MUSER_VM_CACHE) return env.MUSER_VM_CACHE;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'muser', 'vm');
}

/**
 * The folders `muser vm` takes QEMU, busybox and the kernel from, best
 * first: $MUSER_VM_CACHE alone when set; else the default one, then the
 * e2e harness's.
 */
export function cacheCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  return env.MUSER_VM_CACHE ? [env.MUSER_VM_CACHE] : [setupCacheDir(env), E2E_CACHE];
}

/** The first candidate that setup completed in, if any. */
export function installedCache(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return cacheCandidates(env).find((dir) => existsSync(join(dir, '.setup-ok')));
}
