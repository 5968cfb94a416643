/**
 * The guest kernel and its modules: `--kernel FILE`, else the one `muser
 * vm setup` installed, else the host's own (/boot/vmlinuz-$(uname -r)).
 */
import { accessSync, constants, existsSync, realpathSync } from 'node:fs';
import { release } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { VmError } from './error.js';
import { readHead } from './file-head.js';

/** A kernel to boot. */
export interface GuestKernel {
  /** The image QEMU boots (a bzImage). */
  image: string;
  /** Its release (`uname -r` in the guest), when known. */
  version?: string;
  /** The folder its modules are in (a /lib/modules/<version> tree, or a kernel build tree). */
  modules?: string;
  /** Where the modules were looked for, for messages when there are none. */
  modulesLookedIn: string[];
}

/**
 * The release string a bzImage carries in its boot header (the
 * `kernel_version` field, Linux boot protocol 2.0+): `6.12.9 (user@host) #1 ...`
 * gives `6.12.9`. Undefined for anything else.
 */
export function kernelVersionOf(image: string): string | undefined {
  const head = readHead(image, 0x10000);
  if (!head) return undefined;
  const n = head.length;
  if (n < 0x210 || head.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined;
  const at = head.readUInt16LE(0x20e) + 0x200;
  if (at <= 0x200 || at >= n) return undefined;
  const end = head.indexOf(0, at);
  const text = head.toString('latin1', at, end < 0 ? n : end);
  return /^\S+/.exec(text)?.[0];
}

function readable(file: string): boolean {
  try {
    accessSync(file, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where a kernel of `version` keeps its modules: a cache, /lib/modules, or the build tree `image` came from. */
function findModules(image: string, version: string | undefined, cache: string | undefined): { dir?: string; lookedIn: string[] } {
  const candidates: string[] = [];
  if (cache) {
    const cached = join(cache, 'kernel/modules');
    if (existsSync(cached) && version !== undefined && basename(realpathSync(cached)) === version) candidates.push(cached);
  }
  if (version !== undefined) candidates.push(join('/lib/modules', version), join('/usr/lib/modules', version));
  // arch/x86/boot/bzImage in a kernel build tree: its modules are all over the tree, listed in modules.order
  let dir = dirname(image);
  for (let i = 0; i < 4; i++, dir = dirname(dir)) candidates.push(dir);
  const isTree = (d: string): boolean => existsSync(join(d, 'kernel')) || existsSync(join(d, 'modules.order'));
  return { dir: candidates.find((d) => existsSync(d) && isTree(d)), lookedIn: candidates };
}

/** The kernel to boot; throws VmError when there is none. */
export function findKernel(options: { kernel?: string; cache?: string }): GuestKernel {
  if (options.kernel !== undefined) {
    const image = options.kernel;
    if (!existsSync(image)) throw new VmError(`--kernel ${image}: no such file`);
    if (!readable(image)) throw new VmError(`--kernel ${image}: not readable`);
    const version = kernelVersionOf(image);
    if (version === undefined) throw new VmError(`--kernel ${image}: not a bzImage (arch/x86/boot/bzImage of a kernel build, or a /boot/vmlinuz-*)`);
    const m = findModules(image, version, options.cache);
    return { image, version, modules: m.dir, modulesLookedIn: m.lookedIn };
  }
  if (options.cache && existsSync(join(options.cache, 'kernel/vmlinuz'))) {
    const image = realpathSync(join(options.cache, 'kernel/vmlinuz'));
    const modules = join(options.cache, 'kernel/modules');
    const version = existsSync(modules) ? basename(realpathSync(modules)) : kernelVersionOf(image);
    return { image, version, modules: existsSync(modules) ? realpathSync(modules) : undefined, modulesLookedIn: [modules] };
  }
  const host = `/boot/vmlinuz-${release()}`;
  if (existsSync(host)) {
    if (!readable(host)) throw new VmError(`no guest kernel: the host's ${host} is not readable by you; run \`muser vm setup\` for one of muser's own, or pass --kernel`);
    const m = findModules(host, release(), undefined);
    return { image: host, version: release(), modules: m.dir, modulesLookedIn: m.lookedIn };
  }
  throw new VmError('no guest kernel: run `muser vm setup` (it installs a Debian kernel with its modules into a cache), or pass --kernel with a bzImage you built');
}
