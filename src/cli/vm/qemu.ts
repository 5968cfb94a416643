/**
 * Finding a QEMU that has the vfio-user-pci client (10.1.1 or later), and
 * whether KVM works with it.
 *
 * In order: `--qemu FILE`; `qemu-system-x86_64` on PATH when new enough;
 * the one `muser vm setup` unpacked into the cache. That one runs through
 * the unpacked tree's own dynamic loader and libraries, in the host's
 * namespace (socket paths and memfds as usual): no chroot, no install.
 */
import { execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { delimiter, join } from 'node:path';
import { VmError } from './error.js';

/** The first QEMU release whose vfio-user-pci works with muser. */
export const MIN_QEMU: readonly [number, number, number] = [10, 1, 1];
const MIN_TEXT = MIN_QEMU.join('.');

/** A runnable QEMU: spawn `command` with `prefix`, then QEMU's own arguments. */
export interface Qemu {
  command: string;
  /** Arguments before QEMU's own (the loader's, and -L for firmware). */
  prefix: string[];
  env: NodeJS.ProcessEnv;
  /** Its version, as `QEMU emulator version ...` says. */
  version: string;
  /** Where it is, for messages. */
  where: string;
}

/** [major, minor, micro] of `QEMU emulator version 11.1.3 (...)`. */
export function parseQemuVersion(text: string): [number, number, number] | undefined {
  const m = /QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

function newEnough(v: readonly number[]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== MIN_QEMU[i]) return v[i] > MIN_QEMU[i];
  return true;
}

/** The QEMU unpacked in a cache's root/, or undefined. */
export function cacheQemu(cache: string): Omit<Qemu, 'version'> | undefined {
  const root = join(cache, 'root');
  const bin = join(root, 'usr/bin/qemu-system-x86_64');
  if (!existsSync(bin)) return undefined;
  const lib = join(root, 'usr/lib/x86_64-linux-gnu');
  let loader = join(lib, 'ld-linux-x86-64.so.2');
  if (!existsSync(loader)) loader = join(root, 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2');
  return {
    command: loader,
    prefix: [
      '--library-path', [lib, join(root, 'lib/x86_64-linux-gnu'), join(root, 'usr/lib')].join(':'),
      '--argv0', 'qemu-system-x86_64', bin,
      '-L', join(root, 'usr/share/qemu'), '-L', join(root, 'usr/share/seabios'),
    ],
    env: { ...process.env, QEMU_MODULE_DIR: join(lib, 'qemu') },
    where: bin,
  };
}

/** `name` on PATH, or undefined. */
function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const file = join(dir || '.', name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs `--version`; the first line, or undefined when it does not run. */
function versionOf(q: Omit<Qemu, 'version'>): string | undefined {
  try {
    const out = execFileSync(q.command, [...q.prefix, '--version'], { env: q.env, encoding: 'utf8', timeout: 15_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return out.split('\n')[0].trim();
  } catch {
    return undefined;
  }
}

const HOW_TO_GET = `run \`muser vm setup\` (it unpacks QEMU 11 from Debian trixie-backports into a cache, installing nothing on the host), or install QEMU ${MIN_TEXT} or later (Debian trixie: apt install -t trixie-backports qemu-system-x86) and put qemu-system-x86_64 on PATH`;

/** The QEMU to use; throws VmError saying what is missing and how to get it. */
export function findQemu(options: { qemu?: string; cache?: string }): Qemu {
  const tried: string[] = [];
  const candidates: Omit<Qemu, 'version'>[] = [];
  if (options.qemu !== undefined) {
    const file = options.qemu.includes('/') ? options.qemu : onPath(options.qemu);
    if (!file || !existsSync(file)) throw new VmError(`--qemu ${options.qemu}: no such file`);
    candidates.push({ command: file, prefix: [], env: process.env, where: file });
  } else {
    const path = onPath('qemu-system-x86_64');
    if (path) candidates.push({ command: path, prefix: [], env: process.env, where: path });
    const cached = options.cache ? cacheQemu(options.cache) : undefined;
    if (cached) candidates.push(cached);
  }
  for (const c of candidates) {
    const version = versionOf(c);
    const v = version ? parseQemuVersion(version) : undefined;
    if (version && v && newEnough(v)) return { ...c, version };
    tried.push(version && v ? `QEMU ${v.join('.')} at ${c.where} is too old` : `${c.where} does not run as QEMU (${version ?? 'no --version output'})`);
  }
  if (tried.length === 0) throw new VmError(`no QEMU: no qemu-system-x86_64 on PATH and none set up${options.cache ? ` in ${options.cache}` : ''}; ${HOW_TO_GET}`);
  throw new VmError(`${tried.join('; ')}: vfio-user-pci needs QEMU ${MIN_TEXT} or later; ${HOW_TO_GET}`);
}

/** Whether KVM works here; `why` says what failed when it does not. */
export interface KvmProbe {
  ok: boolean;
  why?: string;
}

/**
 * Tries KVM: /dev/kvm must open, and a kernel must start under it. Some
 * hosts (nested VMs) open /dev/kvm fine, then crawl through the firmware
 * and fail on the kernel's first instructions ("KVM internal error ...
 * emulation failure"), leaving QEMU paused; so boot `kernel` with an early
 * console and wait for its first line. A working KVM prints it well within
 * the timeout; TCG boots the whole guest in about that time.
 */
export async function probeKvm(qemu: Qemu, kernel: string, timeoutMs = 3000): Promise<KvmProbe> {
  const args = [
    ...qemu.prefix, '-accel', 'kvm', '-cpu', 'host', '-m', '256M', '-machine', 'q35', '-nodefaults', '-no-user-config',
    '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot', '-run-with', 'exit-with-parent=on',
    '-kernel', kernel, '-append', 'console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1',
  ];
  return new Promise<KvmProbe>((resolveProbe) => {
    const child = spawn(qemu.command, args, { env: qemu.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let settled = false;
    // Resolves once the probe's QEMU is gone: nothing outlives the probe.
    const finish = (result: KvmProbe, gone = false): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (gone || child.exitCode !== null || child.signalCode !== null) return resolveProbe(result);
      child.once('exit', () => resolveProbe(result));
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => finish({ ok: false, why: `a kernel did not start under KVM within ${timeoutMs / 1000} s` }), timeoutMs);
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString('latin1');
      if (out.includes('Linux version')) finish({ ok: true });
    });
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString('latin1');
      const m = /KVM internal error[^\n]*|failed to initialize kvm[^\n]*|Could not access KVM[^\n]*/i.exec(err);
      if (m) finish({ ok: false, why: m[0].trim() });
    });
    child.on('error', (e) => finish({ ok: false, why: e.message }, true));
    child.on('exit', (code) => finish({ ok: false, why: `QEMU exited (${code}) under KVM: ${err.trim().split('\n')[0]}` }, true));
  });
}

/** Why /dev/kvm cannot be used at all, or undefined when it opens. */
function kvmAccess(): KvmProbe | undefined {
  if (!existsSync('/dev/kvm')) return { ok: false, why: 'no /dev/kvm' };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { ok: false, why: 'no permission to use /dev/kvm (join the kvm group)' };
  }
  return undefined;
}

/**
 * Whether KVM works with this QEMU: /dev/kvm is checked each time, the
 * probe's answer (it may take its whole timeout) is remembered in `cache`
 * for this host kernel and this QEMU.
 */
export async function kvmUsable(qemu: Qemu, kernel: string, cache: string | undefined): Promise<KvmProbe> {
  const denied = kvmAccess();
  if (denied) return denied;
  const key = `${release()} ${qemu.where} ${qemu.version}`;
  const file = cache ? join(cache, 'kvm-probe.json') : undefined;
  if (file) {
    try {
      const known = JSON.parse(readFileSync(file, 'utf8')) as { key?: string; ok?: boolean; why?: string };
      if (known.key === key && typeof known.ok === 'boolean') return { ok: known.ok, why: known.why };
    } catch {
      // not probed yet
    }
  }
  const probe = await probeKvm(qemu, kernel);
  if (file) {
    try {
      mkdirSync(cache!, { recursive: true });
      const tmp = `${file}.${process.pid}`;
      writeFileSync(tmp, JSON.stringify({ key, ...probe }));
      renameSync(tmp, file);
    } catch {
      // a read-only cache: probe again next time
    }
  }
  return probe;
}
