/**
 * What the guest is made of for one run: the modules it loads, its
 * initramfs settings, its kernel command line and QEMU's arguments.
 */
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { VmArgs } from './args.js';
import { VmError } from './error.js';
import { isStaticElf, shellQuote } from './initramfs.js';
import type { GuestKernel } from './kernel.js';
import { ModuleTree, type GuestModule } from './modules.js';

/** The modules that --share's 9p mounts need. */
export const SHARE_MODULES = ['9p', '9pnet_virtio'];

/** The modules to put into the guest, dependencies first: 9p for --share, then --modules. */
export function guestModules(a: Pick<VmArgs, 'modules' | 'shares'>, kernel: GuestKernel): GuestModule[] {
  const forShares = a.shares.length > 0 ? SHARE_MODULES : [];
  if (a.modules.length + forShares.length === 0) return [];
  if (!kernel.modules) {
    if (a.modules.length === 0) return []; // 9p may be built in; the mount says if not
    throw new VmError(`--modules: no modules for the guest kernel ${kernel.version ?? kernel.image} (looked in ${kernel.modulesLookedIn.join(', ')})`);
  }
  const tree = new ModuleTree(kernel.modules, kernel.version);
  return tree.resolve([...forShares, ...a.modules], (name) => (forShares.includes(name) && !a.modules.includes(name) ? ' (--share needs it for 9p)' : ''));
}

/** Each --share must be a folder whose path the guest's /init can take. */
export function checkShares(shares: readonly string[]): void {
  for (const dir of shares) {
    if (!existsSync(dir)) throw new VmError(`--share ${dir}: no such folder`);
    if (!statSync(dir).isDirectory()) throw new VmError(`--share ${dir}: not a folder`);
    if (/[\n\0]/.test(dir)) throw new VmError(`--share ${JSON.stringify(dir)}: a path with a newline cannot be shared`);
  }
}

/** A static busybox for the guest: the one setup unpacked, else one on PATH. */
export function findBusybox(cache: string | undefined): string {
  const candidates = cache ? [join(cache, 'root/usr/bin/busybox')] : [];
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (dir) candidates.push(join(dir, 'busybox'));
  for (const file of candidates) {
    try {
      accessSync(file, constants.X_OK);
    } catch {
      continue;
    }
    if (isStaticElf(file)) return file;
  }
  throw new VmError('no statically linked busybox for the guest: run `muser vm setup` (or install busybox-static)');
}

/** The folder the guest starts in: the host's current one when a share holds it, else /. */
export function guestWorkdir(shares: readonly string[], cwd = process.cwd()): string {
  return shares.some((s) => cwd === s || cwd.startsWith(s.endsWith('/') ? s : `${s}/`)) ? cwd : '/';
}

/** /muser/config for vm/init. */
export function guestConfig(o: { nonce: string; modules: readonly GuestModule[]; shares: readonly string[]; workdir: string; run: boolean; rows?: number; cols?: number; term: string }): string {
  return [
    `NONCE=${shellQuote(o.nonce)}`,
    `MODULES=${shellQuote(o.modules.map((m) => `${m.name}.ko`).join(' '))}`,
    `SHARES=${shellQuote(o.shares.map((dir, i) => `muser${i}=${dir}`).join('\n'))}`,
    `WORKDIR=${shellQuote(o.workdir)}`,
    `RUN=${o.run ? 1 : 0}`,
    `ROWS=${o.rows ?? ''}`,
    `COLS=${o.cols ?? ''}`,
    `TERM=${shellQuote(o.term)}`,
    '',
  ].join('\n');
}

/** The kernel command line: quiet unless -v; a panic reboots, which -no-reboot turns into QEMU's exit. */
export function kernelCmdline(o: { verbose: boolean; run: boolean }): string {
  const level = o.verbose ? 'loglevel=7' : o.run ? 'quiet loglevel=1' : 'quiet loglevel=4';
  return `console=ttyS0 panic=-1 rdinit=/init ${level}`;
}

/** QEMU's own arguments for one boot. */
export function qemuArgs(o: {
  accel: 'kvm' | 'tcg';
  cpus: number;
  memoryMiB: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  sockets: readonly string[];
  shares: readonly string[];
  interactive: boolean;
}): string[] {
  const mem = `${o.memoryMiB}M`;
  const opt = (s: string): string => s.replace(/,/g, ',,'); // a comma inside a QEMU option value is doubled
  return [
    '-name', 'muser-vm',
    ...(o.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max']),
    '-smp', String(o.cpus), '-m', mem,
    // Guest RAM in a shared memfd: each DMA_MAP hands the device an fd, so its DMA is zero-copy.
    '-object', `memory-backend-memfd,id=mem,size=${mem},share=on`, '-machine', 'q35,memory-backend=mem',
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-no-reboot',
    '-run-with', 'exit-with-parent=on',
    // signal=off: Ctrl-C reaches the guest's shell; mux=on: Ctrl-A x stops the guest.
    '-chardev', `stdio,id=console,signal=off${o.interactive ? ',mux=on' : ''}`, '-serial', 'chardev:console',
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.cmdline,
    ...o.sockets.flatMap((path) => ['-device', JSON.stringify({ driver: 'vfio-user-pci', socket: { path, type: 'unix' } })]),
    ...o.shares.flatMap((dir, i) => ['-fsdev', `local,id=share${i},path=${opt(dir)},security_model=none`, '-device', `virtio-9p-pci,fsdev=share${i},mount_tag=muser${i}`]),
  ];
}
